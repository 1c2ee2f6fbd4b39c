"""Learning from routed generations: bandit feedback.

A deployed router generates one candidate per prompt, so a score reveals the quality of the
chosen candidate only. ``update_router`` adds such scored (prompt, candidate, score) observations
to a router without retraining it from scratch:

* kNN-family predictors (``knn``, and ``knn_or_ridge`` with the kNN family) keep their training
  prompts as memory (``knn_x`` [N, d], ``knn_y`` [N, C] with NaN for unscored cells). Each new
  prompt becomes one memory row holding only its observed cells; the candidate means ``mu`` are
  the means over every observed cell. The number of neighbours ``k`` and the shrinkage ``alpha``
  are chosen again, because a router started on few prompts usually has ``alpha = 0`` (no
  per-prompt signal shown yet) and would otherwise never learn. Partial feedback rules out the
  routing-utility check used at training (it needs every candidate's score per prompt), so the
  check is leave-one-out prediction error: every observed cell is predicted from its ``k`` nearest
  other memory rows (``predictors.knn_mean``, which skips unscored cells exactly as prediction
  does), and ``alpha > 0`` is kept only if its per-observation squared-error gain over the
  candidate mean beats zero by more than two standard errors (``predictors.significant_best``).
  The budget calibration (target average cost -> cost weight) is recomputed from the same
  leave-one-out predictions over the memory prompts, so a budget keeps meaning the same average
  cost once predictions start to vary per prompt; the router's default budget is kept.
* Other predictors (ridge, MLP, ``knn_or_ridge`` with the ridge family) cannot take a row without
  refitting: their predictions stay as they are, the observations are counted, and the report
  says so in ``note``.

Candidates added from anchor scores (``router.added``) are left as they are. The reference set
(out-of-distribution fallback, anchors) is kept as it is.

``replay`` simulates a stream of routed generations from a fully scored table, revealing only the
chosen candidate's score, with a share of deliberate exploration (``explore.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .budget import Budget, calibrate
from .errors import RouterError
from .explore import explore_choices
from .predictors import ALPHAS, KNNPredictor, column_means, significant_best
from .router import Router

Progress = Callable[[int, int], None] | None
BATCH = 32
LOO_CHUNK = 1024  # memory rows scored at a time in the leave-one-out pass (bounds an [chunk, N] matrix)
MIN_LOO_CELLS = 8  # fewer observed cells than this: alpha stays 0


def is_knn_family(predictor) -> bool:
    return predictor.kind == "knn" or (predictor.kind == "knn_or_ridge" and predictor.params.get("family") == "knn")


def _k_key(predictor) -> str:
    return "k" if predictor.kind == "knn" else "value"


# ---------------------------------------------------------------------------------------
# leave-one-out kNN over the memory
def _loo_knn(X: np.ndarray, Y: np.ndarray, ks: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For every memory row and every k in ``ks`` (each < N): the similarity-weighted mean of each
    candidate's scores over the row's k most similar OTHER rows, skipping unscored cells, as
    ``knn_mean`` computes it with the row's self-similarity at -inf. Returns k -> (numerator,
    denominator) [N, C]; a cell with denominator 0 has no scored neighbour."""
    N, C = Y.shape
    kmax = max(ks)
    Yf = np.nan_to_num(Y.astype(np.float64), nan=0.0)
    M = (~np.isnan(Y)).astype(np.float64)
    out = {k: (np.zeros((N, C)), np.zeros((N, C))) for k in ks}
    for s in range(0, N, LOO_CHUNK):
        rows = np.arange(s, min(N, s + LOO_CHUNK))
        S = X[rows] @ X.T
        S[np.arange(len(rows)), rows] = -np.inf
        idx = np.argpartition(-S, kmax - 1, axis=1)[:, :kmax]
        sims = np.take_along_axis(S, idx, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")
        idx, sims = np.take_along_axis(idx, order, axis=1), np.take_along_axis(sims, order, axis=1)
        w = np.clip(sims, 1e-3, None).astype(np.float64)[:, :, None]  # [n, kmax, 1], as knn_mean weighs
        num = np.cumsum(Yf[idx] * w, axis=1)
        den = np.cumsum(M[idx] * w, axis=1)
        for k in ks:
            out[k][0][rows], out[k][1][rows] = num[:, k - 1], den[:, k - 1]
    return out


def _select_k_alpha(X: np.ndarray, Y: np.ndarray, mu: np.ndarray, k_old: int
                    ) -> tuple[int, float, dict, np.ndarray]:
    """Choose (k, alpha) by leave-one-out squared error over the observed cells of the memory.

    Returns (k, alpha, a report, leave-one-out predictions [N, C] of every cell with that setting)."""
    N, C = Y.shape
    grid = [k for k in KNNPredictor.K_GRID if k < N] or [1]
    obs = ~np.isnan(Y)
    n_obs = int(obs.sum())
    rep: dict = {"loo_observations": n_obs}
    if N < 2:
        return k_old, 0.0, {**rep, "loo_note": "fewer than 2 memory rows"}, np.tile(mu, (N, 1))
    loo = _loo_knn(X, Y, grid)
    r, c = np.nonzero(obs)
    y = Y[r, c].astype(np.float64)
    # each cell's candidate mean without that cell: the prediction with no neighbour and the shrinkage target
    total, count = np.nansum(Y, axis=0, dtype=np.float64), obs.sum(axis=0)
    left = count[c] - 1
    mu_loo = np.where(left > 0, (total[c] - y) / np.maximum(left, 1), 0.0)
    base = -(mu_loo - y) ** 2
    raw = {}
    for k in grid:
        num, den = loo[k][0][r, c], loo[k][1][r, c]
        raw[k] = np.where(den > 0, num / np.maximum(den, 1e-12), mu_loo)
    if n_obs >= MIN_LOO_CELLS:
        best, top = significant_best(base, (((k, a), -(mu_loo + a * (raw[k] - mu_loo) - y) ** 2)
                                            for k in grid for a in ALPHAS[1:]))
    else:
        best, top = None, None
    if best is not None:
        k, alpha = best
    else:
        k, alpha = (top[0] if top is not None else (k_old if k_old in grid else grid[-1])), 0.0
    k, alpha = int(k), float(alpha)
    err = (mu_loo + alpha * (raw[k] - mu_loo) - y) ** 2
    gain = (-err) - base
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("nan")
    rep.update(loo_mse_mean=float(np.mean(-base)) if n_obs else None, loo_mse=float(err.mean()) if n_obs else None,
               loo_gain=float(gain.mean()) if n_obs else None, loo_gain_se=se,
               loo_best_k_unshrunk=int(top[0]) if top is not None else None)
    num, den = loo[k]
    knn = np.where(den > 0, num / np.maximum(den, 1e-12), mu[None, :])
    return k, alpha, rep, mu[None, :] + alpha * (knn - mu[None, :])


# ---------------------------------------------------------------------------------------
def _embed(router: Router, prompts: list[str], embeddings, embedder=None) -> np.ndarray:
    if embeddings is None:
        E = (embedder or router.embedder).embed(list(prompts))
    else:
        E = np.asarray(embeddings, dtype=np.float32)
    d = int(router.embedder_identity.get("dim", E.shape[-1] if E.ndim == 2 else 0))
    if E.ndim != 2 or E.shape != (len(prompts), d):
        raise RouterError(f"embeddings must have shape ({len(prompts)}, {d}) (one row per observation, "
                          f"embedding dim {d}); got {tuple(E.shape)}")
    if not np.isfinite(E).all():
        raise RouterError("embeddings must be finite")
    return E.astype(np.float32)


def update_router(router: Router, prompts: list[str], candidates: list[str], scores: list[float],
                  embeddings: np.ndarray | None = None) -> tuple[Router, dict]:
    """A new router that has learnt from scored routed generations, and a report.

    ``prompts``, ``candidates`` and ``scores`` are parallel lists: one observation each, the score
    in the router's raw metric units (normalised here with ``router.norm``). ``embeddings`` (one row
    per observation) saves embedding the prompts again. The input router is not changed."""
    prompts, candidates = [str(p) for p in prompts], [str(c) for c in candidates]
    if not (len(prompts) == len(candidates) == len(scores)):
        raise RouterError(f"prompts, candidates and scores must have the same length; got {len(prompts)}, "
                          f"{len(candidates)} and {len(scores)}")
    unknown = sorted({c for c in candidates if c not in router.names})
    if unknown:
        raise RouterError(f"candidate(s) {unknown} are not in the router; it has {router.names}")
    try:
        raw = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise RouterError("scores must be numbers") from None
    if not np.isfinite(raw).all():
        raise RouterError("scores must be finite numbers (an unscored generation is simply left out)")
    pred = router.predictor
    C = len(pred.mu)
    n = len(prompts)
    col = np.array([router.names.index(c) for c in candidates], dtype=int)
    learnable = col < C
    prev = router.training or {}
    report: dict = {"observations": n, "predictor": pred.kind, "note": ""}
    notes = []
    if (~learnable).any():
        notes.append(f"{int((~learnable).sum())} observation(s) of candidates added from anchor scores "
                     f"({sorted({candidates[i] for i in np.nonzero(~learnable)[0]})}) were counted, not learnt: "
                     "added candidates are left as they are")

    new_pred, new_cal, rows_added = pred, router.calibration, 0
    if not is_knn_family(pred):
        notes.append(f"predictor '{pred.kind}'" + (f" ({pred.params.get('family')} family)"
                                                     if pred.kind == "knn_or_ridge" else "")
                     + " cannot learn from single observations without refitting; its predictions are unchanged "
                     "(the observations are counted; retrain with every scored generation to use them)")
        report.update(learnt=0, rows_added=0, memory_rows=None)
    elif n == 0 or not learnable.any():
        report.update(learnt=0, rows_added=0, memory_rows=int(len(pred.X)))
    else:
        z = (raw - float(router.norm["mean"])) / float(router.norm["std"])
        obs_idx = np.nonzero(learnable)[0]
        first: dict[str, int] = {}
        for i in obs_idx:
            first.setdefault(prompts[i], len(first))
        E = _embed(router, prompts, embeddings)
        total = np.zeros((len(first), C))
        count = np.zeros((len(first), C))
        new_x = np.zeros((len(first), E.shape[1]), dtype=np.float32)
        for i in obs_idx:
            r = first[prompts[i]]
            if count[r].sum() == 0:
                new_x[r] = E[i]
            total[r, col[i]] += z[i]
            count[r, col[i]] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            new_y = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
        X = np.concatenate([np.asarray(pred.X, dtype=np.float32), new_x], axis=0)
        Y = np.concatenate([np.asarray(pred.Y, dtype=np.float32), new_y], axis=0)
        mu = column_means(Y.astype(np.float64))
        key = _k_key(pred)
        k_old = int(float(pred.params[key]))
        k, alpha, loo_rep, loo_pred = _select_k_alpha(X, Y, mu, k_old)
        tensors, params = pred.state()
        tensors.update(knn_x=X, knn_y=Y, mu=mu.astype(np.float32))
        params = {**params, key: (k if key == "k" else float(k)), "alpha": alpha}
        new_pred = type(pred).from_state(tensors, params)  # mu as stored (float32), so a saved copy predicts the same
        mu = new_pred.mu
        rows_added = len(first)
        # recalibrate budgets on leave-one-out predictions over the memory prompts (added columns from anchors)
        probe = router.copy(predictor=new_pred)
        z_cal = loo_pred
        if router.added:
            S = X @ router.reference.x[router.reference.anchors].T
            z_cal = probe._with_added(loo_pred, S)
        Y_cal = np.concatenate([Y.astype(np.float64), np.full((len(Y), len(router.added)), np.nan)], axis=1)
        new_cal = calibrate(z_cal, Y_cal, router.cost, probe.mean_quality_z, router.norm)
        report.update(learnt=int(len(obs_idx)), rows_added=rows_added, memory_rows=int(len(X)), k=k, alpha=alpha,
                      k_before=k_old, alpha_before=float(pred.alpha), **loo_rep)
    report["note"] = "; ".join(notes)
    training = {**prev,
                "online_observations": int(prev.get("online_observations", 0)) + n,
                "online_prompts": int(prev.get("online_prompts", 0)) + (
                    rows_added if is_knn_family(pred) else len(set(prompts))),
                "online_updates": int(prev.get("online_updates", 0)) + 1}
    if is_knn_family(pred) and rows_added:
        training.update(online_k=report["k"], online_alpha=report["alpha"],
                        online_calibration="leave-one-out predictions over the kNN memory prompts; "
                                           "mean qualities from the observed cells only")
    return router.copy(predictor=new_pred, training=training, calibration=new_cal), report


# ---------------------------------------------------------------------------------------
def replay(router: Router, ds, budget: Budget | None = None, explore: float = 0.0, seed: int = 0, embedder=None,
           progress: Progress = None, embeddings: np.ndarray | None = None, batch: int = BATCH
           ) -> tuple[Router, list[dict], dict]:
    """Simulate routed generation on a scored table with bandit feedback.

    ``ds.prompts`` are routed in order, ``batch`` at a time, by the current router (greedy for
    ``budget``, or with a share ``explore`` of exploration, salted by ``seed``); only the chosen
    candidate's score (``ds.quality``, the mean over seeds) is revealed, and the router is updated
    after each batch. A prompt whose chosen candidate has no score is skipped and counted.
    ``embeddings`` (aligned with ``ds.prompts``) saves embedding them. Returns (final router, rows
    {prompt, candidate, explored, cost, score}, summary)."""
    if batch < 1:
        raise RouterError(f"batch must be at least 1, got {batch}")
    prompts = list(ds.prompts)
    cols = [ds.candidates.index(n) if n in ds.candidates else None for n in router.names]
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != len(prompts):
            raise RouterError(f"embeddings have {embeddings.shape[0]} rows for {len(prompts)} prompts")
    current = router
    rows: list[dict] = []
    skipped = updates = 0
    fallback = []
    for s in range(0, len(prompts), batch):
        part = prompts[s:s + batch]
        idx = np.arange(s, s + len(part))
        E = embeddings[idx] if embeddings is not None else (embedder or current.embedder).embed(part)
        z, _, w = current.predict_embedded(E)
        fallback.append(w)
        plan = current.plan(budget)
        lams = plan.cost_weights(part)
        if explore > 0 and plan.force is None:
            ch, ex = explore_choices(z, current.cost, lams, part, explore, current.support(E), plan.allowed, seed)
        else:
            ch, _ = plan.choose(z, current.cost, part)
            ex = np.zeros(len(part), dtype=bool)
        obs_p, obs_c, obs_s, obs_i = [], [], [], []
        for i, p in enumerate(part):
            c = int(ch[i])
            j = cols[c]
            q = float(ds.quality[idx[i], j]) if j is not None else float("nan")
            if not np.isfinite(q):
                skipped += 1
                continue
            name = current.names[c]
            rows.append({"prompt": p, "candidate": name, "explored": bool(ex[i]), "cost": float(current.cost[c]),
                         "score": q})
            obs_p.append(p), obs_c.append(name), obs_s.append(q), obs_i.append(i)
        if obs_p:
            current, _ = update_router(current, obs_p, obs_c, obs_s, embeddings=np.asarray(E)[obs_i])
            updates += 1
        if progress:
            progress(min(s + batch, len(prompts)), len(prompts))
    n = len(rows)
    summary = {
        "prompts": n,
        "mean_score": float(np.mean([r["score"] for r in rows])) if n else None,
        "mean_cost": float(np.mean([r["cost"] for r in rows])) if n else None,
        "total_cost": float(np.sum([r["cost"] for r in rows])),
        "explored_share": float(np.mean([r["explored"] for r in rows])) if n else 0.0,
        "skipped": skipped,
        "updates": updates,
        "mean_ood_fallback": float(np.concatenate(fallback).mean()) if fallback else 0.0,
        "k": current.training.get("online_k"), "alpha": current.training.get("online_alpha"),
    }
    return current, rows, summary
