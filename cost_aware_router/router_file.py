"""Router files: safetensors tensors with the router's description as JSON metadata; never pickle.

``save_router`` writes atomically and refuses to replace an existing file unless asked;
``load_router`` validates every field and tensor shape and names what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .added import AddedCandidate
from .errors import RouterError, RouterFileError
from .fileutil import atomic_write
from .predictors import get_predictor_class
from .reference import Reference
from .router import Router
from .validate import is_finite

FORMAT = "cost_aware_router"
FORMAT_VERSION = 1
REQUIRED_PARAMS = {"knn": ("k",), "ridge": ("penalty",), "mlp": ("hidden", "dim", "outputs"),
                   "knn_or_ridge": ("value",)}


def metadata(router: Router) -> dict:
    """The JSON description stored in the file's metadata."""
    _, params = router.predictor.state()
    extra = {}
    if router.reference is not None:
        extra["reference"] = router.reference.state()[1]
    if router.added:
        extra["added"] = [a.meta() for a in router.added]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "candidates": router.candidates,
        "embedder": router.embedder_identity,
        "predictor": {"kind": router.predictor.kind, "params": params},
        "metric": router.metric, "norm": router.norm,
        "calibration": router.calibration, "default_budget": router.default_budget,
        "training": router.training, **extra,
    }


