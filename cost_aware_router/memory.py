"""The kNN memory of a kNN-family predictor (``knn``, and ``knn_or_ridge`` with the kNN family): its rows,
how it predicts, how it is stored, how it grows by learning from feedback (``online.py``) and how its k,
shrinkage and variant are chosen again by leave-one-out error. ``Predictor.memory`` is a ``Memory``, or
None for ridge and MLP predictors.

A memory holds ``knn_x`` [N, d] (unit prompt embeddings) and ``knn_y`` [N, C] (normalised scores, NaN where
unscored). A memory that learnt from feedback also keeps ``knn_n`` [N, C] (how many cells were merged
into each scored cell: 1 unless merged), each row's difficulty once it has enough fully scored rows
(``knn_d`` [N] in a relative memory, which predicts with it and with the param ``partial_weight``;
``knn_dp`` in a plain one, which keeps it for the next choice between the two) and its **probes**: a
uniform sample of at most ``PROBES`` rows, each with its ``width(N)`` most similar other rows
(``knn_probe`` [P] row numbers, ``knn_nbr`` [P, W] their neighbours by decreasing similarity,
``knn_nbs`` [P, W] the similarities).

* ``knn_mean`` is the prediction: each candidate's similarity-weighted mean over a prompt's k nearest
  rows (relative to the rows' difficulty in a relative memory, bandit rows weighted by ``row_weights``).
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
  ``PROBE_WORK`` similarities per update. ``grow`` does the three, and ``new_difficulty``.
* ``select`` chooses the variant (plain or relative) and its (k, alpha, partial_weight) by
  leave-one-out error on the probe rows.

So an update compares its new rows with the memory once (new rows x N similarities) and touches
P x (W + new rows) list entries; the leave-one-out selection reads the probes' lists and never
searches the whole memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from .significance import ALPHAS, significant_best

MAX_ROWS = 32_768  # rows a memory grows to by learning; past it new rows merge into their nearest row
DUPLICATE_SIM = 0.995  # cosine similarity from which two prompts are one row (near-duplicates)
PROBES = 2_048  # rows whose neighbour lists are kept for the leave-one-out selection
K_GRID = (1, 2, 4, 8, 16, 32, 64, 128)  # the k a kNN predictor and the leave-one-out selection try
KMAX = max(K_GRID)  # neighbours kept per probe (the largest k tried)
PROBE_WORK = 1 << 23  # similarities computed per update to give an older memory its probes
PROBE_TENSORS = ("knn_probe", "knn_nbr", "knn_nbs")
LOO_CHUNK = 1024  # memory rows scored at a time in the leave-one-out pass (bounds an [chunk, N] matrix)
MIN_LOO_CELLS = 8  # fewer observed cells than this: alpha stays 0
PARTIAL_WEIGHTS = (1.0, 0.5, 0.25, 0.1)  # weight of a bandit row against a fully scored one
MIN_COMPLETE_ROWS = 8  # fewer fully scored rows than this: the plain memory


def knn_mean(sims: np.ndarray, Y: np.ndarray, k: int, mu: np.ndarray, D: np.ndarray | None = None,
             row_w: np.ndarray | None = None) -> np.ndarray:
    """Similarity-weighted mean of ``Y``'s rows over each query's ``k`` most similar columns of ``sims``
    (weights clipped at 1e-3, so -inf leaves a neighbour out); NaN cells are skipped, and a column
    with no scored neighbour gets ``mu``.

    With a per-row difficulty ``D`` [N] (a relative memory), each candidate's mean is taken over its
    neighbours' *relative* scores ``Y - D`` (each row weighted also by ``row_w``), and the neighbours' mean
    difficulty (similarity weights only) is added back: so the candidates compare on what they did relative
    to each prompt's difficulty, whichever prompts each was scored on. For rows that score every candidate,
    with ``D`` their own mean, this is exactly the plain mean."""
    k = max(1, min(k, sims.shape[1]))
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(sims, idx, axis=1), 1e-3, None)[:, :, None]  # [N,k,1]
    y = Y[idx]  # [N,k,C]
    m = ~np.isnan(y)
    if D is None:
        num = (np.where(m, y, 0.0) * w).sum(1)
        den = (m * w).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1e-12), mu[None, :])
    d = np.asarray(D, dtype=np.float64)[idx][:, :, None]  # [N,k,1]
    wr = w * (1.0 if row_w is None else np.asarray(row_w, dtype=np.float64)[idx][:, :, None])
    num = (np.where(m, y - d, 0.0) * wr).sum(1)
    den = (m * wr).sum(1)
    dbar = (d * w).sum(1) / w.sum(1)  # [N,1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12) + dbar, mu[None, :])


def row_weights(Y: np.ndarray, partial_weight: float) -> np.ndarray:
    """Weight of each memory row in a relative (difficulty-corrected) kNN mean: 1 for a row that
    scores every candidate, ``partial_weight`` for a row learnt from bandit feedback."""
    return np.where((~np.isnan(Y)).all(axis=1), 1.0, float(partial_weight))


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
    """A kNN memory. As a predictor holds it (``from_tensors``), what a file does not store is None; the
    working copy that learning updates (``for_update``) has every cell count and (possibly empty) probe
    lists."""

    X: np.ndarray  # [N, d] float32 unit prompt embeddings
    Y: np.ndarray  # [N, C] float32, NaN unscored
    cnt: np.ndarray | None = None  # [N, C] float32 cells merged into each scored cell (None: 1 per scored cell)
    D: np.ndarray | None = None  # [N] row difficulty, or None (not estimated: too few fully scored rows)
    probe: np.ndarray | None = None  # [P] int64 row numbers
    nbr: np.ndarray | None = None  # [P, W] int64 neighbours, most similar first
    nbs: np.ndarray | None = None  # [P, W] float32 their similarities
    relative: bool = False  # whether predictions use D (the relative memory)
    partial_weight: float = 1.0  # a relative memory's weight of a bandit row against a fully scored one

    # -- prediction and storage -------------------------------------------------------
    @cached_property
    def row_weights(self) -> np.ndarray | None:
        return row_weights(self.Y, self.partial_weight) if self.relative else None

    def predict(self, X: np.ndarray, k: int, mu: np.ndarray) -> np.ndarray:
        """Each candidate's kNN mean over the ``k`` rows most similar to each prompt (rows of ``X``)."""
        D = self.D if self.relative else None
        return knn_mean(X @ self.X.T, self.Y.astype(np.float64), k, mu, D, self.row_weights)

    def state(self, params: dict) -> tuple[dict[str, np.ndarray], dict]:
        """The tensors a router file stores, and ``params`` with ``partial_weight`` for a relative memory."""
        tensors = {"knn_x": self.X, "knn_y": self.Y}
        if self.D is not None:
            tensors["knn_d" if self.relative else "knn_dp"] = np.asarray(self.D).astype(np.float32)
        if self.relative:
            params = {**params, "partial_weight": float(self.partial_weight)}
        if self.cnt is not None:
            tensors["knn_n"] = self.cnt
        if self.probe is not None and len(self.probe) and self.nbr.shape[1]:
            tensors.update(zip(PROBE_TENSORS, (self.probe, self.nbr, self.nbs)))
        return tensors, params

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], params: dict) -> Memory:
        def f32(name):
            return None if tensors.get(name) is None else np.asarray(tensors[name], dtype=np.float32)

        relative = tensors.get("knn_d") is not None
        mem = cls(f32("knn_x"), f32("knn_y"), f32("knn_n"), f32("knn_d" if relative else "knn_dp"),
                  relative=relative, partial_weight=float(params.get("partial_weight", 1.0)))
        if all(tensors.get(t) is not None for t in PROBE_TENSORS):
            probe, nbr, nbs = (tensors[t] for t in PROBE_TENSORS)
            mem.probe, mem.nbr, mem.nbs = (np.asarray(probe).astype(np.int64), np.asarray(nbr).astype(np.int64),
                                           np.asarray(nbs, dtype=np.float32))
        return mem

    # -- learning ---------------------------------------------------------------------
    def for_update(self) -> Memory:
        """The working copy learning updates: a count for every cell (1 per scored cell where none were kept),
        probe lists (empty where none were kept), difficulties as float64."""
        X, Y = np.asarray(self.X, dtype=np.float32), np.asarray(self.Y, dtype=np.float32)
        cnt = (~np.isnan(Y)).astype(np.float32) if self.cnt is None else np.asarray(self.cnt, dtype=np.float32)
        D = None if self.D is None else np.asarray(self.D, dtype=np.float64)
        if self.probe is not None:
            probe, nbr, nbs = self.probe, self.nbr, self.nbs
        else:
            probe, nbr, nbs = (np.zeros(0, np.int64), np.zeros((0, width(len(X))), np.int64),
                               np.zeros((0, width(len(X))), np.float32))
        return replace(self, X=X, Y=Y, cnt=cnt, D=D, probe=probe, nbr=nbr, nbs=nbs)

    def candidate_means(self) -> np.ndarray:
        """Each candidate's count-weighted mean over a working copy; in a relative memory, the mean of the scores
        relative to each row's difficulty, at the memory's mean difficulty."""
        if self.relative:
            return weighted_means(self.Y.astype(np.float64) - self.D[:, None], self.cnt) + float(self.D.mean())
        return weighted_means(self.Y, self.cnt)


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

