"""The kNN memory that learns from bandit feedback (``online.py``): a row difficulty shared by every
candidate, the choice between the plain and the relative memory, its file format, and replay with a
held budget. Prompts are the real AGIQA-3K prompts in tests/data; where a known answer is needed the
scores are drawn from a stated function of the prompt embedding (semi-synthetic, as in
benchmarks/bench_replay.py)."""

import json
import re

import numpy as np
import pytest
from conftest import DATA, rewrite_router

from cost_aware_router import cli
from cost_aware_router.decision.budget import Budget
from cost_aware_router.decision.hold import BudgetHolder
from cost_aware_router.errors import RouterFileError
from cost_aware_router.memory import knn_mean, row_weights
from cost_aware_router.online import replay, update_router
from cost_aware_router.predictors import column_means
from cost_aware_router.router_file import load_router, save_router
from cost_aware_router.scored import Dataset, load_dataset
from cost_aware_router.train import train_router


def test_own_row_difficulty_leaves_fully_scored_predictions_exactly_as_plain():
    """For rows that score every candidate, with each row's difficulty its own mean offset, the
    relative mean plus the neighbours' mean difficulty is the plain mean, at every k."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = rng.normal(size=(40, 4)) + rng.normal(size=(40, 1)) * 2.0
    Q = rng.normal(size=(7, 8))
    mu = column_means(Y)
    D = Y.mean(axis=1) - mu.mean()
    for k in (1, 3, 10, 40):
        np.testing.assert_allclose(knn_mean(Q @ X.T, Y, k, mu, D, row_weights(Y, 0.25)),
                                   knn_mean(Q @ X.T, Y, k, mu), atol=1e-12)


@pytest.fixture(scope="module")
def hidden(embedder):
    """300 real prompts; 3 candidates at equal cost whose true quality is a shared prompt difficulty
    (sd 1.0, smooth along the embeddings' first principal direction, so nearby prompts share it) plus
    a per-candidate relative signal (sd 0.3, smooth along random directions), observed with noise sd
    0.1. Returns (prompts, embeddings, true quality [300, 3])."""
    prompts = load_dataset(DATA / "agiqa_3k", metric="score").prompts
    X = embedder.embed(prompts)
    rng = np.random.default_rng(11)

    def smooth(v):
        v = np.tanh(1.5 * (v - v.mean(axis=0)) / v.std(axis=0))
        return (v - v.mean(axis=0)) / v.std(axis=0)

    Xc = X - X.mean(axis=0)
    difficulty = smooth(Xc @ np.linalg.svd(Xc, full_matrices=False)[2][0])
    relative = smooth(Xc @ rng.normal(size=(X.shape[1], 3))) * 0.3
    return prompts, X, 3.0 + difficulty[:, None] + relative


def _table(prompts, q, rng):
    noisy = q + rng.normal(size=q.shape) * 0.1
    return Dataset(list(prompts), ["a", "b", "c"], noisy, np.ones_like(noisy), np.ones(3), {})


TEST = np.arange(240, 300)  # held-out prompts of ``hidden``


@pytest.fixture(scope="module")
def learnt_by_difficulty(hidden, embedder):
    """A router started on 60 fully scored prompts that learnt 180 bandit rows chosen by difficulty
    (easy prompts were scored on 'a', hard ones on 'b' and 'c'), as a router that has learnt the wrong
    thing would choose. Returns (start router, learnt router, update report)."""
    prompts, X, q = hidden
    full = _table(prompts, q, np.random.default_rng(5))
    start, stream = np.arange(0, 60), np.arange(60, 240)
    router = train_router(full.subset(start), embedder, "knn", embeddings=X[start])
    d = q.mean(axis=1)
    chosen = np.where(d[stream] > np.median(d), 0, 1 + (stream % 2))
    new, rep = update_router(router, [prompts[i] for i in stream], [full.candidates[c] for c in chosen],
                             [float(full.quality[i, c]) for i, c in zip(stream, chosen)], embeddings=X[stream])
    return router, new, rep


def test_relative_memory_is_chosen_when_a_shared_difficulty_decides_who_was_scored(hidden, learnt_by_difficulty):
    """The plain memory credits 'a' with the easy prompts it was scored on; the relative memory
    compares each candidate with its prompts' difficulty."""
    _, X, q = hidden
    router, new, rep = learnt_by_difficulty
    test = TEST
    assert rep["memory"] == "relative", rep
    assert rep["difference_error_relative"] < rep["difference_error_plain"]
    assert new.predictor.memory.relative and new.predictor.memory.D.shape == (len(new.predictor.memory.X),)
    assert 0 < new.predictor.params["partial_weight"] <= 1

    def errors(r):
        """(largest error of a candidate's mean advantage, correlation of the per-prompt part of the
        predicted differences with the true one), on the 60 held-out prompts."""
        p, t = r.predict_embedded(X[test])[0], q[test]
        col = np.abs((p.mean(0) - p.mean()) - (t.mean(0) - t.mean())).max()
        dc = [(v - v.mean(axis=0)) - (v - v.mean(axis=0)).mean(axis=1, keepdims=True) for v in (p, t)]
        return col, float(np.corrcoef(dc[0].ravel(), dc[1].ravel())[0, 1])

    plain = router.copy(predictor=type(router.predictor).from_state(*_without_difficulty(new.predictor)))
    (col_r, corr_r), (col_p, corr_p) = errors(new), errors(plain)
    # measured: 0.17 against 0.81, and 0.41 against 0.21
    assert col_r < 0.5 * col_p and corr_r > corr_p + 0.1, (col_r, col_p, corr_r, corr_p)


def _without_difficulty(pred):
    tensors, params = pred.state()
    tensors.pop("knn_d")
    params = {k: v for k, v in params.items() if k != "partial_weight"}
    return tensors, params


def test_plain_memory_is_kept_without_enough_fully_scored_rows(hidden, embedder, tmp_path):
    prompts, X, q = hidden
    full = _table(prompts, q, np.random.default_rng(6))
    start = np.arange(0, 6)  # fewer than memory.MIN_COMPLETE_ROWS
    router = train_router(full.subset(start), embedder, "knn", embeddings=X[start])
    stream = np.arange(6, 100)
    new, rep = update_router(router, [prompts[i] for i in stream], ["a"] * len(stream),
                             [float(full.quality[i, 0]) for i in stream], embeddings=X[stream])
    assert rep["memory"] == "plain" and not new.predictor.memory.relative
    save_router(new, tmp_path / "plain.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "plain.safetensors"), framework="numpy") as fh:
        assert "knn_d" not in fh.keys()
        assert "partial_weight" not in json.loads(fh.metadata()["router"])["predictor"]["params"]


@pytest.fixture(scope="module")
def relative_file(learnt_by_difficulty, tmp_path_factory):
    _, new, rep = learnt_by_difficulty
    assert rep["memory"] == "relative"
    path = tmp_path_factory.mktemp("relative") / "relative.safetensors"
    save_router(new, path)
    return new, path


def test_relative_memory_saves_and_loads_with_identical_predictions(relative_file, hidden):
    new, path = relative_file
    prompts = hidden[0][240:]
    loaded = load_router(path)
    np.testing.assert_array_equal(loaded.predictor.memory.D, new.predictor.memory.D)
    assert loaded.predictor.params["partial_weight"] == new.predictor.params["partial_weight"]
    np.testing.assert_allclose(loaded.predict_normalised(prompts), new.predict_normalised(prompts), atol=1e-6)
    # and it keeps learning: the new rows get their difficulty from their nearest rows (k, alpha and the
    # difficulties are chosen again once 5% of the memory is new)
    again, rep = update_router(loaded, prompts[:3], ["a", "b", "c"], [3.0, 3.1, 2.9])
    assert len(again.predictor.memory.X) == len(loaded.predictor.memory.X) + 3
    assert rep["memory"] in ("plain", "relative")


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.__setitem__("knn_d", t["knn_d"][:-1]),
     r"tensor 'knn_d' must hold \d+ finite numbers \(one per memory row\), got shape \(\d+,\)"),
    (lambda t: t["knn_d"].__setitem__(0, np.nan), r"tensor 'knn_d' must hold \d+ finite numbers"),
])
def test_a_broken_row_difficulty_is_refused(relative_file, tmp_path, mutate, message):
    bad = rewrite_router(relative_file[1], tmp_path / "bad.safetensors", mutate_tensors=mutate)
    with pytest.raises(RouterFileError, match=message):
        load_router(bad)


