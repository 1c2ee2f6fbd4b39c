"""Hostile inputs, round three (issue 20), families 3 and 6: reports that read whole logs, and unclear
crashes or malformed output in ``report`` and the scored-generations store's resume index.

Family 3: ``report`` streams the log (bounded memory whatever its length) and the appender rotates
the log by size under its lock. Family 6: every hostile record is skipped and counted (or the whole
log refused with one line, exit 2), ``--json`` is always strict, pure-ASCII JSON, the text report
cannot be forged by a name, the plot survives any number and any name in linear time, and the store
reads ``generations.jsonl`` with the folder reader's bounded line reader.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from test_decision_log import run_writers
from test_hostile import TIMEOUT, check_cli_case, cli, fifo, link, nested, py

from cost_aware_router.decision_log import append_decisions, decision_record, rotated_paths
from cost_aware_router.errors import DataError, RouterError

MiB = 1 << 20
GOOD = {"time": "2025-01-01T00:00:00.000Z", "router": "r.safetensors", "router_fingerprint": "f00d",
        "prompt": "a cat", "candidate": "fast", "predicted_quality": {"fast": 0.25, "slow": 0.75},
        "cost": {"fast": 1.0, "slow": 3.0}, "chosen_cost": 1.0, "cost_weight": 0.1,
        "budget": "target average cost 2 s/image", "target": 2.0, "ood_distance": 0.5, "explored": False,
        "ood_fallback": 0.0}


def _refuse(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def strict(text: str):
    """Parse ``text`` as strict JSON (NaN / Infinity refused) that is pure printable ASCII."""
    assert all(32 <= ord(ch) < 127 for ch in text.rstrip("\n")), "a raw non-ASCII or control character"
    return json.loads(text, parse_constant=_refuse)


def rec(**changes) -> bytes:
    r = {**GOOD, **changes}
    return json.dumps({k: v for k, v in r.items() if v is not DROP}).encode()  # a lone surrogate as \\ud800


DROP = object()


def raw(text: str) -> bytes:
    """A record with ``text`` (raw JSON) as its chosen_cost."""
    return b'{"candidate":"fast","chosen_cost":' + text.encode() + b"}"


# =================================================================================================================
# Family 6: hostile records. (id, lines after one good record, total, malformed, unreadable lines)
# =================================================================================================================
LONG = "n" * 20_000
RECORDS = [
    ("huge-int-4000-digits-cost", [raw("9" * 4000)], 1, 1, 0),
    ("huge-int-5000-digits-cost", [raw("9" * 5000)], 1, 0, 1),  # over Python's digit limit: not JSON to us
    ("huge-int-target", [rec(target=10 ** 400)], 1, 1, 0),
    ("huge-int-quality", [rec(predicted_quality={"fast": -(10 ** 300)})], 1, 1, 0),
    ("huge-int-ood-distance", [rec(ood_distance=2 ** 2000)], 1, 1, 0),
    ("candidate-list", [rec(candidate=["fast"])], 1, 1, 0),
    ("candidate-object", [rec(candidate={"a": 1})], 1, 1, 0),
    ("candidate-number", [rec(candidate=7)], 1, 1, 0),
    ("candidate-true", [rec(candidate=True)], 1, 1, 0),
    ("candidate-empty", [rec(candidate="")], 1, 1, 0),
    ("candidate-missing", [rec(candidate=DROP)], 1, 1, 0),
    ("candidate-20000-characters", [rec(candidate=LONG)], 1, 1, 0),
    ("router-list", [rec(router=["r"])], 1, 1, 0),
    ("fingerprint-number", [rec(router_fingerprint=12)], 1, 1, 0),
    ("fingerprint-list-unhashable", [rec(router_fingerprint=["f", "g"])], 1, 1, 0),
    ("budget-object", [rec(budget={"x": 1})], 1, 1, 0),
    ("time-number", [rec(time=1.5)], 1, 1, 0),
    ("time-garbage", [rec(time="yesterday")], 1, 1, 0),
    ("time-year-1-and-9999-with-offsets", [rec(time="0001-01-01T00:00:00+14:00"),
                                           rec(time="9999-12-31T23:59:59-14:00")], 3, 0, 0),
    ("tiny-costs", [rec(chosen_cost=5e-324), rec(chosen_cost=1e-320, target=1e-300)], 3, 0, 0),
    ("all-costs-tiny", None, 2, 0, 0),  # (built below: no ordinary record at all)
    ("costs-whose-sum-overflows", [rec(chosen_cost=1.7e308), rec(chosen_cost=1.7e308)], 1, 2, 0),
    ("cost-at-the-limit-and-over", [rec(chosen_cost=1e12), rec(chosen_cost=1.0000001e12)], 2, 1, 0),
    ("nan-and-infinity-read-as-null", [raw("NaN"), raw("Infinity"), raw("-Infinity"), raw("1e999"),
                                       b'{"candidate":"fast","target":NaN,"ood_distance":Infinity,'
                                       b'"ood_fallback":-Infinity,"predicted_quality":{"fast":NaN}}'], 6, 0, 0),
    ("negative-cost-and-distance", [rec(chosen_cost=-1.0), rec(ood_distance=-0.5)], 1, 2, 0),
    ("zero-and-negative-target", [rec(target=0), rec(target=-2.0)], 1, 2, 0),
    ("boolean-numbers", [rec(chosen_cost=True), rec(target=False), rec(ood_fallback=True)], 1, 3, 0),
    ("text-numbers", [rec(chosen_cost="1.0"), rec(predicted_quality={"fast": "high"})], 1, 2, 0),
    ("wrong-containers", [rec(predicted_quality=[0.5]), rec(cost="cheap", chosen_cost=None)], 1, 2, 0),
    ("explored-not-boolean", [rec(explored="yes"), rec(explored=1)], 1, 2, 0),
    ("nested-60000-deep-line", [nested(60_000).encode()], 1, 0, 1),  # under the line limit: the parser's depth
    ("nested-500-deep-in-a-read-field", [rec(chosen_cost=json.loads(nested(500)))], 1, 1, 0),
    ("nested-500-deep-in-an-unread-field", [rec(extra=json.loads(nested(500)))], 2, 0, 0),
    ("invalid-utf-8", [b'{"candidate":"fa\xffst"}', b"\xc3\x28"], 1, 0, 2),
    ("nul-byte", [b'{"candidate":"fast"}\x00'], 1, 0, 1),
    ("not-objects", [b"[1, 2]", b'"text"', b"42", b"null", b"true"], 1, 0, 5),
    ("line-over-128-kib", [b'{"candidate":"' + b"x" * (200 * 1024) + b'"}'], 1, 0, 1),
    ("crlf-line-ends", [rec() + b"\r", rec(candidate="slow") + b"\r"], 3, 0, 0),
    ("blank-lines", [b"", b"   ", b"\t"], 1, 0, 0),
    ("byte-order-mark-before-a-record", [b"\xef\xbb\xbf" + rec(candidate="slow"), b"\xef\xbb\xbf"], 2, 0, 0),
    ("control-characters-in-names", [rec(candidate="evil\nRouter: forged, 999 decisions"),
                                     rec(candidate="del\x7f c1\x85\x9b esc\x1b[31m bidi\u202e sep\u2028"),
                                     rec(router="r\rX", budget="b\nTarget 1 s/image"),
                                     rec(candidate="lone \ud800 surrogate")], 5, 0, 0),
    ("mixed-routers", [rec(router="a.safetensors", router_fingerprint="aa"),
                       rec(router="b.safetensors", router_fingerprint=None), rec(router=None)], 4, 0, 0),
]


def _log_bytes(lines) -> bytes:
    if lines is None:  # every cost tiny: the plot's axis spans almost nothing
        lines = [rec(chosen_cost=5e-324, target=DROP), rec(chosen_cost=0.0, target=DROP)]
        return b"\n".join(lines) + b"\n"
    return b"\n".join([rec(), *lines]) + b"\n"


def _text_table_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("candidate "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
    return lines[start + 1:end]


@pytest.mark.parametrize("lines, total, malformed, bad", [pytest.param(*c[1:], id=c[0]) for c in RECORDS])
def test_hostile_records_are_skipped_and_counted(tmp_path, lines, total, malformed, bad):
    log = tmp_path / "decisions.jsonl"
    log.write_bytes(_log_bytes(lines))
    run = cli("report", log, "--json", "--plot", tmp_path / "p.png")
    assert (run.rc, run.err) == (0, ""), run.err[-2000:]
    assert run.seconds < TIMEOUT
    s = strict(run.out)
    assert (s["total"], s["malformed"], s["bad_lines"]) == (total, malformed, bad), s
    assert sum(s["malformed_reasons"].values()) == malformed
    assert sum(c["count"] for c in s["candidates"]) == total
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = cli("report", log)
    assert (text.rc, text.err) == (0, "")
    assert all(ch == "\n" or ch.isprintable() for ch in text.out)  # every control character escaped
    assert len(_text_table_rows(text.out)) == len(s["candidates"])  # no name can add a line
    assert "forged" not in "".join(ln for ln in text.out.splitlines() if ln.startswith("Router:"))
    assert (f"{malformed} malformed record(s) skipped" in text.out) == bool(malformed)
    assert (f"{bad} unreadable line(s) skipped" in text.out) == bool(bad)


def test_names_are_escaped_in_text_and_json(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_bytes(_log_bytes(dict((c[0], c[1]) for c in RECORDS)["control-characters-in-names"]))
    out = cli("report", log).out
    assert "evil\\nRouter: forged, 999 decisions" in out and "del\\x7f c1\\x85\\x9b esc\\x1b[31m" in out
    assert "\\u202e" in out and "\\u2028" in out and "\\ud800" in out and "Router: r\\rX" in out
    js = cli("report", log, "--json").out
    assert "\\u007f" in js and "\\u0085" in js and "\\u009b" in js and "\\u001b" in js and "\\ud800" in js
    names = {c["candidate"] for c in strict(js)["candidates"]}
    assert "del\x7f c1\x85\x9b esc\x1b[31m bidi\u202e sep\u2028" in names  # the JSON round-trips the text


def test_no_line_at_the_end_and_an_empty_log(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_bytes(rec() + b"\n" + rec(candidate="slow"))  # no newline at the end
    assert strict(cli("report", log, "--json").out)["total"] == 2
    log.write_bytes(b"")
    s = strict(cli("report", log, "--json", "--plot", tmp_path / "p.png").out)
    assert s["total"] == 0 and s["mean_cost"] is None and s["candidates"] == []
    assert cli("report", log).out.strip() == "Decision log: no decisions."
    log.write_bytes(b"\xff\n[1]\n")
    assert "2 unreadable line(s) skipped" in cli("report", log).out


def test_many_distinct_names_are_folded_into_bounded_state(tmp_path):
    from cost_aware_router.report import MAX_CANDIDATES, MAX_GROUPS

    log = tmp_path / "decisions.jsonl"
    n = MAX_CANDIDATES + 500
    log.write_bytes(b"\n".join(rec(candidate=f"c{i}", target=1.0 + i, budget=f"b{i}", router=f"r{i}")
                               for i in range(n)) + b"\n")
    s = strict(cli("report", log, "--json").out)
    assert s["total"] == n and len(s["candidates"]) == MAX_CANDIDATES + 1 and s["candidates"][-1]["others"]
    assert s["candidates"][-1]["count"] == 500 and s["folded"]["candidates"] == 500
    assert len(s["targets"]) == len(s["budgets"]) == len(s["routers"]) == MAX_GROUPS
    assert s["folded"]["targets"] == s["folded"]["budgets"] == s["folded"]["routers"] == n - MAX_GROUPS
    assert "500 decision(s) beyond the first 1024 distinct candidates counted together" in cli("report", log).out


def _fifo_log(t):
    os.mkfifo(t / "decisions.jsonl")


WHOLE_LOG = [  # the log itself cannot be read: one line, exit code 2
    ("folder", lambda t: (t / "decisions.jsonl").mkdir(), r"decisions\.jsonl is a folder, not a regular file"),
    ("fifo", fifo("decisions.jsonl"), r"decisions\.jsonl is a FIFO or device, not a regular file|not a regular"),
    ("missing", None, r"decision log .*decisions\.jsonl does not exist"),
    ("symlink", link("decisions.jsonl", "{t}/out"), r"decisions\.jsonl is a symbolic link"),
    ("device", link("decisions.jsonl", "/dev/zero"), r"decisions\.jsonl is a symbolic link"),
    ("rotated-part-is-a-folder", lambda t: ((t / "decisions.jsonl").write_bytes(rec() + b"\n"),
                                           (t / "decisions.1.jsonl").mkdir()),
     r"decisions\.1\.jsonl is a folder, not a regular file"),
]


@pytest.mark.parametrize("setup, pattern", [pytest.param(*c[1:], id=c[0]) for c in WHOLE_LOG])
@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_a_log_that_cannot_be_read_is_one_clear_line(tmp_path, setup, pattern, mode):
    check_cli_case(tmp_path, setup, ["report", "{t}/decisions.jsonl", *mode], pattern)


# -- the plot and the JSON writer on their own: any summary, any name, any number ---------------------------------
@pytest.mark.parametrize("lo, hi", [(0.0, 1e-320), (0.0, 5e-324), (0.0, 0.0), (5.0, 5.0), (3.0, 1.0),
                                    (1e12, 1e12 + 1e-3), (-1e300, 1e300), (0.0, 1.7e308), (math.nan, 1.0),
                                    (0.0, math.inf), (1e-300, 2e-300), (-5e-324, 5e-324)])
def test_nice_ticks_always_end(lo, hi):
    from cost_aware_router.plots import _nice_ticks, _tick_label

    ticks = _nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 24 and all(math.isfinite(t) for t in ticks)
    assert ticks == sorted(ticks) and ticks[0] < ticks[-1]
    assert len({_tick_label(t, ticks) for t in ticks}) >= 2


def _summary_with(name: str, cost: float = 1.0) -> dict:
    return {"total": 2, "candidates": [{"candidate": name, "count": 1, "share": 0.5},
                                       {"candidate": "b", "count": 1, "share": 0.5}],
            "running": [{"n": 1, "mean_cost": cost}, {"n": 2, "mean_cost": cost}],
            "windows": [{"start": 0, "end": 2, "mean_cost": cost}], "targets": [{"target": cost}]}


@pytest.mark.parametrize("name", ["n" * 20_000, "\u200b" * 20_000, "\n" * 5000, "🦊" * 20_000, "x\u0301" * 10_000])
def test_plot_labels_are_shortened_in_linear_time(name):
    from cost_aware_router.plots import plot_log_summary

    t0 = time.perf_counter()
    img = plot_log_summary(_summary_with(name), title=name)
    assert time.perf_counter() - t0 < 3.0  # it took over 30 s for 20,000 characters
    assert img.size == (720, 480)


@pytest.mark.parametrize("cost", [5e-324, 1e-320, 1e-300, 0.0, 1e12, 1.7e308, math.inf, math.nan, None])
def test_plot_survives_any_number(cost):
    from cost_aware_router.plots import plot_log_summary

    assert plot_log_summary(_summary_with("a", cost)).size == (720, 480)


def test_report_json_is_strict_whatever_the_summary():
    from cost_aware_router.report import report_json

    text = report_json({"a": math.inf, "b": [math.nan, -math.inf, 1.5], "c": {"d\x7f": "e\x85\x9f\x1b\ud800"}})
    assert strict(text) == {"a": None, "b": [None, None, 1.5], "c": {"d\x7f": "e\x85\x9f\x1b\ud800"}}


FUZZ_VALUES = [None, True, False, 0, -1, 1.5, -1e300, 5e-324, 10 ** 30, -(10 ** 400), math.nan, math.inf, "",
               "x", "a\nb", "\x7f\x85", "\ud800", "9" * 300, [], [1], {}, {"fast": math.inf}, {"fast": "x"},
               {"fast": [1]}, json.loads(nested(200)), "2025-13-45T99:99:99Z", "0001-01-01T00:00:00+14:00"]


def test_fuzzed_records_never_break_the_report(tmp_path):
    from cost_aware_router.plots import plot_log_summary
    from cost_aware_router.report import format_summary, report_json, summarise_records

    rng = random.Random(20)
    keys = ["candidate", "chosen_cost", "cost", "predicted_quality", "target", "ood_distance", "ood_fallback",
            "explored", "router", "router_fingerprint", "budget", "time"]
    records = []
    for _ in range(3000):
        r = dict(GOOD)
        for key in rng.sample(keys, rng.randint(1, 3)):
            r[key] = rng.choice(FUZZ_VALUES)
        records.append(r)
    s = summarise_records(records)
    assert s["total"] + s["malformed"] == len(records) and s["total"] > 100 and s["malformed"] > 100
    strict(report_json(s))
    assert all(ch == "\n" or ch.isprintable() for ch in format_summary(s))
    plot_log_summary(s)


# =================================================================================================================
# Family 3: the report streams the log; the log is rotated by size
# =================================================================================================================
def _write_long_log(path: Path, lines: int) -> None:
    samples = [rec(candidate=c, prompt=f"prompt {i} " * (i % 40), chosen_cost=cost,
                   time=f"2025-01-01T00:{i % 60:02d}:00Z")
               for i, (c, cost) in enumerate([("fast", 1.0), ("slow", 3.0), ("mid", 2.0)] * 100)]
    with open(path, "wb") as fh:
        for i in range(lines):
            fh.write(samples[i % len(samples)] + b"\n")


def test_report_memory_does_not_grow_with_the_log(tmp_path):
    log = tmp_path / "decisions.jsonl"
    _write_long_log(log, 150_000)  # ~80 MB; the whole-log reader took ~500 MB on it
    run = cli("report", log, "--json", "--plot", tmp_path / "p.png", timeout=240)
    assert run.rc == 0, run.err
    s = strict(run.out)
    assert s["total"] == 150_000 and s["costed"] == 150_000 and s["mean_cost"] == pytest.approx(2.0)
    assert run.peak_mb < 150, run.peak_mb
    assert [w["end"] - w["start"] for w in s["windows"]] == pytest.approx([7500] * 20, abs=150_000 / 2048)


def test_series_is_exact_up_to_its_bins_and_close_beyond():
    from cost_aware_router.report import SERIES_BINS, summarise_records

    rng = random.Random(3)
    for m in (1, 7, SERIES_BINS, SERIES_BINS + 1, 5 * SERIES_BINS + 3):
        costs = [rng.random() * 4 for _ in range(m)]
        s = summarise_records(({"candidate": "a", "chosen_cost": c} for c in costs), windows=20)
        assert s["running"][-1] == {"n": m, "mean_cost": pytest.approx(sum(costs) / m)}
        for p in s["running"]:
            assert p["mean_cost"] == pytest.approx(sum(costs[:p["n"]]) / p["n"])
        for w in s["windows"]:
            assert w["mean_cost"] == pytest.approx(sum(costs[w["start"]:w["end"]]) / (w["end"] - w["start"]))
        assert s["windows"][0]["start"] == 0 and s["windows"][-1]["end"] == m
        if m <= SERIES_BINS:  # exact: the positions the whole-log reader chose
            assert len(s["windows"]) == min(20, m)


def _lines_of(path: Path) -> list[dict]:
    out = []
    for name in [*reversed(rotated_paths(path, 100)), str(path)]:
        if os.path.exists(name):
            out += [json.loads(ln) for ln in Path(name).read_bytes().splitlines()]
    return out


def test_rotation_keeps_the_newest_parts_and_the_report_reads_them(tmp_path):
    log = tmp_path / "decisions.jsonl"
    for i in range(400):
        append_decisions(log, [{"candidate": "fast", "chosen_cost": 1.0, "seq": i, "pad": "x" * 60}], max_bytes=4000)
    parts = sorted(p.name for p in tmp_path.iterdir())
    assert parts == ["decisions.1.jsonl", "decisions.2.jsonl", "decisions.3.jsonl", "decisions.jsonl"]
    assert all(p.stat().st_size <= 4000 for p in tmp_path.iterdir())
    seqs = [r["seq"] for r in _lines_of(log)]
    assert seqs == list(range(400 - len(seqs), 400))  # the newest records, in order; the oldest dropped
    run = cli("report", log)
    assert f"Decision log: {len(seqs)} decisions" in run.out
    assert "Read 4 files (rotated parts first): decisions.3.jsonl, decisions.2.jsonl, decisions.1.jsonl, " \
           "decisions.jsonl" in run.out


def test_report_passes_over_a_log_caught_mid_rotation(tmp_path):
    (tmp_path / "decisions.1.jsonl").write_bytes(rec() + b"\n")  # decisions.jsonl renamed, not yet recreated
    s = strict(cli("report", tmp_path / "decisions.jsonl", "--json").out)
    assert s["total"] == 1 and [Path(f).name for f in s["files"]] == ["decisions.1.jsonl"]


def test_rotation_is_the_default_at_max_log_bytes(tmp_path):
    from cost_aware_router.decision_log import MAX_LOG_BYTES

    log = tmp_path / "decisions.jsonl"
    with open(log, "wb") as fh:  # a sparse file just under the limit
        fh.truncate(MAX_LOG_BYTES - 10)
        fh.seek(MAX_LOG_BYTES - 11)
        fh.write(b"\n")
    append_decisions(log, [decision_record(router="r", prompt="p", candidate="a", predicted_quality={"a": 1.0},
                                           cost={"a": 1.0}, cost_weight=None, budget="best quality")])
    assert (tmp_path / "decisions.1.jsonl").stat().st_size == MAX_LOG_BYTES - 10
    assert json.loads(log.read_bytes())["candidate"] == "a"


def test_rotation_blocked_is_one_clear_error(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_bytes(b"x" * 100 + b"\n")
    (tmp_path / "decisions.2.jsonl").write_text("old\n")
    (tmp_path / "decisions.3.jsonl").mkdir()
    (tmp_path / "decisions.3.jsonl" / "f").write_text("")
    with pytest.raises(RouterError, match=r"cannot rotate decision log .*decisions\.jsonl: .*decisions\.3\.jsonl"):
        append_decisions(log, [{"candidate": "a"}], max_bytes=50)


def _rotating_writer(path: str, writer: int, start, batches: int) -> None:
    start.wait()
    for seq in range(batches):
        batch = [{"writer": writer, "seq": seq, "part": k, "pad": "p" * (seq % 7 * 40)} for k in range(1 + seq % 3)]
        append_decisions(path, batch, max_bytes=20_000, keep=1000)


def test_rotation_with_concurrent_writers_loses_and_duplicates_nothing(tmp_path):
    path = tmp_path / "decisions.jsonl"
    run_writers(_rotating_writer, path, 4, 150)
    recs = _lines_of(path)
    ids = Counter((r["writer"], r["seq"], r["part"]) for r in recs)
    expected = {(w, s, k) for w in range(4) for s in range(150) for k in range(1 + s % 3)}
    assert set(ids) == expected and max(ids.values()) == 1
    for w in range(4):  # each writer's batches in order across the parts
        seqs = [r["seq"] for r in recs if r["writer"] == w]
        assert seqs == sorted(seqs)
    assert len(list(tmp_path.iterdir())) > 5
    assert all(p.stat().st_size <= 20_000 for p in tmp_path.iterdir())


# =================================================================================================================
# Family 6: the scored-generations store's resume index reads with the bounded line reader
# =================================================================================================================
ROW = {"prompt": "p", "candidate": "a", "score": 1.0, "cost": 1.0}


def _row(**changes) -> bytes:
    return json.dumps({**ROW, **changes}).encode()


STORE_ROWS = [  # (id, generations.jsonl, keys indexed, rows skipped as over-long)
    ("row-over-the-limit", _row() + b"\n" + b'{"prompt":"' + b"x" * (3 * MiB) + b'"}\n' + _row(candidate="b") + b"\n",
     2, 1),
    ("row-over-the-limit-without-newline-at-eof", _row() + b"\n" + b"y" * (2 * MiB), 1, 0),
    ("row-at-the-limit", _row(pad="z" * (MiB - 100)) + b"\n", 1, 0),
    ("nested-100000-deep", _row() + b"\n" + nested(100_000).encode() + b"\n", 1, 0),
    ("invalid-utf-8", _row() + b"\n" + b'{"prompt":"\xff","candidate":"b","score":1,"cost":1}\n', 1, 0),
    ("huge-integer", _row() + b"\n" + b'{"prompt":"q","candidate":"b","score":' + b"9" * 5000 + b',"cost":1}\n',
     1, 0),
    ("torn-last-line", _row() + b"\n" + _row(candidate="b")[:-5], 1, 0),
    ("not-objects", b"[1]\n42\n" + _row() + b"\n", 1, 0),
]


@pytest.mark.parametrize("content, keys, oversized", [pytest.param(*c[1:], id=c[0]) for c in STORE_ROWS])
def test_store_index_reads_rows_bounded(tmp_path, content, keys, oversized):
    from cost_aware_router.scored.store import GenerationStore

    (tmp_path / "generations.jsonl").write_bytes(content)
    store = GenerationStore(tmp_path, create=False)
    assert len(store.keys()) == keys
    assert getattr(store, "oversized_rows", 0) == oversized


def test_store_index_never_holds_an_over_long_row(tmp_path):
    from cost_aware_router.scored.store import GenerationStore

    (tmp_path / "generations.jsonl").write_bytes(
        _row() + b"\n" + b'{"prompt":"' + b"x" * (24 * MiB) + b'"}\n' + _row(candidate="b") + b"\n")
    tracemalloc.start()
    try:
        keys = GenerationStore(tmp_path, create=False).keys()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(keys) == 2
    assert peak < 6 * MiB, peak / MiB  # the whole-file read held the 24 MiB row (twice)


def test_store_index_waits_for_an_over_long_row_being_written(tmp_path):
    from cost_aware_router.scored.store import GenerationStore

    path = tmp_path / "generations.jsonl"
    path.write_bytes(_row() + b"\n" + b"y" * (2 * MiB))
    store = GenerationStore(tmp_path, create=False)
    assert len(store.keys()) == 1 and store.oversized_rows == 0
    with open(path, "ab") as fh:
        fh.write(b"\n" + _row(candidate="b") + b"\n")
    assert len(store.keys()) == 2 and store.oversized_rows == 1


def test_store_index_refuses_a_fifo_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "generations.jsonl")
    code = (f"from cost_aware_router.scored.store import GenerationStore\n"
            f"GenerationStore({str(tmp_path)!r}, create=False).keys()\n")
    run = py(code)
    assert not run.timed_out and run.rc != 0
    assert "generations.jsonl is a FIFO (named pipe), not a regular file" in run.err
    assert DataError.__name__ in run.err


def test_an_escalation_is_extra_spend_on_its_prompt_not_a_decision(tmp_path):
    """Verify and escalate logs a second record for an escalated prompt ("escalation": true): the report
    counts its cost on that prompt (mean cost and target error include it) but not as a decision."""
    from cost_aware_router.report import format_summary, summarise_log

    log = tmp_path / "d.jsonl"
    recs = [{"candidate": "cheap", "chosen_cost": 1.0, "target": 2.0}, {"candidate": "cheap", "chosen_cost": 1.0,
                                                                        "target": 2.0},
            {"candidate": "dear", "chosen_cost": 3.0, "target": 2.0, "escalation": True}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = summarise_log(log)
    assert s["total"] == 2 and s["escalations"] == 1 and s["escalation_cost"] == 3.0
    assert [c["candidate"] for c in s["candidates"]] == ["cheap"]
    assert s["mean_cost"] == pytest.approx(2.5) and s["targets"][0]["mean_cost"] == pytest.approx(2.5)
    assert "Escalated (verify and escalate): 1 (50.0% of decisions), 3 s in all" in format_summary(s)
