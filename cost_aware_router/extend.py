"""Adding a candidate to a trained router without retraining it.

The router file keeps a set of anchor prompts (``reference.py``). Score the new candidate on
those prompts (50 or more of them) in the router's metric, and its quality on any prompt is
predicted from the anchors nearest that prompt, in one of two ways chosen by leave-one-out
utility on the anchors:

* ``absolute`` -- the similarity-weighted mean of its scores on the ``k`` nearest anchors;
* ``offset``   -- the router's prediction for an existing candidate (chosen on the anchors) plus the
  similarity-weighted mean of (new score - that candidate's score) on the ``k`` nearest
  anchors. When the new candidate behaves like an existing one (another step count or CFG of
  the same checkpoint), this carries over everything the router learnt about that candidate.

Either way predictions are shrunk toward the new candidate's anchor mean by a factor chosen with
the same 2-standard-error rule as the trained predictors (see ``fit_added``), and the budget
calibration is recomputed over the reference set.
"""

from __future__ import annotations

import numpy as np

from .added import AddedCandidate, weighted_neighbours
from .decision.budget import calibrate, default_budget
from .errors import DataError, RouterError
from .predictors import lambda_grid, prompt_utility
from .significance import significant_best
from .validate import finite

K_GRID = (4, 8, 16, 32)
SHRINK = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_ANCHORS = 20
SE_MARGIN = 2.0  # standard errors the new column's per-prompt predictions must gain by


def fit_added(scores: np.ndarray, anchor_x: np.ndarray, anchor_oof: np.ndarray, anchor_y: np.ndarray,
              cost: np.ndarray, mu: np.ndarray) -> AddedCandidate:
    """Choose mode, reference column, k and shrinkage on the anchors, leaving each one out.

    Like the trained predictors, the new column is judged by routing utility (true quality
    minus cost weight x cost, over the cost weights that matter) against using its anchor mean
    for every prompt: without a gain of more than SE_MARGIN standard errors its shrinkage stays 0,
    so it enters the router as a fixed-quality option. ``cost`` and ``mu`` cover the trained
    columns and then the new candidate."""
    scores = np.asarray(scores, dtype=np.float64)
    m = ~np.isnan(scores)
    n = int(m.sum())
    if n < MIN_ANCHORS:
        raise RouterError(f"the new candidate is scored on {n} anchor prompts; at least {MIN_ANCHORS} are needed "
                          f"(the router has {len(scores)}; 50 or more give a usable estimate)")
    s, X, oof, Y = scores[m], anchor_x[m], anchor_oof[m].astype(np.float64), anchor_y[m].astype(np.float64)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)  # leave one out
    loo_mean = (s.sum() - s) / (n - 1)
    settings = []
    # k = n - 1: every other anchor, i.e. one global offset from an existing candidate's predictions
    for k in [k for k in K_GRID if k < n - 1] + [n - 1]:
        settings.append(("absolute", 0, k, weighted_neighbours(S, s, k)))
        for c in range(Y.shape[1]):
            ok = ~np.isnan(Y[:, c])
            if ok.sum() >= MIN_ANCHORS:
                Sc = np.where(ok[None, :], S, -np.inf)
                settings.append(("offset", c, k, oof[:, c] + weighted_neighbours(Sc, np.nan_to_num(s - Y[:, c]), k)))
    rows = ~np.isnan(Y).any(axis=1)
    Yr = np.concatenate([Y, s[:, None]], axis=1)[rows]
    lams = lambda_grid(np.asarray(mu, dtype=np.float64), np.asarray(cost, dtype=np.float64))

    def utility(col):
        return prompt_utility(np.concatenate([oof, col[:, None]], axis=1)[rows], Yr, cost, lams)

    choice = None
    if rows.sum() >= MIN_ANCHORS and settings:
        choice, _ = significant_best(utility(loo_mean), (((mode, c, k, a), utility(loo_mean + a * (raw - loo_mean)))
                                                         for mode, c, k, raw in settings for a in SHRINK[1:]),
                                     SE_MARGIN)
    if choice is None:
        mode, c, k, a, raw = "absolute", 0, min(K_GRID[0], n - 1), 0.0, loo_mean
    else:
        mode, c, k, a = choice
        raw = next(r for md, cc, kk, r in settings if (md, cc, kk) == (mode, c, k))
    rmse = float(np.sqrt(np.mean((loo_mean + a * (raw - loo_mean) - s) ** 2)))
    return AddedCandidate(mode=mode, ref=c, k=k, shrink=a, mean=float(s.mean()), scores=scores.astype(np.float32),
                          loo_rmse=rmse)


