import os
import pickle

import numpy as np
import pytest
from conftest import rewrite_router

from cost_aware_router.errors import RouterError, RouterFileError
from cost_aware_router.router_file import candidate_labels, load_router, save_router
from cost_aware_router.storage.files import atomic_write, safe_child


def test_round_trip_gives_identical_decisions(agiqa_router, agiqa_router_file):
    loaded = load_router(agiqa_router_file)
    prompts = ["a lighthouse in a storm", "a child's drawing of a horse", "macro photo of a beetle"]
    a = agiqa_router.route(prompts)
    b = loaded.route(prompts)
    assert [d.to_json() for d in a] == [d.to_json() for d in b]
    assert loaded.calibration == agiqa_router.calibration
    assert loaded.embedder_identity["dim"] == 384


@pytest.mark.parametrize("kind", ["ridge", "mlp", "knn_or_ridge"])
def test_other_predictors_round_trip(agiqa_split, embedder, tmp_path, kind):
    from cost_aware_router.train import train_router

    r = train_router(agiqa_split[0].subset(np.arange(80)), embedder, kind)
    save_router(r, tmp_path / "r.safetensors")
    z1 = r.predict_normalised(["a red barn"])
    z2 = load_router(tmp_path / "r.safetensors").predict_normalised(["a red barn"])
    assert np.allclose(z1, z2, atol=1e-5)


def test_refuses_to_overwrite_unless_asked(agiqa_router, tmp_path):
    path = tmp_path / "r.safetensors"
    save_router(agiqa_router, path)
    before = path.read_bytes()
    with pytest.raises(RouterError, match="already exists"):
        save_router(agiqa_router, path)
    assert path.read_bytes() == before
    save_router(agiqa_router, path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["r.safetensors"]


def test_failed_or_interrupted_write_leaves_nothing(tmp_path):
    def boom(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt  # BaseException, like ComfyUI's interrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.safetensors", boom)
    assert os.listdir(tmp_path) == []
    (tmp_path / "keep.safetensors").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "keep.safetensors", boom, overwrite=True)
    assert (tmp_path / "keep.safetensors").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.safetensors"]


def test_unwritable_output_folder(agiqa_router, tmp_path):
    with pytest.raises(RouterError, match="does not exist"):
        save_router(agiqa_router, tmp_path / "missing" / "r.safetensors")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(RouterError, match="not writable"):
            save_router(agiqa_router, ro / "r.safetensors")


def test_pickled_truncated_and_corrupt_files_are_refused(agiqa_router_file, tmp_path):
    p = tmp_path / "pickled.safetensors"
    p.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(RouterFileError, match="pickle"):
        load_router(p)
    t = tmp_path / "trunc.safetensors"
    t.write_bytes(agiqa_router_file.read_bytes()[:5000])
    with pytest.raises(RouterFileError, match="not a readable safetensors"):
        load_router(t)
    g = tmp_path / "garbage.safetensors"
    g.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(RouterFileError, match="not a readable safetensors"):
        load_router(g)
    with pytest.raises(RouterFileError, match="does not exist"):
        load_router(tmp_path / "none.safetensors")
    with pytest.raises(RouterFileError, match="is a folder"):
        load_router(tmp_path)


@pytest.mark.parametrize("mutate, message", [
    (lambda m, h: h.update(format="other"), "not a cost-aware router file"),
    (lambda m, h: h.update(format_version="99"), "format version '99'"),
    (lambda m, h: m.pop("candidates"), "lacks 'candidates'"),
    (lambda m, h: m["candidates"][0].update(cost=-1), "invalid cost -1"),
    (lambda m, h: m["candidates"][1].update(name=m["candidates"][0]["name"]), "duplicate candidate names"),
    (lambda m, h: m["embedder"].update(dim=128), "tensor 'knn_x' has shape"),
    (lambda m, h: m["predictor"].update(kind="forest"), "unknown predictor 'forest'"),
    (lambda m, h: m["calibration"].update(mean_cost=[1.0]), "'calibration' needs equal"),
    (lambda m, h: m["norm"].update(std=0), "positive std"),
])
def test_wrong_metadata_is_named(agiqa_router_file, tmp_path, mutate, message):
    bad = rewrite_router(agiqa_router_file, tmp_path / "bad.safetensors", mutate_meta=mutate)
    with pytest.raises(RouterFileError, match=message):
        load_router(bad)


def test_wrong_tensor_shapes_and_values(agiqa_router_file, tmp_path):
    def drop_column(t):
        t["knn_y"] = t["knn_y"][:, :3]

    bad = rewrite_router(agiqa_router_file, tmp_path / "a.safetensors", mutate_tensors=drop_column)
    with pytest.raises(RouterFileError, match="'knn_y' has shape .* 5 candidates"):
        load_router(bad)

    def poison(t):
        t["mu"] = t["mu"].copy()
        t["mu"][0] = np.inf

    bad = rewrite_router(agiqa_router_file, tmp_path / "b.safetensors", mutate_tensors=poison)
    with pytest.raises(RouterFileError, match="non-finite"):
        load_router(bad)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", "", "c:\\\\evil", "x\x00y"])
def test_names_cannot_escape_their_folder(tmp_path, name):
    with pytest.raises(RouterError):
        safe_child(tmp_path, name, ".safetensors")


def test_plain_names_get_the_suffix(tmp_path):
    assert safe_child(tmp_path, "mine", ".safetensors") == (tmp_path / "mine.safetensors").resolve()
    assert safe_child(tmp_path, "mine.safetensors", ".safetensors").name == "mine.safetensors"


def test_header_length_starting_with_0x80_is_not_mistaken_for_a_pickle(agiqa_router_file, tmp_path):
    """A safetensors file starts with its header length (little-endian); 0x80 there is legitimate."""
    for pad in range(0, 2048):
        path = rewrite_router(agiqa_router_file, tmp_path / "pad.safetensors",
                        mutate_meta=lambda m, h, pad=pad: h.update(padding="x" * pad))
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("could not produce a header length starting with 0x80")
    assert load_router(path).names == load_router(agiqa_router_file).names


def test_saved_router_gets_the_usual_file_mode(agiqa_router, tmp_path):
    """Not mkstemp's 0600: another user of a shared ComfyUI install can read a saved router."""
    old = os.umask(0o022)
    try:
        path = save_router(agiqa_router, tmp_path / "r.safetensors")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_candidate_labels_read_the_header_alone(agiqa_router_file, tmp_path):
    """The labels the Route node's force_candidate lists: the router's names, without loading it; what
    load_router refuses about the header is refused here too."""
    assert candidate_labels(agiqa_router_file) == load_router(agiqa_router_file).names
    bad = tmp_path / "pickled.safetensors"
    bad.write_bytes(pickle.dumps({"candidates": ["a"]}))
    with pytest.raises(RouterFileError, match="pickle"):
        candidate_labels(bad)
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(RouterError):
        candidate_labels(fifo)
