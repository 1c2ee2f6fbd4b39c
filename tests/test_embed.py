import numpy as np
import pytest

from cost_aware_router.embed import Embedder
from cost_aware_router.errors import RouterError


def test_default_embedder_is_minilm_and_normalised(embedder):
    v = embedder.embed(["a photo of a cat", "a photo of a cat", "an oil painting of a harbour at night"])
    assert embedder.identity["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[0], v[1])
    assert v[0] @ v[2] < 0.9  # different prompts give different vectors


def test_similar_prompts_are_closer(embedder):
    a, b, c = embedder.embed(["a small dog running on grass", "a puppy running in a field", "a spreadsheet of taxes"])
    assert a @ b > a @ c + 0.2


def test_cache_hits_and_empty_and_huge_prompts(embedder):
    embedder.embed(["cache probe prompt"])
    size = len(embedder._cache)
    embedder.embed(["cache probe prompt"])
    assert len(embedder._cache) == size
    v = embedder.embed(["", "x " * 50000])
    assert v.shape == (2, 384) and np.isfinite(v).all()


def test_local_bert_folder(tiny_bert_dir):
    e = Embedder(tiny_bert_dir)
    v = e.embed(["a red cat", "a blue dog"])
    assert v.shape == (2, 32) and e.kind == "mean"
    assert e.identity["dim"] == 32 and e.identity["name"] == tiny_bert_dir.name


def test_local_clip_text_folder(tiny_clip_dir):
    e = Embedder(tiny_clip_dir)
    v = e.embed(["a cat", "a dog"])
    assert e.kind == "clip" and v.shape == (2, 16)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_identity_mismatch_is_a_clear_error(embedder, tiny_bert_dir):
    small = Embedder(tiny_bert_dir)
    with pytest.raises(RouterError, match="384-dimensional.*gives 32"):
        small.check_identity(embedder.identity)
    other = dict(embedder.identity, fingerprint="0000")
    with pytest.raises(RouterError, match="fingerprint"):
        embedder.check_identity(other)


def test_missing_embedder_folder(tmp_path):
    with pytest.raises(RouterError, match="does not exist"):
        Embedder(tmp_path / "nope")
    with pytest.raises(RouterError, match="no config.json"):
        Embedder(tmp_path)


def test_embedder_moves_to_a_device_and_still_returns_cpu_arrays(embedder):
    fresh = Embedder()
    prompts = ["a red fox in the snow", "portrait of an old sailor"]
    assert fresh.to("cpu") is fresh and fresh.device == "cpu"
    got = fresh.embed(prompts)
    assert got.dtype == np.float32 and np.allclose(got, embedder.embed(prompts), atol=1e-6)
    with pytest.raises(RouterError, match="embedder device 'no-such-device' is not a torch device"):
        fresh.to("no-such-device")
