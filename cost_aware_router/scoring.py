"""Image-text quality scores from a local CLIP model folder: CLIPScore and PickScore.

PickScore is a CLIP model with other weights, so both run the same code: embed the image and the
prompt, take the cosine similarity, and scale it (CLIPScore: 100 x max(cos, 0), as in TIFA's
``clipscore_vitb32``; PickScore: the model's logit scale x cos). Preprocessing (resize, centre crop,
normalise) follows the folder's ``preprocessor_config.json`` and is done here with PIL and numpy,
so ComfyUI and the headless collector score identically.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from .errors import RouterError

SCORERS = ("clipscore", "pickscore")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    def __init__(self, folder: str | os.PathLike, kind: str = "clipscore"):
        import torch
        import transformers

        if kind not in SCORERS:
            raise RouterError(f"unknown scorer '{kind}'; choose one of {list(SCORERS)}")
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise RouterError(f"scorer folder {folder} has no config.json; give a local CLIP model folder")
        self.kind, self.folder, self._torch = kind, folder, torch
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            self.model = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise RouterError(f"cannot load CLIP scorer from {folder}: {str(exc).splitlines()[0]}") from None
        pre = {}
        if (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        size = pre.get("size", self.model.config.vision_config.image_size)
        self.size = int(size.get("shortest_edge", size.get("height", 224)) if isinstance(size, dict) else size)
        crop = pre.get("crop_size", self.size)
        self.crop = int(crop.get("height", self.size) if isinstance(crop, dict) else crop)
        self.mean = np.array(pre.get("image_mean", _CLIP_MEAN), dtype=np.float32)
        self.std = np.array(pre.get("image_std", _CLIP_STD), dtype=np.float32)
        self.max_tokens = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))

    def _pixels(self, image) -> np.ndarray:
        from PIL import Image

        if not isinstance(image, Image.Image):
            arr = np.asarray(image, dtype=np.float32)
            if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
                raise RouterError(f"expected an HxWx3 image, got shape {arr.shape}")
            arr = arr[..., :3]
            if arr.max() <= 1.0 + 1e-6:
                arr = arr * 255.0
            image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        image = image.convert("RGB")
        w, h = image.size
        scale = self.size / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(image, dtype=np.float32) / 255.0
        return ((x - self.mean) / self.std).transpose(2, 0, 1)

    def score(self, images: list, prompts: list[str]) -> list[float]:
        """One score per (image, prompt) pair."""
        if len(images) != len(prompts):
            raise RouterError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        torch = self._torch
        pixels = torch.from_numpy(np.stack([self._pixels(im) for im in images]))
        tok = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        with torch.inference_mode():
            img = self.model.get_image_features(pixel_values=pixels)
            txt = self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            img = getattr(img, "pooler_output", img)
            txt = getattr(txt, "pooler_output", txt)
            cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
            if self.kind == "clipscore":
                out = 100.0 * cos.clamp(min=0)
            else:
                out = self.model.logit_scale.exp().float() * cos
        return [float(v) for v in out]


_SCORERS: dict[tuple[str, str], ClipScorer] = {}
_LOCK = threading.Lock()


def get_scorer(folder: str | os.PathLike, kind: str = "clipscore") -> ClipScorer:
    key = (str(Path(folder).expanduser().resolve()), kind)
    with _LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = ClipScorer(folder, kind)
        return _SCORERS[key]
