"""Append-only log of routing decisions (one JSON object per line) and its report.

Several ComfyUI workers or CLI processes, on one machine or on several machines sharing a
filesystem, may append to the same log at once. :func:`append_decisions` writes a whole batch
with a single ``os.write`` on a descriptor opened with ``O_APPEND`` while holding an exclusive
``flock``, so lines are never lost, duplicated, interleaved or torn between writers:

* ``O_APPEND`` makes each write land at the current end of the file (atomic on local POSIX
  filesystems);
* the advisory ``flock`` serialises writers where ``O_APPEND`` is not atomic (NFS and other
  network filesystems), and covers the rare short write that needs a second ``os.write``;
* a file that does not end in a newline (a writer killed mid-write, or a full disk) gets a
  newline before the next batch, so the torn line stays on its own line and
  :func:`read_log` skips and counts it instead of losing the next record too.

Where ``fcntl`` does not exist (Windows) the lock is skipped and appends rely on the
operating system alone.

Each line is at most :data:`MAX_LINE_BYTES` bytes (UTF-8, without the newline): a longer
record gets its ``prompt`` cut to fit and ``"prompt_truncated": true`` added. A record too long
even with an empty prompt is refused. Non-finite floats (NaN, +-inf) are written as ``null``.

:func:`summarise` turns the records into a plain dictionary (counts and shares per candidate,
mean cost per image, its running mean against the target, exploration, out-of-distribution
prompts), :func:`format_summary` into text and :func:`plots.plot_log_summary` into a Pillow image.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .errors import RouterError
from .fileutil import bounded_lines, file_kind

try:  # POSIX only; on Windows appends go without the advisory lock
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None

#: Longest line (UTF-8 bytes, newline excluded) that :func:`append_decisions` writes. A longer
#: record has its ``prompt`` cut to fit and is marked ``"prompt_truncated": true``. 64 KiB keeps
#: a log readable line by line with bounded memory; :func:`read_log` skips (and counts as bad)
#: lines over twice this size without holding them whole.
MAX_LINE_BYTES = 64 * 1024

#: What :func:`read_log` still parses: lines longer than this are counted bad and skipped.
MAX_READ_LINE_BYTES = 2 * MAX_LINE_BYTES

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


# -- writing -------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean_str(s: str) -> str:
    """``s`` as valid Unicode: surrogate pairs joined, lone surrogates replaced by U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _clean(value: Any) -> Any:
    """A JSON-ready copy of ``value``: non-finite floats -> None, numpy values -> Python ones."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, dict):
        return {(_clean_str(k) if isinstance(k, str) else k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _encode_record(record: dict, index: int) -> bytes:
    """One record as one line of UTF-8 JSON (newline included), at most MAX_LINE_BYTES + 1 bytes."""
    if not isinstance(record, dict):
        raise RouterError(f"decision record {index} is a {type(record).__name__}, not a dict")
    rec = _clean(record)
    try:
        line = _dumps(rec)
    except (TypeError, ValueError) as exc:
        raise RouterError(f"decision record {index} cannot be written as JSON: {exc}") from None
    if len(line) > MAX_LINE_BYTES and isinstance(rec.get("prompt"), str):
        prompt = rec["prompt"]
        rec["prompt"] = ""
        rec["prompt_truncated"] = True
        room = MAX_LINE_BYTES - len(_dumps(rec))  # bytes left for the prompt's escaped text
        # longest prefix whose escaped form fits (escaped length grows with the prefix)
        lo, hi = 0, min(len(prompt), max(room, 0))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(_dumps(prompt[:mid])) - 2 <= room:
                lo = mid
            else:
                hi = mid - 1
        rec["prompt"] = prompt[:lo]
        line = _dumps(rec)
    if len(line) > MAX_LINE_BYTES:
        raise RouterError(
            f"decision record {index} is {len(line)} bytes as JSON even without its prompt; "
            f"at most {MAX_LINE_BYTES} fit on one line of the decision log")
    return line + b"\n"


def _refuse_kind(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise RouterError(f"decision log {path} is {file_kind(mode)}, not a regular file")


def _open_checked(path: str, flags: int, creating: bool, fallback_flags: int | None = None) -> int:
    """Open ``path`` (never following a final symlink, never blocking on a FIFO) and refuse
    anything but a regular file. Returns a blocking descriptor. ``fallback_flags`` are tried
    when ``flags`` are refused for lack of permission."""
    if os.path.islink(path):
        raise RouterError(f"decision log {path} is a symbolic link; give the real file's path")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise RouterError(f"folder {parent} for decision log {path} does not exist")
    if os.path.isdir(path):
        raise RouterError(f"decision log {path} is a folder, not a regular file")
    extra = _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY
    try:
        try:
            fd = os.open(path, flags | extra, 0o644)
        except PermissionError:
            if fallback_flags is None:
                raise
            fd = os.open(path, fallback_flags | extra, 0o644)
    except OSError as exc:
        if os.path.islink(path):  # swapped in after the check above (ELOOP / EMLINK)
            raise RouterError(f"decision log {path} is a symbolic link; give the real file's path") from None
        if isinstance(exc, FileNotFoundError):
            what = "does not exist" if not creating else f"cannot be created (folder {parent} is missing)"
            raise RouterError(f"decision log {path} {what}") from None
        if isinstance(exc, IsADirectoryError):
            raise RouterError(f"decision log {path} is a folder, not a regular file") from None
        if exc.errno == errno.ENXIO:  # FIFO without a reader, opened non-blocking for writing
            raise RouterError(f"decision log {path} is a FIFO or device, not a regular file") from None
        raise RouterError(f"cannot open decision log {path}: {exc.strerror or exc}") from None
    try:
        _refuse_kind(path, os.fstat(fd).st_mode)
        if _O_NONBLOCK and fcntl is not None:
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~_O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError:  # filesystem without flock support: rely on O_APPEND alone
        return False


def _last_byte(fd: int, size: int) -> bytes | None:
    """The file's last byte, or None when it cannot be read (write-only descriptor)."""
    try:
        if hasattr(os, "pread"):
            return os.pread(fd, 1, size - 1)
        os.lseek(fd, size - 1, os.SEEK_SET)
        return os.read(fd, 1)
    except OSError:
        return None


