"""Hostile inputs to learning from feedback (issue 20, families 1 and 2).

1. One bad number must not poison a learnt router: every value is checked against the precision it is
   stored in (tensors float32, metadata float64); an update that would break the file is refused and
   the file is unchanged; ``save_router`` never writes a file that would not load.
2. Feedback cost and memory stay bounded: the memory is capped (rows merge past it), an update searches
   the memory once for its new rows, and the leave-one-out selection reads probe lists (``memory.py``).
Plus the learnt router's lineage, kept across updates."""

import dataclasses
import json
import re
import time

import numpy as np
import pytest
from conftest import DATA, rewrite_router, set_meta

from cost_aware_router import cli, memory, online
from cost_aware_router.errors import RouterError, RouterFileError
from cost_aware_router.online import replay, update_router
from cost_aware_router.predictors import KNNPredictor
from cost_aware_router.router_file import load_router, save_router
from cost_aware_router.scored import Dataset

F32_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="module")
def start(agiqa_router):
    """The session's kNN router, trained on 75% of the AGIQA-3K prompts (never changed here)."""
    return agiqa_router


@pytest.fixture(scope="module")
def stream(agiqa_split, embedder):
    """The other 75 prompts and their embeddings."""
    prompts = agiqa_split[1].prompts
    return prompts, embedder.embed(prompts)


def _learnt_file(start, stream, path, n=30):
    prompts, E = stream
    new, _ = update_router(start, prompts[:n], [start.names[i % 5] for i in range(n)],
                           list(np.linspace(1.0, 4.0, n)), embeddings=E[:n])
    save_router(new, path)
    return path


# -- family 1: one bad number ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("score", [1e39, -3.5e38, 1.7e308])
def test_a_score_past_float32_is_refused_naming_it_and_the_file_is_unchanged(start, stream, tmp_path, score):
    path = _learnt_file(start, stream, tmp_path / "learnt.safetensors")
    before = path.read_bytes()
    learnt = load_router(path)
    prompts, E = stream
    with pytest.raises(RouterError, match=re.escape(f"score {score:.6g} is outside the 32-bit floats a router file "
                                                    "stores scores in (at most 3.403e+38 in size); nothing was learnt "
                                                    "(observation 2 of 2)")):
        update_router(learnt, [prompts[50], prompts[51]], start.names[:2], [3.0, score], embeddings=E[50:52])
    assert path.read_bytes() == before
    assert load_router(path).training["online_observations"] == 30


def test_a_score_that_overflows_once_normalised_is_refused(start, stream):
    """3e38 fits a float32, but with a small training sd its normalised value does not."""
    small = start.copy(norm={"mean": 3.0, "std": 0.01})
    prompts, E = stream
    with pytest.raises(RouterError, match=r"score 3e\+38 is 3e\+40 standard deviations \(sd 0.01\) from this router's "
                                          r"mean 3: normalised it is outside the 32-bit floats a router file stores"):
        update_router(small, [prompts[0]], [start.names[0]], [3e38], embeddings=E[:1])


def test_many_updates_of_huge_but_storable_scores_keep_a_file_that_loads(start, stream, tmp_path):
    """Normalised scores near the limit, both signs, many updates: means, difficulties and the calibration
    built from them stay finite, and every saved file loads."""
    router = start.copy(norm={"mean": 0.0, "std": 1e-3})
    prompts, E = stream
    path = tmp_path / "huge.safetensors"
    rng = np.random.default_rng(0)
    for u in range(12):
        idx = rng.choice(len(prompts), size=4, replace=False)
        scores = list(rng.choice([-1, 1], size=4) * 4e34)  # z = 4e37, just under the limit
        router, _ = update_router(router, [prompts[i] for i in idx], [router.names[i % 5] for i in idx], scores,
                                  embeddings=E[idx])
        save_router(router, path, overwrite=True)
        back = load_router(path)
        assert np.isfinite(back.predictor.mu).all() and back.training["online_observations"] == 4 * (u + 1)
        router = back
    assert np.isfinite(np.asarray(router.calibration["cost_weight"])).all()


