"""Fitting a router from a scored-generations dataset."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cascade import fit_cascade
from .decision.budget import calibrate, default_budget
from .errors import DataError
from .predictors import Predictor, get_predictor_class
from .reference import Reference
from .router import Router
from .scored import Dataset

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


MIN_COMMON_PROMPTS = 4  # prompts scored by every candidate: routing compares candidates on the same prompts


def _mixed_scales(ds: Dataset) -> str | None:
    """Two groups of candidates whose 'score' repeats differently named metrics, with no candidate
    scored under both: two scales mixed in one folder (e.g. an exported table and Quality Scorer rows)."""
    src = ds.score_sources
    names = sorted(src, key=lambda k: -len(src[k]))
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if not set(src[a]) & set(src[b]):
                return (f"{ds.source or 'data'}: 'score' mixes two scales: candidate(s) {src[a][:6]} were scored with "
                        f"'{a}' and {src[b][:6]} with '{b}'. A router compares scores of one metric: train on one "
                        "source (move the other rows to their own folder) or score every candidate with one scorer")
    return None


def check_trainable(ds: Dataset) -> Dataset:
    """Drop prompts without any score; refuse data that cannot train a router (fewer than 2 candidates,
    a candidate without scores, fewer than 4 prompts, fewer than MIN_COMMON_PROMPTS prompts scored by every
    candidate, two score scales mixed under 'score'); warn on constant scores."""
    if len(ds.candidates) < 2:
        raise DataError(f"{ds.source or 'data'}: a router needs at least 2 candidates, found {ds.candidates}")
    scored = ~np.isnan(ds.quality).all(axis=1)
    ds = ds.subset(np.nonzero(scored)[0])
    empty = [c for j, c in enumerate(ds.candidates) if np.isnan(ds.quality[:, j]).all()]
    if empty:
        raise DataError(f"{ds.source or 'data'}: candidate(s) {empty} have no '{ds.metric}' scores")
    if len(ds.prompts) < 4:
        raise DataError(f"{ds.source or 'data'}: a router needs at least 4 scored prompts, found {len(ds.prompts)}")
    mixed = _mixed_scales(ds)
    if mixed:
        raise DataError(mixed)
    common = int(ds.complete.sum())
    if common < MIN_COMMON_PROMPTS:
        per = ", ".join(f"'{c}' {int((~np.isnan(ds.quality[:, j])).sum())}" for j, c in enumerate(ds.candidates[:8]))
        raise DataError(f"{ds.source or 'data'}: only {common} prompt(s) are scored by every candidate (prompts per "
                        f"candidate: {per}{', ...' if len(ds.candidates) > 8 else ''}). A router compares candidates "
                        f"on the same prompts: score every candidate on a common set of at least {MIN_COMMON_PROMPTS} "
                        "prompts (one prompts file for all), or keep each set in its own folder")
    for j, c in enumerate(ds.candidates):
        col = ds.quality[:, j][~np.isnan(ds.quality[:, j])]
        if len(col) > 1 and float(np.ptp(col)) == 0.0:
            ds.warnings.append(f"{ds.source or 'data'}: every '{ds.metric}' score of candidate '{c}' is {col[0]:g}; "
                               "is its scorer working?")
    return ds


def embed_prompts(embedder, prompts: list[str], progress: Progress = None, chunk: int = 256) -> np.ndarray:
    out = []
    for s in range(0, len(prompts), chunk):
        out.append(embedder.embed(prompts[s:s + chunk]))
        if progress:
            progress(min(s + chunk, len(prompts)), len(prompts))
    return np.concatenate(out, axis=0) if out else np.zeros((0, embedder.dim), np.float32)


def train_router(ds: Dataset, embedder, predictor: str | type[Predictor] = DEFAULT_PREDICTOR, folds: int = 5,
                 seed: int = 0, progress: Progress = None, embeddings: np.ndarray | None = None,
                 escalate: bool = True) -> Router:
    """Fit a router; ``predictor`` is a registered name (``predictors.PREDICTORS``) or a Predictor class.
    With ``escalate`` a verify-and-escalate policy is fitted from the folder's per-image rows
    (``cascade.fit_cascade``; switched on only where it beats routing alone), when the folder allows."""
    pcls = predictor if isinstance(predictor, type) else get_predictor_class(predictor)
    ds = check_trainable(ds)
    phases = _Phases(progress, {"embed": 3.0, "fit": pcls.fit_effort})
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
    cascade = fit_cascade(ds, oof, norm, cal, folds=folds, seed=seed) if escalate else None
    if cascade is not None:
        training["cascade"] = {"enabled": cascade.enabled, **cascade.report}
    router = Router(candidates, model, embedder.identity, ds.metric, norm, cal, training,
                    default_budget(cal, ds.quality, ds.cost), reference, cascade=cascade)
    router.use_embedder(embedder)
    if progress:
        progress(PROGRESS_TOTAL, PROGRESS_TOTAL)
    return router
