"""Deferral curves: the router, every candidate alone, the best fixed mix and the oracle.

A deferral curve plots mean cost per image against mean quality. Curves are compared as
upper concave envelopes: mixing two operating points at random (for the router: two budgets;
for single candidates: two candidates) is always possible, so the envelope is what a user can
actually get. Quality figures use prompts that have a score for every router candidate.
"""

from __future__ import annotations

import numpy as np

from .budget import Budget
from .errors import DataError
from .predictors import Predictor, choose, kfold, lambda_grid
from .router import Router
from .scored import Dataset
from .train import check_trainable, embed_prompts, train_router

N_BUDGETS = 24


def envelope(costs, quals) -> tuple[np.ndarray, np.ndarray]:
    """Upper concave, non-decreasing envelope of (cost, quality) points."""
    pts = sorted(zip(map(float, costs), map(float, quals)))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[1] <= hull[-1][1]:  # dominated: costs more, no better
            continue
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] under the chord
                hull.pop()
            else:
                break
        if hull and abs(hull[-1][0] - p[0]) < 1e-15:
            hull[-1] = p
        else:
            hull.append(p)
    x, y = np.array([h[0] for h in hull]), np.array([h[1] for h in hull])
    return x, y


def env_at(env: tuple[np.ndarray, np.ndarray], c) -> np.ndarray:
    """Envelope quality at cost ``c`` (-inf below its cheapest point)."""
    x, y = env
    c = np.asarray(c, dtype=float)
    out = np.interp(c, x, y)
    return np.where(c < x[0] - 1e-12, -np.inf, out)


def _area(env, lo: float, hi: float) -> float:
    if hi <= lo:
        return float(env_at(env, lo))
    grid = np.linspace(lo, hi, 501)
    return float(np.trapezoid(env_at(env, grid), grid) / (hi - lo))


def choice_points(choices, Y: np.ndarray, cost: np.ndarray) -> list[tuple[float, float]]:
    """(mean cost, mean true quality) of each row of ``choices`` (one candidate index per prompt of ``Y``)."""
    rows = np.arange(len(Y))
    return [(float(cost[ch].mean()), float(Y[rows, ch].mean())) for ch in choices]


def curve_points(pred: np.ndarray, Y: np.ndarray, cost: np.ndarray, lams) -> list[tuple[float, float]]:
    return choice_points([choose(pred, cost, lam) for lam in lams], Y, cost)


def summarise(router_pts, Y: np.ndarray, cost: np.ndarray, names: list[str]) -> dict:
    """Areas, gap closed and the comparisons with the best single candidate, on complete rows Y."""
    means = Y.mean(axis=0)
    single = envelope(cost, means)
    oracle_pts = curve_points(Y, Y, cost, lambda_grid(means, cost, 400))
    oracle = envelope([p[0] for p in oracle_pts] + list(cost), [p[1] for p in oracle_pts] + list(means))
    rx = [p[0] for p in router_pts]
    ry = [p[1] for p in router_pts]
    router = envelope(rx, ry)
    best = int(np.argmax(means))
    lo, hi = float(cost.min()), float(cost[best])
    a_r, a_h, a_o = _area(router, lo, hi), _area(single, lo, hi), _area(oracle, lo, hi)
    grid = np.linspace(lo, max(hi, lo), 501)
    margin = env_at(router, grid) - env_at(single, grid)
    reach = np.nonzero(router[1] >= means[best] - 1e-12)[0]
    cost_at_best_q = None
    if len(reach):
        i = int(reach[0])
        if i == 0:
            cost_at_best_q = float(router[0][0])
        else:
            (x1, y1), (x2, y2) = (router[0][i - 1], router[1][i - 1]), (router[0][i], router[1][i])
            cost_at_best_q = float(x1 + (means[best] - y1) * (x2 - x1) / (y2 - y1))
    return {
        "prompts": int(len(Y)),
        "best_single": names[best], "best_single_cost": hi, "best_single_quality": float(means[best]),
        "cheapest_single": names[int(np.argmin(cost))],
        "auc_router": a_r, "auc_best_fixed_mix": a_h, "auc_oracle": a_o,
        "gap_closed": float((a_r - a_h) / (a_o - a_h)) if a_o - a_h > 1e-12 else 0.0,
        "quality_at_best_single_cost": float(env_at(router, hi)),
        "cost_at_best_single_quality": cost_at_best_q,
        "cost_ratio_at_best_single_quality": (cost_at_best_q / hi) if cost_at_best_q is not None and hi > 0 else None,
        "min_margin_vs_best_fixed_mix": float(np.min(margin)),
        "router_envelope": {"cost": router[0].tolist(), "quality": router[1].tolist()},
        "best_fixed_mix": {"cost": single[0].tolist(), "quality": single[1].tolist()},
        "oracle": {"cost": oracle[0].tolist(), "quality": oracle[1].tolist()},
    }


