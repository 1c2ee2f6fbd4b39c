"""The router: predict every candidate's quality for a prompt, fall back toward the averages for
prompts unlike the training prompts, choose under a budget, explain the choice.

The choice for a prompt is ``argmax_c  q_c(prompt) - lam * cost_c`` (``budget.py`` says how a budget
becomes ``lam``); ``q`` is predicted quality in normalised units (z-scores of the training metric).
Reading and writing router files is ``router_file.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .added import AddedCandidate, with_added
from .budget import Budget, Plan, resolve
from .errors import RouterError
from .predictors import Predictor
from .reference import Reference
from .validate import finite


@dataclass
class Decision:
    prompt: str
    candidate: str
    config: dict
    predicted_quality: dict[str, float]
    cost: dict[str, float]
    cost_weight: float
    budget: str
    explanation: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt, "candidate": self.candidate, "config": self.config,
            "predicted_quality": self.predicted_quality, "cost": self.cost,
            "cost_weight": self.cost_weight, "budget": self.budget, **self.extra,
        }


class Router:
    """Candidates, a quality predictor for the first ``len(candidates) - len(added)`` of them, and
    optionally a reference set (out-of-distribution fallback, anchors) and candidates added from
    anchor scores (``added.py``)."""

    def __init__(self, candidates: list[dict], predictor: Predictor, embedder_identity: dict, metric: str,
                 norm: dict, calibration: dict, training: dict | None = None, default_budget: float | None = None,
                 reference: Reference | None = None, added: list[AddedCandidate] | None = None):
        self.candidates = candidates
        self.names = [c["name"] for c in candidates]
        self.cost = np.array([float(c["cost"]) for c in candidates], dtype=np.float64)
        self.predictor = predictor
        self.embedder_identity = embedder_identity
        self.metric = metric
        self.norm = norm
        self.calibration = calibration
        self.training = training or {}
        self.default_budget = default_budget
        self.reference = reference
        self.added = list(added or [])
        self._embedder = None

    def copy(self, **changes) -> Router:
        fields = dict(candidates=self.candidates, predictor=self.predictor, embedder_identity=self.embedder_identity,
                      metric=self.metric, norm=self.norm, calibration=self.calibration, training=self.training,
                      default_budget=self.default_budget, reference=self.reference, added=self.added)
        new = Router(**{**fields, **changes})
        new._embedder = self._embedder
        return new

    # -- matching a pool of candidates ------------------------------------------------
    def check_candidates(self, labels: list[str], where: str = "pool") -> None:
        """Raise unless ``labels`` are exactly this router's candidates, listing both sides."""
        if sorted(labels) != sorted(self.names):
            missing = [n for n in self.names if n not in labels]
            extra = [n for n in labels if n not in self.names]
            raise RouterError(
                f"router candidates {self.names} do not match {where} candidates {list(labels)}"
                + (f"; missing from the {where}: {missing}" if missing else "")
                + (f"; not in the router: {extra}" if extra else "")
            )

    def with_costs(self, costs: dict[str, float]) -> Router:
        """A copy that uses measured ``costs`` (seconds per image) for the named candidates."""
        cands = []
        for c in self.candidates:
            cost = costs.get(c["name"])
            cands.append(dict(c) if cost is None else {**c, "cost": finite(cost, f"cost of '{c['name']}'", 0.0)})
        return self.copy(candidates=cands)

    # -- budgets ---------------------------------------------------------------------
    def plan(self, budget: Budget | None = None) -> Plan:
        """The budget resolved against this router's candidates and calibration."""
        return resolve(budget, self.cost, self.names, self.calibration, self.default_budget)

    def choices(self, z: np.ndarray, prompts: list[str], budget: Budget | Plan | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The candidate index and the cost weight used for each prompt (rows of ``z``)."""
        plan = budget if isinstance(budget, Plan) else self.plan(budget)
        return plan.choose(z, self.cost, list(prompts))

    # -- prediction ------------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from .embed import get_embedder

            emb = get_embedder(self.embedder_identity.get("spec", "default"))
            emb.check_identity(self.embedder_identity)
            self._embedder = emb
        return self._embedder

    def use_embedder(self, embedder) -> None:
        embedder.check_identity(self.embedder_identity)
        self._embedder = embedder

    @property
    def mean_quality_z(self) -> np.ndarray:
        """Each candidate's average normalised quality: the prediction when nothing is known."""
        return np.concatenate([self.predictor.mu, [a.mean for a in self.added]])

    def _with_added(self, z_base: np.ndarray, S: np.ndarray | None) -> np.ndarray:
        if not self.added:
            return z_base
        return with_added(self.added, z_base, S, self.reference.y[self.reference.anchors].astype(np.float64))

    def predict_embedded(self, E: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised predicted quality [N, C], each prompt's distance to the training prompts and
        the share of its prediction replaced by the candidate averages (out-of-distribution fallback)."""
        E = np.asarray(E, dtype=np.float32)
        z = self.predictor.predict(E)
        S = E @ self.reference.x[self.reference.anchors].T if self.added else None
        z = self._with_added(z, S)
        if self.reference is None:
            return z, np.full(len(E), np.nan), np.zeros(len(E))
        dist = self.reference.distance(E)
        w = self.reference.fallback(dist)
        return z + w[:, None] * (self.mean_quality_z[None, :] - z), dist, w

    def predict_reference(self) -> np.ndarray:
        """Out-of-fold predictions for the reference prompts (added candidates: leaving each anchor out)."""
        ref = self.reference
        S = None
        if self.added:
            S = ref.x @ ref.x[ref.anchors].T
            S[ref.anchors, np.arange(len(ref.anchors))] = -np.inf
        return self._with_added(ref.oof.astype(np.float64), S)

    def predict_normalised(self, prompts: list[str]) -> np.ndarray:
        return self.predict_embedded(self.embedder.embed(prompts))[0]

    def to_raw(self, z: np.ndarray) -> np.ndarray:
        return z * self.norm["std"] + self.norm["mean"]

    # -- routing ---------------------------------------------------------------------
    def route(self, prompts: list[str], budget: Budget | None = None) -> list[Decision]:
        prompts = list(prompts)
        plan = self.plan(budget)
        z, dist, fallback = self.predict_embedded(self.embedder.embed(prompts))
        picks, lams = plan.choose(z, self.cost, prompts)
        raw = self.to_raw(z)
        costs = {n: float(self.cost[j]) for j, n in enumerate(self.names)}
        out = []
        for i, prompt in enumerate(prompts):
            c = int(picks[i])
            pq = {n: round(float(raw[i, j]), 4) for j, n in enumerate(self.names)}
            d = Decision(prompt, self.names[c], dict(self.candidates[c].get("config", {})), pq, dict(costs),
                         float(lams[i]), plan.budget.describe())
            if self.reference is not None:
                d.extra = {"ood_distance": round(float(dist[i]), 4), "ood_fallback": round(float(fallback[i]), 3)}
            d.explanation = self.explain(d, z[i], plan.allowed, float(lams[i]))
            out.append(d)
        return out

    def explain(self, d: Decision, z: np.ndarray, allowed, lam: float) -> str:
        lines = [f"chose '{d.candidate}' ({d.budget}; cost weight {lam:.4g} per s)",
                 f"{'candidate':<24}{'pred ' + self.metric:>16}{'cost s':>10}{'utility':>10}"]
        for j, n in enumerate(self.names):
            util = z[j] - lam * self.cost[j]
            flag = " <" if n == d.candidate else ("  (over cap)" if allowed is not None and not allowed[j] else "")
            lines.append(f"{n:<24}{d.predicted_quality[n]:>16.3f}{self.cost[j]:>10.3g}{util:>10.3f}{flag}")
        if "ood_distance" in d.extra:
            lines.append(self.reference.describe(d.extra["ood_distance"], d.extra["ood_fallback"]))
        return "\n".join(lines)