def append_decisions(path: str | os.PathLike, records: list[dict]) -> None:
    """Append ``records`` to the decision log at ``path``, one JSON line each, atomically.

    The whole batch goes out in one ``os.write`` (repeated only after a short write) under an
    exclusive ``flock``, on a descriptor opened with ``O_APPEND | O_CREAT | O_NOFOLLOW``
    (mode 0o644 minus the umask). The file is opened read-write so its last byte can be
    checked (falling back to write-only when it may not be read). A symlink, folder, FIFO,
    device or other non-regular file, or a missing parent folder, is refused with
    :class:`RouterError`, as is a record that cannot be written as JSON; nothing is written then.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(records, dict):
        records = [records]
    data = b"".join(_encode_record(r, i) for i, r in enumerate(records))
    if not data:
        return
    fd = _open_checked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, creating=True,
                       fallback_flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # a write-only file
    try:
        locked = _lock(fd)
        try:
            size = os.fstat(fd).st_size
            if size > 0 and _last_byte(fd, size) not in (b"\n", None):
                data = b"\n" + data  # isolate a torn last line
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(0, "write returned no progress")
                view = view[n:]
        except OSError as exc:
            raise RouterError(f"cannot append to decision log {path}: {exc.strerror or exc}") from None
        finally:
            if locked:
                try:  # explicit unlock: a forked child may share this open file description
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except OSError:
                    pass
    finally:
        os.close(fd)


def decision_record(*, router: str, prompt: str, candidate: str, predicted_quality: dict[str, float],
                    cost: dict[str, float], cost_weight: float | None, budget: str,
                    router_fingerprint: str | None = None, target: float | None = None,
                    ood_distance: float | None = None, explored: bool = False, prompt_id: str | None = None,
                    realised_mean_cost: float | None = None, count: int | None = None,
                    time: str | None = None, **extra: Any) -> dict:
    """One routing decision as a log record.

    ``predicted_quality`` and ``cost`` map every candidate to its predicted quality and its cost
    (seconds per image); ``chosen_cost`` is ``cost[candidate]`` (None when unknown). ``budget`` is
    the budget mode in words, ``target`` the target average cost (s/image) or None.
    ``realised_mean_cost`` and ``count`` are added only when given (a held budget's tally so far).
    ``time`` defaults to now, UTC, ISO-8601 with a ``Z``. Extra keyword arguments (for example
    ``ood_fallback``) are stored as they are.
    """
    def num(x):
        return None if x is None else float(x)

    pq = {str(k): num(v) for k, v in dict(predicted_quality).items()}
    costs = {str(k): num(v) for k, v in dict(cost).items()}
    rec = {
        "time": time or _utc_now(),
        "router": router,
        "router_fingerprint": router_fingerprint,
        "prompt": prompt,
        "candidate": candidate,
        "predicted_quality": pq,
        "cost": costs,
        "chosen_cost": costs.get(str(candidate)),
        "cost_weight": num(cost_weight),
        "budget": budget,
        "target": num(target),
        "ood_distance": num(ood_distance),
        "explored": bool(explored),
        "prompt_id": prompt_id,
    }
    if realised_mean_cost is not None:
        rec["realised_mean_cost"] = float(realised_mean_cost)
    if count is not None:
        rec["count"] = int(count)
    rec.update(extra)
    return _clean(rec)


def decision_records(decisions, router: str, router_fingerprint: str | None, target: float | None = None,
                     prompt_id: str | None = None) -> list[dict]:
    """Log records for ``router.Decision`` objects (the CLI's ``--log`` and the Route node share this)."""
    out = []
    for d in decisions:
        held = d.extra.get("held", {})
        out.append(decision_record(
            router=router, router_fingerprint=router_fingerprint, prompt=d.prompt, candidate=d.candidate,
            predicted_quality=d.predicted_quality, cost=d.cost, cost_weight=d.cost_weight, budget=d.budget,
            target=held.get("target", target), ood_distance=d.extra.get("ood_distance"),
            explored=bool(d.extra.get("explored", False)), prompt_id=prompt_id,
            realised_mean_cost=held.get("realised_mean_cost"), count=held.get("count"),
            ood_fallback=d.extra.get("ood_fallback")))
    return out


# -- reading -------------------------------------------------------------------------------


def _constant_as_null(name: str) -> None:
    return None  # NaN / Infinity written by another tool: read as null


def read_log(path: str | os.PathLike, skip_bad: bool = True) -> tuple[list[dict], int]:
    """Read a decision log: ``(records, bad_count)``.

    Streams the file in binary, one bounded ``readline`` at a time: a torn or garbage line
    (not UTF-8, not a JSON object) or one over :data:`MAX_READ_LINE_BYTES` is skipped and
    counted, never held whole. Blank lines are ignored. With ``skip_bad=False`` the first bad
    line raises :class:`RouterError` instead. Non-regular files are refused as for appending.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    fd = _open_checked(path, os.O_RDONLY, creating=False)
    records: list[dict] = []
    bad = 0
    limit = MAX_READ_LINE_BYTES
    with os.fdopen(fd, "rb", buffering=1 << 16) as fh:
        for lineno, raw in bounded_lines(fh, limit):
            if raw is None:
                problem = f"is longer than {limit} bytes"
            else:
                text = raw.rstrip(b"\r\n")
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text.decode("utf-8"), parse_constant=_constant_as_null)
                except (UnicodeDecodeError, ValueError):
                    obj = None
                if isinstance(obj, dict):
                    records.append(obj)
                    continue
                problem = "is not a JSON object (torn or corrupt)"
            if not skip_bad:
                raise RouterError(f"decision log {path} line {lineno} {problem}")
            bad += 1
    return records, bad


# -- summary -------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    """A finite float, or None for anything else (bools, strings, NaN, missing)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _chosen_cost(rec: dict) -> float | None:
    c = _num(rec.get("chosen_cost"))
    if c is None and isinstance(rec.get("cost"), dict):
        c = _num(rec["cost"].get(str(rec.get("candidate"))))
    return c


def _parse_time(t: Any) -> datetime | None:
    if not isinstance(t, str):
        return None
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith("Z") else t)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def summarise(records: list[dict], windows: int = 20) -> dict:
    """A plain-dict report of decision-log ``records`` (in file order, i.e. append order).

    Keys: ``total``; ``candidates`` (list of ``{candidate, count, share, mean_predicted_quality,
    mean_cost}``, most chosen first); ``mean_cost`` (mean cost of the chosen candidates over the
    records that have one, ``costed`` of them); ``running`` (cumulative mean cost after ``n``
    decisions, at up to ``windows`` evenly spaced ``n``); ``windows`` (mean cost of each of up to
    ``windows`` consecutive equal slices: ``start``, ``end`` (exclusive, 0-based positions among
    costed records), ``mean_cost``); ``targets`` (each target seen with its ``count``, the
    ``mean_cost`` of those decisions and ``error_pct`` = 100 * (mean - target) / target);
    ``target`` and ``target_error_pct`` (the same when exactly one target was seen, else None);
    ``ood`` (``fallback_count``/``fallback_share`` over records carrying ``ood_fallback``, where
    ``ood_fallback > 0`` counts as out of distribution, and ``mean_distance`` over records with
    ``ood_distance``); ``explored`` and ``explored_share``; ``first_time``, ``last_time``,
    ``span_seconds``; ``routers`` (``{router, fingerprint, count}``); ``budgets`` (text -> count).
    """
    recs = [r for r in records if isinstance(r, dict)]
    n = len(recs)
    windows = max(1, int(windows))

    by_cand: dict[str, dict] = {}
    costs: list[float] = []
    explored = 0
    fb_seen = fb_pos = 0
    dists: list[float] = []
    by_target: dict[float, list[float]] = {}
    target_count: Counter = Counter()
    routers: Counter = Counter()
    budgets: Counter = Counter()
    times: list[tuple[datetime, str]] = []

    for r in recs:
        cand = r.get("candidate")
        cand = "(none)" if cand is None else str(cand)
        slot = by_cand.setdefault(cand, {"count": 0, "q": [], "c": []})
        slot["count"] += 1
        pq = r.get("predicted_quality")
        q = _num(pq.get(cand)) if isinstance(pq, dict) else None
        if q is not None:
            slot["q"].append(q)
        c = _chosen_cost(r)
        if c is not None:
            costs.append(c)
            slot["c"].append(c)
        if r.get("explored") is True:
            explored += 1
        fb = _num(r.get("ood_fallback"))
        if fb is not None:
            fb_seen += 1
            fb_pos += fb > 0
        d = _num(r.get("ood_distance"))
        if d is not None:
            dists.append(d)
        t = _num(r.get("target"))
        if t is not None:
            target_count[t] += 1
            if c is not None:
                by_target.setdefault(t, []).append(c)
        routers[(str(r.get("router")), r.get("router_fingerprint"))] += 1
        if r.get("budget") is not None:
            budgets[str(r.get("budget"))] += 1
        dt = _parse_time(r.get("time"))
        if dt is not None:
            times.append((dt, r["time"]))

    candidates = [
        {"candidate": k, "count": v["count"], "share": v["count"] / n,
         "mean_predicted_quality": _mean(v["q"]), "mean_cost": _mean(v["c"])}
        for k, v in sorted(by_cand.items(), key=lambda kv: (-kv[1]["count"], kv[0]))
    ]

    m = len(costs)
    running: list[dict] = []
    window_means: list[dict] = []
    if m:
        arr = np.asarray(costs, dtype=float)
        cum = np.cumsum(arr) / np.arange(1, m + 1)
        points = np.unique(np.round(np.linspace(1, m, min(windows, m))).astype(int))
        running = [{"n": int(k), "mean_cost": float(cum[k - 1])} for k in points]
        edges = np.linspace(0, m, min(windows, m) + 1).round().astype(int)
        window_means = [{"start": int(a), "end": int(b), "mean_cost": float(arr[a:b].mean())}
                        for a, b in zip(edges[:-1], edges[1:]) if b > a]

    targets = []
    for t in sorted(target_count):
        mc = _mean(by_target.get(t, []))
        err = None if mc is None or t == 0 else 100.0 * (mc - t) / t
        targets.append({"target": t, "count": target_count[t], "mean_cost": mc, "error_pct": err})
    single = targets[0] if len(targets) == 1 else None

    first = last = None
    span = None
    if times:
        lo, hi = min(times, key=lambda x: x[0]), max(times, key=lambda x: x[0])
        first, last, span = lo[1], hi[1], (hi[0] - lo[0]).total_seconds()

    return {
        "total": n,
        "candidates": candidates,
        "costed": m,
        "mean_cost": _mean(costs),
        "running": running,
        "windows": window_means,
        "targets": targets,
        "target": single["target"] if single else None,
        "target_error_pct": single["error_pct"] if single else None,
        "ood": {
            "with_fallback": fb_seen,
            "fallback_count": fb_pos,
            "fallback_share": fb_pos / fb_seen if fb_seen else None,
            "with_distance": len(dists),
            "mean_distance": _mean(dists),
        },
        "explored": explored,
        "explored_share": explored / n if n else None,
        "first_time": first,
        "last_time": last,
        "span_seconds": span,
        "routers": [{"router": name, "fingerprint": fp, "count": c}
                    for (name, fp), c in sorted(routers.items(), key=lambda kv: (-kv[1], kv[0][0]))],
        "budgets": dict(budgets.most_common()),
    }


def _span_words(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _f(x: float | None, fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def format_summary(summary: dict) -> str:
    """A short human-readable text of :func:`summarise`'s result."""
    n = summary["total"]
    if not n:
        return "Decision log: no decisions."
    lines = [f"Decision log: {n} decision{'s' if n != 1 else ''}"]
    if summary.get("first_time"):
        lines[0] += f", {summary['first_time']} to {summary['last_time']}"
        lines[0] += f" ({_span_words(summary['span_seconds'])})"
    for r in summary["routers"]:
        fp = f" (fingerprint {r['fingerprint']})" if r["fingerprint"] else ""
        lines.append(f"Router: {r['router']}{fp}, {r['count']} decisions")
    if summary["mean_cost"] is not None:
        lines.append(f"Mean cost per image: {summary['mean_cost']:.3g} s over {summary['costed']} decisions")
    for t in summary["targets"]:
        err = "" if t["error_pct"] is None else f", {t['error_pct']:+.1f}% off target"
        lines.append(f"Target {t['target']:g} s/image ({t['count']} decisions): "
                     f"realised {_f(t['mean_cost'], '.3g')} s{err}")
    if summary["budgets"]:
        lines.append("Budgets: " + "; ".join(f"{b} ({c})" for b, c in summary["budgets"].items()))
    lines.append(f"Explored: {summary['explored']} ({100 * summary['explored_share']:.1f}%)")
    ood = summary["ood"]
    if ood["fallback_share"] is not None:
        lines.append(f"Out of distribution: {ood['fallback_count']} of {ood['with_fallback']} "
                     f"({100 * ood['fallback_share']:.1f}%) fell back towards the average")
    if ood["mean_distance"] is not None:
        lines.append(f"Mean out-of-distribution distance: {ood['mean_distance']:.3g} "
                     f"({ood['with_distance']} decisions)")
    width = max(9, *(len(c["candidate"]) for c in summary["candidates"]))
    lines.append("")
    lines.append(f"{'candidate':<{width}}  {'count':>7}  {'share':>6}  {'mean quality':>12}  {'mean cost':>9}")
    for c in summary["candidates"]:
        lines.append(f"{c['candidate']:<{width}}  {c['count']:>7}  {100 * c['share']:>5.1f}%  "
                     f"{_f(c['mean_predicted_quality'], '.3f'):>12}  {_f(c['mean_cost'], '.3g'):>7} s")
    return "\n".join(lines)


# -- plot ----------------------------------------------------------------------------------
