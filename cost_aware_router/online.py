"""Learning from routed generations: bandit feedback.

A deployed router generates one candidate per prompt, so a score reveals the quality of the
chosen candidate only. ``update_router`` adds such scored (prompt, candidate, score) observations
to a router without retraining it from scratch:

* A kNN-family predictor (``knn``, and ``knn_or_ridge`` with the kNN family) keeps its training
  prompts as its ``memory`` (``memory.Memory``: ``knn_x`` [N, d], ``knn_y`` [N, C] with NaN for
  unscored cells). Each new
  prompt becomes one memory row holding only its observed cells; the candidate means ``mu`` are
  the means over every observed cell. The number of neighbours ``k`` and the shrinkage ``alpha``
  are chosen again, because a router started on few prompts usually has ``alpha = 0`` (no
  per-prompt signal shown yet) and would otherwise never learn. Partial feedback rules out the
  routing-utility check used at training (it needs every candidate's score per prompt), so the
  check is leave-one-out prediction error: every observed cell is predicted from its ``k`` nearest
  other memory rows (``memory.knn_mean``, which skips unscored cells exactly as prediction
  does), and ``alpha > 0`` is kept only if its per-observation squared-error gain over the
  candidate mean beats zero by more than two standard errors (``significance.significant_best``).
  Two memories are fitted this way and the better kept (``memory.select``): *plain*, and
  *relative*, where every row has a difficulty shared by all candidates (``knn_d``: a fully
  scored row's own mean offset, a bandit row's from its nearest rows) and
  each candidate is compared on its neighbours' scores relative to it, bandit rows weighted by
  ``partial_weight``. Without it a candidate sent the easy prompts looks better than one sent the
  hard ones. Relative is kept only when the leave-one-out error of the predicted differences
  between candidates, on the fully scored rows, beats plain by more than one standard error; its
  candidate means are then those of the relative scores.
  The budget calibration (target average cost -> cost weight) is recomputed from the same
  leave-one-out predictions over the memory prompts, so a budget keeps meaning the same average
  cost once predictions start to vary per prompt; the router's default budget is kept.
* One update costs the same whatever the memory's size (``memory.py``): its new rows are compared
  with the memory once (merged into a near-duplicate row, or into the nearest row once the memory
  holds ``memory.MAX_ROWS``, else appended, a relative memory's new rows getting their difficulty
  from their nearest rows); the leave-one-out selection above reads the neighbour lists of at most
  ``memory.PROBES`` probe rows (every row of a smaller memory, exactly as described), and runs at the
  first update and then once ``RESELECT_SHARE`` of the memory is new (recorded in the router's
  ``training["online_selection"]``, so it survives a restart); in between, k, alpha, the variant and
  the calibration are kept and the candidate means follow every update. A plain memory keeps its
  rows' difficulties too (``knn_dp``), so past ``memory.PROBES`` rows it can still become relative.
* Every score is checked against what stores it before anything is learnt (``score_problem``): a
  32-bit float in the file, normalised; and the learnt router must save and load again
  (``router_file.check_router``), or the update is refused with one line and nothing changes. The
  learnt router keeps the ``training["lineage"]`` of the file it was first learnt from
  (``Router.lineage``).
* Other predictors (ridge, MLP, ``knn_or_ridge`` with the ridge family: ``memory`` None) cannot take a row without
  refitting: their predictions stay as they are, the observations are counted, and the report
  says so in ``note``.

Candidates added from anchor scores (``router.added``) are left as they are. The reference set
(out-of-distribution fallback, anchors) is kept as it is.

``replay`` simulates a stream of routed generations from a fully scored table, revealing only the
chosen candidate's score, with a share of deliberate exploration (``decision/explore.py``) and optionally a
held budget (``hold.BudgetHolder``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from functools import partial

import numpy as np

from .decision.budget import Budget, calibrate
from .decision.hold import BudgetHolder
from .decision.loop import decide
from .errors import RouterError, RouterFileError
from .memory import MAX_ROWS, Memory, grow, select
from .router import Router
from .router_file import check_router
from .validate import is_finite

Progress = Callable[[int, int], None] | None
BATCH = 32
SCALE_LIMIT_SD = 10.0  # a score further than this many training standard deviations is on another scale
RESELECT_SHARE = 0.05  # k, alpha and the variant are chosen again once this share of the memory rows is new
MIN_PROBES = 256  # a memory being given its probes (memory.top_up) is not re-selected on fewer
DEFAULT_DIFFICULTY_K = 8  # neighbours that estimate a new row's difficulty, before any selection chose them
F32_MAX = float(np.finfo(np.float32).max)
Z_LIMIT = F32_MAX / 8  # normalised scores (and the means and differences built from them) stay finite as float32


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


def score_problem(router: Router, value: float) -> str:
    """Why ``value`` cannot be learnt into ``router`` ('' when it can). Router files store scores as 32-bit floats,
    normalised (``router.norm``): a score must be finite there, and normalised it must stay within
    ``Z_LIMIT`` (a few times under the largest 32-bit float, so the means and difficulties built from it
    stay finite too)."""
    if not math.isfinite(value):
        return f"score {value!r} is not a finite number"
    if abs(value) > F32_MAX:
        return (f"score {value:.6g} is outside the 32-bit floats a router file stores scores in "
                f"(at most {F32_MAX:.4g} in size)")
    mean, sd = float(router.norm["mean"]), float(router.norm["std"])
    with np.errstate(over="ignore"):
        z = abs((value - mean) / sd)
    if not z <= Z_LIMIT:
        return (f"score {value:.6g} is {z:.3g} standard deviations (sd {sd:.3g}) from this router's mean {mean:.4g}: "
                f"normalised it is outside the 32-bit floats a router file stores (at most {Z_LIMIT:.3g} here)")
    return ""


def _check_observations(router: Router, prompts, candidates, scores) -> tuple[list[str], list[str], np.ndarray]:
    prompts, candidates = [str(p) for p in prompts], [str(c) for c in candidates]
    if not (len(prompts) == len(candidates) == len(scores)):
        raise RouterError(f"prompts, candidates and scores must have the same length; got {len(prompts)}, "
                          f"{len(candidates)} and {len(scores)}")
    unknown = sorted({c for c in candidates if c not in router.names})
    if unknown:
        raise RouterError(f"candidate(s) {unknown} are not in the router; it has {router.names}")
    try:
        raw = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise RouterError("scores must be numbers") from None
    if not np.isfinite(raw).all():
        raise RouterError("scores must be finite numbers (an unscored generation is simply left out)")
    for i, value in enumerate(raw):
        problem = score_problem(router, float(value))
        if problem:
            raise RouterError(f"{problem}; nothing was learnt" + (f" (observation {i + 1} of {len(raw)})"
                                                                 if len(raw) > 1 else ""))
    return prompts, candidates, raw


def _new_rows(router: Router, prompts: list[str], col: np.ndarray, z: np.ndarray, obs_idx: np.ndarray,
              embeddings) -> tuple[np.ndarray, np.ndarray]:
    """One memory row per distinct prompt (in order of first appearance): its embedding and the mean of its
    normalised scores per candidate (NaN where not scored)."""
    C = len(router.predictor.mu)
    first: dict[str, int] = {}
    for i in obs_idx:
        first.setdefault(prompts[i], len(first))
    E = _embed(router, prompts, embeddings)
    total, count = np.zeros((len(first), C)), np.zeros((len(first), C))
    new_x = np.zeros((len(first), E.shape[1]), dtype=np.float32)
    for i in obs_idx:
        r = first[prompts[i]]
        if count[r].sum() == 0:
            new_x[r] = E[i]
        total[r, col[i]] += z[i]
        count[r, col[i]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return new_x, np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def _count(value) -> int | None:
    return int(value) if is_finite(value) and 0 <= value < 2 ** 62 else None


def _selection_due(training: dict, observations: int) -> bool:
    """Whether k, shrinkage and the memory variant are chosen again: at the first update, then once the
    observations since the last choice reach ``RESELECT_SHARE`` of the memory rows it was made on."""
    last = training.get("online_selection")
    if not isinstance(last, dict) or _count(last.get("observations")) is None or _count(last.get("rows")) is None:
        return True
    since = observations - _count(last["observations"])
    return since < 0 or since >= max(1.0, RESELECT_SHARE * _count(last["rows"]))


def _grow(router: Router, new_x: np.ndarray, new_y: np.ndarray, observations: int) -> tuple[Memory, dict]:
    """The memory with the new rows merged or appended, its probes kept up and the new rows' difficulty in a memory
    that keeps them (``memory.grow``), from the nearest rows as many as the last selection chose."""
    mem0 = router.predictor.memory.for_update()
    rng = np.random.default_rng([len(mem0.X), observations])
    kd = _count((router.training or {}).get("online_difficulty_k")) or DEFAULT_DIFFICULTY_K
    return grow(mem0, new_x, new_y, rng, kd)


def _learn(router: Router, new_x: np.ndarray, new_y: np.ndarray, observations: int
           ) -> tuple[object, dict, dict, dict]:
    """Add the new rows to a kNN-family router's memory; choose k, alpha and the variant again when due
    (``_selection_due``, ``memory.select``), recalibrating budgets on the probe rows' leave-one-out predictions.
    Returns (predictor, calibration, report, training entries)."""
    pred = router.predictor
    mem, rep = _grow(router, new_x, new_y, observations)
    k = k_old = pred.neighbours
    alpha = float(pred.alpha)
    rep.update(memory_rows=int(len(mem.X)), k_before=k_old, alpha_before=alpha, memory_cap=MAX_ROWS)
    training = {}
    enough = len(mem.probe) >= min(len(mem.X), MIN_PROBES)
    selected = enough and _selection_due(router.training or {}, observations)
    if selected:
        k, alpha, mem.partial_weight, mem.D, mem.relative, loo_rep, loo_pred = select(mem, k_old)
        rep.update(loo_rep)
        training.update(online_selection={"observations": observations, "rows": int(len(mem.X))},
                        online_difficulty_k=loo_rep.get("difficulty_k"))
    rep.update(selected=bool(selected), k=k, alpha=alpha, partial_weight=mem.partial_weight,
               memory="relative" if mem.relative else "plain")
    new_pred = pred.with_memory(mem, k, alpha, mem.candidate_means())
    cal = router.calibration
    if selected:
        cal = _calibrate(router, new_pred, mem, loo_pred)
    return new_pred, cal, rep, training


def _calibrate(router: Router, pred, mem: Memory, loo_pred: np.ndarray) -> dict:
    """Budget calibration on leave-one-out predictions over the probe rows (added columns from anchors)."""
    q = np.sort(mem.probe)
    probe = router.copy(predictor=pred)
    z_cal = loo_pred
    if router.added:
        z_cal = probe._with_added(loo_pred, mem.X[q] @ router.reference.x[router.reference.anchors].T)
    Y_cal = np.concatenate([mem.Y[q].astype(np.float64), np.full((len(q), len(router.added)), np.nan)], axis=1)
    return calibrate(z_cal, Y_cal, router.cost, probe.mean_quality_z, router.norm)


def _lineage(router: Router) -> str:
    """The learnt router's lineage: kept from its training, else the fingerprint of the file it was loaded from,
    else a hash of what it was trained on (a router that was never saved)."""
    if router.lineage:
        return router.lineage
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps([router.candidates, router.norm, router.training, router.embedder_identity],
                             sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(router.predictor.mu, dtype=np.float64).tobytes())
    return digest.hexdigest()


def update_router(router: Router, prompts: list[str], candidates: list[str], scores: list[float],
                  embeddings: np.ndarray | None = None) -> tuple[Router, dict]:
    """A new router that has learnt from scored routed generations, and a report.

    ``prompts``, ``candidates`` and ``scores`` are parallel lists: one observation each, the score
    in the router's raw metric units (normalised here with ``router.norm``). ``embeddings`` (one row
    per observation) saves embedding the prompts again. The input router is not changed. A score that
    a router file cannot hold (``score_problem``), or an update whose result would not save and load
    again, is refused with one line and nothing is learnt."""
    prompts, candidates, raw = _check_observations(router, prompts, candidates, scores)
    scale_note = _scale_warning(router, raw)
    pred = router.predictor
    C, n = len(pred.mu), len(prompts)
    col = np.array([router.names.index(c) for c in candidates], dtype=int)
    learnable = col < C
    prev = router.training or {}
    observations = int(_count(prev.get("online_observations")) or 0) + n
    report: dict = {"observations": n, "predictor": pred.kind, "note": ""}
    notes = [scale_note] if scale_note else []
    if (~learnable).any():
        notes.append(f"{int((~learnable).sum())} observation(s) of candidates added from anchor scores "
                     f"({sorted({candidates[i] for i in np.nonzero(~learnable)[0]})}) were counted, not learnt: "
                     "added candidates are left as they are")
    new_pred, new_cal, learnt_rows, extra = pred, router.calibration, 0, {}
    if pred.memory is None:
        notes.append(pred.describe() + " cannot learn from single observations without refitting; its predictions "
                     "are unchanged (the observations are counted; retrain with every scored generation to use them)")
        report.update(learnt=0, rows_added=0, memory_rows=None)
    elif n == 0 or not learnable.any():
        report.update(learnt=0, rows_added=0, memory_rows=int(len(pred.memory.X)))
    else:
        z = (raw - float(router.norm["mean"])) / float(router.norm["std"])
        obs_idx = np.nonzero(learnable)[0]
        new_x, new_y = _new_rows(router, prompts, col, z, obs_idx, embeddings)
        new_pred, new_cal, rep, extra = _learn(router, new_x, new_y, observations)
        learnt_rows = len(new_x)
        report.update(learnt=int(len(obs_idx)), **rep)
    report["note"] = "; ".join(notes)
    training = {**prev, **extra, "lineage": _lineage(router), "online_observations": observations,
                "online_prompts": int(_count(prev.get("online_prompts")) or 0) + (
                    learnt_rows if pred.memory is not None else len(set(prompts))),
                "online_updates": int(_count(prev.get("online_updates")) or 0) + 1}
    if report.get("selected"):
        training.update(online_k=report["k"], online_alpha=report["alpha"], online_memory=report["memory"],
                        online_calibration="leave-one-out predictions over the kNN memory's probe prompts; "
                                           "mean qualities from the observed cells only")
        if report["memory"] == "relative":
            training["online_partial_weight"] = report["partial_weight"]
        else:
            training.pop("online_partial_weight", None)
    new = router.copy(predictor=new_pred, training=training, calibration=new_cal)
    try:
        check_router(new)
    except RouterFileError as exc:
        raise RouterError(f"this update was refused, as the learnt router would not save and load again ({exc}); "
                          "nothing was learnt") from None
    return new, report


# ---------------------------------------------------------------------------------------
def replay(router: Router, ds, budget: Budget | None = None, explore: float = 0.0, seed: int = 0, embedder=None,
           progress: Progress = None, embeddings: np.ndarray | None = None, batch: int = BATCH,
           holder: BudgetHolder | None = None) -> tuple[Router, list[dict], dict]:
    """Simulate routed generation on a scored table with bandit feedback.

    ``ds.prompts`` are routed in order, ``batch`` at a time, by the current router (greedy for
    ``budget``, or with a share ``explore`` of exploration, salted by ``seed``; with a ``holder``
    (``hold.BudgetHolder``) the budget's target average cost is held over the stream); only the chosen
    candidate's score (``ds.quality``, the mean over seeds) is revealed, and the router is updated
    after each batch. A prompt whose chosen candidate has no score is skipped and counted; so is one whose
    revealed score a router file cannot hold (``score_problem``: e.g. 1e39, past the 32-bit floats a router
    stores), counted apart as ``unlearnable`` with the first such score named in ``unlearnable_note``:
    a stream leaves out what cannot be learnt, as it leaves out unscored generations, so one bad row of a
    folder neither stops a long replay half-way nor breaks the learnt file, and the summary says so
    (``update_router`` refuses such a score instead, as its caller has just one observation to give).
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
    skipped = updates = unlearnable = 0
    unlearnable_note = ""
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
            problem = score_problem(current, q)
            if problem:
                skipped, unlearnable = skipped + 1, unlearnable + 1
                unlearnable_note = unlearnable_note or f"{problem} (prompt {p[:60]!r}, candidate '{name}')"
                continue
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
        "skipped": skipped, "unlearnable": unlearnable, "unlearnable_note": unlearnable_note,
        "updates": updates,
        "mean_ood_fallback": float(np.concatenate(fallback).mean()) if fallback else 0.0,
        "k": current.training.get("online_k"), "alpha": current.training.get("online_alpha"),
    }
    return current, rows, summary
