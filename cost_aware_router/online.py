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
  Two memories are fitted this way and the better kept (``_select_k_alpha``): *plain*, and
  *relative*, where every row has a difficulty shared by all candidates (``knn_d``: a fully
  scored row's own mean offset, a bandit row's from its nearest rows, ``_row_difficulty``) and
  each candidate is compared on its neighbours' scores relative to it, bandit rows weighted by
  ``partial_weight``. Without it a candidate sent the easy prompts looks better than one sent the
  hard ones. Relative is kept only when the leave-one-out error of the predicted differences
  between candidates, on the fully scored rows, beats plain by more than one standard error; its
  candidate means are then those of the relative scores.
  The budget calibration (target average cost -> cost weight) is recomputed from the same
  leave-one-out predictions over the memory prompts, so a budget keeps meaning the same average
  cost once predictions start to vary per prompt; the router's default budget is kept.
* Other predictors (ridge, MLP, ``knn_or_ridge`` with the ridge family) cannot take a row without
  refitting: their predictions stay as they are, the observations are counted, and the report
  says so in ``note``.

Candidates added from anchor scores (``router.added``) are left as they are. The reference set
(out-of-distribution fallback, anchors) is kept as it is.

``replay`` simulates a stream of routed generations from a fully scored table, revealing only the
chosen candidate's score, with a share of deliberate exploration (``explore.py``) and optionally a
held budget (``hold.BudgetHolder``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from .budget import Budget, calibrate
from .errors import RouterError
from .explore import decide
from .hold import BudgetHolder
from .predictors import ALPHAS, KNNPredictor, column_means, significant_best
from .router import Router

Progress = Callable[[int, int], None] | None
BATCH = 32
LOO_CHUNK = 1024  # memory rows scored at a time in the leave-one-out pass (bounds an [chunk, N] matrix)
MIN_LOO_CELLS = 8  # fewer observed cells than this: alpha stays 0
SCALE_LIMIT_SD = 10.0  # a score further than this many training standard deviations is on another scale
PARTIAL_WEIGHTS = (1.0, 0.5, 0.25, 0.1)  # weight of a bandit row against a fully scored one
MIN_COMPLETE_ROWS = 8  # fewer fully scored rows than this: the plain memory


def is_knn_family(predictor) -> bool:
    return predictor.kind == "knn" or (predictor.kind == "knn_or_ridge" and predictor.params.get("family") == "knn")


def _k_key(predictor) -> str:
    return "k" if predictor.kind == "knn" else "value"


# ---------------------------------------------------------------------------------------
# leave-one-out kNN over the memory
def _neighbours(X: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Every memory row's kmax most similar OTHER rows by decreasing similarity, and the weights
    ``knn_mean`` gives them: ([N, kmax] indices, [N, kmax] weights). Computed once per update and
    shared by the difficulty estimate and every memory variant (the similarities are the update's
    main cost), a chunk of rows at a time (bounds the [chunk, N] similarity matrix)."""
    N = len(X)
    idx_all, w_all = np.zeros((N, kmax), dtype=np.int64), np.zeros((N, kmax))
    for s in range(0, N, LOO_CHUNK):
        rows = np.arange(s, min(N, s + LOO_CHUNK))
        S = X[rows] @ X.T
        S[np.arange(len(rows)), rows] = -np.inf
        idx = np.argpartition(-S, kmax - 1, axis=1)[:, :kmax]
        sims = np.take_along_axis(S, idx, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")
        idx_all[rows] = np.take_along_axis(idx, order, axis=1)
        w_all[rows] = np.clip(np.take_along_axis(sims, order, axis=1), 1e-3, None)
    return idx_all, w_all


def _chunks(nb: tuple[np.ndarray, np.ndarray]):
    """(row indices, their neighbours [n, kmax], weights [n, kmax, 1]) a chunk of rows at a time (bounds the
    [chunk, kmax, C] arrays the leave-one-out sums build)."""
    idx, w = nb
    for s in range(0, len(idx), LOO_CHUNK):
        rows = np.arange(s, min(len(idx), s + LOO_CHUNK))
        yield rows, idx[rows], w[rows][:, :, None]


def _row_difficulty(nb, Y: np.ndarray, mu: np.ndarray, grid: list[int]) -> tuple[np.ndarray, dict]:
    """Each memory row's difficulty: how far its scores sit above the candidate means, shared by
    every candidate. A row scoring every candidate has its own (its mean offset). A row learnt from
    bandit feedback scores one candidate, whose score mixes the prompt's difficulty with that
    candidate's relative quality; its difficulty is taken from its nearest other rows instead (their
    offsets weighted by similarity and by how many candidates each scored), with the number of
    neighbours chosen by leave-one-out error of that estimate. Returns (difficulty [N], report)."""
    obs = ~np.isnan(Y)
    n = obs.sum(axis=1).astype(np.float64)
    e = np.where(n > 0, np.nansum(Y - mu[None, :], axis=1) / np.maximum(n, 1), 0.0)
    complete = n == Y.shape[1]
    if complete.all():
        return e, {"difficulty_k": None}
    num = {k: np.zeros(len(Y)) for k in grid}
    den = {k: np.zeros(len(Y)) for k in grid}
    for rows, idx, w in _chunks(nb):
        wn = w[:, :, 0] * n[idx]
        cn, cd = np.cumsum(wn * e[idx], axis=1), np.cumsum(wn, axis=1)
        for k in grid:
            num[k][rows], den[k][rows] = cn[:, k - 1], cd[:, k - 1]
    err = {k: float(np.sum(n * (np.where(den[k] > 0, num[k] / np.maximum(den[k], 1e-12), 0.0) - e) ** 2))
           for k in grid}
    kd = min(grid, key=lambda k: (err[k], k))
    dbar = np.where(den[kd] > 0, num[kd] / np.maximum(den[kd], 1e-12), 0.0)
    return np.where(complete, e, dbar), {"difficulty_k": int(kd)}


def _fit_variant(nb, Y: np.ndarray, D: np.ndarray, pws, grid: list[int], k_old: int
                 ) -> tuple[int, float, float, dict, np.ndarray]:
    """Choose (k, alpha, partial_weight) for one memory variant by leave-one-out error over the observed
    cells: every cell's score less its row's difficulty ``D`` (all zero: the plain memory), predicted
    from the k most similar other rows (``knn_mean``), bandit rows weighted by ``partial_weight``.
    alpha > 0 is kept only if its gain over the candidate means beats zero by more than two standard
    errors. Returns (k, alpha, partial_weight, report, leave-one-out predictions [N, C] of every cell)."""
    N, C = Y.shape
    obs = ~np.isnan(Y)
    n_obs = int(obs.sum())
    complete = obs.all(axis=1)
    R = Y.astype(np.float64) - D[:, None]
    Rf = np.nan_to_num(R, nan=0.0)
    M = obs.astype(np.float64)
    rel = {(k, pw): (np.zeros((N, C)), np.zeros((N, C))) for k in grid for pw in pws}
    dsum = {k: np.zeros(N) for k in grid}
    for rows, idx, w in _chunks(nb):
        cw = np.cumsum(w[:, :, 0], axis=1)
        cdw = np.cumsum(w[:, :, 0] * D[idx], axis=1)
        for k in grid:
            dsum[k][rows] = cdw[:, k - 1] / cw[:, k - 1]
        for pw in pws:
            wr = w * np.where(complete[idx], 1.0, pw)[:, :, None]
            num, den = np.cumsum(Rf[idx] * wr, axis=1), np.cumsum(M[idx] * wr, axis=1)
            for k in grid:
                rel[(k, pw)][0][rows], rel[(k, pw)][1][rows] = num[:, k - 1], den[:, k - 1]
    r, c = np.nonzero(obs)
    t = R[r, c]
    # each cell's candidate mean without that cell: the prediction with no neighbour and the shrinkage target
    total, count = np.nansum(R, axis=0), obs.sum(axis=0)
    left = count[c] - 1
    mu_loo = np.where(left > 0, (total[c] - t) / np.maximum(left, 1), 0.0)
    base = -(mu_loo - t) ** 2
    raw = {}
    for key, (num, den) in rel.items():
        nn, dd = num[r, c], den[r, c]
        raw[key] = np.where(dd > 0, nn / np.maximum(dd, 1e-12), mu_loo)
    if n_obs >= MIN_LOO_CELLS:
        best, top = significant_best(base, (((key, a), -(mu_loo + a * (raw[key] - mu_loo) - t) ** 2)
                                            for key in rel for a in ALPHAS[1:]))
    else:
        best, top = None, None
    if best is not None:
        (k, pw), alpha = best
    else:
        (k, pw), alpha = (top[0] if top is not None else ((k_old if k_old in grid else grid[-1]), 1.0)), 0.0
    k, pw, alpha = int(k), float(pw), float(alpha)
    err = (mu_loo + alpha * (raw[(k, pw)] - mu_loo) - t) ** 2
    gain = (mu_loo - t) ** 2 - err
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("nan")
    rep = {"loo_mse_mean": float(np.mean((mu_loo - t) ** 2)) if n_obs else None,
           "loo_mse": float(err.mean()) if n_obs else None,
           "loo_gain": float(gain.mean()) if n_obs else None, "loo_gain_se": se}
    num, den = rel[(k, pw)]
    mu_rel = column_means(R)
    relp = np.where(den > 0, num / np.maximum(den, 1e-12), mu_rel[None, :])
    return k, alpha, pw, rep, mu_rel[None, :] + alpha * (relp - mu_rel[None, :]) + dsum[k][:, None]


def _relative_error(pred: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per fully scored row: squared error of the predicted against the scored differences between
    candidates (both centred on the row), the part of a prediction that decides a route."""
    P, T = pred - pred.mean(axis=1, keepdims=True), Y - Y.mean(axis=1, keepdims=True)
    return ((P - T) ** 2).sum(axis=1)


def _select_k_alpha(X: np.ndarray, Y: np.ndarray, mu: np.ndarray, k_old: int
                    ) -> tuple[int, float, float, np.ndarray | None, dict, np.ndarray]:
    """Choose the memory's variant and its (k, alpha, partial_weight).

    * plain: each candidate's prediction is the similarity-weighted mean of its neighbours' scores,
      whichever prompts each candidate was scored on (the memory as training builds it);
    * relative: the neighbours' scores less each row's difficulty (``_row_difficulty``), bandit rows
      weighted by ``partial_weight``, with the neighbours' mean difficulty added back.

    Within each, (k, alpha, partial_weight) are chosen by leave-one-out error (``_fit_variant``).
    Between them, by what decides a route: on the fully scored rows, the leave-one-out error of the
    predicted differences between candidates; relative is kept only when it beats plain there by
    more than one standard error (a plain memory is what training makes).

    Returns (k, alpha, partial_weight, row difficulty [N] or None for plain, a report, leave-one-out
    predictions [N, C] of every cell with that setting)."""
    N, C = Y.shape
    grid = [k for k in KNNPredictor.K_GRID if k < N] or [1]
    obs = ~np.isnan(Y)
    rep: dict = {"loo_observations": int(obs.sum())}
    if N < 2:
        return k_old, 0.0, 1.0, None, {**rep, "loo_note": "fewer than 2 memory rows"}, np.tile(mu, (N, 1))
    complete = obs.all(axis=1)
    nb = _neighbours(X, max(grid))
    plain = _fit_variant(nb, Y, np.zeros(N), (1.0,), grid, k_old)
    rep.update(memory="plain", **plain[3])
    if complete.all() or complete.sum() < MIN_COMPLETE_ROWS:
        return *plain[:3], None, {**rep, "memory_note": f"{int(complete.sum())} fully scored rows"}, plain[4]
    # difficulty is measured against the fully scored rows' candidate means: the means over every
    # observed cell lean towards the prompts each candidate happened to be chosen for
    D, drep = _row_difficulty(nb, Y, column_means(Y[complete].astype(np.float64)), grid)
    relative = _fit_variant(nb, Y, D, PARTIAL_WEIGHTS, grid, k_old)
    e_plain = _relative_error(plain[4][complete], Y[complete])
    e_rel = _relative_error(relative[4][complete], Y[complete])
    best, _ = significant_best(-e_plain, [("relative", -e_rel)], margin=1.0)
    rep.update(difference_error_plain=float(e_plain.mean()), difference_error_relative=float(e_rel.mean()),
               difference_rows=int(complete.sum()))
    if best is None:
        return *plain[:3], None, rep, plain[4]
    rep.update(memory="relative", **drep, **relative[3])
    return *relative[:3], D, rep, relative[4]


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


def _scale_warning(router: Router, raw: np.ndarray) -> str:
    """A warning when a score lies so far from the router's training scores that it is likely on another
    scale (e.g. a CLIPScore into a router of human ratings); learning goes on, as a stream may be far better
    or worse than the training prompts."""
    mean, sd = float(router.norm["mean"]), float(router.norm["std"])
    far = np.nonzero(np.abs(raw - mean) > SCALE_LIMIT_SD * sd)[0]
    if not len(far):
        return ""
    i = int(far[np.argmax(np.abs(raw[far] - mean))])
    return (f"warning: score {raw[i]:.4g} is {abs(raw[i] - mean) / sd:.0f} standard deviations from this router's "
            f"'{router.metric}' scores (mean {mean:.4g}, sd {sd:.3g}); if it is on another scale (e.g. a CLIPScore "
            "into a router of human ratings) it teaches the router wrong things: score with the router's own metric")


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
    scale_note = _scale_warning(router, raw)
    pred = router.predictor
    C = len(pred.mu)
    n = len(prompts)
    col = np.array([router.names.index(c) for c in candidates], dtype=int)
    learnable = col < C
    prev = router.training or {}
    report: dict = {"observations": n, "predictor": pred.kind, "note": ""}
    notes = [scale_note] if scale_note else []
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
        k, alpha, pw, D, loo_rep, loo_pred = _select_k_alpha(X, Y, mu, k_old)
        tensors, params = pred.state()
        if D is not None:  # the candidate means of the relative scores, at the memory's mean difficulty
            mu = column_means(Y.astype(np.float64) - D[:, None]) + float(D.mean())
        tensors.update(knn_x=X, knn_y=Y, mu=mu.astype(np.float32))
        tensors.pop("knn_d", None)
        params = {**params, key: (k if key == "k" else float(k)), "alpha": alpha}
        params.pop("partial_weight", None)
        if D is not None:
            tensors["knn_d"] = D.astype(np.float32)
            params["partial_weight"] = pw
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
                      partial_weight=pw, k_before=k_old, alpha_before=float(pred.alpha), **loo_rep)
    report["note"] = "; ".join(notes)
    training = {**prev,
                "online_observations": int(prev.get("online_observations", 0)) + n,
                "online_prompts": int(prev.get("online_prompts", 0)) + (
                    rows_added if is_knn_family(pred) else len(set(prompts))),
                "online_updates": int(prev.get("online_updates", 0)) + 1}
    if is_knn_family(pred) and rows_added:
        training.update(online_k=report["k"], online_alpha=report["alpha"], online_memory=report["memory"],
                        online_calibration="leave-one-out predictions over the kNN memory prompts; "
                                           "mean qualities from the observed cells only")
        if report["memory"] == "relative":
            training["online_partial_weight"] = report["partial_weight"]
        else:
            training.pop("online_partial_weight", None)
    return router.copy(predictor=new_pred, training=training, calibration=new_cal), report


# ---------------------------------------------------------------------------------------
def replay(router: Router, ds, budget: Budget | None = None, explore: float = 0.0, seed: int = 0, embedder=None,
           progress: Progress = None, embeddings: np.ndarray | None = None, batch: int = BATCH,
           holder: BudgetHolder | None = None) -> tuple[Router, list[dict], dict]:
    """Simulate routed generation on a scored table with bandit feedback.

    ``ds.prompts`` are routed in order, ``batch`` at a time, by the current router (greedy for
    ``budget``, or with a share ``explore`` of exploration, salted by ``seed``; with a ``holder``
    (``hold.BudgetHolder``) the budget's target average cost is held over the stream); only the chosen
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
        ch, _, ex, _ = decide(z, current.cost, current.plan(budget), part, holder, explore, seed,
                              support=partial(current.support, E))
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
