"""When a setting chosen on held-out evidence is kept: the one rule shared by training (the predictors'
cross-validation, ``predictors.py``), learning from feedback (the kNN memory's leave-one-out selection,
``memory.py``), adding a candidate (``extend.py``) and verify and escalate (``cascade.py``).

Predictions are shrunk toward each candidate's mean by a factor ``alpha`` (one of ``ALPHAS``); a setting
with ``alpha > 0`` is kept only when its per-prompt gain over the baseline beats zero by more than
``SE_MARGIN`` standard errors, so with thin evidence the router does not chase noise.
"""

from __future__ import annotations

import numpy as np

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SE_MARGIN = 2.0  # standard errors a setting must beat the best fixed candidate by


def significant_best(base: np.ndarray, options, margin: float | None = None) -> tuple[object, object]:
    """``options`` yields (key, per-prompt utility). Returns (the key with the highest mean gain
    over the per-prompt utility ``base`` among those beating it by more than SE_MARGIN standard
    errors, or None; the key with the highest mean gain at all)."""
    best, top = (None, 0.0), (None, -np.inf)
    for key, util in options:
        diff = util - base
        gain, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
        if gain > top[1]:
            top = (key, gain)
        if gain - (SE_MARGIN if margin is None else margin) * se > 0 and gain > best[1]:
            best = (key, gain)
    return best[0], top[0]
