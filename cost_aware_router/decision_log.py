"""Append-only log of routing decisions (one JSON object per line) and its report.

Several ComfyUI workers or CLI processes, on one machine or on several machines sharing a
filesystem, may append to the same log at once. :func:`append_decisions` writes a whole batch
through the pack's one locked append (``storage.lines.append_lines``: a single ``O_APPEND`` write
under an exclusive ``flock``, a torn last line isolated on its own line), so lines are never lost,
duplicated, interleaved or torn between writers, and :func:`read_log` skips and counts a torn line
instead of losing the next record too. Where ``fcntl`` does not exist (Windows) the lock is skipped
and appends rely on the operating system alone.

Each line is at most :data:`MAX_LINE_BYTES` bytes (UTF-8, without the newline): a longer
record gets its ``prompt`` cut to fit and ``"prompt_truncated": true`` added. A record too long
even with an empty prompt is refused. Non-finite floats (NaN, +-inf) are written as ``null``.

A log is rotated by size (:data:`MAX_LOG_BYTES`; :data:`ROTATED_FILES` older parts are kept) under
the same lock, so it never grows without bound. :func:`iter_log` reads one file as a stream;
:mod:`report` summarises a log and its rotated parts in constant memory.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .errors import RouterError
from .storage.files import open_regular
from .storage.lines import append_lines, bounded_lines

#: Longest line (UTF-8 bytes, newline excluded) that :func:`append_decisions` writes. A longer
#: record has its ``prompt`` cut to fit and is marked ``"prompt_truncated": true``. 64 KiB keeps
#: a log readable line by line with bounded memory; :func:`read_log` skips (and counts as bad)
#: lines over twice this size without holding them whole.
MAX_LINE_BYTES = 64 * 1024

#: What :func:`read_log` still parses: lines longer than this are counted bad and skipped.
MAX_READ_LINE_BYTES = 2 * MAX_LINE_BYTES

#: A log is rotated when a batch would take it over this size (64 MiB, some 60,000-100,000
#: decisions): ``decisions.jsonl`` becomes ``decisions.1.jsonl`` and a new file starts.
MAX_LOG_BYTES = 64 * 1024 * 1024

#: Rotated parts kept (``decisions.1.jsonl`` newest ... ``decisions.3.jsonl`` oldest); older ones are
#: dropped, so a log never takes more than (1 + ROTATED_FILES) x MAX_LOG_BYTES on disk.
ROTATED_FILES = 3

_OPEN_ATTEMPTS = 8  # opens of a log being rotated by others before a batch is written where it lands


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


def rotated_paths(path: str | os.PathLike, keep: int = ROTATED_FILES) -> list[str]:
    """The names a log's older parts are rotated to, newest first: ``decisions.jsonl`` ->
    ``decisions.1.jsonl``, ``decisions.2.jsonl``, ...; a name without a suffix gets ``.1``, ``.2``."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    folder, name = os.path.split(path)
    stem, dot, suffix = name.rpartition(".")
    if not stem:  # no suffix ("log"), or a dot file (".log")
        stem, dot, suffix = name, "", ""
    return [os.path.join(folder, f"{stem}.{i}{dot}{suffix}") for i in range(1, keep + 1)]


def log_files(path: str | os.PathLike) -> list[str]:
    """The files of one log, oldest first: the rotated parts that exist, then ``path`` itself."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return [p for p in reversed(rotated_paths(path)) if os.path.lexists(p)] + [path]


def _rotate(path: str, keep: int) -> None:
    """``path`` -> ``path.1``, ``path.1`` -> ``path.2``, ...; the oldest part is dropped. Each step is a
    ``rename`` (a link is moved, never followed)."""
    names = [path, *rotated_paths(path, keep)]
    try:
        for src, dst in reversed(list(zip(names[:-1], names[1:]))):
            if os.path.lexists(src):
                os.replace(src, dst)
    except OSError as exc:
        where = f" ({exc.filename} -> {exc.filename2})" if exc.filename2 else ""
        raise RouterError(f"cannot rotate decision log {path}: {exc.strerror or exc}{where}") from None


def append_decisions(path: str | os.PathLike, records: list[dict], max_bytes: int | None = MAX_LOG_BYTES,
                     keep: int = ROTATED_FILES) -> None:
    """Append ``records`` to the decision log at ``path``, one JSON line each, atomically.

    The whole batch goes out through ``storage.lines.append_lines``: one ``os.write`` (repeated
    only after a short write) under an exclusive ``flock``, on a descriptor opened with
    ``O_APPEND | O_CREAT | O_NOFOLLOW`` (mode 0o644 minus the umask). A symlink, folder, FIFO,
    device or other non-regular file, or a missing parent folder, is refused with
    :class:`RouterError`, as is a record that cannot be written as JSON; nothing is written then.

    Rotation (this log's policy, run by the append under its lock): when the batch would take the
    file over ``max_bytes`` (None: never), the file is renamed to ``decisions.1.jsonl`` first (the
    older parts move up one, ``keep`` of them are kept) and the batch starts a new file; a writer
    that waited for the lock finds the name moved on and reopens it, so no line is lost or lands
    in a rotated part.
    Where ``flock`` is missing (Windows, some network filesystems) the log is not rotated.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(records, dict):
        records = [records]
    data = b"".join(_encode_record(r, i) for i, r in enumerate(records))
    if not data:
        return

    def make_room(size: int, extra: int) -> bool:  # rotation, under the append's lock
        if max_bytes and size and size + extra > max_bytes:
            _rotate(path, keep)
            return True
        return False

    append_lines(path, data, "decision log", make_room=make_room, attempts=_OPEN_ATTEMPTS)


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


def _parse_line(raw: bytes) -> dict | str | None:
    """One line as a dict, None for a blank line, or what is wrong with it (text)."""
    text = raw.rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf")  # a byte-order mark an editor put first
    if not text.strip():
        return None
    try:
        obj = json.loads(text.decode("utf-8"), parse_constant=_constant_as_null)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, an integer over Python's digit limit, too deep
        return "is not a JSON object (torn or corrupt)"
    return obj if isinstance(obj, dict) else "is not a JSON object (torn or corrupt)"


def iter_log(path: str | os.PathLike, bad: list[int] | None = None, skip_bad: bool = True) -> Iterator[dict]:
    """The records of a decision log, one at a time (constant memory whatever the file's length).

    Streams the file in binary, one bounded ``readline`` at a time: a torn or garbage line (not
    UTF-8, not a JSON object, nested too deeply) or one over :data:`MAX_READ_LINE_BYTES` is
    skipped and counted in ``bad[0]``, never held whole. Blank lines are ignored; a last line
    without its newline is read like any other. With ``skip_bad=False`` the first bad line raises
    :class:`RouterError` instead. Non-regular files are refused as for appending.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    limit = MAX_READ_LINE_BYTES
    with open_regular(path, "decision log", follow=False, buffering=1 << 16) as fh:
        for lineno, raw in bounded_lines(fh, limit):
            obj = f"is longer than {limit} bytes" if raw is None else _parse_line(raw)
            if obj is None:
                continue
            if isinstance(obj, dict):
                yield obj
                continue
            if not skip_bad:
                raise RouterError(f"decision log {path} line {lineno} {obj}")
            if bad is not None:
                bad[0] += 1


def read_log(path: str | os.PathLike, skip_bad: bool = True) -> tuple[list[dict], int]:
    """Read a whole decision log into memory: ``(records, bad_count)`` (see :func:`iter_log`; the
    report streams instead, :func:`report.summarise_log`)."""
    bad = [0]
    records = list(iter_log(path, bad, skip_bad))
    return records, bad[0]
