import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def run_cli(*args, cwd=ROOT, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cost_aware_router", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, input=stdin, timeout=600)


def write_rows(folder: Path, rows, name="generations.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return folder


@pytest.fixture(scope="session")
def embedder():
    from cost_aware_router.embed import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def agiqa():
    from cost_aware_router.data import load_dataset

    return load_dataset(DATA / "agiqa_3k")


@pytest.fixture(scope="session")
def agiqa_split(agiqa):
    """A fixed 75/25 prompt split of the AGIQA-3K subset."""
    perm = np.random.default_rng(0).permutation(len(agiqa.prompts))
    cut = int(0.75 * len(perm))
    return agiqa.subset(np.sort(perm[:cut])), agiqa.subset(np.sort(perm[cut:]))


@pytest.fixture(scope="session")
def agiqa_router(agiqa_split, embedder):
    from cost_aware_router.train import train_router

    return train_router(agiqa_split[0], embedder, "knn")


@pytest.fixture(scope="session")
def agiqa_router_file(agiqa_router, tmp_path_factory):
    path = tmp_path_factory.mktemp("routers") / "agiqa.safetensors"
    agiqa_router.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT sentence encoder with a locally made WordPiece vocabulary."""
    import transformers

    d = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)] + [
        "##" + chr(c) for c in range(97, 123)] + ["a", "cat", "dog", "photo", "of", "red", "blue"]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP text model with a locally made byte-level BPE vocabulary."""
    import transformers

    d = tmp_path_factory.mktemp("tiny_clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    cfg = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModelWithProjection(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _tiny_clip_tokenizer(d: Path):
    import transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    return tok, len(vocab)


@pytest.fixture(scope="session")
def tiny_scorer_dir(tmp_path_factory):
    """A tiny random CLIP model (text + vision) with a local tokenizer and preprocessor config."""
    import transformers

    d = tmp_path_factory.mktemp("tiny_scorer")
    tok, n = _tiny_clip_tokenizer(d)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 32},
                                                            "crop_size": {"height": 32, "width": 32}}))
    return d


def make_tiny_pipeline(d: Path, seed: int = 0) -> Path:
    """A tiny random StableDiffusionPipeline saved as a local diffusers folder (64 px images on CPU)."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    d.mkdir(parents=True, exist_ok=True)
    tok, n = _tiny_clip_tokenizer(d)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=8)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    return [make_tiny_pipeline(root / "fast", 0), make_tiny_pipeline(root / "slow", 1)]
