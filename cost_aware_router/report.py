"""Log summaries: the decision log's report (``cost-aware-router report``), read as a stream in constant memory.

:func:`summarise_log` reads a log and its rotated parts (oldest first, :func:`decision_log.log_files`)
one record at a time and :class:`LogSummary` aggregates as it reads, keeping only bounded state,
whatever the log's length:

* per candidate a count and sums (predicted quality, cost), for at most :data:`MAX_CANDIDATES`
  distinct names: the decisions of further names are counted together in one "other candidates" row;
* the chosen costs in log order as at most :data:`SERIES_BINS` bins of equal width (the width
  doubles when they are full), which give exact sums at every bin boundary: the running mean and the
  per-window means are exact up to :data:`SERIES_BINS` costed decisions and, beyond, taken at the bin
  boundary nearest to each evenly spaced point (within 1/2,048 of the log);
* at most :data:`MAX_GROUPS` distinct routers, budgets and targets each (further ones are counted as
  folded), and the first and last time.

Every field the report reads is checked. A record that is not a JSON object, or whose fields the
report reads have the wrong type or a value out of range, is **skipped and counted** as malformed
with its reason (one of a fixed set of texts): one corrupt field usually means a corrupt record, and
counting the rest of it would make the sections of the report disagree. The checks: ``candidate`` is
text of 1-200 characters (required); ``router``, ``budget`` text of at most 1,000 characters,
``router_fingerprint`` of at most 200, ``time`` an ISO-8601 time of at most 64 (or absent/null);
``predicted_quality`` and ``cost`` objects; every number the report reads (the chosen candidate's
predicted quality and cost, ``chosen_cost``, ``target``, ``ood_distance``, ``ood_fallback``) a JSON
number of magnitude at most :data:`MAX_NUMBER` (costs and distances not negative, a target above
zero); ``explored`` true, false or absent. Non-finite numbers (``NaN``, ``Infinity``, ``1e999``) read
as null, as the writer writes them. Fields the report does not read are not checked.

With those bounds no sum can overflow and every figure is finite; :func:`report_json` still checks
each number (a non-finite one becomes null) and writes pure ASCII JSON with ``allow_nan=False``, DEL
and every non-ASCII character escaped. :func:`format_summary` escapes control characters, line
separators and the like in every text that came from the log (``storage.text.printable``), so a name
cannot forge a report line.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .decision_log import iter_log, log_files
from .storage.text import json_text, printable

MAX_NUMBER = 1e12  # largest magnitude of a cost, quality, target or distance the report accepts
MAX_NAME_CHARS = 200  # a candidate name (as in a scored-generations folder and a router file)
MAX_TEXT_CHARS = 1_000  # a router name, a budget in words
MAX_FINGERPRINT_CHARS = 200
MAX_TIME_CHARS = 64
MAX_CANDIDATES = 1024  # distinct candidate names kept apart (a router file holds at most 256)
MAX_GROUPS = 64  # distinct routers, budgets and targets kept apart
SERIES_BINS = 4096  # bins of the chosen-cost series (even)

NOT_AN_OBJECT = "not a JSON object"


class _Malformed(Exception):
    """A record the report skips; the message is its reason (one of a fixed set)."""


# -- checking one record ---------------------------------------------------------------------------


def _number(x: Any, key: str, low: float = -MAX_NUMBER, positive: bool = False) -> float | None:
    """``x`` as a float; None for null or a non-finite float; _Malformed for anything else or out of range."""
    if x is None:
        return None
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
    elif isinstance(x, bool) or not isinstance(x, int):
        raise _Malformed(f"'{key}' is not a number")
    if not low <= x <= MAX_NUMBER or (positive and x <= 0):  # exact for integers of any size
        raise _Malformed(f"'{key}' is out of range")
    return float(x)


def _text(x: Any, key: str, limit: int, required: bool = False) -> str | None:
    if x is None and not required:
        return None
    if not isinstance(x, str) or not x or len(x) > limit:
        raise _Malformed(f"'{key}' is not text of 1-{limit} characters")
    return x


def _object(x: Any, key: str) -> dict | None:
    if x is not None and not isinstance(x, dict):
        raise _Malformed(f"'{key}' is not an object")
    return x


def _time(x: Any) -> tuple[float, str] | None:
    """(seconds since the epoch, the text) of an ISO-8601 time; naive times are UTC."""
    t = _text(x, "time", MAX_TIME_CHARS)
    if t is None:
        return None
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp(), t
    except (ValueError, OverflowError):
        raise _Malformed("'time' is not an ISO-8601 time") from None


def _fields(rec: dict) -> tuple:
    """The fields the report reads, checked (see the module's docstring)."""
    cand = _text(rec.get("candidate"), "candidate", MAX_NAME_CHARS, required=True)
    pq = _object(rec.get("predicted_quality"), "predicted_quality")
    costs = _object(rec.get("cost"), "cost")
    q = _number(pq.get(cand), "predicted_quality") if pq else None
    c = _number(rec.get("chosen_cost"), "chosen_cost", 0.0)
    if c is None and costs:
        c = _number(costs.get(cand), "cost", 0.0)
    explored = rec.get("explored")
    if explored is not None and not isinstance(explored, bool):
        raise _Malformed("'explored' is not true or false")
    return (cand, q, c, explored is True, _number(rec.get("ood_fallback"), "ood_fallback"),
            _number(rec.get("ood_distance"), "ood_distance", 0.0),
            _number(rec.get("target"), "target", 0.0, positive=True),
            (_text(rec.get("router"), "router", MAX_TEXT_CHARS),
             _text(rec.get("router_fingerprint"), "router_fingerprint", MAX_FINGERPRINT_CHARS)),
            _text(rec.get("budget"), "budget", MAX_TEXT_CHARS), _time(rec.get("time")))


# -- aggregating -------------------------------------------------------------------------------------


def _div(a: float, b: float) -> float | None:
    """a / b, or None when b is 0 or the result is not finite."""
    if not b:
        return None
    x = a / b
    return x if math.isfinite(x) else None


class _Series:
    """A sequence of numbers kept as at most ``bins`` sums of ``width`` consecutive values (the last
    one partial); ``width`` (a power of two) doubles when the bins are full."""

    def __init__(self, bins: int = SERIES_BINS):
        self.cap, self.width, self.sums, self.fill, self.n = bins - bins % 2, 1, [], 0, 0

    def add(self, x: float) -> None:
        if not self.sums or self.fill == self.width:
            if len(self.sums) >= self.cap:
                s = self.sums
                self.sums = [s[i] + s[i + 1] for i in range(0, len(s), 2)]
                self.width *= 2
            self.sums.append(0.0)
            self.fill = 0
        self.sums[-1] += x
        self.fill += 1
        self.n += 1

    def add_to_last(self, x: float) -> None:
        """Add ``x`` to the last value without counting a new one (an escalation's extra spend)."""
        if not self.sums:
            self.add(x)
        else:
            self.sums[-1] += x

    def _snap(self, pos: int) -> int:
        """The bin boundary nearest to ``pos`` (0 .. n; n itself is one)."""
        return int(pos) if pos >= self.n else min(int(round(pos / self.width)) * self.width, self.n)

    def _sum(self, a: int, b: int) -> float:
        """Sum of values a .. b-1, for boundaries a, b."""
        return math.fsum(self.sums[a // self.width: -(-b // self.width)])

    def points(self, windows: int) -> tuple[list[dict], list[dict]]:
        """(running mean at up to ``windows`` evenly spaced counts, mean of up to ``windows`` slices)."""
        m = self.n
        if not m:
            return [], []
        k = min(windows, m)
        ends = sorted({max(self._snap(p), min(self.width, m)) for p in np.round(np.linspace(1, m, k)).astype(int)})
        running = [{"n": e, "mean_cost": _div(self._sum(0, e), e)} for e in ends]
        edges = sorted({self._snap(p) for p in np.linspace(0, m, k + 1).round().astype(int)})
        means = [{"start": a, "end": b, "mean_cost": _div(self._sum(a, b), b - a)}
                 for a, b in zip(edges[:-1], edges[1:]) if b > a]
        return running, means


class LogSummary:
    """Aggregates decision-log records as they are read, in bounded memory (see the module docstring).
    ``add`` each record in log order, then ``result()``."""

    def __init__(self, windows: int = 20):
        self.windows = max(1, int(windows))
        self.n = self.explored = self.fb_seen = self.fb_pos = self.dist_n = self.escalations = 0
        self.dist_sum = self.escalation_cost = 0.0
        self.cands: dict[str, list] = {}  # name -> [count, quality sum, quality n, cost sum, cost n]
        self.other: list | None = None
        self.series = _Series()
        self.targets: dict[float, list] = {}  # target -> [count, cost sum, cost n]
        self.routers: Counter = Counter()
        self.budgets: Counter = Counter()
        self.folded: Counter = Counter()
        self.malformed: Counter = Counter()
        self.first: tuple[float, str] | None = None
        self.last: tuple[float, str] | None = None

    def _group(self, table: dict, key, empty):
        """``table[key]``, created while fewer than MAX_GROUPS keys are kept; None (folded) after."""
        if key in table or len(table) < MAX_GROUPS:
            return table.setdefault(key, empty())
        return None

    def _candidate(self, cand: str) -> list:
        slot = self.cands.get(cand)
        if slot is None:
            if len(self.cands) < MAX_CANDIDATES:
                slot = self.cands[cand] = [0, 0.0, 0, 0.0, 0]
            else:
                self.folded["candidates"] += 1
                slot = self.other = self.other or [0, 0.0, 0, 0.0, 0]
        return slot

    def add(self, rec: Any) -> None:
        if not isinstance(rec, dict):
            self.malformed[NOT_AN_OBJECT] += 1
            return
        try:
            cand, q, c, explored, fb, dist, target, router, budget, when = _fields(rec)
        except _Malformed as exc:
            self.malformed[str(exc)] += 1
            return
        if rec.get("escalation") is True:  # verify and escalate: a second image of a prompt already counted
            self._escalation(c or 0.0, target)
            return
        self.n += 1
        slot = self._candidate(cand)
        slot[0] += 1
        if q is not None:
            slot[1] += q
            slot[2] += 1
        if c is not None:
            slot[3] += c
            slot[4] += 1
            self.series.add(c)
        self.explored += explored
        if fb is not None:
            self.fb_seen += 1
            self.fb_pos += fb > 0
        if dist is not None:
            self.dist_n += 1
            self.dist_sum += dist
        self._add_groups(c, target, router, budget)
        if when is not None:
            if self.first is None or when[0] < self.first[0]:
                self.first = when
            if self.last is None or when[0] > self.last[0]:
                self.last = when

    def _escalation(self, c: float, target) -> None:
        """Extra spend on the last decision's prompt: in the cost series and its target's mean, not a decision."""
        self.escalations += 1
        self.escalation_cost += c
        self.series.add_to_last(c)
        t = self.targets.get(target) if target is not None else None
        if t is not None:
            t[1] += c

    def _add_groups(self, c, target, router, budget) -> None:
        if target is not None:
            t = self._group(self.targets, target, lambda: [0, 0.0, 0])
            if t is None:
                self.folded["targets"] += 1
            else:
                t[0] += 1
                if c is not None:
                    t[1] += c
                    t[2] += 1
        for table, key, name in ((self.routers, router, "routers"), (self.budgets, budget, "budgets")):
            if key is None:  # a record without a budget (a router is always counted, named or not)
                continue
            if key in table or len(table) < MAX_GROUPS:
                table[key] += 1
            else:
                self.folded[name] += 1

    def result(self) -> dict:
        """The report as a plain dict (the keys of :func:`summarise_records`)."""
        n = self.n
        rows = sorted(self.cands.items(), key=lambda kv: (-kv[1][0], kv[0]))
        candidates = [self._row(name, v) for name, v in rows]
        if self.other is not None:
            candidates.append({**self._row("(other candidates)", self.other), "others": True})
        running, windows = self.series.points(self.windows)
        targets = []
        for t in sorted(self.targets):
            count, csum, cn = self.targets[t]
            mc = _div(csum, cn)
            targets.append({"target": t, "count": count, "mean_cost": mc,
                            "error_pct": None if mc is None else _div(100.0 * (mc - t), t)})
        single = targets[0] if len(targets) == 1 else None
        return {
            "total": n, "candidates": candidates, "costed": self.series.n,
            "mean_cost": _div(self.series._sum(0, self.series.n), self.series.n) if self.series.n else None,
            "running": running, "windows": windows, "targets": targets,
            "target": single["target"] if single else None,
            "target_error_pct": single["error_pct"] if single else None,
            "ood": {"with_fallback": self.fb_seen, "fallback_count": self.fb_pos,
                    "fallback_share": _div(self.fb_pos, self.fb_seen), "with_distance": self.dist_n,
                    "mean_distance": _div(self.dist_sum, self.dist_n)},
            "explored": self.explored, "explored_share": _div(self.explored, n),
            "escalations": self.escalations, "escalation_share": _div(self.escalations, n),
            "escalation_cost": self.escalation_cost,
            "first_time": self.first[1] if self.first else None, "last_time": self.last[1] if self.last else None,
            "span_seconds": self.last[0] - self.first[0] if self.first else None,
            "routers": [{"router": r, "fingerprint": fp, "count": c}
                        for (r, fp), c in sorted(self.routers.items(), key=lambda kv: (-kv[1], str(kv[0])))],
            "budgets": dict(self.budgets.most_common()),
            "malformed": sum(self.malformed.values()), "malformed_reasons": dict(self.malformed.most_common()),
            "folded": dict(self.folded),
        }

    def _row(self, name: str, v: list) -> dict:
        return {"candidate": name, "count": v[0], "share": _div(v[0], self.n),
                "mean_predicted_quality": _div(v[1], v[2]), "mean_cost": _div(v[3], v[4])}


def summarise_records(records, windows: int = 20) -> dict:
    """A plain-dict report of decision-log ``records`` (in file order, i.e. append order).

    Keys: ``total`` (records summarised); ``candidates`` (list of ``{candidate, count, share,
    mean_predicted_quality, mean_cost}``, most chosen first; an ``others`` row last when more than
    MAX_CANDIDATES names were seen); ``mean_cost`` (mean cost of the chosen candidates over the
    ``costed`` records that have one); ``running`` (cumulative mean cost after ``n`` decisions, at up
    to ``windows`` evenly spaced ``n``); ``windows`` (mean cost of up to ``windows`` consecutive
    slices: ``start``, ``end`` (exclusive, 0-based positions among costed records), ``mean_cost``);
    ``targets`` (each target seen with its ``count``, the ``mean_cost`` of those decisions and
    ``error_pct`` = 100 * (mean - target) / target); ``target`` and ``target_error_pct`` (the same
    when exactly one target was seen, else None); ``ood`` (``fallback_count``/``fallback_share`` over
    records carrying ``ood_fallback``, where ``ood_fallback > 0`` counts as out of distribution, and
    ``mean_distance`` over records with ``ood_distance``); ``explored`` and ``explored_share``;
    ``first_time``, ``last_time``, ``span_seconds``; ``routers`` (``{router, fingerprint, count}``);
    ``budgets`` (text -> count); ``malformed`` (records skipped) and ``malformed_reasons`` (reason ->
    count); ``folded`` (decisions counted together past the limits on distinct names).
    """
    agg = LogSummary(windows)
    for rec in records:
        agg.add(rec)
    return agg.result()


def summarise_log(path: str | os.PathLike, windows: int = 20) -> dict:
    """:func:`summarise_records` of the log at ``path`` and its rotated parts (oldest first), read as a stream;
    adds ``files`` (the files read) and ``bad_lines`` (lines that were not JSON objects, torn, or
    over the reader's line limit, skipped). A part that vanishes while the report runs (an appender
    rotating the log: ``path`` is missing for a moment) is passed over; a log read during a rotation
    may miss or repeat one part's records."""
    agg = LogSummary(windows)
    listed = log_files(path)
    files, bad = [], [0]
    for name in listed:
        if len(listed) > 1 and not os.path.lexists(name):
            continue
        files.append(name)
        for rec in iter_log(name, bad):
            agg.add(rec)
    return {**agg.result(), "files": files, "bad_lines": bad[0]}


# -- output ------------------------------------------------------------------------------------------


def report_json(summary: dict) -> str:
    """The summary as one line of strict JSON: every number finite (a non-finite one is null), pure ASCII
    (every non-ASCII character, C1 controls and lone surrogates included, as a ``\\u`` escape) and DEL
    escaped too, so no control character reaches a terminal."""
    return json_text(summary, ascii_only=True)


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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _header(summary: dict) -> list[str]:
    n = summary["total"]
    lines = [f"Decision log: {n} decision{'s' if n != 1 else ''}"]
    if summary.get("first_time"):
        lines[0] += f", {printable(summary['first_time'])} to {printable(summary['last_time'])}"
        lines[0] += f" ({_span_words(summary['span_seconds'])})"
    files = summary.get("files") or []
    if len(files) > 1:
        lines.append(f"Read {len(files)} files (rotated parts first): "
                     + ", ".join(printable(os.path.basename(f)) for f in files))
    for r in summary["routers"]:
        fp = f" (fingerprint {printable(r['fingerprint'])})" if r["fingerprint"] else ""
        name = "(unnamed)" if r["router"] is None else printable(r["router"])
        lines.append(f"Router: {name}{fp}, {r['count']} decisions")
    if summary["mean_cost"] is not None:
        lines.append(f"Mean cost per image: {summary['mean_cost']:.3g} s over {summary['costed']} decisions")
    for t in summary["targets"]:
        err = "" if t["error_pct"] is None else f", {t['error_pct']:+.1f}% off target"
        lines.append(f"Target {t['target']:g} s/image ({t['count']} decisions): "
                     f"realised {_f(t['mean_cost'], '.3g')} s{err}")
    if summary["budgets"]:
        lines.append("Budgets: " + "; ".join(f"{printable(b)} ({c})" for b, c in summary["budgets"].items()))
    lines.append(f"Explored: {summary['explored']} ({_pct(summary['explored_share'])})")
    if summary.get("escalations"):
        lines.append(f"Escalated (verify and escalate): {summary['escalations']} ({_pct(summary['escalation_share'])}"
                     f" of decisions), {summary['escalation_cost']:.3g} s in all, included in the mean cost")
    ood = summary["ood"]
    if ood["fallback_share"] is not None:
        lines.append(f"Out of distribution: {ood['fallback_count']} of {ood['with_fallback']} "
                     f"({_pct(ood['fallback_share'])}) fell back towards the average")
    if ood["mean_distance"] is not None:
        lines.append(f"Mean out-of-distribution distance: {ood['mean_distance']:.3g} "
                     f"({ood['with_distance']} decisions)")
    return lines


def _skipped(summary: dict) -> list[str]:
    lines = []
    if summary.get("bad_lines"):
        lines.append(f"{summary['bad_lines']} unreadable line(s) skipped (not a JSON object, torn, or too long)")
    if summary.get("malformed"):
        reasons = "; ".join(f"{printable(r)}: {c}" for r, c in summary.get("malformed_reasons", {}).items())
        lines.append(f"{summary['malformed']} malformed record(s) skipped ({reasons})")
    for what, count in (summary.get("folded") or {}).items():
        limit = MAX_CANDIDATES if what == "candidates" else MAX_GROUPS
        lines.append(f"{count} decision(s) beyond the first {limit} distinct {what} counted together")
    return lines


def format_summary(summary: dict) -> str:
    """A short human-readable text of :func:`summarise_records`'s result. Every text that came from the log is
    escaped (``storage.text.printable``), so each line of the result is a line the report composed."""
    if not summary["total"]:
        return "\n".join(["Decision log: no decisions.", *_skipped(summary)])
    lines = _header(summary)
    names = [printable(c["candidate"]) for c in summary["candidates"]]
    width = max(9, *(len(name) for name in names))
    lines.append("")
    lines.append(f"{'candidate':<{width}}  {'count':>7}  {'share':>6}  {'mean quality':>12}  {'mean cost':>9}")
    for name, c in zip(names, summary["candidates"]):
        lines.append(f"{name:<{width}}  {c['count']:>7}  {_pct(c['share']):>6}  "
                     f"{_f(c['mean_predicted_quality'], '.3f'):>12}  {_f(c['mean_cost'], '.3g'):>7} s")
    skipped = _skipped(summary)
    return "\n".join(lines + ([""] + skipped if skipped else []))
