"""Router files: safetensors tensors with the router's description as JSON metadata; never pickle.

``save_router`` writes atomically and refuses to replace an existing file unless asked;
``load_router`` validates every field and tensor shape and names what is wrong. ``save_router`` first
runs those same checks on what it would write (``check_router``: tensors as the float32 they are stored
in, finite except the unscored cells of ``NAN_CELLS``, the metadata as its JSON reads back), so a file
it writes always loads; what would not is refused, naming the value, before anything is written.

A router file is data only: it cannot name code, a folder or a file to load (the embedder comes from the
pack or from the caller, never from the file). Reading is bounded: only a regular file is opened, its
JSON header may be at most ``MAX_HEADER_BYTES``, the metadata may hold only the known top-level keys,
and its lists are capped (``MAX_CANDIDATES`` candidates, ``MAX_CALIBRATION`` calibration points,
``reference.MAX_REFERENCE`` reference prompts, anchor prompts of at most ``MAX_PROMPT_CHARS`` characters).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from .added import AddedCandidate
from .cascade import CASCADE_VERSION, Cascade
from .errors import RouterError, RouterFileError
from .memory import PROBE_TENSORS, PROBES, width
from .predictors import get_predictor_class
from .reference import MAX_REFERENCE, Reference
from .router import Router
from .scored.record import MAX_CANDIDATES, MAX_FIELD_CHARS, MAX_NAME_CHARS, MAX_PROMPT_CHARS
from .storage.files import atomic_write, open_regular
from .validate import is_finite

FORMAT = "cost_aware_router"
FORMAT_VERSION = 1
REQUIRED_PARAMS = {"knn": ("k",), "ridge": ("penalty",), "mlp": ("hidden", "dim", "outputs"),
                   "knn_or_ridge": ("value",)}
MAX_HEADER_BYTES = 8 << 20  # the safetensors JSON header, metadata included (the default router's is 21 kB)
MAX_CALIBRATION = 10_000  # points of the calibration curve (training writes budget.CALIBRATION_POINTS = 200)
MAX_EMBED_DIM = 65_536
NAN_CELLS = frozenset({"knn_y", "ref_y", "added_scores"})  # tensors that keep NaN for unscored cells
META_KEYS = frozenset({"format", "format_version", "candidates", "embedder", "predictor", "metric", "norm",
                       "calibration", "default_budget", "training", "reference", "added", "cascade"})


def metadata(router: Router) -> dict:
    """The JSON description stored in the file's metadata."""
    _, params = router.predictor.state()
    extra = {}
    if router.reference is not None:
        extra["reference"] = router.reference.state()[1]
    if router.added:
        extra["added"] = [a.meta() for a in router.added]
    if router.cascade is not None:
        extra["cascade"] = router.cascade.meta()
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "candidates": router.candidates,
        "embedder": router.embedder_identity,
        "predictor": {"kind": router.predictor.kind, "params": params},
        "metric": router.metric, "norm": router.norm,
        "calibration": router.calibration, "default_budget": router.default_budget,
        "training": router.training, **extra,
    }


def tensor_problem(name: str, stored: np.ndarray, given: np.ndarray | None = None) -> str:
    """'' when tensor ``name`` as stored (float32) holds only finite numbers, NaN allowed only in ``NAN_CELLS``;
    else what is wrong, naming one value (from ``given``, the values before they were made float32). The one rule
    for ``save_router`` and ``load_router``."""
    bad = ~np.isfinite(stored)
    if name in NAN_CELLS:
        bad &= ~np.isnan(stored)
    if not bad.any():
        return ""
    i = int(np.flatnonzero(bad.reshape(-1))[0])
    value = float(np.asarray(given if given is not None else stored).reshape(-1)[i])
    return (f"tensor '{name}' has non-finite values ({int(bad.sum()):,} not finite as 32-bit floats, e.g. "
            f"{value:.6g})")


