"""Fitting a router from a scored-generations dataset."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .data import Dataset
from .errors import DataError
from .predictors import choose, get_predictor_class, lambda_grid
from .reference import Reference
from .router import Router

Progress = Callable[[int, int], None] | None
PROGRESS_TOTAL = 1000
DEFAULT_PREDICTOR = "knn"


class _Phases:
    """Maps (done, total) of successive phases onto one 0..PROGRESS_TOTAL counter."""

    def __init__(self, callback: Progress, weights: dict[str, float]):
        self.callback, self.start, self.span = callback, {}, {}
        acc = 0.0
        total = sum(weights.values())
        for name, w in weights.items():
            self.start[name], self.span[name] = acc / total, w / total
            acc += w

    def phase(self, name: str) -> Progress:
        if self.callback is None:
            return None

        def report(done: int, total: int) -> None:
            frac = self.start[name] + self.span[name] * (done / max(total, 1))
            self.callback(int(round(frac * PROGRESS_TOTAL)), PROGRESS_TOTAL)

        return report


def check_trainable(ds: Dataset) -> Dataset:
    """Drop prompts without any score; refuse data that cannot train a router."""
    if len(ds.candidates) < 2:
        raise DataError(f"{ds.source or 'data'}: a router needs at least 2 candidates, found {ds.candidates}")
    scored = ~np.isnan(ds.quality).all(axis=1)
    ds = ds.subset(np.nonzero(scored)[0])
    empty = [c for j, c in enumerate(ds.candidates) if np.isnan(ds.quality[:, j]).all()]
    if empty:
        raise DataError(f"{ds.source or 'data'}: candidate(s) {empty} have no '{ds.metric}' scores")
    if len(ds.prompts) < 4:
        raise DataError(f"{ds.source or 'data'}: a router needs at least 4 scored prompts, found {len(ds.prompts)}")
    return ds


def embed_prompts(embedder, prompts: list[str], progress: Progress = None, chunk: int = 256) -> np.ndarray:
    out = []
    for s in range(0, len(prompts), chunk):
        out.append(embedder.embed(prompts[s:s + chunk]))
        if progress:
            progress(min(s + chunk, len(prompts)), len(prompts))
    return np.concatenate(out, axis=0) if out else np.zeros((0, embedder.dim), np.float32)


def calibrate(oof_z: np.ndarray, Yz: np.ndarray, cost: np.ndarray, mu: np.ndarray, norm: dict) -> dict:
    """Average cost (and realised quality) of the choices on out-of-fold predictions, per cost weight."""
    rows = ~np.isnan(oof_z).any(axis=1)
    lams = lambda_grid(mu, cost, 200)
    pred, y = oof_z[rows], Yz[rows]
    mean_cost, mean_quality = [], []
    for lam in lams:
        ch = choose(pred, cost, lam)
        mean_cost.append(float(cost[ch].mean()))
        q = y[np.arange(len(y)), ch]
        mean_quality.append(float(np.nanmean(q) * norm["std"] + norm["mean"]) if np.isfinite(q).any() else None)
    return {"cost_weight": [float(x) for x in lams], "mean_cost": mean_cost, "mean_quality": mean_quality,
            "prompts": int(rows.sum())}


DEFAULT_TOLERANCE = 0.05  # in standard deviations of the metric


def default_budget(cal: dict, Y: np.ndarray, cost: np.ndarray) -> float:
    """Cheapest calibrated average cost whose out-of-fold quality is within DEFAULT_TOLERANCE
    standard deviations of the best single candidate's: "as good as the best model, for less"."""
    complete = ~np.isnan(Y).any(axis=1)
    means = np.nanmean(Y[complete] if complete.any() else Y, axis=0)
    best = int(np.argmax(means))
    target = float(means[best]) - DEFAULT_TOLERANCE * float(np.nanstd(Y))
    ok = [c for c, q in zip(cal["mean_cost"], cal["mean_quality"]) if q is not None and q >= target - 1e-9]
    return float(min(ok)) if ok else float(cost[best])


def train_router(ds: Dataset, embedder, predictor: str = DEFAULT_PREDICTOR, folds: int = 5, seed: int = 0,
                 progress: Progress = None, embeddings: np.ndarray | None = None) -> Router:
    pcls = get_predictor_class(predictor)
    ds = check_trainable(ds)
    phases = _Phases(progress, {"embed": 3.0, "fit": 7.0 if predictor != "knn" else 2.0})
    X = embeddings if embeddings is not None else embed_prompts(embedder, ds.prompts, phases.phase("embed"))
    observed = ds.quality[~np.isnan(ds.quality)]
    std = float(observed.std()) or 1.0
    norm = {"mean": float(observed.mean()), "std": std}
    Yz = (ds.quality - norm["mean"]) / std
    model = pcls()
    oof = model.fit(X, Yz, ds.cost, folds=folds, seed=seed, progress=phases.phase("fit"))
    cal = calibrate(oof, Yz, ds.cost, model.mu, norm)
    candidates = [{"name": c, "cost": float(ds.cost[j]), "config": ds.configs.get(c, {})}
                  for j, c in enumerate(ds.candidates)]
    training = {**ds.summary(), "source": ds.source, "folds": folds, "seed": seed,
                "candidate_mean_quality": {c: float(np.nanmean(ds.quality[:, j])) for j, c in enumerate(ds.candidates)}}
    # the reference set keeps out-of-fold predictions; where a predictor has none for a prompt
    # (the MLP outside its validation split) its in-sample prediction stands in
    missing = np.isnan(oof).any(axis=1)
    ref_pred = np.where(missing[:, None], model.predict(X), oof) if missing.any() else oof
    reference = Reference.build(X, ref_pred, Yz, ds.prompts, seed=seed)
    router = Router(candidates, model, embedder.identity, ds.metric, norm, cal, training,
                    default_budget(cal, ds.quality, ds.cost), reference)
    router.use_embedder(embedder)
    if progress:
        progress(PROGRESS_TOTAL, PROGRESS_TOTAL)
    return router
