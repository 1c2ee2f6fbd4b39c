"""Learning from routed generations (bandit feedback, ``online.py``) on the real AGIQA-3K ratings
in tests/data: updating a router, saving it, exploration and replaying a scored table."""

import dataclasses

import numpy as np
import pytest
from conftest import DATA

from cost_aware_router.decision.budget import Budget
from cost_aware_router.decision.explore import explore_choices, explore_hash
from cost_aware_router.decision.rule import choose
from cost_aware_router.errors import RouterError
from cost_aware_router.online import replay, update_router
from cost_aware_router.router_file import load_router, save_router
from cost_aware_router.scored import load_dataset
from cost_aware_router.train import train_router


@pytest.fixture(scope="module")
def table():
    return load_dataset(DATA / "agiqa_3k", metric="score")


@pytest.fixture(scope="module")
def start(table, embedder):
    """A kNN router trained on the first 20 prompts only."""
    return train_router(table.subset(np.arange(20)), embedder, "knn")


@pytest.fixture(scope="module")
def later(table, embedder):
    """Prompts 20..299 and their embeddings."""
    prompts = table.prompts[20:]
    return prompts, embedder.embed(prompts)


def test_update_appends_one_row_per_prompt_and_counts_observations(start, table, embedder):
    p = table.prompts[20:23]
    before_pred = start.predict_normalised(p)
    mem0 = start.predictor.memory
    X0, Y0, mu0, training0 = mem0.X.copy(), mem0.Y.copy(), start.predictor.mu.copy(), dict(start.training)
    names = start.names
    # p[0] twice on the same candidate (averaged), once on another (same row); p[1], p[2] once each
    prompts = [p[0], p[0], p[1], p[0], p[2]]
    cands = [names[0], names[0], names[4], names[2], names[1]]
    scores = [2.0, 3.0, 4.0, 1.0, 3.5]
    new, rep = update_router(start, prompts, cands, scores)
    m, s = start.norm["mean"], start.norm["std"]
    N = len(X0)
    assert new.predictor.memory.X.shape == (N + 3, X0.shape[1]) and new.predictor.memory.Y.shape == (N + 3, len(names))
    Y = new.predictor.memory.Y[N:]
    np.testing.assert_allclose(new.predictor.memory.X[N:], embedder.embed(p), atol=1e-6)
    np.testing.assert_allclose(Y[0, 0], ((2.0 + 3.0) / 2 - m) / s, rtol=1e-5)
    np.testing.assert_allclose(Y[0, 2], (1.0 - m) / s, rtol=1e-5)
    np.testing.assert_allclose([Y[1, 4], Y[2, 1]], [(4.0 - m) / s, (3.5 - m) / s], rtol=1e-5)
    assert np.isnan(Y).sum() == 3 * 5 - 4
    # candidate means over every observed cell, the old memory included
    np.testing.assert_allclose(new.predictor.mu, np.nanmean(new.predictor.memory.Y.astype(np.float64), axis=0),
                               atol=1e-6)
    assert not np.allclose(new.predictor.mu, mu0)
    assert rep["observations"] == 5 and rep["rows_added"] == 3 and rep["memory_rows"] == N + 3
    assert new.training["online_observations"] == 5 and new.training["online_prompts"] == 3
    again, _ = update_router(new, [table.prompts[30]], [names[3]], [3.0])
    assert again.training["online_observations"] == 6 and again.training["online_prompts"] == 4
    assert len(again.predictor.memory.X) == N + 4
    # the input router is untouched
    assert np.array_equal(start.predictor.memory.X, X0) and np.array_equal(start.predictor.memory.Y, Y0, equal_nan=True)
    assert np.array_equal(start.predictor.mu, mu0) and start.training == training0
    np.testing.assert_array_equal(start.predict_normalised(p), before_pred)


def test_update_refuses_bad_observations(start, table):
    p = table.prompts[20]
    with pytest.raises(RouterError, match="not in the router"):
        update_router(start, [p], ["no-such-model"], [3.0])
    with pytest.raises(RouterError, match="finite"):
        update_router(start, [p], [start.names[0]], [float("nan")])
    with pytest.raises(RouterError, match="same length"):
        update_router(start, [p, p], [start.names[0]], [3.0])
    with pytest.raises(RouterError, match="shape"):
        update_router(start, [p], [start.names[0]], [3.0], embeddings=np.zeros((1, 7), np.float32))


def _signal_scores(router, E, rng, signal: bool):
    """Scores for one candidate: a smooth function of the embedding (plus a little noise), or pure noise
    of the same spread."""
    centred = E - E.mean(axis=0)
    pc = np.linalg.svd(centred, full_matrices=False)[2][0]
    f = np.tanh(4.0 * centred @ pc / np.std(centred @ pc))
    z = 1.5 * f + 0.3 * rng.normal(size=len(E)) if signal else rng.normal(size=len(E)) * np.sqrt(1.5 ** 2 + 0.09)
    return router.norm["mean"] + router.norm["std"] * z