def _stored(router: Router) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The float32 tensors and the header metadata ``router`` is stored as; a tensor that float32 cannot hold
    (``tensor_problem``) is refused."""
    tensors, _ = router.predictor.state()
    if router.reference is not None:
        tensors.update(router.reference.state()[0])
    if router.added:
        tensors["added_scores"] = np.stack([a.scores for a in router.added], axis=1)
    if router.cascade is not None:
        tensors.update(router.cascade.tensors())
    stored = {}
    for name, values in tensors.items():
        with np.errstate(over="ignore", invalid="ignore"):
            stored[name] = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
        problem = tensor_problem(name, stored[name], values)
        _need(not problem, "router", problem)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
              "router": json.dumps(metadata(router), ensure_ascii=False)}
    return stored, header


def check_router(router: Router) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """What ``save_router`` would write (float32 tensors, header metadata), after checking that it loads again
    exactly as ``load_router`` checks a file; RouterFileError 'router: what is wrong' otherwise."""
    tensors, header = _stored(router)
    size = len(header["router"].encode()) + 200 * (len(tensors) + 3)
    _need(size <= MAX_HEADER_BYTES, "router", f"its metadata would take about {size:,} bytes, over the "
          f"{MAX_HEADER_BYTES >> 20} MiB limit for a router file's header")
    _router(Path("router"), header, tensors, checked=True)
    return tensors, header


def save_router(router: Router, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``router`` to ``path`` atomically; an existing file is replaced only with ``overwrite``. What would not
    load again (a value float32 cannot hold, a field ``load_router`` refuses) is refused before anything is
    written."""
    from safetensors.numpy import save_file

    if router.columns is not None:  # subset.restrict: predictions of some columns of a router it does not hold
        raise RouterFileError(f"cannot save {path}: this router is a view of some of a router's candidates "
                              f"({router.names}); save the router it was made from")
    try:
        tensors, header = check_router(router)
    except RouterFileError as exc:
        raise RouterFileError(f"cannot save {path}: {str(exc).removeprefix('router: ')} (the file would not load "
                              "again); nothing was written") from None
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header), overwrite=overwrite)


def _need(cond: bool, path, what: str) -> None:
    if not cond:
        raise RouterFileError(f"{path}: {what}")


