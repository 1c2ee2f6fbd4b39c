"""The router: candidates, a quality predictor, the cost-aware choice and its file format.

The choice for a prompt is ``argmax_c  q_c(prompt) - lam * cost_c`` where ``q`` is predicted
quality in normalised units (z-scores of the training metric) and ``lam`` is in normalised
quality per second. Budget modes map onto ``lam``:

* ``cost_weight``  -- ``lam`` given directly;
* ``budget``       -- a target average cost per image; ``lam`` read off the calibration curve
  (average cost of the choices on out-of-fold training predictions, per ``lam``);
* ``best_quality`` -- ``lam = 0``;
* ``max_cost``     -- a hard cap: candidates costing more per image are never chosen;
* ``force``        -- one named candidate, whatever the predictions.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RouterError, RouterFileError
from .extend import AddedCandidate
from .fileutil import atomic_write
from .predictors import Predictor, choose, get_predictor_class
from .reference import Reference

FORMAT = "cost_aware_router"
FORMAT_VERSION = 1
ROUTER_SUFFIX = ".safetensors"


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
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise RouterError(f"{name.replace('_', ' ')} must be a finite number, got {v!r}")
            try:
                v = float(v)
            except OverflowError:
                raise RouterError(f"{name.replace('_', ' ')} must be a finite number, got a number too large") from None
            if not math.isfinite(v):
                raise RouterError(f"{name.replace('_', ' ')} must be a finite number, got {v!r}")
            setattr(self, name, v)
            if v < 0:
                raise RouterError(f"{name.replace('_', ' ')} must be >= 0, got {v:g}")
        if self.force is not None and not str(self.force).strip():
            self.force = None

    def describe(self) -> str:
        parts = []
        if self.force:
            return f"forced candidate '{self.force}'"
        if self.best_quality:
            parts.append("best quality")
        elif self.budget is not None:
            parts.append(f"target average cost {self.budget:g} s/image")
        elif self.cost_weight is not None:
            parts.append(f"cost weight {self.cost_weight:g}")
        else:
            parts.append("router default budget")
        if self.max_cost is not None:
            parts.append(f"cap {self.max_cost:g} s/image")
        return ", ".join(parts)


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
    anchor scores (``extend.py``)."""

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
            if cost is not None and (not math.isfinite(cost) or cost < 0):
                raise RouterError(f"cost of '{c['name']}' must be a finite number >= 0, got {cost}")
            cands.append({**c, "cost": float(cost)} if cost is not None else dict(c))
        return self.copy(candidates=cands)

    # -- budgets ---------------------------------------------------------------------
    def lambda_for_budget(self, budget: float) -> float:
        """Smallest cost weight whose calibrated average cost is within ``budget``."""
        return self.budget_mixture(budget)[0]

    def budget_mixture(self, budget: float) -> tuple[float, float, float]:
        """A target average cost usually falls between two calibrated operating points. Returns
        (cheaper cost weight, dearer cost weight, share of prompts on the dearer one) so that the
        calibrated average cost equals the target instead of undershooting it."""
        lams = np.asarray(self.calibration["cost_weight"])
        costs = np.asarray(self.calibration["mean_cost"])
        ok = np.nonzero(costs <= budget + 1e-12)[0]
        if len(ok) == 0:
            return float(lams[-1]), float(lams[-1]), 0.0
        i = int(ok[0])
        if i == 0 or costs[i - 1] <= costs[i]:
            return float(lams[i]), float(lams[i]), 0.0
        share = (budget - costs[i]) / (costs[i - 1] - costs[i])
        return float(lams[i]), float(lams[i - 1]), float(np.clip(share, 0.0, 1.0))

    def choices(self, z: np.ndarray, prompts: list[str], budget: Budget | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The candidate index and the cost weight used for each prompt. With a target average cost,
        a stable hash of each prompt decides which of the two neighbouring operating points it gets,
        so a prompt always routes the same way and the share on the dearer point meets the target."""
        budget = budget or Budget()
        lam, allowed = self.resolve(budget)
        lams = np.full(len(prompts), lam)
        target = self._target_cost(budget)
        if target is not None and not budget.force:
            cheap, dear, share = self.budget_mixture(float(target))
            if share > 0:
                lams = np.where(prompt_hash(prompts) < share, dear, cheap)
        return choose(z, self.cost, lams, allowed), lams

    def resolve(self, budget: Budget | None) -> tuple[float, np.ndarray | None]:
        budget = budget or Budget()
        allowed = None
        if budget.max_cost is not None:
            allowed = self.cost <= budget.max_cost + 1e-12
            if not allowed.any():
                raise RouterError(
                    f"no candidate costs at most {budget.max_cost:g} s/image; the cheapest, "
                    f"'{self.names[int(np.argmin(self.cost))]}', costs {self.cost.min():g}"
                )
        target = self._target_cost(budget)
        if budget.best_quality:
            lam = 0.0
        elif budget.cost_weight is not None:
            lam = float(budget.cost_weight)
        elif target is not None:
            lam = self.lambda_for_budget(target)
        else:
            lam = 0.0
        return lam, allowed

    def _target_cost(self, budget: Budget) -> float | None:
        """The average cost per image a budget aims at: its own target or the router's default,
        unless it asks for best quality or gives a cost weight."""
        if budget.best_quality or budget.cost_weight is not None:
            return None
        target = budget.budget if budget.budget is not None else self.default_budget
        return None if target is None else float(target)

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
        ay = self.reference.y[self.reference.anchors].astype(np.float64)
        cols = [a.predict(S, z_base, ay) for a in self.added]
        return np.concatenate([z_base, np.stack(cols, axis=1)], axis=1)

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

    def route(self, prompts: list[str], budget: Budget | None = None) -> list[Decision]:
        budget = budget or Budget()
        if budget.force:
            if budget.force not in self.names:
                raise RouterError(f"forced candidate '{budget.force}' is not in the router; it has {self.names}")
        _, allowed = self.resolve(budget)
        z, dist, fallback = self.predict_embedded(self.embedder.embed(list(prompts)))
        picks, lams = self.choices(z, list(prompts), budget)
        raw = self.to_raw(z)
        out = []
        for i, prompt in enumerate(prompts):
            c = self.names.index(budget.force) if budget.force else int(picks[i])
            pq = {n: round(float(raw[i, j]), 4) for j, n in enumerate(self.names)}
            costs = {n: float(self.cost[j]) for j, n in enumerate(self.names)}
            d = Decision(prompt, self.names[c], dict(self.candidates[c].get("config", {})), pq, costs,
                         float(lams[i]), budget.describe())
            if self.reference is not None:
                d.extra = {"ood_distance": round(float(dist[i]), 4), "ood_fallback": round(float(fallback[i]), 3)}
            d.explanation = self.explain(d, z[i], allowed, float(lams[i]))
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

    # -- file format -----------------------------------------------------------------
    def metadata(self) -> dict:
        _, params = self.predictor.state()
        extra = {}
        if self.reference is not None:
            extra["reference"] = self.reference.state()[1]
        if self.added:
            extra["added"] = [a.meta() for a in self.added]
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "candidates": self.candidates,
            "embedder": self.embedder_identity,
            "predictor": {"kind": self.predictor.kind, "params": params},
            "metric": self.metric, "norm": self.norm,
            "calibration": self.calibration, "default_budget": self.default_budget,
            "training": self.training, **extra,
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        from safetensors.numpy import save_file

        tensors, _ = self.predictor.state()
        if self.reference is not None:
            tensors.update(self.reference.state()[0])
        if self.added:
            tensors["added_scores"] = np.stack([a.scores for a in self.added], axis=1)
        tensors = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "router": json.dumps(self.metadata())}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Router:
        return load_router(path)


REQUIRED_PARAMS = {"knn": ("k",), "ridge": ("penalty",), "mlp": ("hidden", "dim", "outputs"),
                   "knn_or_ridge": ("value",)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def prompt_hash(prompts: list[str]) -> np.ndarray:
    """A stable number in [0, 1) per prompt (the same on every machine and run)."""
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(p.encode("utf-8", "replace"), digest_size=8).digest(), "big")
                     / 2.0 ** 64 for p in prompts])


def _need(cond: bool, path, what: str) -> None:
    if not cond:
        raise RouterFileError(f"{path}: {what}")


def load_router(path: str | os.PathLike) -> Router:
    """Load and validate a router file (safetensors with JSON metadata; never pickle)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise RouterFileError(f"router file {path} does not exist")
    if path.is_dir():
        raise RouterFileError(f"{path} is a folder, not a router file")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt files
        with open(path, "rb") as fh:
            head = fh.read(2)
        # only a file safetensors cannot parse is looked at as a pickle: a valid header may start with 0x80
        if head[:1] == b"\x80" or head == b"PK":
            raise RouterFileError(f"{path} is a pickle or torch.save file; router files are safetensors only, "
                                  "and pickles are never loaded") from None
        raise RouterFileError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    _need(header.get("format") == FORMAT, path, "not a cost-aware router file (no 'format' metadata)")
    try:
        version = int(header.get("format_version", "-1"))
    except ValueError:
        version = -1
    _need(version == FORMAT_VERSION, path, f"format version {header.get('format_version')!r}; "
          f"this version of the pack reads version {FORMAT_VERSION}")
    try:
        meta = json.loads(header.get("router", ""))
    except json.JSONDecodeError as exc:
        raise RouterFileError(f"{path}: router metadata is not valid JSON ({exc.msg})") from None
    _need(isinstance(meta, dict), path, "router metadata is not a JSON object")
    for key in ("candidates", "embedder", "predictor", "metric", "norm", "calibration"):
        _need(key in meta, path, f"metadata lacks '{key}'")
    cands = meta["candidates"]
    _need(isinstance(cands, list) and len(cands) >= 1, path, "'candidates' must be a non-empty list")
    names = []
    for c in cands:
        _need(isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"].strip(), path,
              "every candidate needs a non-empty 'name'")
        cost = c.get("cost")
        _need(isinstance(cost, (int, float)) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0,
              path, f"candidate '{c['name']}' has an invalid cost {cost!r}")
        _need(isinstance(c.get("config", {}), dict), path, f"candidate '{c['name']}' config must be an object")
        names.append(c["name"])
    _need(len(set(names)) == len(names), path, f"duplicate candidate names in {names}")
    emb = meta["embedder"]
    _need(isinstance(emb, dict) and isinstance(emb.get("dim"), int) and emb["dim"] > 0, path,
          "embedder identity lacks a positive 'dim'")
    norm = meta["norm"]
    _need(isinstance(norm, dict) and all(_finite(norm.get(k)) for k in ("mean", "std")) and norm["std"] > 0, path,
          "'norm' needs a finite mean and a finite, positive std")
    cal = meta["calibration"]
    _need(isinstance(cal, dict) and isinstance(cal.get("cost_weight"), list) and isinstance(cal.get("mean_cost"), list)
          and len(cal["cost_weight"]) == len(cal["mean_cost"]) and len(cal["cost_weight"]) > 0, path,
          "'calibration' needs equal, non-empty 'cost_weight' and 'mean_cost' lists")
    _need(all(_finite(x) and x >= 0 for x in cal["cost_weight"] + cal["mean_cost"]), path,
          "'calibration' cost weights and mean costs must be finite numbers >= 0")
    _need(all(q is None or _finite(q) for q in cal.get("mean_quality", [])), path,
          "'calibration' mean qualities must be finite numbers or null")
    default = meta.get("default_budget")
    _need(default is None or (_finite(default) and default >= 0), path,
          f"'default_budget' must be null or a finite number >= 0, got {default!r}")
    pred = meta["predictor"]
    _need(isinstance(pred, dict) and isinstance(pred.get("params"), dict), path,
          "'predictor' needs 'kind' and 'params'")
    try:
        pcls = get_predictor_class(pred.get("kind"))
    except RouterError as exc:
        raise RouterFileError(f"{path}: {exc}") from None
    params = pred["params"]
    _need(_finite(params.get("alpha")) and 0 <= params["alpha"] <= 1, path,
          f"predictor param 'alpha' must be a number in [0, 1], got {params.get('alpha')!r}")
    for key, kind in (("k", int), ("penalty", float), ("hidden", int), ("dim", int), ("outputs", int),
                      ("value", float)):
        needed = key in REQUIRED_PARAMS.get(pcls.kind, ())
        if needed:
            value = params.get(key)
            _need(_finite(value) and value > 0 and (kind is float or float(value).is_integer()), path,
                  f"predictor '{pcls.kind}' needs a positive {'integer' if kind is int else 'number'} "
                  f"param '{key}', got {value!r}")
    added_meta = meta.get("added", [])
    _need(isinstance(added_meta, list) and len(added_meta) < len(cands), path,
          "'added' must be a list with fewer entries than there are candidates")
    C, d = len(cands) - len(added_meta), emb["dim"]
    _need("mu" in tensors and tensors["mu"].shape == (C,), path,
          f"tensor 'mu' must have shape ({C},) for {C} candidates")
    family = pcls.kind
    if family == "knn_or_ridge":
        _need(params.get("family") in ("knn", "ridge"), path,
              f"predictor 'knn_or_ridge' needs param 'family' 'knn' or 'ridge', got {params.get('family')!r}")
        family = params["family"]
    shapes = {"knn": {"knn_x": (None, d), "knn_y": (None, C)}, "ridge": {"ridge_w": (d, C)},
              "mlp": {"mlp.0.weight": (None, d), "mlp.3.weight": (C, None)}}.get(family, {})
    for name, shape in shapes.items():
        _need(name in tensors, path, f"tensor '{name}' is missing")
        got = tensors[name].shape
        ok = len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got))
        _need(ok, path, f"tensor '{name}' has shape {tuple(got)}, expected {tuple(s or '*' for s in shape)} "
              f"(embedding dim {d}, {C} candidates)")
    if family == "knn":
        _need(tensors["knn_x"].shape[0] == tensors["knn_y"].shape[0], path,
              f"tensors 'knn_x' and 'knn_y' disagree on the number of training prompts "
              f"({tensors['knn_x'].shape[0]} vs {tensors['knn_y'].shape[0]})")
    if pcls.kind == "mlp":
        _need(int(params["dim"]) == d and int(params["outputs"]) == C, path,
              f"MLP params dim={params['dim']}, outputs={params['outputs']} do not match embedding dim {d} and "
              f"{C} candidates")
    for name, t in tensors.items():
        # these keep NaN for unscored cells
        values = t[~np.isnan(t)] if name in ("knn_y", "ref_y", "added_scores") else t
        _need(np.isfinite(values).all(), path, f"tensor '{name}' has non-finite values")
    predictor = pcls.from_state(tensors, pred["params"])
    reference, added = _load_extras(path, meta, tensors, d, C, added_meta)
    return Router(cands, predictor, emb, str(meta["metric"]), norm, cal, meta.get("training"),
                  meta.get("default_budget"), reference, added)