def test_update_rechooses_shrinkage_only_on_significant_signal(start, later):
    assert start.predictor.alpha == 0.0  # 20 prompts show no significant per-prompt signal
    prompts, E = later
    cand = [start.names[2]] * len(prompts)
    scores = _signal_scores(start, E, np.random.default_rng(1), True)
    new, rep = update_router(start, prompts, cand, scores, embeddings=E)
    assert new.predictor.alpha > 0 and rep["loo_gain"] > 2 * rep["loo_gain_se"] > 0
    assert rep["k"] == new.predictor.params["k"] and new.training["online_alpha"] == new.predictor.alpha
    # the learnt column now follows the signal
    assert np.corrcoef(new.predict_embedded(E)[0][:, 2], scores)[0, 1] > 0.8
    # pure noise of the same spread: alpha stays 0 (the candidate mean everywhere) but for the rare
    # false positive of picking the best of 32 settings at 2 standard errors (about 1 in 10 here)
    shrunk = []
    for seed in range(10):
        noise = _signal_scores(start, E, np.random.default_rng(100 + seed), False)
        new, rep = update_router(start, prompts, cand, noise, embeddings=E)
        shrunk.append(new.predictor.alpha)
        if new.predictor.alpha == 0:
            assert np.ptp(new.predict_embedded(E)[0][:, 2]) < 1e-6
    assert sum(a > 0 for a in shrunk) <= 2, shrunk


def test_updated_router_saves_and_loads_with_identical_predictions(start, later, tmp_path):
    prompts, E = later
    scores = _signal_scores(start, E, np.random.default_rng(2), True)
    new, _ = update_router(start, prompts[:100], [start.names[2]] * 100, scores[:100], embeddings=E[:100])
    assert np.isnan(new.predictor.memory.Y).any()
    path = save_router(new, tmp_path / "online.safetensors")
    back = load_router(path)
    back.use_embedder(new.embedder)
    np.testing.assert_array_equal(back.predict_embedded(E)[0], new.predict_embedded(E)[0])
    np.testing.assert_array_equal(back.predictor.memory.Y, new.predictor.memory.Y)
    assert back.training["online_observations"] == 100 and back.predictor.alpha == new.predictor.alpha
    assert back.calibration == new.calibration
    b = Budget()
    assert np.array_equal(back.choices(back.predict_embedded(E)[0], prompts, b)[0],
                          new.choices(new.predict_embedded(E)[0], prompts, b)[0])


def test_ridge_router_keeps_predictions_and_says_so(table, embedder, later, start):
    ridge = train_router(table.subset(np.arange(20)), embedder, "ridge")
    prompts, E = later
    new, rep = update_router(ridge, prompts[:10], [ridge.names[0]] * 10, [3.0] * 10, embeddings=E[:10])
    assert "ridge" in rep["note"] and "unchanged" in rep["note"]
    np.testing.assert_array_equal(new.predict_embedded(E)[0], ridge.predict_embedded(E)[0])
    assert new.training["online_observations"] == 10 and "online_observations" not in ridge.training
    _, rep = update_router(start, prompts[:10], [ridge.names[0]] * 10, [3.0] * 10, embeddings=E[:10])
    assert rep["note"] == "" and rep["rows_added"] == 10


def test_support_counts_nearby_scored_cells(start, later):
    prompts, E = later
    before = start.support(E[:50])
    assert before.shape == (50, len(start.names)) and (before > 0).all()
    # the start router's memory is fully scored: every candidate equally supported
    np.testing.assert_allclose(before, np.repeat(before[:, :1], before.shape[1], axis=1))
    col = 4
    scores = [3.0] * len(prompts)
    new, _ = update_router(start, prompts, [start.names[col]] * len(prompts), scores, embeddings=E)
    after = new.support(E[:50])
    # the new rows crowd the neighbourhoods and hold only candidate 4
    assert (after[:, col] >= after.max(axis=1) - 1e-9).all()
    assert (after[:, col] > after[:, 0] + 1).mean() > 0.9


