"""Budgets: how a user trades quality for cost, and how a router meets them.

The choice for a prompt is ``argmax_c  q_c(prompt) - lam * cost_c`` with ``q`` in normalised
quality units and ``lam`` (the cost weight) in normalised quality per second. Budget modes map onto
``lam``:

* ``cost_weight``  -- ``lam`` given directly;
* ``budget``       -- a target average cost per image; ``lam`` read off the router's calibration
  curve (average cost of the choices on out-of-fold training predictions, per ``lam``). A target
  between two calibrated operating points sends a stable, hash-chosen share of prompts to the
  dearer one, so the calibrated average meets the target and a prompt always routes the same way;
* ``best_quality`` -- ``lam = 0``;
* none of these    -- the router's default budget (a target average cost chosen at training);
* ``max_cost``     -- a hard cap: candidates costing more per image are never chosen;
* ``force``        -- one named candidate, whatever the predictions (it must respect the cap).

``resolve`` turns a ``Budget`` into a ``Plan`` once per call; the plan gives every prompt its cost
weight and choice. ``calibrate`` and ``default_budget`` build the curve and the default at training
time (and again when a candidate is added).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import RouterError
from ..predictors import lambda_grid
from ..validate import finite
from .rule import choose

DEFAULT_TOLERANCE = 0.05  # in standard deviations of the metric
CALIBRATION_POINTS = 200

# The budget modes a node offers, in the words it shows.
DEFAULT, TARGET, WEIGHT, BEST = "router default", "target average cost (s/image)", "cost weight", "best quality"
HOLD = "hold target average cost (s/image)"  # TARGET, held on the stream by hold.BudgetHolder
BUDGET_MODES = (DEFAULT, TARGET, HOLD, WEIGHT, BEST)


@dataclass
class Budget:
    """How to trade quality for cost. At most one of cost_weight / budget / best_quality."""

    cost_weight: float | None = None
    budget: float | None = None
    best_quality: bool = False
    max_cost: float | None = None
    force: str | None = None

    def __post_init__(self):
        given = [self.cost_weight is not None, self.budget is not None, bool(self.best_quality)]
        if sum(given) > 1:
            raise RouterError("give only one of cost weight, budget (target seconds per image) or best quality")
        for name in ("cost_weight", "budget", "max_cost"):
            if getattr(self, name) is not None:
                setattr(self, name, finite(getattr(self, name), name.replace("_", " "), minimum=0.0))
        if self.force is not None and not str(self.force).strip():
            self.force = None

    @classmethod
    def from_mode(cls, mode: str, value: float, max_cost: float = 0.0, force: str = "") -> Budget:
        """A budget from a node's inputs: one of BUDGET_MODES with its value, a cap (0 = none) and an
        optional forced label (empty = none)."""
        if mode not in BUDGET_MODES:
            raise RouterError(f"unknown budget mode {mode!r}; choose one of {list(BUDGET_MODES)}")
        kw = {"max_cost": max_cost if max_cost > 0 else None, "force": (force or "").strip() or None}
        if mode in (TARGET, HOLD):
            kw["budget"] = value
        elif mode == WEIGHT:
            kw["cost_weight"] = value
        elif mode == BEST:
            kw["best_quality"] = True
        return cls(**kw)

    def describe(self) -> str:
        if self.force:
            return f"forced candidate '{self.force}'"
        if self.best_quality:
            parts = ["best quality"]
        elif self.budget is not None:
            parts = [f"target average cost {self.budget:g} s/image"]
        elif self.cost_weight is not None:
            parts = [f"cost weight {self.cost_weight:g}"]
        else:
            parts = ["router default budget"]
        if self.max_cost is not None:
            parts.append(f"cap {self.max_cost:g} s/image")
        return ", ".join(parts)


def prompt_hash(prompts: list[str]) -> np.ndarray:
    """A stable number in [0, 1) per prompt (the same on every machine and run)."""
    return np.array([int.from_bytes(hashlib.blake2b(p.encode("utf-8", "replace"), digest_size=8).digest(), "big")
                     / 2.0 ** 64 for p in prompts])


def budget_mixture(calibration: dict, target: float) -> tuple[float, float, float]:
    """A target average cost usually falls between two calibrated operating points. Returns
    (cheaper cost weight, dearer cost weight, share of prompts on the dearer one) so that the
    calibrated average cost equals the target instead of undershooting it."""
    lams = np.asarray(calibration["cost_weight"])
    costs = np.asarray(calibration["mean_cost"])
    ok = np.nonzero(costs <= target + 1e-12)[0]
    if len(ok) == 0:
        return float(lams[-1]), float(lams[-1]), 0.0
    i = int(ok[0])
    if i == 0 or costs[i - 1] <= costs[i]:
        return float(lams[i]), float(lams[i]), 0.0
    share = (target - costs[i]) / (costs[i - 1] - costs[i])
    return float(lams[i]), float(lams[i - 1]), float(np.clip(share, 0.0, 1.0))


@dataclass(frozen=True)
class Plan:
    """A budget resolved against one router's candidates and calibration."""

    budget: Budget
    cheap: float                    # cost weight of the cheaper operating point
    dear: float                     # cost weight of the dearer one (equal to cheap unless mixing)
    share: float                    # share of prompts (by stable hash) on the dearer point
    allowed: np.ndarray | None      # candidates under the cap, or None
    force: int | None               # index of a forced candidate
    target: float | None            # the average cost aimed at, if any

    @property
    def blended_cost_weight(self) -> float:
        """One cost weight between the two operating points, in log space by the share on the dearer
        one: where a held budget (hold.BudgetHolder) starts."""
        if self.share <= 0 or self.cheap <= 0 or self.dear <= 0:
            return self.cheap
        return float(np.exp(np.log(self.cheap) + self.share * (np.log(self.dear) - np.log(self.cheap))))

    def cost_weights(self, prompts: list[str]) -> np.ndarray:
        lams = np.full(len(prompts), self.cheap)
        if self.share > 0:
            lams = np.where(prompt_hash(prompts) < self.share, self.dear, self.cheap)
        return lams

    def choose(self, z: np.ndarray, cost: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The candidate index and the cost weight for each prompt (rows of ``z``)."""
        lams = self.cost_weights(prompts)
        if self.force is not None:
            return np.full(len(prompts), self.force, dtype=int), lams
        return choose(z, cost, lams, self.allowed), lams


def target_cost(budget: Budget, default: float | None) -> float | None:
    """The average cost per image a budget aims at: its own target or the router's default,
    unless it asks for best quality or gives a cost weight."""
    if budget.best_quality or budget.cost_weight is not None:
        return None
    target = budget.budget if budget.budget is not None else default
    return None if target is None else float(target)


def resolve(budget: Budget | None, cost: np.ndarray, names: list[str], calibration: dict,
            default: float | None) -> Plan:
    """Check a budget against the candidates (cap, forced name) and fix its cost weights."""
    budget = budget or Budget()
    allowed = None
    if budget.max_cost is not None:
        allowed = cost <= budget.max_cost + 1e-12
        if not allowed.any():
            raise RouterError(f"no candidate costs at most {budget.max_cost:g} s/image; the cheapest, "
                              f"'{names[int(np.argmin(cost))]}', costs {cost.min():g}")
    force = None
    if budget.force:
        if budget.force not in names:
            raise RouterError(f"forced candidate '{budget.force}' is not in the router; it has {names}")
        force = names.index(budget.force)
        if allowed is not None and not allowed[force]:
            raise RouterError(f"forced candidate '{budget.force}' costs {cost[force]:g} s/image, over the cap of "
                              f"{budget.max_cost:g}; a capped candidate is never chosen")
    target = target_cost(budget, default)
    cheap = dear = 0.0
    share = 0.0
    if budget.cost_weight is not None:
        cheap = dear = float(budget.cost_weight)
    elif target is not None:
        cheap, dear, share = budget_mixture(calibration, target)
        if force is not None:  # a forced candidate needs no mixing; its cost weight is only reported
            dear, share = cheap, 0.0
    return Plan(budget, cheap, dear, share, allowed, force, target)


def calibrate(oof_z: np.ndarray, Yz: np.ndarray, cost: np.ndarray, mu: np.ndarray, norm: dict) -> dict:
    """Average cost (and realised quality) of the choices on out-of-fold predictions, per cost weight."""
    rows = ~np.isnan(oof_z).any(axis=1)
    lams = lambda_grid(mu, cost, CALIBRATION_POINTS)
    pred, y = oof_z[rows], Yz[rows]
    mean_cost, mean_quality = [], []
    for lam in lams:
        ch = choose(pred, cost, lam)
        mean_cost.append(float(cost[ch].mean()))
        q = y[np.arange(len(y)), ch]
        mean_quality.append(float(np.nanmean(q) * norm["std"] + norm["mean"]) if np.isfinite(q).any() else None)
    return {"cost_weight": [float(x) for x in lams], "mean_cost": mean_cost, "mean_quality": mean_quality,
            "prompts": int(rows.sum())}


def default_budget(cal: dict, Y: np.ndarray, cost: np.ndarray) -> float:
    """Cheapest calibrated average cost whose out-of-fold quality is within DEFAULT_TOLERANCE
    standard deviations of the best single candidate's: "as good as the best model, for less"."""
    complete = ~np.isnan(Y).any(axis=1)
    means = np.nanmean(Y[complete] if complete.any() else Y, axis=0)
    best = int(np.argmax(means))
    target = float(means[best]) - DEFAULT_TOLERANCE * float(np.nanstd(Y))
    ok = [c for c, q in zip(cal["mean_cost"], cal["mean_quality"]) if q is not None and q >= target - 1e-9]
    return float(min(ok)) if ok else float(cost[best])