def save_router(router: Router, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``router`` to ``path`` atomically; an existing file is replaced only with ``overwrite``."""
    from safetensors.numpy import save_file

    tensors, _ = router.predictor.state()
    if router.reference is not None:
        tensors.update(router.reference.state()[0])
    if router.added:
        tensors["added_scores"] = np.stack([a.scores for a in router.added], axis=1)
    tensors = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "router": json.dumps(metadata(router))}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite=overwrite)


def _need(cond: bool, path, what: str) -> None:
    if not cond:
        raise RouterFileError(f"{path}: {what}")


def _read(path: Path) -> tuple[dict, dict]:
    """The header metadata and tensors of a safetensors file; a pickle is named, never loaded."""
    from safetensors import safe_open

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
    return header, tensors


def _metadata(path: Path, header: dict) -> dict:
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
    return meta


def _check_fields(path: Path, meta: dict) -> None:
    """Candidates, embedder identity, normalisation, calibration and default budget."""
    cands = meta["candidates"]
    _need(isinstance(cands, list) and len(cands) >= 1, path, "'candidates' must be a non-empty list")
    names = []
    for c in cands:
        _need(isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"].strip(), path,
              "every candidate needs a non-empty 'name'")
        cost = c.get("cost")
        _need(is_finite(cost) and cost >= 0, path, f"candidate '{c['name']}' has an invalid cost {cost!r}")
        _need(isinstance(c.get("config", {}), dict), path, f"candidate '{c['name']}' config must be an object")
        names.append(c["name"])
    _need(len(set(names)) == len(names), path, f"duplicate candidate names in {names}")
    emb = meta["embedder"]
    _need(isinstance(emb, dict) and isinstance(emb.get("dim"), int) and emb["dim"] > 0, path,
          "embedder identity lacks a positive 'dim'")
    norm = meta["norm"]
    _need(isinstance(norm, dict) and all(is_finite(norm.get(k)) for k in ("mean", "std")) and norm["std"] > 0, path,
          "'norm' needs a finite mean and a finite, positive std")
    cal = meta["calibration"]
    _need(isinstance(cal, dict) and isinstance(cal.get("cost_weight"), list) and isinstance(cal.get("mean_cost"), list)
          and len(cal["cost_weight"]) == len(cal["mean_cost"]) and len(cal["cost_weight"]) > 0, path,
          "'calibration' needs equal, non-empty 'cost_weight' and 'mean_cost' lists")
    _need(all(is_finite(x) and x >= 0 for x in cal["cost_weight"] + cal["mean_cost"]), path,
          "'calibration' cost weights and mean costs must be finite numbers >= 0")
    _need(all(q is None or is_finite(q) for q in cal.get("mean_quality", [])), path,
          "'calibration' mean qualities must be finite numbers or null")
    default = meta.get("default_budget")
    _need(default is None or (is_finite(default) and default >= 0), path,
          f"'default_budget' must be null or a finite number >= 0, got {default!r}")


def _predictor(path: Path, meta: dict, tensors: dict, C: int):
    """The predictor, after checking its kind, parameters and tensor shapes."""
    d = meta["embedder"]["dim"]
    pred = meta["predictor"]
    _need(isinstance(pred, dict) and isinstance(pred.get("params"), dict), path,
          "'predictor' needs 'kind' and 'params'")
    try:
        pcls = get_predictor_class(pred.get("kind"))
    except RouterError as exc:
        raise RouterFileError(f"{path}: {exc}") from None
    params = pred["params"]
    _need(is_finite(params.get("alpha")) and 0 <= params["alpha"] <= 1, path,
          f"predictor param 'alpha' must be a number in [0, 1], got {params.get('alpha')!r}")
    for key, kind in (("k", int), ("penalty", float), ("hidden", int), ("dim", int), ("outputs", int),
                      ("value", float)):
        if key in REQUIRED_PARAMS.get(pcls.kind, ()):
            value = params.get(key)
            _need(is_finite(value) and value > 0 and (kind is float or float(value).is_integer()), path,
                  f"predictor '{pcls.kind}' needs a positive {'integer' if kind is int else 'number'} "
                  f"param '{key}', got {value!r}")
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
    return pcls.from_state(tensors, params)


def _extras(path: Path, meta: dict, tensors: dict, C: int, added_meta: list):
    """The optional reference set and added candidates, validated."""
    d = meta["embedder"]["dim"]
    ref_meta = meta.get("reference")
    if ref_meta is None:
        _need(not added_meta, path, "added candidates need the 'reference' set they were scored on")
        return None, []
    _need(isinstance(ref_meta, dict) and all(t in tensors for t in ("ref_x", "ref_oof", "ref_y")), path,
          "'reference' needs tensors 'ref_x', 'ref_oof' and 'ref_y'")
    _need(isinstance(ref_meta.get("anchors"), list) and isinstance(ref_meta.get("anchor_prompts"), list)
          and all(isinstance(i, int) and not isinstance(i, bool) for i in ref_meta["anchors"])
          and all(isinstance(p, str) for p in ref_meta["anchor_prompts"])
          and all(is_finite(ref_meta.get(k)) for k in ("k", "start", "full", "median")), path,
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
              and is_finite(a.get("shrink")) and 0 <= a["shrink"] <= 1 and is_finite(a.get("mean")), path,
              f"added candidate {j + 1} needs mode 'absolute' or 'offset', a trained 'ref' column, k >= 1, "
              "'shrink' in [0, 1] and a finite 'mean'")
        added.append(AddedCandidate(mode=a["mode"], ref=a["ref"], k=a["k"], shrink=float(a["shrink"]),
                                    mean=float(a["mean"]), scores=np.asarray(scores[:, j], dtype=np.float32),
                                    loo_rmse=float(a.get("loo_rmse", float("nan")))))
    return reference, added


def load_router(path: str | os.PathLike) -> Router:
    """Load and validate a router file (safetensors with JSON metadata; never pickle)."""
    path = Path(path)
    header, tensors = _read(path)
    meta = _metadata(path, header)
    _check_fields(path, meta)
    cands = meta["candidates"]
    added_meta = meta.get("added", [])
    _need(isinstance(added_meta, list) and len(added_meta) < len(cands), path,
          "'added' must be a list with fewer entries than there are candidates")
    C = len(cands) - len(added_meta)
    predictor = _predictor(path, meta, tensors, C)
    for name, t in tensors.items():
        # these keep NaN for unscored cells
        values = t[~np.isnan(t)] if name in ("knn_y", "ref_y", "added_scores") else t
        _need(np.isfinite(values).all(), path, f"tensor '{name}' has non-finite values")
    reference, added = _extras(path, meta, tensors, C, added_meta)
    router = Router(cands, predictor, meta["embedder"], str(meta["metric"]), meta["norm"], meta["calibration"],
                    meta.get("training"), meta.get("default_budget"), reference, added)
    router.fingerprint = file_fingerprint(path)
    return router


def file_fingerprint(path: Path) -> str:
    """A short content hash of a router file: which router a decision log line or a held budget belongs to."""
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
