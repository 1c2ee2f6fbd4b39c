"""The router: predict every candidate's quality for a prompt, fall back toward the averages for
prompts unlike the training prompts, choose under a budget, explain the choice.

The choice for a prompt is ``argmax_c  q_c(prompt) - lam * cost_c`` (``decision/budget.py`` says how a budget
becomes ``lam``); ``q`` is predicted quality in normalised units (z-scores of the training metric).
Reading and writing router files is ``router_file.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .added import AddedCandidate, with_added
from .cascade import Cascade, decide_observed
from .decision.budget import Budget, Plan, resolve
from .decision.explore import weighted_count
from .decision.hold import BudgetHolder
from .decision.loop import decide
from .decision.rule import choose
from .errors import RouterError
from .explain import explain
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
                 reference: Reference | None = None, added: list[AddedCandidate] | None = None,
                 cascade: Cascade | None = None):
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
        self.cascade = cascade  # verify-and-escalate policy (cascade.py), or None: never escalates
        self.columns: np.ndarray | None = None  # a subset view (subset.py): its candidates' prediction columns
        self.fingerprint: str | None = None  # of the router file this came from (router_file.load_router)
        self.measured: list[str] = []  # candidates whose cost was measured on this machine (with_costs)
        self._embedder = None

    def copy(self, **changes) -> Router:
        fields = dict(candidates=self.candidates, predictor=self.predictor, embedder_identity=self.embedder_identity,
                      metric=self.metric, norm=self.norm, calibration=self.calibration, training=self.training,
                      default_budget=self.default_budget, reference=self.reference, added=self.added,
                      cascade=self.cascade)
        new = Router(**{**fields, **changes})
        new._embedder = self._embedder
        new.fingerprint, new.measured, new.columns = self.fingerprint, list(self.measured), self.columns
        return new

    @property
    def lineage(self) -> str | None:
        """A stable identity across feedback updates: a learnt router's ``training["lineage"]`` (the fingerprint
        of the file it was first learnt from, ``online.update_router``), else its own file's fingerprint."""
        lineage = self.training.get("lineage")
        return lineage if isinstance(lineage, str) and 0 < len(lineage) <= 200 else self.fingerprint

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
        new = self.copy(candidates=cands)
        new.measured = [n for n in self.names if costs.get(n) is not None]
        return new

    # -- budgets ---------------------------------------------------------------------
    @property
    def escalates(self) -> bool:
        """Whether this router's file holds a verify-and-escalate policy that is switched on and covers
        every candidate (a candidate added after training switches it off until the router is retrained:
        its budget curve does not know the newcomer)."""
        cas = self.cascade
        return cas is not None and cas.enabled and cas.calibration is not None and cas.names == self.names

    def plan(self, budget: Budget | None = None, escalating: bool = False) -> Plan:
        """The budget resolved against this router's candidates and calibration; ``escalating``: against
        the curve that counts escalations too (``cascade.Cascade.calibration``), when the router has one."""
        cal = self.cascade.calibration if escalating and self.escalates else self.calibration
        return resolve(budget, self.cost, self.names, cal, self.default_budget)

    def choices(self, z: np.ndarray, prompts: list[str], budget: Budget | Plan | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The candidate index and the cost weight used for each prompt (rows of ``z``)."""
        plan = budget if isinstance(budget, Plan) else self.plan(budget)
        return plan.choose(z, self.cost, list(prompts))

    # -- prediction ------------------------------------------------------------------
    @property
    def embedder(self):
        """The pack's default embedder, unless one was given with ``use_embedder`` (``--embedder``):
        a router file never chooses which folder is loaded; a mismatch with its recorded identity is
        an error that says to pass the right embedder explicitly."""
        if self._embedder is None:
            from .embed import get_embedder

            emb = get_embedder()
            emb.check_identity(self.embedder_identity)
            self._embedder = emb
        return self._embedder

    def use_embedder(self, embedder) -> None:
        embedder.check_identity(self.embedder_identity)
        self._embedder = embedder

    @property
    def mean_quality_z(self) -> np.ndarray:
        """Each candidate's average normalised quality: the prediction when nothing is known."""
        return self._view(np.concatenate([self.predictor.mu, [a.mean for a in self.added]]))

    def _view(self, a: np.ndarray) -> np.ndarray:
        """The columns of this router's candidates (all, unless it is a subset view)."""
        return a if self.columns is None else a[..., self.columns]

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
        z = self._view(self._with_added(z, S))
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
        return self._view(self._with_added(ref.oof.astype(np.float64), S))

    def predict_normalised(self, prompts: list[str]) -> np.ndarray:
        return self.predict_embedded(self.embedder.embed(prompts))[0]

    def to_raw(self, z: np.ndarray) -> np.ndarray:
        return z * self.norm["std"] + self.norm["mean"]

    # -- routing ---------------------------------------------------------------------
    def support(self, E: np.ndarray) -> np.ndarray:
        """[N, C] how well each candidate's prediction for each prompt (rows of ``E``) is backed by
        nearby scored observations (``explore.weighted_count``): over the kNN memory where the
        predictor keeps one, else over the reference set; added candidates count their scored anchors."""
        E = np.asarray(E, dtype=np.float32)
        p, mem, ref = self.predictor, self.predictor.memory, self.reference
        if mem is not None:
            base = weighted_count(E @ mem.X.T, (~np.isnan(mem.Y)).astype(np.float64))
        elif ref is not None:
            base = weighted_count(E @ ref.x.T, (~np.isnan(ref.y)).astype(np.float64))
        else:
            base = np.zeros((len(E), len(p.mu)))
        if self.added:
            obs = np.stack([~np.isnan(a.scores) for a in self.added], axis=1).astype(np.float64)
            base = np.concatenate([base, weighted_count(E @ ref.x[ref.anchors].T, obs)], axis=1)
        return self._view(base)

    def route(self, prompts: list[str], budget: Budget | None = None, holder: BudgetHolder | None = None,
              explore: float = 0.0, seed: int = 0, observed: dict | None = None) -> list[Decision]:
        """A decision per prompt. With a ``holder`` (``hold.BudgetHolder``) the prompts are decided in
        order and the holder sets each prompt's cost weight from the realised average cost so far,
        so a target average cost holds on any stream (the same prompt may route differently later).
        ``explore``: a stable, hash-chosen share of prompts (salted by ``seed``) goes to the least
        supported non-greedy candidate (``decision/explore.py``); a held budget counts what that spends.
        ``observed`` ({prompt: [(candidate index, seed, score), ...]}): verify and escalate
        (``cascade.py``): each decision gets ``next`` (generate) or ``deliver`` (an observed image), the
        budget is read off the curve that counts escalations, and a held budget counts each escalation;
        a prompt with observations was counted when it was first routed."""
        prompts = list(prompts)
        plan = self.plan(budget, escalating=observed is not None)
        E = self.embedder.embed(prompts)
        z, dist, fallback = self.predict_embedded(E)
        if plan.force is not None:
            holder = None
        seen = np.array([bool(observed and observed.get(p)) for p in prompts], dtype=bool)
        fresh = np.nonzero(~seen)[0]
        picks, lams = np.zeros(len(prompts), dtype=int), np.zeros(len(prompts))
        explored, held = np.zeros(len(prompts), dtype=bool), [None] * len(prompts)
        if len(fresh):
            fp, fl, fe, fh = decide(z[fresh], self.cost, plan, [prompts[i] for i in fresh], holder, explore, seed,
                                    support=lambda: self.support(E[fresh]))
            picks[fresh], lams[fresh], explored[fresh] = fp, fl, fe
            for k, i in enumerate(fresh):
                held[i] = fh[k] if fh is not None else None
        if seen.any():
            old = np.nonzero(seen)[0]  # counted when first routed: their cost weight, not a new decision
            lams[old] = holder.lam() if holder is not None else plan.cost_weights([prompts[i] for i in old])
            picks[old] = plan.force if plan.force is not None else choose(z[old], self.cost, lams[old], plan.allowed)
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
            if explore > 0:
                d.extra["explored"] = bool(explored[i])
            if observed is not None:
                self._verify(d, z[i], float(lams[i]), plan, observed.get(prompt) or [], holder)
            if holder is not None:
                d.budget = f"holding {d.budget}"
                h = held[i] or (holder.mean_cost, holder.count)
                d.extra["held"] = {"target": holder.target, "realised_mean_cost": round(h[0], 6), "count": h[1]}
            d.explanation = self.explain(d, z[i], plan.allowed, float(lams[i]), plan.target,
                                         self.cascade.calibration if observed is not None and self.escalates else None)
            out.append(d)
        return out

    def _verify(self, d: Decision, z_row: np.ndarray, lam: float, plan: Plan, obs: list, holder) -> None:
        """Add ``next`` / ``deliver`` to a decision from the prompt's observed images (``cascade.py``)."""
        if not obs:
            d.extra.update(next={"candidate": d.candidate, "seed": 0}, deliver=None)
            return
        v = decide_observed(self.cascade, self.names, self.cost, z_row, lam, obs, plan.allowed, plan.budget.max_cost,
                            self.metric)
        if v.next is None:
            c, s, _ = obs[v.deliver]
            d.extra.update(next=None, deliver={"candidate": self.names[c], "seed": s})
        else:
            d.extra.update(next={"candidate": self.names[v.next[0]], "seed": v.next[1]}, deliver=None)
            if holder is not None:
                holder.add_cost(float(self.cost[v.next[0]]))
        d.extra["verify"] = v.words

    def explain(self, d: Decision, z: np.ndarray, allowed, lam: float, target: float | None = None,
                calibration: dict | None = None) -> str:
        """The decision in plain words (``explain.py``)."""
        return explain(self, d, z, allowed, lam, target, calibration)
