"""The kNN memory that learns from feedback (``online.py``): bounded in size, and cheap to update.

A learnt router's memory holds ``knn_x`` [N, d] (unit prompt embeddings), ``knn_y`` [N, C]
(normalised scores, NaN where unscored), ``knn_n`` [N, C] (how many cells were merged into each
scored cell: 1 unless merged), each row's difficulty once it has enough fully scored rows
(``knn_d`` [N] in a relative memory, which predicts with it; ``knn_dp`` in a plain one, which keeps
it for the next choice between the two, ``online.py``) and its **probes**: a uniform sample of at
most ``PROBES`` rows, each with its ``width(N)`` most similar other rows (``knn_probe`` [P] row
numbers, ``knn_nbr`` [P, W] their neighbours by decreasing similarity, ``knn_nbs`` [P, W] the
similarities).

* ``add_rows``: a new prompt's row is **merged** into its most similar row when the two prompts are
  near-duplicates (cosine similarity at least ``DUPLICATE_SIM``) or when the memory already holds
  ``MAX_ROWS`` rows; otherwise it is appended. Merging averages each cell weighted by its count and
  adds the counts, so each candidate's count-weighted mean over the memory (``weighted_means``) is
  exactly what it would be had the row been appended. The merged row keeps its embedding (so the
  probes' lists stay exact) and its difficulty. A memory trained on more than ``MAX_ROWS`` prompts
  is never shrunk: every new row merges.
* ``update_probes``: each appended row enters the probes' neighbour lists where it is near enough,
  and joins the probes by reservoir sampling (every row while the memory holds at most ``PROBES``,
  so there the lists are every row's exact neighbours). ``top_up`` gives a memory without probes
  (a trained router, a file from an older version) its probes a batch at a time, at most
  ``PROBE_WORK`` similarities per update.

So an update compares its new rows with the memory once (new rows x N similarities) and touches
P x (W + new rows) list entries; the leave-one-out selection of k, shrinkage and the memory variant
(``online.py``) reads the probes' lists and never searches the whole memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .predictors import PROBE_TENSORS, KNNPredictor

MAX_ROWS = 32_768  # rows a memory grows to by learning; past it new rows merge into their nearest row
DUPLICATE_SIM = 0.995  # cosine similarity from which two prompts are one row (near-duplicates)
PROBES = 2_048  # rows whose neighbour lists are kept for the leave-one-out selection
KMAX = max(KNNPredictor.K_GRID)  # neighbours kept per probe (the largest k tried)
PROBE_WORK = 1 << 23  # similarities computed per update to give an older memory its probes


def width(n: int) -> int:
    """Length of a probe's neighbour list in a memory of ``n`` rows: every other row, at most ``KMAX``."""
    return max(0, min(KMAX, n - 1))


def weighted_means(V: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Column means of ``V`` [N, C] with each cell counted ``cnt`` times (NaN cells not at all); 0 for a column
    with nothing scored."""
    w = np.where(np.isnan(V), 0.0, np.asarray(cnt, dtype=np.float64))
    den = w.sum(axis=0)
    tot = (np.where(w > 0, V, 0.0).astype(np.float64) * w).sum(axis=0)
    return np.where(den > 0, tot / np.where(den > 0, den, 1.0), 0.0)


def offsets(Y: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean offset from the candidate means ``mu`` over its scored cells, and how many it scored."""
    n = (~np.isnan(Y)).sum(axis=1).astype(np.float64)
    e = np.where(n > 0, np.nansum(Y - mu[None, :], axis=1) / np.maximum(n, 1), 0.0)
    return e, n


@dataclass
class Memory:
    X: np.ndarray  # [N, d] float32
    Y: np.ndarray  # [N, C] float32, NaN unscored
    cnt: np.ndarray  # [N, C] float32 cells merged into each scored cell
    D: np.ndarray | None  # [N] float64 row difficulty, or None (not estimated: too few fully scored rows)
    probe: np.ndarray  # [P] int64 row numbers
    nbr: np.ndarray  # [P, W] int64 neighbours, most similar first
    nbs: np.ndarray  # [P, W] float32 their similarities
    relative: bool = False  # whether predictions use D (the relative memory)

    @classmethod
    def of(cls, pred) -> Memory:
        X, Y = np.asarray(pred.X, dtype=np.float32), np.asarray(pred.Y, dtype=np.float32)
        cnt = (~np.isnan(Y)).astype(np.float32) if pred.cnt is None else np.asarray(pred.cnt, dtype=np.float32)
        D = pred.D if pred.D is not None else pred.D_plain
        D = None if D is None else np.asarray(D, dtype=np.float64)
        if pred.probes is not None:
            probe, nbr, nbs = pred.probes
        else:
            probe, nbr, nbs = (np.zeros(0, np.int64), np.zeros((0, width(len(X))), np.int64),
                               np.zeros((0, width(len(X))), np.float32))
        return cls(X, Y, cnt, D, probe, nbr, nbs, pred.D is not None)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"knn_x": self.X, "knn_y": self.Y, "knn_n": self.cnt}
        if self.D is not None:
            out["knn_d" if self.relative else "knn_dp"] = self.D.astype(np.float32)
        if len(self.probe) and self.nbr.shape[1]:
            out.update(zip(PROBE_TENSORS, (self.probe, self.nbr, self.nbs)))
        return out


