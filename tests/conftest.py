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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import make_tiny_pipeline, make_tiny_scorer, tiny_clip_tokenizer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def run_cli(*args, cwd=ROOT, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cost_aware_router", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, input=stdin, timeout=600)


def route_json(capsys, *args):
    """``route ... --json`` in-process (the embedder loads once): its JSON lines."""
    from cost_aware_router import cli

    rc = cli.main(["route", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def cli_error(capsys, *args):
    """A CLI call in-process that must fail with exit code 2 and one line on stderr: that line."""
    from cost_aware_router import cli

    rc = cli.main([*map(str, args)])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_rows(folder: Path, rows, name="generations.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return folder


def set_meta(path: str, value):
    """A router-metadata mutation for ``rewrite_router``: set ``a.b.c`` (list items by index) to ``value``."""
    def mutate(m, h):
        keys = path.split(".")
        obj = m
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        obj[keys[-1]] = value
    return mutate


def rewrite_router(src, dst, mutate_meta=None, mutate_tensors=None):
    """Copy router file ``src`` to ``dst`` with its metadata (``mutate_meta(meta, header)``) and/or
    tensors (``mutate_tensors(tensors)``) changed in place: the way tests make broken files."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="numpy") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(header["router"])
    if mutate_meta:
        mutate_meta(meta, header)
    if mutate_tensors:
        mutate_tensors(tensors)
    header["router"] = json.dumps(meta)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(dst), metadata=header)
    return dst


@pytest.fixture(scope="session")
def embedder():
    from cost_aware_router.embed import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def agiqa():
    from cost_aware_router.scored import load_dataset

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
    from cost_aware_router.router_file import save_router

    path = tmp_path_factory.mktemp("routers") / "agiqa.safetensors"
    save_router(agiqa_router, path)
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
    tok, n = tiny_clip_tokenizer(d)
    cfg = transformers.CLIPTextConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModelWithProjection(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d



@pytest.fixture(scope="session")
def tiny_scorer_dir(tmp_path_factory):
    return make_tiny_scorer(tmp_path_factory.mktemp("tiny_scorer"))


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    return [make_tiny_pipeline(root / "fast", 0), make_tiny_pipeline(root / "slow", 1)]
