"""The append-only decision log: concurrent appends, refusals, torn lines, summary and plot."""

import json
import math
import multiprocessing as mp
import os
import random
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from cost_aware_router.decision_log import (
    MAX_LINE_BYTES,
    MAX_READ_LINE_BYTES,
    append_decisions,
    decision_record,
    read_log,
)
from cost_aware_router.errors import RouterError
from cost_aware_router.report import format_summary, summarise_records

ROOT = Path(__file__).resolve().parent.parent
WRITERS = 8
BATCHES = 300
WORDS = ["ein Schloss am Meer", "猫が窓辺で眠る", "ночной город", "🚀 rocket launch", "café crème",
         'a "quoted" word', "back\\slash", "tab\there", "ελληνικά γράμματα"]


def _prompt(rng: random.Random, writer: int, seq: int) -> str:
    # every 4th batch carries a prompt well over PIPE_BUF (4 KiB) and over a typical 8 KiB buffer
    target = rng.choice([6000, 12000, 20000]) if seq % 4 == 0 else rng.randint(20, 600)
    parts = [f"w{writer}s{seq}:"]
    size = 0
    while size < target:
        w = rng.choice(WORDS)
        parts.append(w)
        size += len(w.encode("utf-8")) + 1
    return " ".join(parts)


def _writer(path: str, writer: int, start, batches: int) -> None:
    rng = random.Random(writer)
    start.wait()
    for seq in range(batches):
        batch = [{"writer": writer, "seq": seq, "part": k, "parts": 0, "prompt": _prompt(rng, writer, seq)}
                 for k in range(rng.randint(1, 3))]
        for rec in batch:
            rec["parts"] = len(batch)
        append_decisions(path, batch)


def _check_concurrent_log(path: Path, writers: int, batches: int) -> int:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    recs = [json.loads(line.decode("utf-8")) for line in lines]  # every line parses: none torn
    ids = Counter((r["writer"], r["seq"], r["part"]) for r in recs)
    assert all(c == 1 for c in ids.values()), "a record was written twice"
    per_batch = Counter((r["writer"], r["seq"]) for r in recs)
    assert set(per_batch) == {(w, s) for w in range(writers) for s in range(batches)}, "a batch was lost"
    parts = {(r["writer"], r["seq"]): r["parts"] for r in recs}
    assert all(per_batch[k] == parts[k] for k in per_batch), "a batch lost records"
    # a batch is one write: its records are adjacent and in order; each writer's batches in order
    last_seq = defaultdict(lambda: -1)
    i = 0
    while i < len(recs):
        r = recs[i]
        for k in range(r["parts"]):
            assert (recs[i + k]["writer"], recs[i + k]["seq"], recs[i + k]["part"]) == (r["writer"], r["seq"], k)
        assert r["seq"] > last_seq[r["writer"]]
        last_seq[r["writer"]] = r["seq"]
        i += r["parts"]
    # the prompts survived intact (long ones included)
    rngs = {w: random.Random(w) for w in range(writers)}
    expected = {}
    for w in range(writers):
        for s in range(batches):
            n = rngs[w].randint(1, 3)
            for k in range(n):
                expected[(w, s, k)] = _prompt(rngs[w], w, s)
    assert {(r["writer"], r["seq"], r["part"]): r["prompt"] for r in recs} == expected
    assert max(len(r["prompt"].encode()) for r in recs) > 16384
    got, bad = read_log(path)
    assert bad == 0 and len(got) == len(recs)
    return len(recs)


def run_writers(target, path, writers: int, batches: int, timeout: float = 300) -> tuple[float, str]:
    """``writers`` processes running ``target(path, writer, start, batches)``, released at once; returns the
    seconds they took and the start method. Every process must exit cleanly."""
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(str(path), w, start, batches)) for w in range(writers)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join(timeout=timeout)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return time.perf_counter() - t0, method


