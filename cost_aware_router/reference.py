"""The router's reference set: a sample of its training prompts kept in the router file.

It serves three things:

* **out-of-distribution fallback** -- a prompt's distance to the training prompts is one minus
  the mean cosine similarity of its ``k`` nearest reference prompts. Up to ``start`` (the 99th
  percentile of the training prompts' own leave-one-out distances, at least ``OOD_MIN_START``) predictions are used as
  they are; from there to ``full`` they are moved linearly toward each candidate's average
  quality, and beyond ``full`` the router chooses as if it knew nothing about the prompt: the
  candidate that is best on average for the budget.
* **anchor prompts** -- a representative subset (one prompt per spherical k-means cluster) for
  which a new candidate can be scored and added without retraining (``extend.py``). The shipped
  router's anchors are shown in public demos (the Anchor Prompts node, ``cost-aware-router
  anchors``, the add_candidate example workflow), so ``scripts/build_default_router.py`` chooses
  them with ``Reference.with_demo_safe_anchors``: each cluster is represented by its nearest prompt
  that is fit for a public demo (``demo_safe``: no prompt that names a real person or mentions
  drugs, violence or sexual content, by the whole-word, case-insensitive blocklist
  ``DEMO_BLOCKLIST``); only when no such prompt is left does a cluster take its nearest prompt of
  any kind. The clusters, the reference rows and the out-of-distribution figures do not change, nor
  does the file format. A router trained on a user's own prompts keeps its plain medoids.
* **calibration after a change** -- the reference prompts' out-of-fold predictions and true
  (normalised) scores let a changed router recompute its budget calibration.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

MAX_REFERENCE = 2048
N_ANCHORS = 128
OOD_K = 8
OOD_START_PERCENTILE = 99.0
# Floors in cosine distance (one minus mean top-k similarity, MiniLM-scale): a router trained on
# near-identical prompts (templates) would otherwise call a mere rewording out of distribution.
# Paraphrases sit around 0.1-0.3 and unrelated prompts around 0.85-1.0.
OOD_MIN_START = 0.5
OOD_MIN_RAMP = 0.15

# Words and phrases that keep a prompt from being an anchor (matched as whole words, any case):
# real people (names in the shipped rating tables and other public figures often found in prompt
# collections, and titles that name one person), drugs, alcohol and tobacco, violence and gore, and
# sexual content. A name list cannot be complete: it is tuned to the prompts the default router is
# built from (data/) and errs on the side of leaving a prompt out.
DEMO_BLOCKLIST = (
    # real people
    "biden", "obama", "barak", "barack", "trump", "stalin", "hitler", "putin", "sartre", "pope", "henry cavill",
    "cavill", "tony danza", "bill gates", "jason statham", "statham", "elon musk", "musk", "kardashian",
    "taylor swift", "zuckerberg", "queen elizabeth", "churchill", "lenin", "mao", "gandhi", "einstein", "kanye",
    "beyonce", "rihanna", "keanu", "nicolas cage", "tom cruise", "emma watson", "scarlett johansson", "walter white",
    "kelly family", "president", "prime minister",
    # drugs, alcohol, tobacco
    "drug", "drugs", "cocaine", "heroin", "meth", "weed", "marijuana", "cannabis", "lsd", "stoned", "drunk",
    "alcohol", "smoking", "smoke", "cigarette", "cigarettes", "cigar", "breaking bad",
    # violence, gore, weapons, death
    "blood", "bloody", "bloodied", "bloodborne", "gore", "gory", "punch", "punches", "punching", "kill", "kills",
    "killing", "killer", "murder", "gun", "guns", "shoot", "shooting", "war", "warfare", "fight", "fights",
    "fighting", "attack", "attacks", "assassin", "bodies", "corpse", "dead", "death", "suicide", "jumping off",
    "torture", "weapon", "weapons", "axe", "bomb", "atomic", "nuclear", "explosion", "terrified", "horrified",
    "disease", "deformed", "apocalypse",
    # sexual content
    "nude", "naked", "nsfw", "sexy", "erotic", "lingerie",
)
_BLOCKED = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(DEMO_BLOCKLIST, key=len, reverse=True))
                      + r")\b", re.IGNORECASE)


def demo_safe(prompt: str) -> bool:
    """Whether a prompt may be shown as an anchor in a public demo (no word of ``DEMO_BLOCKLIST``)."""
    return _BLOCKED.search(prompt) is None


def reference_rows(n: int, seed: int = 0) -> np.ndarray:
    """Which of ``n`` training rows a reference set keeps: all of them up to ``MAX_REFERENCE``, else a
    seeded sample of that many (in row order)."""
    if n > MAX_REFERENCE:
        return np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE, replace=False))
    return np.arange(n)


def top_k_distance(E: np.ndarray, R: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """One minus the mean cosine similarity of each row of ``E`` to its ``k`` nearest rows of ``R``."""
    if len(E) == 0:
        return np.zeros(0)
    S = np.asarray(E, dtype=np.float32) @ np.asarray(R, dtype=np.float32).T
    if exclude_self:
        np.fill_diagonal(S, -np.inf)
    k = max(1, min(k, R.shape[0] - (1 if exclude_self else 0)))
    top = -np.partition(-S, k - 1, axis=1)[:, :k]
    return 1.0 - top.mean(axis=1).astype(np.float64)


def spherical_kmeans_medoids(X: np.ndarray, n: int, seed: int = 0, iters: int = 25,
                             allowed: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``n`` representative rows: the row nearest each spherical k-means centroid. With
    ``allowed`` (a boolean per row), each centroid takes its nearest allowed row not yet taken, and
    only a centroid with no allowed row left takes its nearest row of any kind."""
    n = min(n, len(X))
    if n >= len(X):
        return np.arange(len(X))
    rng = np.random.default_rng(seed)
    # k-means++ seeding on cosine distance
    centres = [int(rng.integers(len(X)))]
    d = 1.0 - X @ X[centres[0]]
    for _ in range(1, n):
        p = np.clip(d, 0, None) ** 2
        nxt = int(rng.choice(len(X), p=p / p.sum())) if p.sum() > 0 else int(rng.integers(len(X)))
        centres.append(nxt)
        d = np.minimum(d, 1.0 - X @ X[nxt])
    C = X[centres].astype(np.float64)
    for _ in range(iters):
        assign = np.argmax(X @ C.T, axis=1)
        for j in range(n):
            members = X[assign == j]
            if len(members):
                c = members.sum(axis=0)
                C[j] = c / (np.linalg.norm(c) or 1.0)
    sims = X @ C.T
    ok = np.ones(len(X), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    chosen: list[int] = []
    taken = np.zeros(len(X), dtype=bool)
    for j in np.argsort(-np.bincount(np.argmax(sims, axis=1), minlength=n), kind="stable"):
        order = np.argsort(-sims[:, j])
        i = next((int(i) for i in order if not taken[i] and ok[i]), None)
        if i is None:
            i = int(next(i for i in order if not taken[i]))
        taken[i] = True
        chosen.append(i)
    return np.array(sorted(chosen))


@dataclass
class Reference:
    x: np.ndarray            # [R, d] unit-norm embeddings of reference prompts
    oof: np.ndarray          # [R, C] out-of-fold normalised predictions of the router's trained candidates
    y: np.ndarray            # [R, C] true normalised scores (NaN where not scored)
    anchors: np.ndarray      # indices into the reference rows
    anchor_prompts: list[str]
    k: int = OOD_K
    start: float = 1.0       # distance where the fallback begins
    full: float = 2.0        # distance where predictions are fully replaced by candidate averages
    median: float = 0.0      # median leave-one-out distance of the training prompts

    @classmethod
    def build(cls, X: np.ndarray, oof: np.ndarray, Y: np.ndarray, prompts: list[str], seed: int = 0,
              n_anchors: int = N_ANCHORS) -> Reference:
        X = np.asarray(X, dtype=np.float32)
        rows = reference_rows(len(X), seed)
        x = X[rows]
        loo = top_k_distance(x, x, OOD_K, exclude_self=True) if len(x) > 1 else np.zeros(len(x))
        median = float(np.median(loo)) if len(loo) else 0.0
        start = max(float(np.percentile(loo, OOD_START_PERCENTILE)) if len(loo) else 1.0, OOD_MIN_START)
        # full fallback as far beyond the start as the start is beyond the median
        full = start + max(start - median, OOD_MIN_RAMP)
        anchors = spherical_kmeans_medoids(x, min(n_anchors, max(1, len(x) // 2)), seed)
        return cls(x=x, oof=np.asarray(oof, dtype=np.float32)[rows], y=np.asarray(Y, dtype=np.float32)[rows],
                   anchors=anchors, anchor_prompts=[prompts[int(rows[i])] for i in anchors],
                   k=OOD_K, start=start, full=full, median=median)

    def with_demo_safe_anchors(self, prompts: list[str], seed: int = 0) -> Reference:
        """The same reference set with its anchors chosen again as ``build`` chose them, each cluster
        represented by its nearest prompt fit for a public demo (``demo_safe``). ``prompts`` are the
        training prompts in the order ``build`` got them, and ``seed`` is the one it used."""
        rows = reference_rows(len(prompts), seed)
        if len(rows) != len(self.x):
            raise ValueError(f"{len(prompts)} training prompts do not give this reference set's {len(self.x)} rows")
        n = len(self.anchors)
        plain = spherical_kmeans_medoids(self.x, n, seed)
        if [prompts[int(rows[i])] for i in plain] != list(self.anchor_prompts):
            raise ValueError("these are not the prompts (or the seed) this reference set was built from")
        allowed = np.array([demo_safe(prompts[int(r)]) for r in rows], dtype=bool)
        anchors = spherical_kmeans_medoids(self.x, n, seed, allowed=allowed)
        return dataclasses.replace(self, anchors=anchors, anchor_prompts=[prompts[int(rows[i])] for i in anchors])

    # -- out of distribution -----------------------------------------------------------
    def distance(self, E: np.ndarray) -> np.ndarray:
        return top_k_distance(E, self.x, self.k)

    def fallback(self, distance: np.ndarray) -> np.ndarray:
        """Share of each prediction replaced by the candidate averages, in [0, 1]."""
        return np.clip((np.asarray(distance) - self.start) / max(self.full - self.start, 1e-9), 0.0, 1.0)

    def describe(self, distance: float, weight: float) -> str:
        if weight <= 0:
            head = "this prompt is like the router's training prompts (in distribution)"
        else:
            head = (f"this prompt is unlike the router's training prompts (out of distribution): its predictions "
                    f"were moved {weight:.0%} toward each candidate's average")
        return (f"{head}: prompt distance to training prompts {distance:.3f}, a typical training prompt's "
                f"{self.median:.3f}; predictions move toward each candidate's average from {self.start:.3f} and are "
                f"replaced by it at {self.full:.3f}")

    # -- file ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        return ({"ref_x": self.x, "ref_oof": self.oof, "ref_y": self.y},
                {"k": int(self.k), "start": float(self.start), "full": float(self.full), "median": float(self.median),
                 "anchors": [int(i) for i in self.anchors], "anchor_prompts": list(self.anchor_prompts)})

    @classmethod
    def from_state(cls, tensors: dict, meta: dict) -> Reference:
        return cls(x=np.asarray(tensors["ref_x"], dtype=np.float32), oof=np.asarray(tensors["ref_oof"], np.float32),
                   y=np.asarray(tensors["ref_y"], dtype=np.float32), anchors=np.asarray(meta["anchors"], dtype=int),
                   anchor_prompts=list(meta["anchor_prompts"]), k=int(meta["k"]), start=float(meta["start"]),
                   full=float(meta["full"]), median=float(meta["median"]))

    def problems(self, d: int, C: int) -> list[str]:
        """What is wrong with a loaded reference set (empty when it is consistent)."""
        out = []
        R = self.x.shape[0]
        if self.x.ndim != 2 or self.x.shape[1] != d or R < 1:
            out.append(f"tensor 'ref_x' has shape {tuple(self.x.shape)}, expected (*, {d})")
        for name, t in (("ref_oof", self.oof), ("ref_y", self.y)):
            if t.shape != (R, C):
                out.append(f"tensor '{name}' has shape {tuple(t.shape)}, expected ({R}, {C})")
        if not (np.isfinite(self.x).all() and np.isfinite(self.oof).all()):
            out.append("reference tensors have non-finite values")
        if (len(self.anchors) != len(self.anchor_prompts) or not all(0 <= i < R for i in self.anchors)
                or len(set(self.anchors.tolist())) != len(self.anchors)):
            out.append("reference anchors must be distinct row indices with one prompt each")
        if not (self.k >= 1 and np.isfinite([self.start, self.full, self.median]).all() and self.full > self.start):
            out.append("reference 'k' must be >= 1 and 'start' < 'full' finite distances")
        return out