def _merge(y: np.ndarray, c: np.ndarray, y_new: np.ndarray, c_new: np.ndarray) -> None:
    """Merge row (``y_new``, ``c_new``) into row (``y``, ``c``) in place: count-weighted means of the cells."""
    s = ~np.isnan(y_new)
    had = ~np.isnan(y[s])
    yo, co = np.where(had, y[s], 0.0).astype(np.float64), np.where(had, c[s], 0.0)
    c[s] = co + c_new[s]
    y[s] = (co * yo + c_new[s] * y_new[s].astype(np.float64)) / c[s]


def add_rows(mem: Memory, new_x: np.ndarray, new_y: np.ndarray, cap: int | None = None
             ) -> tuple[Memory, np.ndarray, int]:
    """The memory with new rows (``new_x`` [m, d], ``new_y`` [m, C]) merged or appended, in order (see the
    module). Returns (memory, similarities [a, N'] of the ``a`` appended rows, the last rows of the new
    memory, to every row of it; the number of rows merged). ``mem`` is not changed."""
    N0, m = len(mem.X), len(new_x)
    cap = MAX_ROWS if cap is None else cap
    S_old = new_x @ mem.X.T if N0 else np.zeros((m, 0), np.float32)
    S_new = new_x @ new_x.T
    Y, cnt = mem.Y.copy(), mem.cnt.copy()
    by, bn = new_y.astype(np.float32), (~np.isnan(new_y)).astype(np.float32)
    best_j = S_old.argmax(axis=1) if N0 else np.full(m, -1)
    best_s = S_old.max(axis=1) if N0 else np.full(m, -np.inf)
    appended: list[int] = []
    for r in range(m):
        j, s = int(best_j[r]), float(best_s[r])
        if appended:
            t = int(np.argmax(S_new[r, appended]))
            if S_new[r, appended[t]] > s:
                j, s = N0 + t, float(S_new[r, appended[t]])
        if j >= 0 and (s >= DUPLICATE_SIM or N0 + len(appended) >= cap):
            if j < N0:
                _merge(Y[j], cnt[j], by[r], bn[r])
            else:
                _merge(by[appended[j - N0]], bn[appended[j - N0]], by[r], bn[r])
        else:
            appended.append(r)
    a = np.asarray(appended, dtype=np.int64)
    S_app = np.concatenate([S_old[a], S_new[np.ix_(a, a)]], axis=1)
    D = None if mem.D is None else np.concatenate([mem.D, np.zeros(len(a))])
    new = replace(mem, X=np.concatenate([mem.X, new_x[a]]) if len(a) else mem.X, Y=np.concatenate([Y, by[a]]),
                  cnt=np.concatenate([cnt, bn[a]]), D=D)
    return new, S_app, m - len(a)