def grow(mem: Memory, new_x: np.ndarray, new_y: np.ndarray, rng: np.random.Generator, kd: int
         ) -> tuple[Memory, dict]:
    """A working copy with the new rows merged or appended (``add_rows``), its probes kept up, and the new rows'
    difficulty (from their ``kd`` nearest rows) in a memory that keeps them; and a report."""
    mem2, S_app, merged = add_rows(mem, new_x, new_y)
    mem2 = top_up(update_probes(mem2, len(mem.X), S_app, rng), rng)
    if mem2.D is not None:
        complete = ~np.isnan(mem2.Y).any(axis=1)
        mu_c = weighted_means(mem2.Y[complete], mem2.cnt[complete])
        mem2.D = new_difficulty(mem2, len(mem.X), S_app, mu_c, kd)
    return mem2, {"rows_added": len(mem2.X) - len(mem.X), "rows_merged": merged, "probes": int(len(mem2.probe))}


# ---------------------------------------------------------------------------------------
# choosing k, alpha and the variant: leave-one-out kNN over the memory, on the probe rows: every row while the
# memory holds at most PROBES rows, else a uniform sample of them
def _probe_lists(mem: Memory, kmax: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(probe rows q in increasing order, their kmax most similar other rows by decreasing similarity and the
    weights ``knn_mean`` gives them: [Q, kmax] indices, [Q, kmax] weights)."""
    order = np.argsort(mem.probe, kind="stable")
    return mem.probe[order], (mem.nbr[order, :kmax], np.clip(mem.nbs[order, :kmax].astype(np.float64), 1e-3, None))


def _chunks(nb: tuple[np.ndarray, np.ndarray]):
    """(positions among the probe rows, their neighbours [n, kmax], weights [n, kmax, 1]) a chunk of rows at a time
    (bounds the [chunk, kmax, C] arrays the leave-one-out sums build)."""
    idx, w = nb
    for s in range(0, len(idx), LOO_CHUNK):
        rows = np.arange(s, min(len(idx), s + LOO_CHUNK))
        yield rows, idx[rows], w[rows][:, :, None]


def _row_difficulty(nb, q: np.ndarray, Y: np.ndarray, mu: np.ndarray, grid: list[int]) -> tuple[np.ndarray, dict]:
    """Each probe row's difficulty: how far its scores sit above the candidate means, shared by every
    candidate. A row scoring every candidate has its own (its mean offset). A row learnt from bandit
    feedback scores one candidate, whose score mixes the prompt's difficulty with that candidate's
    relative quality; its difficulty is taken from its nearest other rows instead (their offsets
    weighted by similarity and by how many candidates each scored), with the number of neighbours
    chosen by leave-one-out error of that estimate. Returns (difficulty [Q], report)."""
    e, n = offsets(Y, mu)
    complete = n == Y.shape[1]
    if complete[q].all():
        return e[q], {"difficulty_k": None}
    num = {k: np.zeros(len(q)) for k in grid}
    den = {k: np.zeros(len(q)) for k in grid}
    for rows, idx, w in _chunks(nb):
        wn = w[:, :, 0] * n[idx]
        cn, cd = np.cumsum(wn * e[idx], axis=1), np.cumsum(wn, axis=1)
        for k in grid:
            num[k][rows], den[k][rows] = cn[:, k - 1], cd[:, k - 1]
    eq, nq = e[q], n[q]
    err = {k: float(np.sum(nq * (np.where(den[k] > 0, num[k] / np.maximum(den[k], 1e-12), 0.0) - eq) ** 2))
           for k in grid}
    kd = min(grid, key=lambda k: (err[k], k))
    dbar = np.where(den[kd] > 0, num[kd] / np.maximum(den[kd], 1e-12), 0.0)
    return np.where(complete[q], eq, dbar), {"difficulty_k": int(kd)}


def _loo_sums(nb, R: np.ndarray, obs: np.ndarray, complete: np.ndarray, D: np.ndarray, pws, grid: list[int]):
    """For every probe row and (k, partial_weight): the weighted sums (numerator, denominator [Q, C]) of its k
    nearest other rows' scores relative to their difficulty, bandit rows weighted by partial_weight; and per k
    the neighbours' mean difficulty [Q]. The sums are taken once per block of neighbours between two k of the
    grid, apart for fully scored and bandit rows, so every partial weight is a linear mix of the same sums."""
    Q, C, G = len(nb[0]), R.shape[1], len(grid)
    Rf, M = np.nan_to_num(R, nan=0.0), obs.astype(np.float64)
    starts = np.asarray([0, *grid[:-1]])  # block g holds neighbours starts[g] .. grid[g] - 1
    split = any(pw != 1.0 for pw in pws)
    parts = {p: (np.zeros((Q, G, C)), np.zeros((Q, G, C))) for p in (("complete", "bandit") if split else ("all",))}
    wsum, wdsum = np.zeros((Q, G)), np.zeros((Q, G))
    for rows, idx, w in _chunks(nb):
        wsum[rows] = np.add.reduceat(w[:, :, 0], starts, axis=1)
        wdsum[rows] = np.add.reduceat(w[:, :, 0] * D[idx], starts, axis=1)
        gR, gM = Rf[idx], M[idx]
        wc = w * complete[idx][:, :, None] if split else w
        for p, ww in (("complete", wc), ("bandit", w - wc)) if split else (("all", w),):
            parts[p][0][rows] = np.add.reduceat(gR * ww, starts, axis=1)
            parts[p][1][rows] = np.add.reduceat(gM * ww, starts, axis=1)
    cum = {p: (np.cumsum(num, axis=1), np.cumsum(den, axis=1)) for p, (num, den) in parts.items()}
    cw, cdw = np.cumsum(wsum, axis=1), np.cumsum(wdsum, axis=1)
    rel, dsum = {}, {}
    for g, k in enumerate(grid):
        dsum[k] = cdw[:, g] / cw[:, g]
        for pw in pws:
            if split:
                (nc, dc), (nbd, db) = cum["complete"], cum["bandit"]
                rel[(k, pw)] = (nc[:, g] + pw * nbd[:, g], dc[:, g] + pw * db[:, g])
            else:
                rel[(k, pw)] = (cum["all"][0][:, g], cum["all"][1][:, g])
    return rel, dsum


def _fit_variant(nb, q: np.ndarray, Y: np.ndarray, D: np.ndarray, cnt: np.ndarray, pws, grid: list[int], k_old: int
                 ) -> tuple[int, float, float, dict, np.ndarray]:
    """Choose (k, alpha, partial_weight) for one memory variant by leave-one-out error over the probe rows'
    observed cells: every cell's score less its row's difficulty ``D`` (all zero: the plain memory), predicted
    from the k most similar other rows (``knn_mean``), bandit rows weighted by ``partial_weight``. alpha > 0 is
    kept only if its gain over the candidate means beats zero by more than two standard errors. Returns (k,
    alpha, partial_weight, report, leave-one-out predictions [Q, C] of every probe row's cells)."""
    obs = ~np.isnan(Y)
    complete = obs.all(axis=1)
    R = Y.astype(np.float64) - D[:, None]
    rel, dsum = _loo_sums(nb, R, obs, complete, D, pws, grid)
    r, c = np.nonzero(obs[q])
    t = R[q[r], c]
    n_obs = len(t)
    # each cell's candidate mean without that cell (count-weighted: a merged cell counts as the cells it holds):
    # the prediction with no neighbour and the shrinkage target
    cw = np.where(obs, cnt, 0.0)
    total, count, own = (np.where(obs, R, 0.0) * cw).sum(axis=0), cw.sum(axis=0), cw[q[r], c]
    left = count[c] - own
    mu_loo = np.where(left > 0, (total[c] - own * t) / np.where(left > 0, left, 1.0), 0.0)
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
    mu_rel = weighted_means(R, cnt)
    relp = np.where(den > 0, num / np.maximum(den, 1e-12), mu_rel[None, :])
    return k, alpha, pw, rep, mu_rel[None, :] + alpha * (relp - mu_rel[None, :]) + dsum[k][:, None]


def _relative_error(pred: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per fully scored row: squared error of the predicted against the scored differences between
    candidates (both centred on the row), the part of a prediction that decides a route."""
    P, T = pred - pred.mean(axis=1, keepdims=True), Y - Y.mean(axis=1, keepdims=True)
    return ((P - T) ** 2).sum(axis=1)


def select(mem: Memory, k_old: int
                    ) -> tuple[int, float, float, np.ndarray | None, bool, dict, np.ndarray]:
    """Choose the memory's variant and its (k, alpha, partial_weight), on the probe rows (``memory.py``).

    * plain: each candidate's prediction is the similarity-weighted mean of its neighbours' scores,
      whichever prompts each candidate was scored on (the memory as training builds it);
    * relative: the neighbours' scores less each row's difficulty (``_row_difficulty``), bandit rows
      weighted by ``partial_weight``, with the neighbours' mean difficulty added back.

    Within each, (k, alpha, partial_weight) are chosen by leave-one-out error (``_fit_variant``).
    Between them, by what decides a route: on the fully scored probe rows, the leave-one-out error of
    the predicted differences between candidates; relative is kept only when it beats plain there by
    more than one standard error (a plain memory is what training makes). The rows' difficulties are
    kept either way (a plain memory keeps them for its next choice): the probe rows' estimated again,
    the fully scored rows' their own offsets, the others' as they were. A memory of more rows than
    probes that has none yet (a file from an older version) stays plain.

    Returns (k, alpha, partial_weight, row difficulties [N] or None, whether relative, a report,
    leave-one-out predictions [Q, C] of the probe rows' cells with that setting)."""
    Y, cnt = mem.Y, mem.cnt
    N = len(Y)
    grid = [k for k in K_GRID if k < N] or [1]
    q, nb = _probe_lists(mem, max(grid))
    obs = ~np.isnan(Y)
    rep: dict = {"loo_observations": int(obs[q].sum()), "loo_rows": int(len(q)), "memory_rows": int(N)}
    if N < 2:
        return k_old, 0.0, 1.0, mem.D, False, {**rep, "loo_note": "fewer than 2 memory rows"}, \
            np.tile(weighted_means(Y, cnt), (len(q), 1))
    complete = obs.all(axis=1)
    cq = complete[q]
    plain = _fit_variant(nb, q, Y, np.zeros(N), cnt, (1.0,), grid, k_old)
    rep.update(memory="plain", **plain[3])
    if complete.all() or cq.sum() < MIN_COMPLETE_ROWS:
        return *plain[:3], mem.D, False, {**rep, "memory_note": f"{int(cq.sum())} fully scored rows"}, plain[4]
    if len(q) < N and mem.D is None:
        return *plain[:3], None, False, {**rep, "memory_note": "more rows than probes and no row difficulties: "
                                         "the memory stays plain"}, plain[4]
    # difficulty is measured against the fully scored rows' candidate means: the means over every
    # observed cell lean towards the prompts each candidate happened to be chosen for
    mu_c = weighted_means(Y[complete], cnt[complete])
    D = np.zeros(N) if mem.D is None else np.asarray(mem.D, dtype=np.float64).copy()
    D[q], drep = _row_difficulty(nb, q, Y, mu_c, grid)
    D[complete] = offsets(Y[complete], mu_c)[0]
    relative = _fit_variant(nb, q, Y, D, cnt, PARTIAL_WEIGHTS, grid, k_old)
    e_plain = _relative_error(plain[4][cq], Y[q][cq])
    e_rel = _relative_error(relative[4][cq], Y[q][cq])
    best, _ = significant_best(-e_plain, [("relative", -e_rel)], margin=1.0)
    rep.update(difference_error_plain=float(e_plain.mean()), difference_error_relative=float(e_rel.mean()),
               difference_rows=int(cq.sum()), **drep)
    if best is None:
        return *plain[:3], D, False, rep, plain[4]
    rep.update(memory="relative", **relative[3])
    return *relative[:3], D, True, rep, relative[4]