def _key(prompt: str) -> str:
    """Prompts match whatever their whitespace (prompt files and nodes strip and join lines)."""
    return " ".join(str(prompt).split())


def anchor_set(router):
    if router.reference is None:
        raise RouterError("this router file has no anchor prompts (it was trained by an older version of the pack); "
                          "retrain it to add candidates without retraining")
    return router.reference


def anchor_prompts(router) -> list[str]:
    """The prompts to generate and score a new candidate on, one line each."""
    return [_key(p) for p in anchor_set(router).anchor_prompts]


def add_candidate_from_dataset(router, ds, name: str, cost: float | None = None):
    """Add candidate ``name`` of a scored-generations dataset; returns (new router, report dict).
    Its cost is the data's mean seconds per image unless ``cost`` is given."""
    name = str(name).strip()
    if name not in ds.candidates:
        raise DataError(f"{ds.source or 'data'}: no '{ds.metric}' scores for candidate '{name}'; "
                        f"it has {ds.candidates}")
    j = ds.candidates.index(name)
    scores = {p: float(q) for p, q in zip(ds.prompts, ds.quality[:, j]) if not np.isnan(q)}
    anchors = set(anchor_prompts(router))
    used = sum(_key(p) in anchors for p in scores)
    new = add_candidate(router, name, float(ds.cost[j]) if cost is None else cost, ds.configs.get(name, {}), scores)
    fit = new.candidates[-1]["added"]
    report = {**fit, "reference_candidate": router.names[fit["ref"]] if fit["mode"] == "offset" else None,
              "ignored_prompts": len(scores) - used, "cost": new.candidates[-1]["cost"],
              "mean_quality": fit["mean"] * router.norm["std"] + router.norm["mean"]}
    return new, report


def describe_addition(name: str, report: dict) -> str:
    how = (f"its score offset from '{report['reference_candidate']}'" if report["mode"] == "offset"
           else "its own scores")
    return (f"added '{name}' (cost {report['cost']:.3g} s/image, anchor mean {report['mean_quality']:.4g}) from "
            f"{report['anchors_scored']} of {report['anchors']} anchor prompts: {how} on the {report['k']} nearest "
            f"anchors, shrink {report['shrink']:g}, leave-one-out RMSE {report['loo_rmse']:.3f} (normalised)"
            + (f"; {report['ignored_prompts']} scored prompt(s) that are not anchors were ignored"
               if report["ignored_prompts"] else ""))


def add_candidate(router, name: str, cost: float, config: dict, scores: dict[str, float]):
    """A copy of ``router`` with one more candidate, predicted from its ``scores`` (raw metric units)
    on the router's anchor prompts; the budget calibration is recomputed over the reference set."""
    ref = anchor_set(router)
    name = str(name).strip()
    if not name:
        raise RouterError("the new candidate needs a non-empty name")
    if name in router.names:
        raise RouterError(f"candidate '{name}' is already in the router; it has {router.names}")
    cost = finite(cost, f"cost of '{name}'", minimum=0.0)
    scores = {_key(p): v for p, v in scores.items()}
    raw = np.array([scores.get(_key(p), np.nan) for p in ref.anchor_prompts], dtype=np.float64)
    if not np.isfinite(raw[~np.isnan(raw)]).all():
        raise RouterError(f"scores of '{name}' must be finite numbers")
    z = (raw - router.norm["mean"]) / router.norm["std"]
    A = ref.anchors
    C = len(router.predictor.mu)
    added = fit_added(z, ref.x[A], ref.oof[A], ref.y[A], np.append(router.cost[:C], float(cost)),
                      np.append(router.predictor.mu, np.nanmean(z)))
    cand = {"name": name, "cost": float(cost), "config": dict(config or {}),
            "added": {**added.meta(), "anchors_scored": int((~np.isnan(z)).sum()), "anchors": len(A)}}
    new = router.copy(candidates=router.candidates + [cand], added=router.added + [added])

    # recalibrate budgets: costs over every reference prompt, qualities over the scored anchors
    z_ref = new.predict_reference()
    y_new = np.full((len(ref.x), len(new.added)), np.nan)
    for j, a in enumerate(new.added):
        y_new[A, j] = a.scores
    Y = np.concatenate([ref.y.astype(np.float64), y_new], axis=1)
    mu = new.mean_quality_z
    cal = calibrate(z_ref, Y, new.cost, mu, router.norm)
    scored = A[~np.isnan(z)]
    cal["mean_quality"] = calibrate(z_ref[scored], Y[scored], new.cost, mu, router.norm)["mean_quality"]
    cal["quality_prompts"] = len(scored)
    new.calibration = cal
    new.default_budget = default_budget(cal, Y[scored] * router.norm["std"] + router.norm["mean"], new.cost)
    return new