@pytest.mark.parametrize("value", [0.0, 1.5, None, "half"])
def test_a_row_difficulty_needs_a_partial_weight_in_0_1(relative_file, tmp_path, value):
    def mutate(meta, header):
        meta["predictor"]["params"]["partial_weight"] = value
    bad = rewrite_router(relative_file[1], tmp_path / "bad.safetensors", mutate_meta=mutate)
    with pytest.raises(RouterFileError, match=r"predictor param 'partial_weight' must be a number in \(0, 1\] "
                                              r"with tensor 'knn_d', got "):
        load_router(bad)


def test_replay_with_a_held_budget_spends_its_target(embedder):
    """On the real AGIQA-3K ratings (0.318 / 1.59 / 5.93 s candidates): a router started on 20
    prompts replays the other 280 holding 2 s/image, exploration included."""
    table = load_dataset(DATA / "agiqa_3k", metric="score")
    start = train_router(table.subset(np.arange(20)), embedder, "knn")
    rest = table.subset(np.arange(20, len(table.prompts)))
    plan = start.plan(Budget(budget=2.0))
    holder = BudgetHolder(2.0, plan.blended_cost_weight, start.cost, "in memory")
    new, rows, summary = replay(start, rest, Budget(budget=2.0), explore=0.1, holder=holder)
    assert summary["prompts"] == len(rest.prompts) and holder.count == len(rows)
    assert summary["mean_cost"] == pytest.approx(2.0, rel=0.05)
    assert holder.mean_cost == pytest.approx(summary["mean_cost"])
    assert 0.03 < summary["explored_share"] < 0.2
    stateless = replay(start, rest, Budget(budget=2.0), explore=0.1)[2]
    assert abs(stateless["mean_cost"] - 2.0) > abs(summary["mean_cost"] - 2.0)


