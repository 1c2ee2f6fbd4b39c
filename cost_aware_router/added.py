"""Columns for candidates added to a trained router from anchor scores (see ``extend.py``).

An added candidate is predicted, beside the trained predictor's columns, from the anchor prompts
nearest a prompt, in one of two modes:

* ``absolute`` -- the similarity-weighted mean of its scores on the ``k`` nearest anchors;
* ``offset``   -- the prediction for an existing candidate ``ref`` plus the similarity-weighted mean
  of (its score - that candidate's score) on the ``k`` nearest anchors;

then shrunk toward its anchor mean by ``shrink``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .memory import knn_mean


def weighted_neighbours(S: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """Similarity-weighted mean of the vector ``v`` over the ``k`` most similar columns of ``S``."""
    return knn_mean(S, np.asarray(v, dtype=np.float64)[:, None], k, np.zeros(1))[:, 0]


@dataclass
class AddedCandidate:
    """A candidate added from anchor scores; its column is predicted from the anchors."""

    mode: str               # "absolute" or "offset"
    ref: int                # for "offset": the existing (trained) candidate column it is measured against
    k: int
    shrink: float
    mean: float             # normalised anchor mean: the prediction with no per-prompt evidence
    scores: np.ndarray      # [A] normalised scores on the router's anchors (NaN: not scored)
    loo_rmse: float = float("nan")

    def predict(self, S: np.ndarray, z_base: np.ndarray, anchor_y: np.ndarray) -> np.ndarray:
        """Predictions from ``S``, the similarities of the prompts to every anchor (-inf: leave out)."""
        m = ~np.isnan(self.scores)
        if self.mode == "offset":
            m &= ~np.isnan(anchor_y[:, self.ref])
            raw = z_base[:, self.ref] + weighted_neighbours(S[:, m], (self.scores - anchor_y[:, self.ref])[m], self.k)
        else:
            raw = weighted_neighbours(S[:, m], self.scores[m], self.k)
        return self.mean + self.shrink * (raw - self.mean)

    def meta(self) -> dict:
        return {"mode": self.mode, "ref": int(self.ref), "k": int(self.k), "shrink": float(self.shrink),
                "mean": float(self.mean), "loo_rmse": float(self.loo_rmse)}


def with_added(added: list[AddedCandidate], z_base: np.ndarray, S: np.ndarray | None,
               anchor_y: np.ndarray) -> np.ndarray:
    """The trained columns ``z_base`` followed by one column per added candidate."""
    if not added:
        return z_base
    cols = [a.predict(S, z_base, anchor_y) for a in added]
    return np.concatenate([z_base, np.stack(cols, axis=1)], axis=1)