def _top(sims: np.ndarray, w: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``sims`` the ``w`` largest (their ``ids``, default the column numbers) by decreasing value."""
    if sims.shape[1] > w:
        part = np.argpartition(-sims, w - 1, axis=1)[:, :w] if w else np.zeros((len(sims), 0), np.int64)
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    s = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    part = np.take_along_axis(part, order, axis=1)
    return (part if ids is None else np.take_along_axis(ids, part, axis=1)).astype(np.int64), \
        np.take_along_axis(s, order, axis=1).astype(np.float32)


def update_probes(mem: Memory, n_before: int, S_app: np.ndarray, rng: np.random.Generator) -> Memory:
    """The probes after rows ``n_before`` .. N-1 were appended (``S_app``: their similarities to every row): the
    new rows enter each probe's list where near enough, and join the probes by reservoir sampling."""
    N, a = len(mem.X), len(S_app)
    w = width(N)
    nbr, nbs = (mem.nbr, mem.nbs) if len(mem.probe) else (np.zeros((0, w), np.int64), np.zeros((0, w), np.float32))
    if a and len(mem.probe):
        ids = np.broadcast_to(np.arange(n_before, N), (len(mem.probe), a))
        nbr, nbs = _top(np.concatenate([nbs, S_app[:, mem.probe].T], axis=1), w,
                        np.concatenate([nbr, ids], axis=1))
    every = len(mem.probe) == n_before  # every earlier row is a probe
    slots: list[int] = list(range(len(mem.probe)))  # >= 0: a kept probe's position; < 0: -1 - appended row
    for t in range(a):
        i = n_before + t
        if every and i < PROBES:
            slots.append(-1 - t)
        elif rng.random() < PROBES / (i + 1):
            if len(slots) >= PROBES:
                slots[int(rng.integers(len(slots)))] = -1 - t
            else:
                slots.append(-1 - t)
    new = [-1 - s for s in slots if s < 0]
    if new:
        S = S_app[new].copy()
        S[np.arange(len(new)), n_before + np.asarray(new)] = -np.inf
        new_nbr, new_nbs = _top(S, w)
    kept = [s for s in slots if s >= 0]
    probe = np.concatenate([mem.probe[kept], n_before + np.asarray(new, dtype=np.int64)])
    nbr = np.concatenate([nbr[kept], new_nbr]) if new else nbr[kept]
    nbs = np.concatenate([nbs[kept], new_nbs]) if new else nbs[kept]
    return replace(mem, probe=probe.astype(np.int64), nbr=nbr.reshape(len(probe), w), nbs=nbs.reshape(len(probe), w))


def top_up(mem: Memory, rng: np.random.Generator, work: int = PROBE_WORK) -> Memory:
    """A memory with fewer probes than ``min(PROBES, N)`` gets more, at most ``work`` similarities' worth."""
    N = len(mem.X)
    w = width(N)
    missing = min(PROBES, N) - len(mem.probe)
    if missing <= 0 or w == 0:
        return mem
    pool = np.setdiff1d(np.arange(N), mem.probe)
    take = min(missing, max(1, work // N))
    rows = pool if take >= len(pool) else np.sort(rng.choice(pool, size=take, replace=False))
    S = mem.X[rows] @ mem.X.T
    S[np.arange(len(rows)), rows] = -np.inf
    nbr, nbs = _top(S, w)
    return replace(mem, probe=np.concatenate([mem.probe, rows]).astype(np.int64),
                   nbr=np.concatenate([mem.nbr.reshape(-1, w), nbr]), nbs=np.concatenate([mem.nbs.reshape(-1, w), nbs]))


def new_difficulty(mem: Memory, n_before: int, S_app: np.ndarray, mu: np.ndarray, kd: int) -> np.ndarray:
    """Row difficulties after rows ``n_before`` .. N-1 were appended to a memory that keeps them: a fully scored row's
    is its own mean offset from ``mu`` (the fully scored rows' candidate means); an appended row's the
    similarity- and count-weighted mean offset of its ``kd`` nearest other rows; other rows keep theirs."""
    e, n = offsets(mem.Y, mu)
    D = np.asarray(mem.D, dtype=np.float64).copy()
    kd = min(int(kd), len(mem.X) - 1)
    if len(S_app) and kd >= 1:
        S = S_app.copy()
        S[np.arange(len(S)), n_before + np.arange(len(S))] = -np.inf
        idx = np.argpartition(-S, kd - 1, axis=1)[:, :kd]
        wn = np.clip(np.take_along_axis(S, idx, axis=1), 1e-3, None) * n[idx]
        den = wn.sum(axis=1)
        D[n_before:] = np.where(den > 0, (wn * e[idx]).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    complete = n == mem.Y.shape[1]
    D[complete] = e[complete]
    return D