def test_cli_replay_holds_the_budget(capsys, tmp_path, agiqa_router_file):
    out = tmp_path / "held.safetensors"
    assert cli.main(["replay", str(agiqa_router_file), str(DATA / "agiqa_3k"), "--out", str(out), "--json",
                     "--budget", "1.5", "--hold-budget"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert summary["mean_cost"] == pytest.approx(1.5, rel=0.05)
    assert load_router(out).training["online_observations"] == summary["prompts"]
    assert cli.main(["replay", str(agiqa_router_file), str(DATA / "agiqa_3k"), "--out", str(tmp_path / "x"),
                     "--cost-weight", "0.1", "--hold-budget"]) == 2
    assert "--hold-budget holds a target average cost" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_score_on_another_scale_is_flagged_with_the_router_s_metric(agiqa_router):
    """A CLIPScore (about 31, TIFA-160's clipscore_vitb32) fed to a router of AGIQA-3K human ratings."""
    m, sd = agiqa_router.norm["mean"], agiqa_router.norm["std"]
    prompt = "a lighthouse on a cliff at sunset"
    new, rep = update_router(agiqa_router, [prompt, prompt], agiqa_router.names[:2], [m, 31.16])
    assert re.search(rf"warning: score 31.16 is \d+ standard deviations from this router's '{agiqa_router.metric}' "
                     rf"scores \(mean {m:.4g}, sd {sd:.3g}\); if it is on another scale", rep["note"]), rep["note"]
    _, rep = update_router(agiqa_router, [prompt], agiqa_router.names[:1], [m + 9 * sd])  # far, but in scale
    assert "warning" not in rep["note"]
