"""Deliberate exploration: a stable share of prompts goes to a non-greedy candidate, the one whose
prediction for the prompt is least supported by nearby scored observations.

A router that learns from its own routed generations (``online.py``) only ever sees the score of
the candidate it chose; without exploration, a candidate it under-rates is never generated again
and never corrected. ``support`` counts the scored cells near each prompt; ``explore_choices``
picks, for a hash-chosen share of prompts, the allowed non-greedy candidate with the least support.
The decision loop that applies it is ``loop.decide``.
"""

from __future__ import annotations

import numpy as np

from ..errors import RouterError
from .budget import prompt_hash
from .rule import choose

SUPPORT_K = 16


def weighted_count(S: np.ndarray, observed: np.ndarray, k: int = SUPPORT_K) -> np.ndarray:
    """Per query row of ``S`` [N, R]: the sum over its ``k`` most similar columns of
    max(similarity, 0) times ``observed`` [R, C] (1 where a cell is scored)."""
    if S.shape[1] == 0:
        return np.zeros((S.shape[0], observed.shape[1]))
    k = max(1, min(k, S.shape[1]))
    idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(S, idx, axis=1), 0.0, None)[:, :, None]
    return (observed[idx] * w).sum(axis=1)


def explore_hash(prompts: list[str], seed: int = 0) -> np.ndarray:
    """A stable number in [0, 1) per prompt, independent of the budget-mixing hash."""
    salt = "explore:" if not seed else f"explore:{seed}:"
    return prompt_hash([salt + p for p in prompts])


def explore_mask(prompts: list[str], share: float, seed: int = 0) -> np.ndarray:
    """Which prompts are explored: a stable, hash-chosen ``share`` of them."""
    if not (0.0 <= float(share) <= 1.0):
        raise RouterError(f"exploration share must be in [0, 1], got {share}")
    return explore_hash(list(prompts), seed) < float(share)


def least_supported(z_row: np.ndarray, cost: np.ndarray, lam: float, support_row: np.ndarray, greedy: int,
                    allowed: np.ndarray | None = None) -> int | None:
    """The allowed candidate other than ``greedy`` with the least support (ties: the higher
    z - lam * cost); None when there is no other allowed candidate."""
    ok = np.ones(len(cost), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool).copy()
    ok[greedy] = False
    if not ok.any():
        return None
    sup = np.where(ok, np.asarray(support_row, dtype=np.float64), np.inf)
    least = sup.min()
    tie = ok & (sup <= least + 1e-9 * (1.0 + abs(least)))
    return int(choose(np.asarray(z_row, dtype=np.float64)[None, :], cost, lam, tie)[0])


def explore_choices(z: np.ndarray, cost: np.ndarray, lams, prompts: list[str], share: float, support: np.ndarray,
                    allowed: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Greedy choices (``rule.choose``) except for the explored prompts, which go to
    ``least_supported``. Returns (choices, explored mask); a prompt with no other allowed candidate
    is not explored."""
    z = np.asarray(z, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    lam = np.broadcast_to(np.asarray(lams, dtype=np.float64).reshape(-1), (len(z),))
    greedy = choose(z, cost, lam, allowed)
    chosen, explored = greedy.copy(), np.zeros(len(z), dtype=bool)
    for i in np.nonzero(explore_mask(prompts, share, seed))[0]:
        alt = least_supported(z[i], cost, float(lam[i]), support[i], int(greedy[i]), allowed)
        if alt is not None:
            chosen[i], explored[i] = alt, True
    return chosen, explored