def _load_extras(path, meta: dict, tensors: dict, d: int, C: int, added_meta: list):
    """The optional reference set and added candidates of a router file, validated."""
    ref_meta = meta.get("reference")
    if ref_meta is None:
        _need(not added_meta, path, "added candidates need the 'reference' set they were scored on")
        return None, []
    _need(isinstance(ref_meta, dict) and all(t in tensors for t in ("ref_x", "ref_oof", "ref_y")), path,
          "'reference' needs tensors 'ref_x', 'ref_oof' and 'ref_y'")
    _need(isinstance(ref_meta.get("anchors"), list) and isinstance(ref_meta.get("anchor_prompts"), list)
          and all(isinstance(i, int) and not isinstance(i, bool) for i in ref_meta["anchors"])
          and all(isinstance(p, str) for p in ref_meta["anchor_prompts"])
          and all(_finite(ref_meta.get(k)) for k in ("k", "start", "full", "median")), path,
          "'reference' needs integer 'anchors', text 'anchor_prompts' and finite 'k', 'start', 'full', 'median'")
    reference = Reference.from_state(tensors, ref_meta)
    problems = reference.problems(d, C)
    _need(not problems, path, "; ".join(problems))
    added = []
    A = len(reference.anchors)
    scores = tensors.get("added_scores")
    if added_meta:
        _need(scores is not None and scores.shape == (A, len(added_meta)), path,
              f"tensor 'added_scores' must have shape ({A}, {len(added_meta)})")
    for j, a in enumerate(added_meta):
        _need(isinstance(a, dict) and a.get("mode") in ("absolute", "offset") and isinstance(a.get("ref"), int)
              and 0 <= a["ref"] < C and isinstance(a.get("k"), int) and a["k"] >= 1
              and _finite(a.get("shrink")) and 0 <= a["shrink"] <= 1 and _finite(a.get("mean")), path,
              f"added candidate {j + 1} needs mode 'absolute' or 'offset', a trained 'ref' column, k >= 1, "
              "'shrink' in [0, 1] and a finite 'mean'")
        added.append(AddedCandidate(mode=a["mode"], ref=a["ref"], k=a["k"], shrink=float(a["shrink"]),
                                    mean=float(a["mean"]), scores=np.asarray(scores[:, j], dtype=np.float32),
                                    loo_rmse=float(a.get("loo_rmse", float("nan")))))
    return reference, added
