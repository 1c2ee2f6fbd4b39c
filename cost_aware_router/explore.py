"""Deliberate exploration: a stable share of prompts goes to a non-greedy candidate, the one whose
prediction for the prompt is least supported by nearby scored observations.

A router that learns from its own routed generations (``online.py``) only ever sees the score of
the candidate it chose; without exploration, a candidate it under-rates is never generated again
and never corrected. ``support`` counts the scored cells near each prompt; ``explore_choices``
picks, for a hash-chosen share of prompts, the allowed non-greedy candidate with the least support.
``decide`` is the one decision loop of the pack (``Router.route``, ``online.replay``): a budget's
plan, optionally a held budget (``hold.BudgetHolder``) and exploration.
"""

from __future__ import annotations

import numpy as np

from .budget import prompt_hash
from .errors import RouterError
from .predictors import choose

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
    util = np.where(tie, z_row - lam * cost - 1e-12 * cost, -np.inf)
    return int(np.argmax(util))


def explore_choices(z: np.ndarray, cost: np.ndarray, lams, prompts: list[str], share: float, support: np.ndarray,
                    allowed: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Greedy choices (``predictors.choose``) except for the explored prompts, which go to
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


def decide(z: np.ndarray, cost: np.ndarray, plan, prompts: list[str], holder=None, share: float = 0.0,
           seed: int = 0, support=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list | None]:
    """Choices for predicted qualities ``z`` [N, C] under ``plan`` (``budget.Plan``).

    With a ``holder`` (``hold.BudgetHolder``) the prompts are decided in order, each with the
    holder's current cost weight, and every choice (explorations included) is recorded in it.
    ``share`` > 0 explores a stable hash-chosen share of prompts (salted by ``seed``); ``support``
    is a callable returning the support [N, C] (``Router.support``), called only if a prompt is
    explored. A forced candidate overrides both. Returns (choices, cost weights, explored mask,
    and with a holder, (realised mean cost, count) after each prompt)."""
    z = np.asarray(z, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    explored = np.zeros(len(prompts), dtype=bool)
    if plan.force is not None:
        picks, lams = plan.choose(z, cost, prompts)
        return picks, lams, explored, None
    mask = explore_mask(prompts, share, seed) if share > 0 else explored
    sup = support() if mask.any() else None
    if holder is None:
        lams = plan.cost_weights(prompts)
        if sup is None:
            return choose(z, cost, lams, plan.allowed), lams, explored, None
        picks, explored = explore_choices(z, cost, lams, prompts, share, sup, plan.allowed, seed)
        return picks, lams, explored, None
    picks, lams, held = np.zeros(len(z), dtype=int), np.zeros(len(z)), []
    for i, row in enumerate(z):
        lam = holder.lam()
        c = int(choose(row[None, :], cost, lam, plan.allowed)[0])
        alt = least_supported(row, cost, lam, sup[i], c, plan.allowed) if mask[i] else None
        explored[i] = alt is not None
        picks[i], lams[i] = (c if alt is None else alt), lam
        holder.observe(float(cost[picks[i]]), row, plan.allowed)
        held.append((holder.mean_cost, holder.count))
    return picks, lams, explored, held