def test_concurrent_processes_lose_nothing(tmp_path):
    path = tmp_path / "decisions.jsonl"
    elapsed, method = run_writers(_writer, path, WRITERS, BATCHES)
    n = _check_concurrent_log(path, WRITERS, BATCHES)
    print(f"{WRITERS} processes x {BATCHES} batches: {n} lines, {path.stat().st_size / 1e6:.1f} MB, "
          f"{elapsed:.2f} s ({method})")


def test_concurrent_threads_lose_nothing(tmp_path):
    path = tmp_path / "decisions.jsonl"
    start = threading.Event()
    threads = [threading.Thread(target=_writer, args=(str(path), w, start, 60)) for w in range(6)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(timeout=120)
    _check_concurrent_log(path, 6, 60)


def test_new_file_mode_and_exact_bytes(tmp_path):
    path = tmp_path / "log.jsonl"
    old = os.umask(0o022)
    try:
        append_decisions(path, [{"a": 1, "s": "é"}, {"b": [1, 2]}])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == '{"a":1,"s":"é"}\n{"b":[1,2]}\n'.encode()
    append_decisions(path, [])  # nothing to write: nothing changes
    append_decisions(path, [{"c": None}])
    assert path.read_bytes().endswith(b'{"b":[1,2]}\n{"c":null}\n')  # no blank line when the file is whole


# -- refusals ----------------------------------------------------------------------------

def _run_with_timeout(code: str, timeout: float = 30):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return proc, time.perf_counter() - t0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("with_reader", [False, True])
def test_fifo_refused_without_blocking(tmp_path, with_reader):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    code = f"""
        import os, sys
        from cost_aware_router.decision_log import append_decisions, read_log
        from cost_aware_router.errors import RouterError
        path = {str(fifo)!r}
        if {with_reader}:
            keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader is present: open would succeed
        out = []
        for call in (lambda: append_decisions(path, [{{"a": 1}}]), lambda: read_log(path)):
            try:
                call()
                out.append("accepted")
            except RouterError as exc:
                out.append(str(exc))
        print("\\n".join(out))
    """
    # a blocking open of a FIFO without a writer/reader would hang here until the timeout
    proc, elapsed = _run_with_timeout(code)
    assert proc.returncode == 0, proc.stderr
    msgs = proc.stdout.strip().split("\n")
    assert len(msgs) == 2 and all(str(fifo) in m and "regular file" in m for m in msgs), msgs
    assert elapsed < 30


def test_symlink_refused(tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text('{"x":1}\n')
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    with pytest.raises(RouterError, match="symbolic link") as err:
        append_decisions(link, [{"a": 1}])
    assert str(link) in str(err.value) and "\n" not in str(err.value)
    assert real.read_text() == '{"x":1}\n'
    with pytest.raises(RouterError, match="symbolic link"):
        read_log(link)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    with pytest.raises(RouterError, match="symbolic link"):
        append_decisions(dangling, [{"a": 1}])
    assert not (tmp_path / "nowhere.jsonl").exists()


def test_folder_missing_parent_and_device_refused(tmp_path):
    with pytest.raises(RouterError, match="folder") as err:
        append_decisions(tmp_path, [{"a": 1}])
    assert str(tmp_path) in str(err.value)
    with pytest.raises(RouterError, match="folder"):
        read_log(tmp_path)
    missing = tmp_path / "no" / "log.jsonl"
    with pytest.raises(RouterError, match="does not exist") as err:
        append_decisions(missing, [{"a": 1}])
    assert str(missing) in str(err.value)
    with pytest.raises(RouterError, match="does not exist"):
        read_log(tmp_path / "absent.jsonl")
    if os.path.exists("/dev/null") and not os.path.islink("/dev/null"):
        with pytest.raises(RouterError, match="device"):
            append_decisions("/dev/null", [{"a": 1}])


def test_bad_records_refused_before_writing(tmp_path):
    path = tmp_path / "log.jsonl"
    with pytest.raises(RouterError, match="record 1"):
        append_decisions(path, [{"a": 1}, {"b": object()}])
    with pytest.raises(RouterError, match="record 0"):
        append_decisions(path, ["not a dict"])
    with pytest.raises(RouterError, match="even without its prompt"):
        append_decisions(path, [{"prompt": "x", "blob": "y" * MAX_LINE_BYTES}])
    assert not path.exists()


# -- torn lines and reading --------------------------------------------------------------

def test_torn_last_line_is_isolated(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"n":0}\n{"n":1,"prompt":"a cat in a h')  # a writer died mid-line
    append_decisions(path, [{"n": 2}, {"n": 3}])
    assert path.read_bytes() == b'{"n":0}\n{"n":1,"prompt":"a cat in a h\n{"n":2}\n{"n":3}\n'
    recs, bad = read_log(path)
    assert [r["n"] for r in recs] == [0, 2, 3] and bad == 1
    with pytest.raises(RouterError, match="line 2"):
        read_log(path, skip_bad=False)


def test_read_log_skips_garbage_and_overlong_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    huge = b'{"p":"' + b"x" * (MAX_READ_LINE_BYTES * 3) + b'"}'
    path.write_bytes(b'{"n":0}\n\n[1,2]\n\xff\xfe garbage\n' + huge + b'\n{"n":1}\n'
                     + b"y" * (MAX_READ_LINE_BYTES + 1) + b'\n{"n":2,"v":NaN}')
    recs, bad = read_log(path)
    assert recs == [{"n": 0}, {"n": 1}, {"n": 2, "v": None}]
    assert bad == 4  # a list, non-UTF-8 bytes, and two lines over the limit; the blank line is no error
    # a line of exactly the limit is still read
    ok = b'{"p":"' + b"z" * (MAX_READ_LINE_BYTES - 8) + b'"}'
    assert len(ok) == MAX_READ_LINE_BYTES
    path.write_bytes(ok + b"\n")
    assert read_log(path) == ([{"p": "z" * (MAX_READ_LINE_BYTES - 8)}], 0)


def test_non_finite_floats_become_null(tmp_path):
    path = tmp_path / "log.jsonl"
    rec = {"cost": {"a": float("nan"), "b": float("inf"), "c": 1.5}, "q": [float("-inf"), np.float32("nan")],
           "npv": np.float64(2.25), "arr": np.array([1.0, np.inf]), "ok": np.int64(3)}
    append_decisions(path, [rec])
    text = path.read_text("utf-8")
    assert "NaN" not in text and "Infinity" not in text

    def refuse(name):
        raise AssertionError(name)
    back = json.loads(text, parse_constant=refuse)
    assert back == {"cost": {"a": None, "b": None, "c": 1.5}, "q": [None, None], "npv": 2.25,
                    "arr": [1.0, None], "ok": 3}
    assert math.isnan(rec["cost"]["a"])  # the caller's record is left alone


def test_overlong_prompt_is_truncated_and_marked(tmp_path):
    path = tmp_path / "log.jsonl"
    rng = random.Random(0)
    prompt = "".join(rng.choice(['"', "\\", "\n", "\x01", "猫", "🚀", "é", "a", " "]) for _ in range(60000))
    short = "a short prompt"
    append_decisions(path, [{"id": 1, "prompt": prompt}, {"id": 2, "prompt": short}])
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[2] == b""
    assert MAX_LINE_BYTES - 12 <= len(lines[0]) <= MAX_LINE_BYTES  # cut to fit, not far below
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert first["prompt_truncated"] is True and first["id"] == 1
    assert prompt.startswith(first["prompt"]) and 0 < len(first["prompt"]) < len(prompt)
    assert second == {"id": 2, "prompt": short}  # short prompts are untouched and unmarked


def test_lone_surrogates_do_not_break_the_line(tmp_path):
    path = tmp_path / "log.jsonl"
    append_decisions(path, [{"prompt": "bad \ud800 pair \ud83d\ude80"}])
    assert read_log(path) == ([{"prompt": "bad \ufffd pair 🚀"}], 0)


def test_decision_record_fields():
    rec = decision_record(router="r", router_fingerprint="f00d", prompt="a cat", candidate="b",
                          predicted_quality={"a": np.float32(0.5), "b": 0.75}, cost={"a": 1, "b": 2.5},
                          cost_weight=0.1, budget="target average cost 2 s/image", target=2,
                          ood_distance=float("nan"), explored=True, prompt_id="42", count=7,
                          realised_mean_cost=2.1, ood_fallback=0.0)
    assert rec["time"].endswith("Z") and "T" in rec["time"]
    del rec["time"]
    assert rec == {"router": "r", "router_fingerprint": "f00d", "prompt": "a cat", "candidate": "b",
                   "predicted_quality": {"a": 0.5, "b": 0.75}, "cost": {"a": 1.0, "b": 2.5}, "chosen_cost": 2.5,
                   "cost_weight": 0.1, "budget": "target average cost 2 s/image", "target": 2.0,
                   "ood_distance": None, "explored": True, "prompt_id": "42", "realised_mean_cost": 2.1,
                   "count": 7, "ood_fallback": 0.0}
    plain = decision_record(router="r", prompt="p", candidate="a", predicted_quality={"a": 1.0}, cost={"a": 3.0},
                            cost_weight=None, budget="best quality")
    assert "count" not in plain and "realised_mean_cost" not in plain
    assert plain["target"] is None and plain["prompt_id"] is None and plain["explored"] is False


# -- summary and plot --------------------------------------------------------------------

def _hand_log():
    cost = {"cheap": 1.0, "mid": 2.0, "dear": 4.0}
    plan = ["cheap", "cheap", "mid", "dear", "cheap", "mid", "cheap", "dear", "cheap", "mid"]
    recs = []
    for i, cand in enumerate(plan):
        recs.append(decision_record(
            router="r1" if i < 8 else "r2", router_fingerprint="aa" if i < 8 else "bb", prompt=f"p{i}",
            candidate=cand, predicted_quality={"cheap": 0.1 * i, "mid": 0.5, "dear": 0.9}, cost=cost,
            cost_weight=0.2, budget="target average cost 2 s/image", target=2.0, ood_distance=0.1 * i,
            explored=i in (3, 7), ood_fallback=1.0 if i in (2, 5, 9) else 0.0,
            time=f"2025-01-01T00:00:{i:02d}.000Z"))
    return recs


def test_summarise_hand_built_log(tmp_path):
    path = tmp_path / "log.jsonl"
    append_decisions(path, _hand_log()[:5])
    append_decisions(path, _hand_log()[5:])
    recs, bad = read_log(path)
    assert bad == 0
    s = summarise_records(recs, windows=5)
    assert s["total"] == 10
    by = {c["candidate"]: c for c in s["candidates"]}
    assert [c["candidate"] for c in s["candidates"]] == ["cheap", "mid", "dear"]
    assert (by["cheap"]["count"], by["mid"]["count"], by["dear"]["count"]) == (5, 3, 2)
    assert (by["cheap"]["share"], by["mid"]["share"], by["dear"]["share"]) == (0.5, 0.3, 0.2)
    # chosen "cheap" at i = 0, 1, 4, 6, 8 -> predicted 0.1 * i
    assert by["cheap"]["mean_predicted_quality"] == pytest.approx(0.1 * (0 + 1 + 4 + 6 + 8) / 5)
    assert by["dear"]["mean_predicted_quality"] == pytest.approx(0.9)
    costs = [1, 1, 2, 4, 1, 2, 1, 4, 1, 2]
    assert s["mean_cost"] == pytest.approx(19 / 10) and s["costed"] == 10
    assert s["running"][-1] == {"n": 10, "mean_cost": pytest.approx(1.9)}
    assert [p["n"] for p in s["running"]] == [1, 3, 6, 8, 10]
    assert [p["mean_cost"] for p in s["running"]] == pytest.approx(
        [np.mean(costs[:k]) for k in (1, 3, 6, 8, 10)])
    assert [(w["start"], w["end"]) for w in s["windows"]] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [w["mean_cost"] for w in s["windows"]] == pytest.approx([1.0, 3.0, 1.5, 2.5, 1.5])
    assert s["target"] == 2.0 and s["target_error_pct"] == pytest.approx(-5.0)
    assert s["targets"] == [{"target": 2.0, "count": 10, "mean_cost": pytest.approx(1.9),
                             "error_pct": pytest.approx(-5.0)}]
    assert s["ood"]["fallback_count"] == 3 and s["ood"]["fallback_share"] == pytest.approx(0.3)
    assert s["ood"]["mean_distance"] == pytest.approx(0.45)
    assert s["explored"] == 2 and s["explored_share"] == pytest.approx(0.2)
    assert (s["first_time"], s["last_time"]) == ("2025-01-01T00:00:00.000Z", "2025-01-01T00:00:09.000Z")
    assert s["span_seconds"] == pytest.approx(9.0)
    assert s["routers"] == [{"router": "r1", "fingerprint": "aa", "count": 8},
                            {"router": "r2", "fingerprint": "bb", "count": 2}]
    text = format_summary(s)
    assert "10 decisions" in text and "-5.0%" in text and "50.0%" in text and "fingerprint aa" in text
    for name in ("cheap", "mid", "dear"):
        assert any(line.startswith(name) for line in text.splitlines())


def test_summarise_mixed_targets_and_messy_records():
    # a record with a field of the wrong type is skipped and counted, not half-counted
    recs = [{"candidate": "a", "cost": {"a": 2.0}, "target": 1.0},
            {"candidate": "a", "chosen_cost": 4.0, "target": 1.0},
            {"candidate": "b", "chosen_cost": None, "target": 3.0, "explored": False},
            {"candidate": "b", "chosen_cost": "x", "target": 3.0, "explored": "yes"},
            {"candidate": None, "chosen_cost": float("nan")}, "not a record"]
    s = summarise_records(recs, windows=20)
    assert s["total"] == 3 and s["costed"] == 2 and s["mean_cost"] == pytest.approx(3.0)
    assert s["malformed"] == 3 and s["malformed_reasons"] == {
        "'chosen_cost' is not a number": 1, "'candidate' is not text of 1-200 characters": 1,
        "not a JSON object": 1}
    assert s["target"] is None and s["target_error_pct"] is None
    assert s["targets"][0] == {"target": 1.0, "count": 2, "mean_cost": 3.0, "error_pct": pytest.approx(200.0)}
    assert s["targets"][1] == {"target": 3.0, "count": 1, "mean_cost": None, "error_pct": None}
    assert s["explored"] == 0 and s["ood"]["fallback_share"] is None and s["first_time"] is None
    assert {c["candidate"] for c in s["candidates"]} == {"a", "b"}
    assert [p["n"] for p in s["running"]] == [1, 2]
    assert "3 malformed record(s) skipped" in format_summary(s)
    empty = summarise_records([])
    assert empty["total"] == 0 and empty["mean_cost"] is None and empty["running"] == []
    assert "no decisions" in format_summary(empty)


def _colour_count(img, rgb):
    arr = np.asarray(img)
    return int(np.all(arr == np.array(rgb, dtype=np.uint8), axis=-1).sum())


def test_plot_summary_size_and_content():
    from cost_aware_router.plots import _BAR, _LINE, _TARGET, plot_log_summary

    s = summarise_records(_hand_log())
    img = plot_log_summary(s, title="Decisions")
    assert img.size == (720, 480) and img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr == 255).all(axis=-1).mean() > 0.6  # white background
    assert _colour_count(img, _LINE) > 200      # the running-mean line
    assert _colour_count(img, _TARGET) > 100    # the target line
    assert _colour_count(img, _BAR) > 2000      # share bars
    big = plot_log_summary(s, width=1000, height=640)
    assert big.size == (1000, 640)
    assert _colour_count(plot_log_summary(summarise_records([])), _BAR) == 0
    many = [{"candidate": f"model-{i:02d}-with-a-rather-long-name@{i}steps", "chosen_cost": i} for i in range(40)]
    assert plot_log_summary(summarise_records(many)).size == (720, 480)
    with pytest.raises(RouterError):
        plot_log_summary(s, width=50, height=50)