def sweep_budgets(router: Router, lo: float | None = None, hi: float | None = None) -> list[Budget]:
    """The cheapest operating point, target budgets from the cheapest candidate's cost up to the
    best-quality point (``lo``..``hi``, by default from the router's calibration), then best quality."""
    lo = float(router.cost.min()) if lo is None else lo
    hi = float(np.max(router.calibration["mean_cost"])) if hi is None else hi
    cheapest = Budget(cost_weight=float(router.calibration["cost_weight"][-1]))
    budgets = [Budget(budget=float(b)) for b in np.linspace(lo, hi, N_BUDGETS)]
    return [cheapest] + budgets + [Budget(best_quality=True)]


def evaluate_router(router: Router, ds: Dataset) -> dict:
    """The ``evaluate`` contract: candidates, >= 20 budget points with every prompt's choice, summary."""
    ds = ds.restrict(router.names)
    if not ds.prompts:
        raise DataError(f"{ds.source}: no prompts to evaluate")
    z = router.predict_normalised(ds.prompts)
    cost = np.asarray(ds.cost, dtype=float)
    complete = ds.complete
    if complete.sum() == 0:
        raise DataError(f"{ds.source}: no prompt has a score for every router candidate {router.names}")
    Y = ds.quality[complete]
    points, pts = [], []
    for b in sweep_budgets(router):
        ch, lams = router.choices(z, ds.prompts, b)
        lam = float(np.median(lams))
        points.append({"budget": b.budget, "cost_weight": lam,
                       "choices": {p: router.names[int(c)] for p, c in zip(ds.prompts, ch)}})
        pts += choice_points([ch[complete]], Y, cost)
        points[-1].update(mean_cost=pts[-1][0], mean_quality=pts[-1][1])
    summary = summarise(pts, Y, cost, router.names)
    summary["prompts_routed"] = len(ds.prompts)
    summary["metric"] = ds.metric
    return {
        "candidates": {n: {"cost": float(cost[j]), "mean_quality": float(Y[:, j].mean())}
                       for j, n in enumerate(router.names)},
        "points": points,
        "summary": summary,
    }


def cross_validate(ds: Dataset, embedder, predictor: str | type[Predictor] = "knn", folds: int = 5, seed: int = 0,
                   progress=None) -> dict:
    """Prompt-level cross-validation: out-of-fold choices at every budget, pooled over folds."""
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {folds}")
    ds = check_trainable(ds)
    keep = np.nonzero(ds.complete)[0]
    if len(keep) < 2 * folds:
        raise DataError(f"{ds.source or 'data'}: cross-validation needs prompts scored by every candidate, at least "
                        f"{2 * folds} for {folds} folds; found {len(keep)} complete of {len(ds.prompts)}")
    ds = ds.subset(keep)
    X = embed_prompts(embedder, ds.prompts)
    n = len(ds.prompts)
    parts = kfold(n, folds, seed + 1)
    lo, hi = float(ds.cost.min()), float(ds.cost.max())
    choices = np.zeros((N_BUDGETS + 2, n), dtype=int)
    params = []
    for f, test in enumerate(parts):
        train = np.setdiff1d(np.arange(n), test)
        r = train_router(ds.subset(train), embedder, predictor, seed=seed, embeddings=X[train])
        params.append(r.predictor.state()[1])
        z = r.predict_embedded(X[test])[0]
        budgets = sweep_budgets(r, lo, hi)
        test_prompts = [ds.prompts[i] for i in test]
        for b_i, b in enumerate(budgets):
            choices[b_i, test] = r.choices(z, test_prompts, b)[0]
        if progress:
            progress(f + 1, folds)
    Y, cost = ds.quality, ds.cost
    pts = choice_points(choices, Y, cost)
    summary = summarise(pts, Y, cost, ds.candidates)
    summary.update(predictor=getattr(predictor, "kind", predictor), folds=folds, metric=ds.metric, fold_params=params)
    return {
        "candidates": {c: {"cost": float(cost[j]), "mean_quality": float(Y[:, j].mean())}
                       for j, c in enumerate(ds.candidates)},
        "points": [{"budget": b.budget, "cost_weight": b.cost_weight, "mean_cost": p[0], "mean_quality": p[1]}
                   for b, p in zip(budgets, pts)],
        "summary": summary,
    }


def training_curve(router: Router, ds: Dataset) -> dict:
    """The deferral curve from a router's own calibration (out-of-fold choices on its training
    prompts), in the shape ``plot_deferral`` draws; no extra training needed."""
    ds = ds.restrict(router.names)
    Y = ds.quality[ds.complete]
    cost = np.asarray(ds.cost, dtype=float)
    cal = router.calibration
    pts = [(c, q) for c, q in zip(cal["mean_cost"], cal["mean_quality"]) if q is not None]
    summary = summarise(pts, Y, cost, router.names)
    summary["metric"] = ds.metric
    return {
        "candidates": {n: {"cost": float(cost[j]), "mean_quality": float(Y[:, j].mean())}
                       for j, n in enumerate(router.names)},
        "points": [{"budget": None, "cost_weight": w, "mean_cost": c, "mean_quality": q}
                   for w, c, q in zip(cal["cost_weight"], cal["mean_cost"], cal["mean_quality"]) if q is not None],
        "summary": summary,
    }
