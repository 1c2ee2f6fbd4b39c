"""The choice rule: for each prompt, the candidate with the largest utility, predicted quality minus
``lam`` times its cost, exact ties going to the cheaper candidate.

Everything in the pack that picks a candidate goes through here: ``choose`` (routing, budgets,
evaluation), ``pick`` (a utility that is not q - lam * cost: an exploration's tie set, verify and
escalate's expected improvement, the held budget's trade-off curves).
"""

from __future__ import annotations

import numpy as np

TIE = 1e-12  # per second of cost: exact ties in utility go to the cheaper candidate


def pick(util: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Index of the largest ``util`` along the last axis, ties to the lower ``cost`` (``-inf`` or NaN
    marks an excluded candidate; a row with none left returns 0: check ``np.isfinite`` first)."""
    util = np.asarray(util, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        util = np.where(np.isnan(util), -np.inf, util) - TIE * cost
    return np.argmax(util, axis=-1)


def utility(pred: np.ndarray, cost: np.ndarray, lam) -> np.ndarray:
    """pred - lam * cost for each row of ``pred`` [N, C] (``lam`` one weight, or one per row). Where
    lam > 1 it is taken as pred / lam - cost, which has the same argmax, so no weight up to the
    largest float overflows (a huge weight picks the cheapest allowed candidate), without warnings."""
    lam = np.asarray(lam, dtype=float).reshape(-1, 1)
    big = lam > 1
    return np.where(big, pred / np.where(big, lam, 1.0), pred) - np.where(big, 1.0, lam) * cost[None, :]


def choose(pred: np.ndarray, cost: np.ndarray, lam, allowed: np.ndarray | None = None) -> np.ndarray:
    """argmax over candidates of pred - lam * cost (``lam`` one weight, or one per row) among the
    ``allowed`` ones; ties go to the cheaper candidate."""
    util = utility(pred, cost, lam)
    if allowed is not None:
        util = np.where(np.asarray(allowed, dtype=bool)[None, :], util, -np.inf)
    return pick(util, cost)