def _read(path: Path) -> tuple[dict, dict, str]:
    """The header metadata, tensors and content fingerprint of a safetensors file; a pickle is named, never
    loaded. Only a regular file is opened (``storage.files.open_regular``), the header is read and size-checked
    by hand before any parser sees it, and safetensors reads the very file that was checked."""
    from safetensors import safe_open

    with open_regular(path, "router file", RouterFileError) as fh:
        header, head = _header(path, fh)
        where = f"/proc/self/fd/{fh.fileno()}"  # the file checked above, whatever the path now names
        try:
            with safe_open(where if os.path.exists(where) else str(path), framework="numpy") as st:
                tensors = {k: st.get_tensor(k) for k in st.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt files
            _not_safetensors(path, head, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        fh.seek(0)
        digest = hashlib.blake2b(digest_size=12)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return header.get("__metadata__") or {}, tensors, digest.hexdigest()


def _header(path: Path, fh) -> tuple[dict, bytes]:
    """The safetensors JSON header of the open file ``fh`` (and its first 8 bytes), its length checked
    before any parser sees it."""
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(8)
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
    if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
        _not_safetensors(path, head, f"header length {n:,}" if n > MAX_HEADER_BYTES and n <= size - 8 else
                         "no valid header")
    try:
        header = json.loads(fh.read(n))
    except (ValueError, RecursionError):
        _not_safetensors(path, head, "header is not valid JSON")
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        _not_safetensors(path, head, "header is not a JSON object")
    return header, head


def candidate_labels(path: str | os.PathLike) -> list[str]:
    """The candidate labels of a router file, from its header alone (no tensors, no embedder): for lists
    that name candidates before a router is loaded. Refuses (RouterFileError) what ``load_router`` refuses
    about the header and metadata."""
    path = Path(path)
    with open_regular(path, "router file", RouterFileError) as fh:
        header, _ = _header(path, fh)
    meta = _metadata(path, header.get("__metadata__") or {})
    cands = meta["candidates"]
    _need(isinstance(cands, list), path, "'candidates' is not a list")
    return [c["name"] for c in cands if isinstance(c, dict) and isinstance(c.get("name"), str)]


def _not_safetensors(path: Path, head: bytes, why: str):
    # only a file safetensors cannot parse is looked at as a pickle: a valid header may start with 0x80
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise RouterFileError(f"{path} is a pickle or torch.save file; router files are safetensors only, "
                              "and pickles are never loaded")
    if why.startswith("header length"):
        raise RouterFileError(f"{path}: safetensors {why} is over the {MAX_HEADER_BYTES >> 20} MiB limit for a "
                              "router file's header")
    raise RouterFileError(f"{path} is not a readable safetensors file ({why})")


def _metadata(path: Path, header: dict) -> dict:
    _need(header.get("format") == FORMAT, path, "not a cost-aware router file (no 'format' metadata)")
    try:
        version = int(header.get("format_version", "-1"))
    except (ValueError, TypeError):
        version = -1
    _need(version == FORMAT_VERSION, path, f"format version {str(header.get('format_version'))[:20]!r}; "
          f"this version of the pack reads version {FORMAT_VERSION}")
    try:
        meta = json.loads(header.get("router", ""))
    except json.JSONDecodeError as exc:
        raise RouterFileError(f"{path}: router metadata is not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # digit limit, nesting
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise RouterFileError(f"{path}: router metadata is not valid JSON ({why})") from None
    _need(isinstance(meta, dict), path, "router metadata is not a JSON object")
    unknown = sorted(set(meta) - META_KEYS)
    _need(not unknown, path, f"unknown metadata key(s) {[k[:40] for k in unknown[:5]]} (this version of the pack "
          f"reads only its own keys; was the file written by a newer version?)")
    for key in ("candidates", "embedder", "predictor", "metric", "norm", "calibration"):
        _need(key in meta, path, f"metadata lacks '{key}'")
    return meta


def _short_text(value, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or _short_text(value, MAX_FIELD_CHARS)


def _check_fields(path: Path, meta: dict) -> None:
    """Candidates, embedder identity, normalisation, calibration and default budget."""
    cands = meta["candidates"]
    _need(isinstance(cands, list) and 1 <= len(cands) <= MAX_CANDIDATES, path,
          f"'candidates' must be a non-empty list of at most {MAX_CANDIDATES}")
    names = []
    for c in cands:
        _need(isinstance(c, dict) and _short_text(c.get("name"), MAX_NAME_CHARS) and c["name"].strip(), path,
              f"every candidate needs a non-empty 'name' of at most {MAX_NAME_CHARS} characters")
        cost = c.get("cost")
        _need(is_finite(cost) and cost >= 0, path, f"candidate {c['name']!r} has an invalid cost {cost!r}")
        config = c.get("config", {})
        _need(isinstance(config, dict) and len(config) <= 32 and all(
            _short_text(k, MAX_NAME_CHARS) and _scalar(v) for k, v in config.items()), path,
            f"candidate {c['name']!r} config must be an object of at most 32 settings, each a number, a boolean, "
            f"null or a text of at most {MAX_FIELD_CHARS} characters")
        names.append(c["name"])
    _need(len(set(names)) == len(names), path, f"duplicate candidate names in {names}")
    emb = meta["embedder"]
    _need(isinstance(emb, dict) and isinstance(emb.get("dim"), int) and not isinstance(emb["dim"], bool)
          and 0 < emb["dim"] <= MAX_EMBED_DIM, path,
          f"embedder identity lacks a positive 'dim' (at most {MAX_EMBED_DIM:,})")
    for key in ("spec", "name", "kind", "fingerprint"):
        _need(emb.get(key) is None or _short_text(emb[key], MAX_FIELD_CHARS), path,
              f"embedder identity '{key}' must be a text of at most {MAX_FIELD_CHARS} characters, got "
              f"{type(emb.get(key)).__name__}")
    _need(_short_text(meta["metric"], MAX_NAME_CHARS), path,
          f"'metric' must be a text of at most {MAX_NAME_CHARS} characters")
    _need(meta.get("training") is None or isinstance(meta["training"], dict), path, "'training' must be an object")
    norm = meta["norm"]
    _need(isinstance(norm, dict) and all(is_finite(norm.get(k)) for k in ("mean", "std")) and norm["std"] > 0, path,
          "'norm' needs a finite mean and a finite, positive std")
    cal = meta["calibration"]
    _need(isinstance(cal, dict) and isinstance(cal.get("cost_weight"), list) and isinstance(cal.get("mean_cost"), list)
          and len(cal["cost_weight"]) == len(cal["mean_cost"]) and 0 < len(cal["cost_weight"]) <= MAX_CALIBRATION,
          path, f"'calibration' needs equal, non-empty 'cost_weight' and 'mean_cost' lists of at most "
          f"{MAX_CALIBRATION:,} points")
    _need(isinstance(cal.get("mean_quality", []), list) and len(cal.get("mean_quality", [])) <= MAX_CALIBRATION, path,
          f"'calibration' mean qualities must be a list of at most {MAX_CALIBRATION:,}")
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
    _need(len(params) <= 32 and all(_scalar(v) for v in params.values()), path,
          "predictor 'params' must be an object of at most 32 numbers, booleans or short texts")
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
        N = tensors["knn_x"].shape[0]
        _need(N == tensors["knn_y"].shape[0], path,
              f"tensors 'knn_x' and 'knn_y' disagree on the number of training prompts "
              f"({N} vs {tensors['knn_y'].shape[0]})")
        if "knn_d" in tensors:  # row difficulties of a memory that learnt from bandit feedback (online.py)
            _need(tensors["knn_d"].shape == (N,) and np.isfinite(tensors["knn_d"]).all(), path,
                  f"tensor 'knn_d' must hold {N} finite numbers (one per memory row), got shape "
                  f"{tuple(tensors['knn_d'].shape)}")
            pw = params.get("partial_weight")
            _need(is_finite(pw) and 0 < pw <= 1, path,
                  f"predictor param 'partial_weight' must be a number in (0, 1] with tensor 'knn_d', got {pw!r}")
        _memory_extras(path, tensors, N, C)
    if pcls.kind == "mlp":
        _need(int(params["dim"]) == d and int(params["outputs"]) == C, path,
              f"MLP params dim={params['dim']}, outputs={params['outputs']} do not match embedding dim {d} and "
              f"{C} candidates")
    return pcls.from_state(tensors, params)


def _integral(t: np.ndarray, low: int, high: int) -> bool:
    return bool(np.isfinite(t).all() and (t == np.round(t)).all() and (t >= low).all() and (t < high).all())


def _memory_extras(path: Path, tensors: dict, N: int, C: int) -> None:
    """The cell counts, a plain memory's row difficulties and the probe lists of a kNN memory learnt from
    feedback (``memory.py``), when present."""
    if "knn_dp" in tensors:
        _need("knn_d" not in tensors and tensors["knn_dp"].shape == (N,) and np.isfinite(tensors["knn_dp"]).all(),
              path, f"tensor 'knn_dp' must hold {N} finite numbers (one per memory row), and not with 'knn_d'")
    if "knn_n" in tensors:
        n, scored = tensors["knn_n"], ~np.isnan(tensors["knn_y"])
        _need(n.shape == (N, C) and np.isfinite(n).all() and (n >= 0).all() and (n[scored] >= 1).all(), path,
              f"tensor 'knn_n' must hold ({N}, {C}) finite counts, at least 1 for every scored cell of 'knn_y'")
    present = [t for t in PROBE_TENSORS if t in tensors]
    if not present:
        return
    _need(len(present) == len(PROBE_TENSORS), path, f"tensors {list(PROBE_TENSORS)} go together; found {present}")
    probe, nbr, nbs = (tensors[t] for t in PROBE_TENSORS)
    W = width(N)
    P = probe.shape[0] if probe.ndim == 1 else -1
    _need(1 <= P <= min(N, PROBES) and W >= 1 and nbr.shape == (P, W) and nbs.shape == (P, W), path,
          f"probe tensors must have shapes (P,), (P, {W}), (P, {W}) with 1 <= P <= {min(N, PROBES)}, got "
          f"{tuple(probe.shape)}, {tuple(nbr.shape)}, {tuple(nbs.shape)}")
    _need(_integral(probe, 0, N) and len(np.unique(probe)) == P and _integral(nbr, 0, N)
          and not (nbr == probe[:, None]).any() and np.isfinite(nbs).all(), path,
          f"'knn_probe' must hold distinct row numbers below {N}, 'knn_nbr' other rows' numbers, 'knn_nbs' "
          "finite similarities")


def _extras(path: Path, meta: dict, tensors: dict, C: int, added_meta: list):
    """The optional reference set and added candidates, validated."""
    d = meta["embedder"]["dim"]
    ref_meta = meta.get("reference")
    if ref_meta is None:
        _need(not added_meta, path, "added candidates need the 'reference' set they were scored on")
        return None, []
    _need(isinstance(ref_meta, dict) and all(t in tensors for t in ("ref_x", "ref_oof", "ref_y")), path,
          "'reference' needs tensors 'ref_x', 'ref_oof' and 'ref_y'")
    rows = tensors["ref_x"].shape[0] if tensors["ref_x"].ndim == 2 else 0
    _need(1 <= rows <= MAX_REFERENCE, path, f"tensor 'ref_x' must have 1 to {MAX_REFERENCE:,} rows of "
          f"{d} values, got shape {tuple(tensors['ref_x'].shape)}")
    _need(isinstance(ref_meta.get("anchors"), list) and isinstance(ref_meta.get("anchor_prompts"), list)
          and len(ref_meta["anchors"]) <= rows and len(ref_meta["anchor_prompts"]) <= rows
          and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < rows for i in ref_meta["anchors"])
          and all(_short_text(p, MAX_PROMPT_CHARS) for p in ref_meta["anchor_prompts"])
          and all(is_finite(ref_meta.get(k)) for k in ("k", "start", "full", "median")), path,
          f"'reference' needs 'anchors' (row indices of 'ref_x', 0 to {rows - 1}), 'anchor_prompts' (texts of at "
          f"most {MAX_PROMPT_CHARS:,} characters) and finite 'k', 'start', 'full', 'median'")
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
              and is_finite(a.get("shrink")) and 0 <= a["shrink"] <= 1 and is_finite(a.get("mean"))
              and (a.get("loo_rmse") is None or isinstance(a["loo_rmse"], float) or is_finite(a["loo_rmse"])), path,
              f"added candidate {j + 1} needs mode 'absolute' or 'offset', a trained 'ref' column, k >= 1, "
              "'shrink' in [0, 1] and a finite 'mean'")
        added.append(AddedCandidate(mode=a["mode"], ref=a["ref"], k=a["k"], shrink=float(a["shrink"]),
                                    mean=float(a["mean"]), scores=np.asarray(scores[:, j], dtype=np.float32),
                                    loo_rmse=float(a["loo_rmse"] if a.get("loo_rmse") is not None else "nan")))
    return reference, added


def _calibration_ok(cal) -> bool:
    return (isinstance(cal, dict) and all(isinstance(cal.get(k), list) for k in ("cost_weight", "mean_cost"))
            and 0 < len(cal["cost_weight"]) == len(cal["mean_cost"]) <= MAX_CALIBRATION
            and all(is_finite(x) and x >= 0 for x in cal["cost_weight"] + cal["mean_cost"])
            and isinstance(cal.get("mean_quality", []), list) and len(cal.get("mean_quality", [])) <= MAX_CALIBRATION
            and all(q is None or is_finite(q) for q in cal.get("mean_quality", [])))


def _cascade(path: Path, meta: dict, tensors: dict, names: list[str]):
    """The optional verify-and-escalate policy (``cascade.py``), validated; None in older files."""
    cm = meta.get("cascade")
    if cm is None:
        _need(not any(k.startswith("cascade_") for k in tensors), path, "cascade tensors without 'cascade' metadata")
        return None
    _need(isinstance(cm, dict) and cm.get("version") == CASCADE_VERSION, path,
          f"'cascade' must be an object with version {CASCADE_VERSION} (this version of the pack reads only it), got "
          f"{str(cm.get('version') if isinstance(cm, dict) else type(cm).__name__)[:20]!r}")
    cn = cm.get("names")
    _need(isinstance(cn, list) and 2 <= len(cn) <= len(names) and cn == names[:len(cn)], path,
          "'cascade' names must be the router's first candidates, in order")
    C = len(cn)
    vn = cm.get("verify_norm")
    _need(_short_text(cm.get("verify_metric"), MAX_NAME_CHARS) and isinstance(vn, dict)
          and is_finite(vn.get("mean")) and is_finite(vn.get("std")) and vn["std"] > 0
          and isinstance(cm.get("identity"), bool) and isinstance(cm.get("enabled"), bool)
          and isinstance(cm.get("max_images"), int) and not isinstance(cm["max_images"], bool)
          and 1 <= cm["max_images"] <= C, path,
          "'cascade' needs a 'verify_metric' name, 'verify_norm' with a finite mean and a positive std, boolean "
          f"'identity' and 'enabled', and 'max_images' from 1 to {C}")
    _need(cm.get("calibration") is None or _calibration_ok(cm["calibration"]), path,
          "'cascade' calibration needs equal, non-empty 'cost_weight' and 'mean_cost' lists of finite numbers >= 0 "
          f"(at most {MAX_CALIBRATION:,}) and finite or null mean qualities")
    _need(cm.get("report") is None or isinstance(cm["report"], dict), path, "'cascade' report must be an object")
    for name, shape in (("cascade_image_w", (C, 3)), ("cascade_pair_w", (C, C, 4)), ("cascade_pair_sd", (C, C))):
        _need(name in tensors and tuple(tensors[name].shape) == shape, path,
              f"tensor '{name}' must have shape {shape} for the cascade's {C} candidates")
    _need(np.isfinite(tensors["cascade_image_w"]).all() and np.isfinite(tensors["cascade_pair_w"]).all(), path,
          "cascade weights must be finite")
    sd = tensors["cascade_pair_sd"]
    off = ~np.eye(C, dtype=bool)
    _need((sd[off] >= 0).all() and np.isfinite(sd[off]).all(), path,
          "cascade pair sds must be finite and >= 0 off the diagonal")
    return Cascade.from_state(cm, tensors)


def _router(path: Path, header: dict, tensors: dict, checked: bool = False) -> Router:
    """The router a file's header metadata and tensors describe, after validating every field and tensor
    (``checked``: the tensors' values were checked already, ``_stored``)."""
    meta = _metadata(path, header)
    _check_fields(path, meta)
    cands = meta["candidates"]
    added_meta = meta.get("added", [])
    _need(isinstance(added_meta, list) and len(added_meta) < len(cands), path,
          "'added' must be a list with fewer entries than there are candidates")
    C = len(cands) - len(added_meta)
    predictor = _predictor(path, meta, tensors, C)
    for name, t in {} if checked else tensors.items():
        problem = tensor_problem(name, t)
        _need(not problem, path, problem)
    reference, added = _extras(path, meta, tensors, C, added_meta)
    cascade = _cascade(path, meta, tensors, [c["name"] for c in cands])
    return Router(cands, predictor, meta["embedder"], str(meta["metric"]), meta["norm"], meta["calibration"],
                  meta.get("training"), meta.get("default_budget"), reference, added, cascade)


def load_router(path: str | os.PathLike) -> Router:
    """Load and validate a router file (safetensors with JSON metadata; never pickle)."""
    path = Path(path)
    header, tensors, fingerprint = _read(path)
    router = _router(path, header, tensors)
    router.fingerprint = fingerprint
    return router