def test_save_refuses_a_tensor_float32_cannot_hold_before_writing(start, tmp_path):
    pred = start.predictor
    tensors, params = pred.state()
    broken = start.copy(predictor=KNNPredictor.from_state(tensors, params))
    broken.predictor.mu[1] = 1e39  # the predictor keeps its means in float64
    path = tmp_path / "r.safetensors"
    with pytest.raises(RouterFileError, match=re.escape(f"cannot save {path}: tensor 'mu' has non-finite values (1 "
                                                        "not finite as 32-bit floats, e.g. 1e+39) (the file would not "
                                                        "load again); nothing was written")):
        save_router(broken, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    save_router(start, path)
    before = path.read_bytes()
    with pytest.raises(RouterFileError, match="tensor 'mu'"):
        save_router(broken, path, overwrite=True)
    assert path.read_bytes() == before


def test_unscored_cells_may_be_nan_but_no_tensor_may_be_infinite(start, tmp_path):
    tensors, params = start.predictor.state()
    y = tensors["knn_y"].copy()
    y[0, 0] = np.nan
    save_router(start.copy(predictor=KNNPredictor.from_state({**tensors, "knn_y": y}, params)), tmp_path / "nan")
    y[0, 0] = -np.inf
    with pytest.raises(RouterFileError, match=r"tensor 'knn_y' has non-finite values \(1 not finite .* e.g. -inf\)"):
        save_router(start.copy(predictor=KNNPredictor.from_state({**tensors, "knn_y": y}, params)), tmp_path / "inf")
    x = tensors["knn_x"].copy()
    x[0, 0] = np.nan  # NaN is allowed only where a cell may be unscored
    with pytest.raises(RouterFileError, match=r"tensor 'knn_x' has non-finite values"):
        save_router(start.copy(predictor=KNNPredictor.from_state({**tensors, "knn_x": x}, params)), tmp_path / "x")
    # the same rule when loading a file written by something else
    bad = rewrite_router(tmp_path / "nan", tmp_path / "bad.safetensors",
                         mutate_tensors=lambda t: t["knn_y"].__setitem__((1, 1), np.inf))
    with pytest.raises(RouterFileError, match=r"tensor 'knn_y' has non-finite values \(1 not finite"):
        load_router(bad)


def test_save_refuses_cascade_tensors_and_metadata_that_would_not_load(agiqa_router, tmp_path):
    assert agiqa_router.cascade is not None
    w = agiqa_router.cascade.image_w.copy()
    w[0, 1] = 5e38
    broken = agiqa_router.copy(cascade=dataclasses.replace(agiqa_router.cascade, image_w=w))
    with pytest.raises(RouterFileError, match=r"tensor 'cascade_image_w' has non-finite values .*e.g. 5e\+38"):
        save_router(broken, tmp_path / "c.safetensors")
    cal = {**agiqa_router.calibration, "cost_weight": [float("inf")] + agiqa_router.calibration["cost_weight"][1:]}
    with pytest.raises(RouterFileError, match=r"'calibration' cost weights and mean costs must be finite"):
        save_router(agiqa_router.copy(calibration=cal), tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


def test_an_embedder_identity_without_spec_is_refused_not_crashed(agiqa_router_file, tmp_path):
    def mutate(meta, header):
        meta["embedder"].pop("spec", None)
        meta["embedder"]["name"] = 5
    bad = rewrite_router(agiqa_router_file, tmp_path / "bad.safetensors", mutate_meta=mutate)
    with pytest.raises(RouterFileError, match="embedder identity 'name' must be a text .* got int"):
        load_router(bad)


def test_replay_skips_and_counts_a_score_no_router_file_can_hold(start, agiqa_split, embedder, tmp_path):
    stream = agiqa_split[1].subset(np.arange(64))
    q = stream.quality.copy()
    q[5] = 1e39  # whatever is chosen for prompt 5
    stream = Dataset(stream.prompts, stream.candidates, q, stream.counts, stream.cost, stream.configs)
    new, rows, summary = replay(start, stream, embedder=embedder)
    assert summary["unlearnable"] == 1 and summary["skipped"] == 1 and summary["prompts"] == 63
    assert summary["unlearnable_note"].startswith("score 1e+39 is outside the 32-bit floats")
    assert stream.prompts[5] not in [r["prompt"] for r in rows]
    save_router(new, tmp_path / "r.safetensors")
    assert load_router(tmp_path / "r.safetensors").training["online_observations"] == 63


def test_cli_replay_on_a_folder_with_a_huge_score_writes_a_file_that_loads(capsys, tmp_path, agiqa_router_file):
    folder = tmp_path / "data"
    folder.mkdir()
    lines = (DATA / "agiqa_3k" / "generations.jsonl").read_text().splitlines()
    first = json.loads(lines[0])["prompt"]
    out_lines = []
    for line in lines:
        row = json.loads(line)
        if row["prompt"] == first:
            row["score"] = row["scores"]["mos_quality"] = 1e39
        out_lines.append(json.dumps(row))
    (folder / "generations.jsonl").write_text("\n".join(out_lines) + "\n")
    out = tmp_path / "learnt.safetensors"
    assert cli.main(["replay", str(agiqa_router_file), str(folder), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 not learnt: score 1e+39 is outside the 32-bit floats" in text
    assert load_router(out).training["online_observations"] > 0


# -- family 2: bounded cost and size --------------------------------------------------------------------------------
def _brute_lists(X, probe, w):
    S = X[probe] @ X.T
    S[np.arange(len(probe)), probe] = -np.inf
    return np.sort(np.argsort(-S, axis=1, kind="stable")[:, :w], axis=1)


def test_probe_lists_stay_every_row_s_exact_neighbours_while_the_memory_is_small(start, stream):
    prompts, E = stream
    router, rng = start, np.random.default_rng(1)
    for _ in range(6):
        idx = rng.choice(len(prompts), size=7, replace=False)
        router, rep = update_router(router, [prompts[i] for i in idx], [router.names[i % 5] for i in idx],
                                    list(rng.normal(3, 0.5, 7)), embeddings=E[idx])
    mem = router.predictor.memory.for_update()
    N = len(mem.X)
    assert sorted(mem.probe) == list(range(N)) and mem.nbr.shape == (N, memory.width(N))
    np.testing.assert_array_equal(np.sort(mem.nbr, axis=1), _brute_lists(mem.X, mem.probe, memory.width(N)))
    assert (np.diff(mem.nbs, axis=1) <= 0).all()


def test_a_repeated_prompt_merges_into_its_row_keeping_the_candidate_means(start, stream):
    prompts, E = stream
    once, _ = update_router(start, [prompts[0]], [start.names[1]], [2.0], embeddings=E[:1])
    twice, rep = update_router(once, [prompts[0], prompts[1]], [start.names[1], start.names[2]], [4.0, 3.0],
                               embeddings=E[:2])
    N = len(start.predictor.memory.X)
    assert rep["rows_merged"] == 1 and rep["rows_added"] == 1 and len(twice.predictor.memory.X) == N + 2
    m, s = start.norm["mean"], start.norm["std"]
    assert twice.predictor.memory.Y[N, 1] == pytest.approx(((2.0 + 4.0) / 2 - m) / s, rel=1e-5)
    assert twice.predictor.memory.cnt[N, 1] == 2
    # each candidate's mean counts the merged cell twice: as if the prompt had two rows
    Y = np.concatenate([twice.predictor.memory.Y, [[np.nan, (4.0 - m) / s, np.nan, np.nan, np.nan]]]).astype(np.float64)
    Y[N, 1] = (2.0 - m) / s
    if not twice.predictor.memory.relative:
        np.testing.assert_allclose(twice.predictor.mu, np.nanmean(Y, axis=0), atol=1e-6)
    assert twice.training["online_prompts"] == 3


def test_past_the_cap_rows_merge_and_the_file_stops_growing(start, stream, tmp_path, monkeypatch):
    prompts, E = stream
    N0 = len(start.predictor.memory.X)
    monkeypatch.setattr(memory, "MAX_ROWS", N0 + 20)
    router, sizes = start, []
    obs = 0
    for b in range(7):
        idx = np.arange(10 * b, 10 * b + 10)
        router, rep = update_router(router, [prompts[i] for i in idx], [router.names[i % 5] for i in idx],
                                    list(np.full(10, 3.0) + 0.1 * b), embeddings=E[idx])
        obs += 10
        path = save_router(router, tmp_path / f"r{b}.safetensors")
        sizes.append(path.stat().st_size)
    assert len(router.predictor.memory.X) == N0 + 20
    assert max(sizes[1:]) - min(sizes[1:]) < 2_000  # full from the second update on: only metadata varies
    cnt, Y = router.predictor.memory.cnt, router.predictor.memory.Y
    assert cnt[~np.isnan(Y)].sum() == N0 * 5 + obs  # every learnt cell is still counted


def test_selection_runs_at_first_then_every_five_percent_and_survives_a_restart(start, stream, tmp_path):
    prompts, E = stream
    router, rep = update_router(start, prompts[:40], [start.names[i % 5] for i in range(40)],
                                list(np.linspace(2, 4, 40)), embeddings=E[:40])
    N0 = len(start.predictor.memory.X)
    assert rep["selected"] and router.training["online_selection"] == {"observations": 40, "rows": N0 + 40}
    save_router(router, tmp_path / "r.safetensors")
    router = load_router(tmp_path / "r.safetensors")
    k, alpha, cal = router.predictor.params["k"], router.predictor.alpha, router.calibration
    due = int(np.ceil(0.05 * router.training["online_selection"]["rows"]))  # new observations that make it due
    router, rep = update_router(router, prompts[40:43], start.names[:3], [3.0, 3.1, 2.9], embeddings=E[40:43])
    assert not rep["selected"] and rep["k"] == k and router.predictor.alpha == alpha and router.calibration == cal
    more = prompts[43:43 + due - 3]
    router, rep = update_router(router, more, [start.names[0]] * len(more), [3.0] * len(more),
                                embeddings=E[43:43 + len(more)])
    assert rep["selected"] and router.training["online_selection"]["observations"] == 40 + due


@pytest.mark.parametrize("difficulties", [None, "knn_d", "knn_dp"])
def test_past_the_probes_the_variant_is_chosen_on_them_and_difficulties_are_kept(start, stream, tmp_path,
                                                                                 monkeypatch, difficulties):
    """With more rows than probes the variant is chosen on the probe rows, keeping every row's difficulty
    whichever wins (a plain memory keeps them as knn_dp, so it can become relative later); a memory without
    any (a file from an older version) stays plain."""
    prompts, E = stream
    monkeypatch.setattr(memory, "PROBES", 64)
    monkeypatch.setattr(online, "MIN_PROBES", 32)
    tensors, params = start.predictor.state()
    N0, C = len(tensors["knn_x"]), len(start.names)
    Y = np.concatenate([tensors["knn_y"], np.full((40, C), np.nan, np.float32)])
    Y[np.arange(N0, N0 + 40), np.arange(40) % C] = np.random.default_rng(0).normal(size=40)
    tensors.update(knn_x=np.concatenate([tensors["knn_x"], E[:40]]), knn_y=Y)
    if difficulties:
        tensors[difficulties] = np.random.default_rng(1).normal(size=N0 + 40).astype(np.float32) * 0.1
        params = {**params, "partial_weight": 0.5} if difficulties == "knn_d" else params
    router = start.copy(predictor=KNNPredictor.from_state(tensors, params))
    assert router.predictor.memory.relative == (difficulties == "knn_d")
    new, rep = update_router(router, prompts[40:42], start.names[:2], [3.0, 3.1], embeddings=E[40:42])
    assert rep["selected"] and rep["loo_rows"] == 64 and rep["memory_rows"] == N0 + 42
    if difficulties is None:
        assert rep["memory"] == "plain" and "no row difficulties" in rep["memory_note"]
        assert new.predictor.memory.D is None and not new.predictor.memory.relative
    else:
        assert rep["difference_rows"] >= 8 and rep["memory"] in ("plain", "relative")
        assert new.predictor.memory.relative == (rep["memory"] == "relative")
        kept = new.predictor.memory.D
        assert kept is not None and kept.shape == (N0 + 42,)
        back = load_router(save_router(new, tmp_path / "r.safetensors"))
        assert back.predictor.memory.relative == (rep["memory"] == "relative")
        np.testing.assert_array_equal(back.predictor.memory.D, kept)


def _synthetic_memory(n, rng, C=5, d=384):
    centres = rng.normal(size=(500, d))
    X = centres[rng.integers(500, size=n)] + rng.normal(size=(n, d)) * 0.05
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    Y = np.full((n, C), np.nan, np.float32)
    Y[:200] = rng.normal(size=(200, C))
    Y[np.arange(200, n), rng.integers(C, size=n - 200)] = rng.normal(size=n - 200)
    return X, Y


def test_an_update_on_a_large_memory_reads_probes_not_the_whole_memory(start, stream):
    """20,000 rows (the whole-memory selection took about 15 s here): the selecting update works on at most
    memory.PROBES rows and takes well under a few seconds."""
    rng = np.random.default_rng(0)
    X, Y = _synthetic_memory(20_000, rng)
    tensors, params = start.predictor.state()
    big = start.copy(predictor=KNNPredictor.from_state(
        {**tensors, "knn_x": X, "knn_y": Y, "mu": np.nanmean(Y, axis=0)}, params))
    prompts, E = stream
    router, rep = update_router(big, prompts[:1], start.names[:1], [3.0], embeddings=E[:1])  # builds its probes
    assert memory.PROBE_WORK // 20_001 <= rep["probes"] <= memory.PROBE_WORK // 20_001 + 1
    router.training.pop("online_selection", None)
    for _ in range(8):
        router = router.copy(predictor=_with_all_probes(router.predictor))
    t = time.perf_counter()
    router, rep = update_router(router, prompts[1:2], start.names[1:2], [3.0], embeddings=E[1:2])
    assert rep["selected"] and rep["loo_rows"] == memory.PROBES and rep["memory_rows"] == 20_002
    assert time.perf_counter() - t < 5.0


def _with_all_probes(pred):
    mem = memory.top_up(pred.memory.for_update(), np.random.default_rng(0), work=1 << 25)
    return pred.with_memory(mem, pred.neighbours, pred.alpha, pred.mu)


def test_a_learnt_file_from_an_older_version_gets_its_probes_and_counts(start, stream, tmp_path):
    path = _learnt_file(start, stream, tmp_path / "new.safetensors")

    def strip(t):
        for name in ("knn_n", "knn_probe", "knn_nbr", "knn_nbs"):
            t.pop(name)
    old = load_router(rewrite_router(path, tmp_path / "old.safetensors", mutate_tensors=strip))
    assert old.predictor.memory.cnt is None and old.predictor.memory.probe is None
    prompts, E = stream
    new, rep = update_router(old, prompts[60:62], start.names[:2], [3.0, 3.2], embeddings=E[60:62])
    assert rep["probes"] == len(new.predictor.memory.X) and new.predictor.memory.cnt is not None


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t["knn_probe"].__setitem__(0, 1e6), r"'knn_probe' must hold distinct row numbers below"),
    (lambda t: t["knn_nbr"].__setitem__((0, 0), t["knn_probe"][0]), r"'knn_nbr' other rows' numbers"),
    (lambda t: t.__setitem__("knn_nbs", t["knn_nbs"][:, :-1]), r"probe tensors must have shapes"),
    (lambda t: t.pop("knn_nbr"), r"go together"),
    (lambda t: t["knn_n"].__setitem__((0, 0), -1.0), r"tensor 'knn_n' must hold"),
    (lambda t: t.__setitem__("knn_dp", np.zeros(3, np.float32)), r"tensor 'knn_dp' must hold \d+ finite numbers"),
])
def test_broken_memory_tensors_are_refused(start, stream, tmp_path, mutate, message):
    path = _learnt_file(start, stream, tmp_path / "learnt.safetensors")
    with pytest.raises(RouterFileError, match=message):
        load_router(rewrite_router(path, tmp_path / "bad.safetensors", mutate_tensors=mutate))


# -- lineage --------------------------------------------------------------------------------------------------------
def test_a_learnt_router_keeps_the_lineage_of_the_file_it_was_first_learnt_from(start, stream, tmp_path):
    base = save_router(start, tmp_path / "base.safetensors")
    router = load_router(base)
    first = router.fingerprint
    assert router.lineage == first
    prompts, E = stream
    out = tmp_path / "learnt.safetensors"
    fingerprints = set()
    for b in range(3):
        router, _ = update_router(router, prompts[b:b + 1], start.names[:1], [3.0], embeddings=E[b:b + 1])
        save_router(router, out, overwrite=True)
        router = load_router(out)
        fingerprints.add(router.fingerprint)
        assert router.lineage == first and router.training["lineage"] == first
    assert len(fingerprints) == 3 and first not in fingerprints
    # a router that was never saved gets a stable id from what it was trained on
    a, _ = update_router(start, prompts[:1], start.names[:1], [3.0], embeddings=E[:1])
    b, _ = update_router(start, prompts[1:2], start.names[:1], [2.0], embeddings=E[1:2])
    assert a.lineage == b.lineage and len(a.lineage) == 24
    # a hostile lineage (not a short text) is ignored
    bad = rewrite_router(out, tmp_path / "bad.safetensors", mutate_meta=set_meta("training.lineage", {"x": 1}))
    loaded = load_router(bad)
    assert loaded.lineage == loaded.fingerprint
