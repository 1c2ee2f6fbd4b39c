"""The one decision loop of the pack (``Router.route``, ``online.replay``, the held-budget tests
and benchmarks): a budget's plan, optionally a held budget (``hold.BudgetHolder``) and exploration."""

from __future__ import annotations

import numpy as np

from .explore import explore_choices, explore_mask, least_supported
from .rule import choose


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
        lam = holder.lam_for(row, plan.allowed)
        c = int(choose(row[None, :], cost, lam, plan.allowed)[0])
        alt = least_supported(row, cost, lam, sup[i], c, plan.allowed) if mask[i] else None
        explored[i] = alt is not None
        picks[i], lams[i] = (c if alt is None else alt), lam
        holder.observe(float(cost[picks[i]]), row, plan.allowed)
        held.append((holder.mean_cost, holder.count))
    return picks, lams, explored, held
