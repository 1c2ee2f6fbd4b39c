"""Deferral curves: the router, every candidate alone, the best fixed mix and the oracle.

A deferral curve plots mean cost per image against mean quality. Curves are compared as
upper concave envelopes: mixing two operating points at random (for the router: two budgets;
for single candidates: two candidates) is always possible, so the envelope is what a user can
actually get. Quality figures use prompts that have a score for every router candidate.
"""

from __future__ import annotations

import numpy as np

from .cascade import complete_cells, simulate
from .decision.budget import Budget
from .decision.rule import choose
from .errors import DataError
from .predictors import Predictor, kfold, lambda_grid
from .router import Router
from .scored import Dataset
from .train import check_trainable, embed_prompts, train_router

N_BUDGETS = 24
BOOTSTRAP = 200  # resamples of the prompts for the intervals of routing alone against verify and escalate


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


def curve_summary(router_pts, Y: np.ndarray, cost: np.ndarray, names: list[str], full_range: bool = False,
                  oracle_pts: list | None = None) -> dict:
    """Areas, gap closed and the comparisons with the best single candidate, on complete rows Y. Areas
    span the cheapest candidate's cost to the best single candidate's, or with ``full_range`` to the
    dearest candidate's (a range that is never empty, also where the cheapest is best on average).
    ``oracle_pts``: the oracle's (cost, quality) points when already known (a bootstrap reuses its choices)."""
    means = Y.mean(axis=0)
    single = envelope(cost, means)
    if oracle_pts is None:
        oracle_pts = curve_points(Y, Y, cost, lambda_grid(means, cost, 400))
    oracle = envelope([p[0] for p in oracle_pts] + list(cost), [p[1] for p in oracle_pts] + list(means))
    rx = [p[0] for p in router_pts]
    ry = [p[1] for p in router_pts]
    router = envelope(rx, ry)
    best = int(np.argmax(means))
    lo, hi = float(cost.min()), float(cost[best])
    top = float(cost.max()) if full_range else hi
    a_r, a_h, a_o = _area(router, lo, top), _area(single, lo, top), _area(oracle, lo, top)
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
    summary = curve_summary(pts, Y, cost, router.names)
    summary["prompts_routed"] = len(ds.prompts)
    summary["metric"] = ds.metric
    if router.cascade is not None:
        budgets = sweep_budgets(router)
        runs = hybrid_runs(router, z, ds, budgets)
        if runs is not None:
            summary["verify_escalate"] = {"verify_metric": ds.images.verify_metric, "escalates": router.escalates,
                                          **compare_hybrid(runs, ds.quality[runs["prompts"]], cost, router.names,
                                                           budgets)}
    return {
        "candidates": {n: {"cost": float(cost[j]), "mean_quality": float(Y[:, j].mean())}
                       for j, n in enumerate(router.names)},
        "points": points,
        "summary": summary,
    }


def cross_validate(ds: Dataset, embedder, predictor: str | type[Predictor] = "knn", folds: int = 5, seed: int = 0,
                   progress=None, escalate: bool = True, boot: int = BOOTSTRAP) -> dict:
    """Prompt-level cross-validation: out-of-fold choices at every budget, pooled over folds. With
    ``escalate``, each fold's router also fits verify and escalate from the folder's per-image rows
    (``ds.images``, its verifying metric) and ``summary["verify_escalate"]`` compares it with routing
    alone on the held-out prompts (``compare_hybrid``; absent when no fold could fit one)."""
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
    params, runs, enabled = [], [], 0
    for f, test in enumerate(parts):
        train = np.setdiff1d(np.arange(n), test)
        r = train_router(ds.subset(train), embedder, predictor, seed=seed, embeddings=X[train], escalate=escalate)
        params.append(r.predictor.state()[1])
        z = r.predict_embedded(X[test])[0]
        budgets = sweep_budgets(r, lo, hi)
        test_prompts = [ds.prompts[i] for i in test]
        for b_i, b in enumerate(budgets):
            choices[b_i, test] = r.choices(z, test_prompts, b)[0]
        if escalate and r.cascade is not None:
            enabled += r.escalates
            run = hybrid_runs(r, z, ds.subset(test), budgets)
            if run is not None:
                run["prompts"] = test[run["prompts"]]
                runs.append(run)
        if progress:
            progress(f + 1, folds)
    Y, cost = ds.quality, ds.cost
    pts = choice_points(choices, Y, cost)
    summary = curve_summary(pts, Y, cost, ds.candidates)
    summary.update(predictor=getattr(predictor, "kind", predictor), folds=folds, metric=ds.metric, fold_params=params)
    if runs:
        joined = {k: np.concatenate([r[k] for r in runs], axis=-1) for k in runs[0]}
        summary["verify_escalate"] = {"verify_metric": ds.images.verify_metric, "folds_escalating": int(enabled),
                                      **compare_hybrid(joined, Y[joined["prompts"]], cost, ds.candidates, budgets,
                                                       boot, seed)}
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
    if not ds.complete.any():  # means over no prompt are NaN, which no plot can place
        raise DataError(f"{ds.source or 'data'}: no prompt has a score for every router candidate {router.names}, "
                        "so there is no curve to draw")
    Y = ds.quality[ds.complete]
    cost = np.asarray(ds.cost, dtype=float)
    cal = router.calibration
    keep = [q is not None and c is not None and np.isfinite(q) and np.isfinite(c)
            for c, q in zip(cal["mean_cost"], cal["mean_quality"])]
    pts = [(c, q) for c, q, k in zip(cal["mean_cost"], cal["mean_quality"], keep) if k]
    summary = curve_summary(pts, Y, cost, router.names)
    summary["metric"] = ds.metric
    return {
        "candidates": {n: {"cost": float(cost[j]), "mean_quality": float(Y[:, j].mean())}
                       for j, n in enumerate(router.names)},
        "points": [{"budget": None, "cost_weight": w, "mean_cost": c, "mean_quality": q}
                   for w, c, q, k in zip(cal["cost_weight"], cal["mean_cost"], cal["mean_quality"], keep) if k],
        "summary": summary,
    }