def test_explore_choices_respects_cap_prefers_least_support_and_is_stable():
    rng = np.random.default_rng(0)
    prompts = [f"prompt {i}" for i in range(400)]
    z = rng.normal(size=(400, 4))
    cost = np.array([0.5, 1.3, 13.0, 27.0])
    allowed = np.array([True, True, True, False])
    sup = rng.random((400, 4))
    sup[:, 3] = 0.0  # the capped candidate is the least supported everywhere: it must still never be picked
    ch, ex = explore_choices(z, cost, 0.01, prompts, 0.3, sup, allowed)
    greedy = choose(z, cost, 0.01, allowed)
    assert allowed[ch].all()
    assert abs(ex.mean() - 0.3) < 0.07
    assert (ch[~ex] == greedy[~ex]).all() and (ch[ex] != greedy[ex]).all()
    masked = np.where(allowed[None, :], sup, np.inf)
    masked[np.arange(400), greedy] = np.inf
    assert (ch[ex] == masked[ex].argmin(axis=1)).all()
    # the same prompt is explored the same way in any batch, at any position
    order = rng.permutation(400)[:50]
    ch2, ex2 = explore_choices(z[order], cost, 0.01, [prompts[i] for i in order], 0.3, sup[order], allowed)
    assert np.array_equal(ch2, ch[order]) and np.array_equal(ex2, ex[order])
    # the exploration hash is not the budget-mixing hash, and a seed changes it
    from cost_aware_router.decision.budget import prompt_hash

    assert not np.allclose(explore_hash(prompts), prompt_hash(prompts))
    assert not np.allclose(explore_hash(prompts, seed=1), explore_hash(prompts))
    # ties in support go to the higher utility
    tie = np.zeros((400, 4))
    ch3, ex3 = explore_choices(z, cost, 0.0, prompts, 1.0, tie, allowed)
    util = np.where(allowed, z, -np.inf)
    util[np.arange(400), greedy] = -np.inf  # greedy at lam 0.01 may differ from lam 0: recompute for lam 0
    g0 = choose(z, cost, 0.0, allowed)
    util = np.where(allowed, z, -np.inf)
    util[np.arange(400), g0] = -np.inf
    assert ex3.all() and (ch3 == util.argmax(axis=1)).all()
    # nothing explored at share 0, or where the cap leaves one candidate
    assert not explore_choices(z, cost, 0.01, prompts, 0.0, sup, allowed)[1].any()
    only = np.array([True, False, False, False])
    c4, e4 = explore_choices(z, cost, 0.01, prompts, 1.0, sup, only)
    assert (c4 == 0).all() and not e4.any()


def _check_rows(rows, summary, ds, router):
    assert [r["prompt"] for r in rows] == ds.prompts
    for i, r in enumerate(rows):
        j = ds.candidates.index(r["candidate"])
        assert r["score"] == pytest.approx(ds.quality[i, j])
        assert r["cost"] == pytest.approx(router.cost[router.names.index(r["candidate"])])
    assert summary["prompts"] == len(rows)
    assert summary["mean_score"] == pytest.approx(np.mean([r["score"] for r in rows]))
    assert summary["mean_cost"] == pytest.approx(np.mean([r["cost"] for r in rows]))
    assert summary["explored_share"] == pytest.approx(np.mean([r["explored"] for r in rows]))


def test_replay_reveals_only_the_chosen_score_and_explores_the_requested_share(start, table, embedder):
    stream = table.subset(np.arange(20, 80))
    new, rows, summary = replay(start, stream, explore=0.0, embedder=embedder)
    _check_rows(rows, summary, stream, start)
    assert summary["explored_share"] == 0 and summary["skipped"] == 0
    # the first batch is routed greedily by the start router for its default budget
    first = stream.prompts[:32]
    greedy = start.choices(start.predict_normalised(first), first, Budget())[0]
    assert [r["candidate"] for r in rows[:32]] == [start.names[c] for c in greedy]
    # the router learnt one cell per prompt: exactly the revealed scores
    N = len(start.predictor.memory.X)
    Y = new.predictor.memory.Y[N:]
    assert len(Y) == 60 and ((~np.isnan(Y)).sum(axis=1) == 1).all()
    for r, y in zip(rows, Y):
        j = new.names.index(r["candidate"])
        assert y[j] == pytest.approx((r["score"] - new.norm["mean"]) / new.norm["std"], rel=1e-5)
    assert new.training["online_observations"] == 60 and "online_observations" not in start.training

    explored, rows2, summary2 = replay(start, stream, explore=0.2, embedder=embedder)
    _check_rows(rows2, summary2, stream, start)
    assert abs(summary2["explored_share"] - 0.2) <= 0.1
    # explored prompts are exactly those the salted hash picks (unless no other candidate is allowed)
    assert [r["explored"] for r in rows2] == list(explore_hash(stream.prompts) < 0.2)
    _, rows3, _ = replay(start, stream, explore=0.2, seed=7, embedder=embedder)
    assert [r["explored"] for r in rows3] != [r["explored"] for r in rows2]


def test_replay_skips_prompts_without_a_score_and_respects_a_cap(start, table, embedder):
    stream = table.subset(np.arange(20, 60))
    q = stream.quality.copy()
    q[:5] = np.nan
    stream = dataclasses.replace(stream, quality=q)
    cap = Budget(max_cost=2.0)
    _, rows, summary = replay(start, stream, budget=cap, explore=0.5, embedder=embedder)
    assert summary["skipped"] == 5 and summary["prompts"] == 35 == len(rows)
    assert [r["prompt"] for r in rows] == stream.prompts[5:]
    assert all(r["cost"] <= 2.0 for r in rows) and any(r["explored"] for r in rows)
