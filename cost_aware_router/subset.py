"""Routing among a subset of a router's candidates: a pool that loads only some of them still routes.

``restrict(router, labels)`` returns a view of the router that predicts and chooses among ``labels``
only (any non-empty subset, kept in the router's order). Its budgets are recalibrated over the subset
on the router's reference set (the training prompts' out-of-fold predictions and ratings kept in the
file), so a target average cost means the same thing for the subset as for the whole router; its
default budget is re-chosen the same way training chooses it. A view is for routing: it is never
written to a file, and its verify-and-escalate policy (trained on all the candidates) is off.
"""

from __future__ import annotations

import numpy as np

from .decision.budget import calibrate, default_budget
from .errors import RouterError
from .router import Router


def restrict(router: Router, labels: list[str]) -> Router:
    """``router`` choosing among ``labels`` only; the router itself when they are all its candidates."""
    wanted = list(dict.fromkeys(str(x) for x in labels))
    if not wanted:
        raise RouterError(f"choose at least one of the router's candidates {router.names}")
    unknown = [x for x in wanted if x not in router.names]
    if unknown:
        raise RouterError(f"candidate(s) {unknown} are not in the router; it has {router.names}")
    keep = np.array([i for i, n in enumerate(router.names) if n in wanted], dtype=int)
    if len(keep) == len(router.names):
        return router
    if router.reference is None:
        raise RouterError("this router file has no reference set, so budgets cannot be recalibrated for a subset of "
                          "its candidates; route with all of them or retrain")
    view = router.copy(candidates=[router.candidates[i] for i in keep])
    view.columns = keep if router.columns is None else router.columns[keep]
    view.measured = [n for n in router.measured if n in wanted]
    ref = router.reference
    full_y = np.concatenate([ref.y.astype(np.float64), np.full((len(ref.y), len(router.added)), np.nan)], axis=1)
    yz = full_y[:, view.columns]
    oof = view.predict_reference()
    view.calibration = calibrate(oof, yz, view.cost, view.mean_quality_z, view.norm)
    y_raw = yz * view.norm["std"] + view.norm["mean"]
    if np.isfinite(y_raw).any(axis=0).all():
        view.default_budget = default_budget(view.calibration, y_raw, view.cost)
    else:  # an added candidate alone has no ratings on the reference prompts: its own cost
        view.default_budget = float(view.cost.max())
    return view