# -- verify and escalate against routing alone ------------------------------------------------------
def hybrid_runs(router: Router, z: np.ndarray, ds: Dataset, budgets: list[Budget]) -> dict | None:
    """Per budget and per prompt scored by every candidate (with a verifying score): seconds spent and the
    true value of the delivered image, for routing alone (one image, the routed candidate's) and for
    verify and escalate (``cascade.simulate``: the router's policy reading each image's verifying score).
    ``z``: the router's predictions for ``ds.prompts``; ``ds.images`` carries the verifying metric. None
    when no prompt has an image of every candidate. Several images of a cell are used rank by rank."""
    P, C = len(ds.prompts), len(router.names)
    comp, picks = complete_cells(ds.images, P, C)
    if not len(comp):
        return None
    prompts = [ds.prompts[i] for i in comp]
    zc = np.asarray(z, np.float64)[comp]
    cost = router.cost
    y_img = ds.images.value
    out = {k: np.zeros((len(budgets), len(comp))) for k in ("rt_cost", "rt_y", "hy_cost", "hy_y", "hy_images")}
    for bi, b in enumerate(budgets):
        plain, esc = router.plan(b), router.plan(b, escalating=True)
        first = plain.choose(zc, cost, prompts)[0]
        lams = esc.cost_weights(prompts)
        for pick in picks:
            rows = np.arange(len(comp))
            out["rt_cost"][bi] += cost[first] / len(picks)
            out["rt_y"][bi] += y_img[pick[rows, first]] / len(picks)
            if router.escalates:  # (a policy that does not cover every candidate is off)
                cas = router.cascade
                Q = cas.quality(np.broadcast_to(np.arange(C), pick.shape), zc, ds.images.verify[pick])
                spent, y, k = simulate(cas, zc, Q, y_img[pick], cost, lams, esc.allowed, b.max_cost)
            else:  # no policy, or one switched off: the same single image as routing alone
                spent, y, k = cost[first], y_img[pick[rows, first]], np.ones(len(comp))
            out["hy_cost"][bi] += spent / len(picks)
            out["hy_y"][bi] += y / len(picks)
            out["hy_images"][bi] += k / len(picks)
    out["prompts"] = comp
    return out


def compare_hybrid(runs: dict, Y: np.ndarray, cost: np.ndarray, names: list[str], budgets: list[Budget],
                   boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Gap closed (``curve_summary`` over the full cost range, cheapest to dearest candidate: with the usual
    range, up to the best single candidate's cost, a resample whose cheapest candidate is best on
    average has no range at all) by routing alone and by verify and escalate over the same prompts
    (rows of ``Y``, the prompt-level table the envelopes and the oracle come from), with bootstrap
    95% intervals over prompts for each and for their difference."""
    rows = np.arange(len(Y))
    oracle = np.stack([choose(Y, cost, lam) for lam in lambda_grid(Y.mean(axis=0), cost, 400)])  # [L, n] once
    o_cost, o_y = cost[oracle], Y[rows[None, :], oracle]

    def gaps(idx):
        o_pts = list(zip(o_cost[:, idx].mean(axis=1), o_y[:, idx].mean(axis=1)))
        out = []
        for c, y in (("rt_cost", "rt_y"), ("hy_cost", "hy_y")):
            pts = list(zip(runs[c][:, idx].mean(axis=1), runs[y][:, idx].mean(axis=1)))
            out.append(curve_summary(pts, Y[idx], cost, names, full_range=True, oracle_pts=o_pts)["gap_closed"])
        return out

    n = len(Y)
    rt, hy = gaps(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = np.array([gaps(rng.integers(0, n, n)) for _ in range(boot)]) if boot else np.zeros((0, 2))

    def ci(v):
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else None

    targets = np.array([np.nan if b.budget is None else b.budget for b in budgets])
    has = np.isfinite(targets)

    def budget_error(key):  # median relative error of the mean cost against each target budget
        return float(np.median(np.abs(runs[key].mean(axis=1)[has] / targets[has] - 1))) if has.any() else None

    return {"prompts": int(n), "routing_gap_closed": rt, "routing_budget_error": budget_error("rt_cost"),
            "hybrid_budget_error": budget_error("hy_cost"), "hybrid_gap_closed": hy, "difference": hy - rt,
            "routing_ci95": ci(draws[:, 0]), "hybrid_ci95": ci(draws[:, 1]),
            "difference_ci95": ci(draws[:, 1] - draws[:, 0]), "bootstrap": int(boot),
            "hybrid_mean_images": [round(float(x), 4) for x in runs["hy_images"].mean(axis=1)],
            "routing_points": [[float(c), float(y)] for c, y in zip(runs["rt_cost"].mean(1), runs["rt_y"].mean(1))],
            "hybrid_points": [[float(c), float(y)] for c, y in zip(runs["hy_cost"].mean(1), runs["hy_y"].mean(1))]}
