"""Hostile and odd inputs (issue 14), one table per family: hangs, memory blow-ups, silent wrong
results, data loss, unclear crashes and unsafe file handling.

Each CLI case runs ``python -m cost_aware_router`` in a subprocess (so a hang is killed after
``TIMEOUT`` seconds and the peak memory of the process is measured with ``wait4``) and asserts the
exact outcome: exit code 2 with one line on stderr that names the file and the problem (no traceback,
no "unexpected ..." fallback), nothing created or changed in the case's folder, and, where the input
was built to blow memory up, a peak resident size under the case's bound. SECURITY.md lists the limits.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, rewrite_router, set_meta, write_rows

ROUTER = ROOT / "router_weights" / "default.safetensors"
TIMEOUT = 30  # seconds before a CLI case counts as a hang (cases that load the embedder get longer)
SLOW = 180
BASE_MB = 200  # a reading error must end under this peak resident size (the interpreter and numpy take ~60 MB)
PROMPTS = ["a red fox in the snow", "a bowl of ramen, studio lighting", "an astronaut riding a horse",
           "a lighthouse at dawn", "a watercolor city street", "macro photo of a beetle", "a castle on a hill",
           "portrait of an old sailor"]
GOOD = [{"prompt": p, "candidate": c, "score": float((3 * i + 2 * j) % 5), "cost": cost}
        for i, p in enumerate(PROMPTS) for j, (c, cost) in enumerate([("fast", 0.5), ("slow", 2.0)])]
OUT = "{t}/out/r.safetensors"
TRAIN = ["train", "{t}/data", "--out", OUT]
ROUTE = ["route", "a cat", "--router", "{t}/r.safetensors"]
MiB = 1 << 20


# -- running the CLI with a time limit and a memory measurement --------------------------------------------------
@dataclass
class Run:
    rc: int
    out: str
    err: str
    peak_mb: float
    seconds: float
    timed_out: bool


# A small launcher runs the command and reports its children's peak resident size: measured from the
# test process itself, the peak would include the test's own memory (Linux keeps it across fork + exec).
_LAUNCH = ("import resource, subprocess, sys\n"
           "rc = subprocess.call(sys.argv[2:])\n"
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
           "sys.exit(rc if rc >= 0 else 128 - rc)\n")


def _run(argv: list[str], cwd=ROOT, timeout: float = TIMEOUT) -> Run:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as d:
        rss = Path(d) / "rss"
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(rss), *argv], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            rc = proc.wait()
        finally:
            timer.cancel()
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        peak_kb = float(rss.read_text() or 0) if rss.exists() else float("nan")
        return Run(rc, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                   peak_kb / 1024, seconds, seconds >= timeout)


def cli(*args, cwd=ROOT, timeout: float = TIMEOUT) -> Run:
    return _run([sys.executable, "-m", "cost_aware_router", *map(str, args)], cwd, timeout)


def py(code: str, timeout: float = TIMEOUT) -> Run:
    """``code`` in a fresh interpreter (the pack importable): a hang is killed, peak memory measured."""
    return _run([sys.executable, "-c", code], ROOT, timeout)


def _snapshot(root: Path) -> dict:
    """Every path under ``root`` (links not followed) with its type, size and modification time; iterative,
    so a very deep tree does not exhaust the recursion limit."""
    snap, stack = {}, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                snap[e.path] = (st.st_mode, st.st_size, st.st_mtime_ns)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return snap


def one_line(run: Run, pattern: str, max_mb: float | None = None) -> str:
    assert not run.timed_out, f"killed after {TIMEOUT} s (a hang): {run.err[-300:]}"
    lines = [ln for ln in run.err.splitlines() if ln.strip()]
    assert run.rc == 2, (run.rc, run.err[-1000:], run.out[:300])
    assert len(lines) == 1, run.err[-2000:]
    assert "Traceback" not in run.err
    assert lines[0].startswith("cost-aware-router: error: "), lines[0]
    assert "unexpected" not in lines[0], lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert run.out == "", run.out[:300]
    if max_mb is not None:
        assert run.peak_mb < max_mb, f"peak {run.peak_mb:.0f} MB >= {max_mb} MB"
    return lines[0]


def check_cli_case(tmp_path, setup, args, pattern, max_mb=None, cwd=ROOT):
    (tmp_path / "out").mkdir()
    if setup:
        setup(tmp_path)
    before = _snapshot(tmp_path)
    run = cli(*[a.format(t=tmp_path) for a in args], cwd=cwd)
    one_line(run, pattern, max_mb)
    assert _snapshot(tmp_path) == before  # nothing created, replaced or removed
    return run


# -- building inputs ---------------------------------------------------------------------------------------------
def rows(*extra, name="data"):
    """A data folder with the good rows; ``extra`` rows (dicts or raw lines) come second (line 2 on)."""
    def setup(t):
        write_rows(t / name, [GOOD[0], *extra, *GOOD[1:]])
    return setup


def raw_row_file(make_bytes, name="data"):
    def setup(t):
        (t / name).mkdir(parents=True, exist_ok=True)
        (t / name / "generations.jsonl").write_bytes(make_bytes())
    return setup


def both(*setups):
    def setup(t):
        for s in setups:
            s(t)
    return setup


def fifo(rel):
    def setup(t):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(t / rel)
    return setup


def link(rel, target):
    """A symbolic link at ``rel`` to ``target`` ({t} = the case folder)."""
    def setup(t):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).symlink_to(str(target).format(t=t))
    return setup


def unix_socket(rel):
    def setup(t):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        here = os.getcwd()
        os.chdir((t / rel).parent)  # socket paths are limited to ~100 bytes: bind a relative name
        try:
            s = socket.socket(socket.AF_UNIX)
            s.bind((t / rel).name)
            s.close()
        finally:
            os.chdir(here)
    return setup


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes_with(*chunks: bytes) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + b"".join(chunks)
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def record_png(row: dict, key=b"cost_aware_router") -> bytes:
    return png_bytes_with(chunk(b"tEXt", key + b"\x00" + json.dumps(row).encode("latin-1")))


def bomb(kind: bytes, size: int, key=b"cost_aware_router") -> bytes:
    """A text chunk that inflates to ``size`` bytes of spaces (about size / 1000 bytes stored)."""
    z = zlib.compressobj(9)
    block = b" " * MiB
    data = b"".join(z.compress(block) for _ in range(size // MiB)) + z.flush()
    if kind == b"zTXt":
        return chunk(kind, key + b"\x00\x00" + data)
    return chunk(kind, key + b"\x00\x01\x00\x00\x00" + data)  # iTXt: compressed, method 0, no language, no title


def png(rel, data):
    def setup(t):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).write_bytes(data() if callable(data) else data)
    return setup


def _router_parts(src: Path = ROUTER) -> tuple[dict, bytes]:
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def raw_router(edit_meta_text, name="r.safetensors"):
    """The default router with its metadata JSON text replaced by ``edit_meta_text(text)`` (tensors kept)."""
    def setup(t):
        header, data = _router_parts()
        header["__metadata__"]["router"] = edit_meta_text(header["__metadata__"]["router"])
        head = json.dumps(header).encode()
        (t / name).write_bytes(struct.pack("<Q", len(head)) + head + data)
    return setup


def router(meta=None, tensors=None, name="r.safetensors"):
    def setup(t):
        rewrite_router(ROUTER, t / name, meta, tensors)
    return setup


_set = set_meta


def _with_key(key: str, size: int):
    """Metadata text with ``key`` holding a list of about ``size`` bytes of numbers."""
    def edit(text):
        return text[:-1] + f', "{key}": [' + "0.5, " * (size // 5) + "0.5]}"
    return edit


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_folders(levels: int):
    def setup(t):
        here = t / "data"
        here.mkdir()
        write_rows(here, GOOD)
        os.chdir(here)  # short relative paths: a 1,500-level path is too long for one system call
        try:
            for _ in range(levels):
                os.mkdir("d")
                os.chdir("d")
        finally:
            os.chdir(ROOT)
    return setup


def remove_deep(root: Path) -> None:
    """rmtree recurses per level; undo a very deep tree iteratively."""
    here = os.getcwd()
    try:
        os.chdir(root)
        depth = 0
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(here)


# =================================================================================================================
# 1. Hangs: anything that is not a regular file is refused before it is opened
# =================================================================================================================
HANGS = [
    ("router-is-a-fifo", fifo("r.safetensors"), ROUTE,
     r"router file .*r\.safetensors is a FIFO \(named pipe\), not a regular file"),
    ("router-is-a-link-to-a-fifo", both(fifo("pipe"), link("r.safetensors", "{t}/pipe")), ROUTE,
     r"router file .*r\.safetensors is a FIFO \(named pipe\), not a regular file"),
    ("router-is-a-character-device", None, ["route", "a cat", "--router", "/dev/zero"],
     r"router file /dev/zero is a character device, not a regular file"),
    ("router-is-a-socket", unix_socket("r.safetensors"), ROUTE, r"router file .*r\.safetensors is a socket"),
    ("evaluate-router-is-a-fifo", both(fifo("r.safetensors"), rows()), ["evaluate", "{t}/r.safetensors", "{t}/data"],
     r"router file .*r\.safetensors is a FIFO"),
    ("prompts-file-is-a-fifo", fifo("p.txt"), ["route", "--prompts-file", "{t}/p.txt"],
     r"prompts file .*p\.txt is a FIFO \(named pipe\), not a regular file"),
    ("prompts-file-is-a-device", None, ["route", "--prompts-file", "/dev/zero"],
     r"prompts file /dev/zero is a character device, not a regular file"),
    ("jsonl-is-a-fifo", fifo("data/generations.jsonl"), TRAIN,
     r"data/generations\.jsonl is a FIFO \(named pipe\), not a regular file"),
    ("jsonl-is-a-folder", lambda t: (t / "data/generations.jsonl").mkdir(parents=True), TRAIN,
     r"data/generations\.jsonl is a folder, not a file"),
    ("png-is-a-fifo", both(rows(), fifo("data/x.png")), TRAIN, r"data/x\.png is a FIFO \(named pipe\), not a regular"),
    ("png-in-subfolder-is-a-fifo", both(rows(), fifo("data/a/b/x.png")), TRAIN, r"data/a/b/x\.png is a FIFO"),
    ("png-is-a-link-to-a-fifo-in-the-folder", both(rows(), fifo("data/.pipe"), link("data/x.png", "{t}/data/.pipe")),
     TRAIN, r"data/x\.png is a FIFO"),
    ("png-is-a-socket", both(rows(), unix_socket("data/s.png")), TRAIN, r"data/s\.png is a socket, not a regular"),
]


@pytest.mark.parametrize("setup, args, pattern", [pytest.param(*c[1:], id=c[0]) for c in HANGS])
def test_hangs_non_regular_files_are_refused_before_they_are_opened(tmp_path, setup, args, pattern):
    run = check_cli_case(tmp_path, setup, args, pattern)
    assert run.seconds < 20


def test_hangs_skip_bad_skips_a_fifo_png_and_counts_it(tmp_path):
    write_rows(tmp_path / "data", GOOD)
    os.mkfifo(tmp_path / "data" / "x.png")
    run = py(f"from cost_aware_router.scored import read_records\n"
             f"recs, bad = read_records({str(tmp_path / 'data')!r}, skip_bad=True)\nprint(len(recs), bad)")
    assert not run.timed_out and run.rc == 0, run.err[-500:]
    assert run.out.split() == [str(len(GOOD)), "1"]


# =================================================================================================================
# 2. Memory blow-ups: reading stays bounded whatever the input (peak resident size of the process measured)
# =================================================================================================================
BAD_COST = {"cost": -1}  # so that, before the fix, the row fails fast for another reason
MEMORY = [
    # PNG text chunks: inflated through a bounded decompressor, at most 1 MiB per chunk and 8 MiB per file
    ("png-ztxt-bomb", both(rows(), png("data/bomb.png", lambda: png_bytes_with(bomb(b"zTXt", 512 * MiB)))), TRAIN,
     r"bomb\.png: 'cost_aware_router' zTXt chunk inflates to more than 1 MiB", BASE_MB),
    ("png-itxt-bomb", both(rows(), png("data/bomb.png", lambda: png_bytes_with(bomb(b"iTXt", 512 * MiB)))), TRAIN,
     r"bomb\.png: 'cost_aware_router' iTXt chunk inflates to more than 1 MiB", BASE_MB),
    ("png-stored-text-chunk-of-100-mib",
     both(rows(), png("data/big.png", lambda: png_bytes_with(chunk(b"tEXt", b"cost_aware_router\x00"
                                                                   + b" " * (100 * MiB) + b"{}")))),
     TRAIN, r"big\.png: 'cost_aware_router' tEXt chunk is 104,857,620 bytes; at most 1 MiB are read", BASE_MB),
    ("png-many-text-chunks",
     both(rows(), png("data/many.png", lambda: png_bytes_with(*[chunk(b"tEXt", b"cost_aware_router\x00" + b" " * MiB)
                                                                for _ in range(12)]))),
     TRAIN, r"many\.png: more than 8 MiB of text chunks", BASE_MB),
    # rows: read one bounded line at a time
    ("jsonl-row-of-200-mib",
     raw_row_file(lambda: json.dumps(GOOD[0]).encode() + b'\n{"prompt": "' + b"x" * (200 * MiB)
                  + b'", "candidate": "fast", "score": "high", "cost": 1}\n'),
     TRAIN, r"generations\.jsonl:2: row is longer than 1 MiB \(the limit for one row\)", BASE_MB),
    ("row-prompt-over-10000-characters", rows({**GOOD[0], "prompt": "p" * 10_001, **BAD_COST}), TRAIN,
     r"generations\.jsonl:2: 'prompt' is 10,001 characters long; at most 10,000 are allowed", None),
    ("row-with-100-metrics", rows({**GOOD[0], "scores": {f"m{i}": 1.0 for i in range(100)}}), TRAIN,
     r"generations\.jsonl:2: 'scores' has 100 metrics; at most 64 are allowed", None),
    ("row-candidate-name-over-200-characters", rows({**GOOD[0], "candidate": "c" * 201, **BAD_COST}), TRAIN,
     r"generations\.jsonl:2: 'candidate' is 201 characters long; at most 200", None),
    # tables: prompts x candidates is bounded
    ("data-300-candidates",
     raw_row_file(lambda: "".join(json.dumps({**GOOD[0], "candidate": f"c{i}"}) + "\n" for i in range(300)).encode()),
     TRAIN, r"data: 300 candidates; at most 256 are allowed", BASE_MB),
    ("data-sparse-table-of-30-million-cells",
     raw_row_file(lambda: "".join(json.dumps({"prompt": f"p{i}", "candidate": f"c{i % 250}", "score": 1, "cost": 1})
                                  + "\n" for i in range(120_000)).encode()),
     TRAIN, r"data: 120,000 prompts x 250 candidates is over the limit of 20,000,000 cells", 400),
    # router files: the header is size-checked before it is parsed, lists are capped, unknown keys refused
    ("router-header-of-60-mib", raw_router(_with_key("calibration_extra", 60 * MiB)), ROUTE,
     r"r\.safetensors: safetensors header length [\d,]+ is over the 8 MiB limit", BASE_MB),
    ("router-unknown-metadata-key", raw_router(_with_key("junk", 6 * MiB)), ROUTE,
     r"r\.safetensors: unknown metadata key\(s\) \['junk'\]", 400),
    ("router-calibration-of-500000-points",
     router(meta=lambda m, h: m["calibration"].update(cost_weight=[0.5] * 500_000, mean_cost=[1.0] * 500_000)), ROUTE,
     r"'calibration' needs equal, non-empty 'cost_weight' and 'mean_cost' lists of at most 10,000 points", 400),
    ("router-anchor-prompts-of-a-million-characters",
     router(meta=lambda m, h: m["reference"]["anchor_prompts"].__setitem__(0, "a" * 10 ** 6)), ROUTE,
     r"'anchor_prompts' \(texts of at most 10,000 characters\)", 400),
    ("router-300-candidates",
     router(meta=lambda m, h: m.update(candidates=[{"name": f"c{i}", "cost": 1.0} for i in range(300)])), ROUTE,
     r"'candidates' must be a non-empty list of at most 256", None),
    ("router-reference-of-5000-rows",
     router(tensors=lambda ts: ts.update(ref_x=np.tile(ts["ref_x"], (17, 1))[:5000],
                                         ref_oof=np.tile(ts["ref_oof"], (17, 1))[:5000],
                                         ref_y=np.tile(ts["ref_y"], (17, 1))[:5000])),
     ROUTE, r"tensor 'ref_x' must have 1 to 2,048 rows", None),
]


@pytest.mark.parametrize("setup, args, pattern, max_mb", [pytest.param(*c[1:], id=c[0]) for c in MEMORY])
def test_memory_reading_is_bounded(tmp_path, setup, args, pattern, max_mb):
    check_cli_case(tmp_path, setup, args, pattern, max_mb)


def test_memory_a_bomb_under_another_key_is_skipped_unread(tmp_path):
    """ComfyUI's own chunks (workflow, prompt) are not ours: they are skipped without being inflated."""
    write_rows(tmp_path / "data", GOOD)
    (tmp_path / "data" / "comfy.png").write_bytes(png_bytes_with(bomb(b"zTXt", 512 * MiB, key=b"workflow")))
    run = py(f"from cost_aware_router.scored import load_dataset\n"
             f"print(len(load_dataset({str(tmp_path / 'data')!r}).prompts))")
    assert run.rc == 0 and run.out.split() == [str(len(PROMPTS))], run.err[-500:]
    assert run.peak_mb < BASE_MB, run.peak_mb


def test_memory_an_over_long_row_is_skipped_with_skip_bad(tmp_path):
    (tmp_path / "data").mkdir()
    long_row = json.dumps({**GOOD[0], "prompt": "x" * (50 * MiB)}).encode()
    (tmp_path / "data" / "generations.jsonl").write_bytes(
        b"".join(json.dumps(r).encode() + b"\n" for r in GOOD[:3]) + long_row + b"\n"
        + b"".join(json.dumps(r).encode() + b"\n" for r in GOOD[3:]))
    run = py(f"from cost_aware_router.scored import read_records\n"
             f"recs, bad = read_records({str(tmp_path / 'data')!r}, skip_bad=True)\n"
             f"print(len(recs), bad, max(len(r.prompt) for r in recs))")
    assert run.rc == 0, run.err[-500:]
    assert run.out.split() == [str(len(GOOD)), "1", str(max(len(p) for p in PROMPTS))]
    assert run.peak_mb < BASE_MB, run.peak_mb


def test_memory_a_20_mb_prompt_routes_in_bounded_time_and_memory(tmp_path):
    """The prompt is cut to MAX_EMBED_CHARS before tokenisation (before: 63 s and 5.9 GB)."""
    words = "a red fox jumps over a lazy dog in the snow at dawn, watercolor, detailed "
    (tmp_path / "p.txt").write_text((words * (20 * 10 ** 6 // len(words) + 1))[:20 * 10 ** 6] + "\n", encoding="utf-8")
    run = cli("route", "--prompts-file", tmp_path / "p.txt", "--json", "--budget", "1.5", timeout=SLOW)
    assert run.rc == 0 and not run.timed_out, run.err[-500:]
    assert json.loads(run.out)["candidate"]
    assert run.seconds < 40 and run.peak_mb < 1500, (run.seconds, run.peak_mb)


def test_memory_a_prompt_is_embedded_as_its_first_max_embed_chars(embedder):
    from cost_aware_router.embed import MAX_EMBED_CHARS

    words = "a watercolor lighthouse at dawn, gulls, mist, detailed brushwork, "
    long = (words * (4 * 10 ** 6 // len(words)))
    cut = long[:MAX_EMBED_CHARS]
    start = time.monotonic()
    v_long, = embedder.embed([long])
    assert time.monotonic() - start < 5  # before: the whole 4 MB was tokenised
    v_cut, = embedder.embed([cut])
    assert np.array_equal(v_long, v_cut)
    assert all(len(k) <= MAX_EMBED_CHARS for k in embedder._cache)  # the cache keeps the cut text, not 4 MB keys
    # the cut is past what the tokenizer keeps for ordinary text: the embedding is the one of the whole prompt
    assert len(embedder.tokenizer(cut, truncation=False)["input_ids"]) > embedder.max_tokens


# =================================================================================================================
# 3. Silent wrong results
# =================================================================================================================
def _stray_cost_rows():
    return [*GOOD, {**GOOD[0], "cost": 500.0, "seed": 7}]


def test_silent_one_stray_cost_row_does_not_move_a_candidates_cost(tmp_path):
    from cost_aware_router.scored import load_dataset

    write_rows(tmp_path / "data", _stray_cost_rows())
    ds = load_dataset(tmp_path / "data")
    assert ds.cost.tolist() == [0.5, 2.0]  # the median; before: the mean moved 'fast' to 31.7 s
    assert len(ds.warnings) == 1
    assert re.fullmatch(r".*data: candidate 'fast': 1 of 9 row\(s\) cost more than 2x or under 1/2 of its median "
                        r"0\.5 s \(from 0\.5 to 500 s; the farthest at .*generations\.jsonl:17\); its cost is the "
                        r"median, 0\.5 s/image", ds.warnings[0]), ds.warnings[0]
    write_rows(tmp_path / "even", [*GOOD, {**GOOD[0], "cost": 0.55, "seed": 7}])  # ordinary timing noise
    assert load_dataset(tmp_path / "even").warnings == []


def test_silent_the_default_budget_of_a_trained_router_ignores_a_stray_cost(tmp_path):
    from cost_aware_router.router_file import load_router

    write_rows(tmp_path / "data", _stray_cost_rows())
    run = cli("train", tmp_path / "data", "--out", tmp_path / "r.safetensors", "--predictor", "knn", "--folds", "2",
              timeout=SLOW)
    assert run.rc == 0, run.err[-800:]
    r = load_router(tmp_path / "r.safetensors")
    assert r.cost.tolist() == [0.5, 2.0]
    assert 0.5 <= r.default_budget <= 2.0


CONFLICTS = [
    ("steps-differ", rows({**GOOD[0], "steps": 20}, {**GOOD[2], "steps": 30}),
     r"data/generations\.jsonl:3: candidate 'fast' has steps 30 here but 20 at .*data/generations\.jsonl:2; one "
     r"candidate name must have one generation config"),
    ("checkpoint-differs-between-a-png-and-a-row",
     both(rows({**GOOD[0], "checkpoint": "a.safetensors"}),
          png("data/img.png", record_png({**GOOD[2], "checkpoint": "b.safetensors"}))),
     r"data/img\.png: candidate 'fast' has checkpoint 'b\.safetensors' here but 'a\.safetensors' at "
     r".*generations\.jsonl:2"),
    ("cfg-differs", rows({**GOOD[1], "cfg": 7}, {**GOOD[3], "cfg": 7.5}), r"candidate 'slow' has cfg 7\.5 here but 7"),
]


@pytest.mark.parametrize("setup, pattern", [pytest.param(*c[1:], id=c[0]) for c in CONFLICTS])
def test_silent_conflicting_generation_configs_are_refused(tmp_path, setup, pattern):
    check_cli_case(tmp_path, setup, TRAIN, pattern)


def test_silent_a_missing_config_field_is_not_a_conflict(tmp_path):
    """Rows may each give part of a config; they merge (7 and 7.0 are one value). Only the conflict above is new."""
    from cost_aware_router.scored import load_dataset

    write_rows(tmp_path / "d", [{**GOOD[0], "steps": 20, "cfg": 7}, {**GOOD[2], "sampler": "euler", "cfg": 7.0},
                                {**GOOD[4], "steps": 20.0}, *GOOD[5:]])
    assert load_dataset(tmp_path / "d").configs["fast"] == {"steps": 20, "cfg": 7.0, "sampler": "euler"}
    write_rows(tmp_path / "e", [{**GOOD[0], "steps": 20}, {**GOOD[2], "steps": 21}])
    with pytest.raises(Exception, match="one generation config"):
        load_dataset(tmp_path / "e")


CHOICES = [  # (predicted quality rows, costs, cost weight(s), allowed, expected choice per row)
    ("weight-1e308", [[3.0, 2.0, 1.0]], [5.0, 2.0, 1.0], 1e308, None, [2]),
    ("largest-float", [[3.0, 2.0, 1.0]], [5.0, 2.0, 1.0], float(np.finfo(float).max), None, [2]),
    ("weight-1e308-under-a-cap", [[3.0, 2.0, 1.0]], [5.0, 2.0, 1.0], 1e308, [True, True, False], [1]),
    ("per-row-weights", [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]], [5.0, 2.0, 1.0], [1e308, 0.0], None, [2, 0]),
    ("huge-costs", [[3.0, 2.0]], [1e308, 1.7e308], 1e300, None, [0]),
]


@pytest.mark.parametrize("pred, cost, lam, allowed, expected", [pytest.param(*c[1:], id=c[0]) for c in CHOICES])
def test_silent_a_huge_cost_weight_picks_the_cheapest_without_overflow(pred, cost, lam, allowed, expected):
    from cost_aware_router.decision.rule import choose

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning
        got = choose(np.array(pred), np.array(cost), np.array(lam) if isinstance(lam, list) else lam,
                     None if allowed is None else np.array(allowed))
    assert got.tolist() == expected
    rng = np.random.default_rng(0)  # and for ordinary weights the choice is the plain argmax of q - lam * cost
    P, c = rng.normal(size=(200, 4)), rng.uniform(0, 5, 4)
    for w in (0.0, 0.3, 1.0, 1.7, 40.0):
        assert choose(P, c, w).tolist() == np.argmax(P - w * c - 1e-12 * c, axis=1).tolist()


def test_silent_route_with_cost_weight_1e308_picks_the_cheapest_candidate(tmp_path):
    """Costs over 1 s: 1e308 x cost overflowed every utility to -inf and the first (dearest) candidate won."""
    costs = [3.0, 3.0, 1.5, 3.0, 6.0]
    rewrite_router(ROUTER, tmp_path / "r.safetensors",
                   lambda m, h: [c.update(cost=x) for c, x in zip(m["candidates"], costs)])
    run = cli("route", "a red fox", "--router", tmp_path / "r.safetensors", "--cost-weight", "1e308", "--json",
              timeout=SLOW)
    assert run.rc == 0, run.err[-500:]
    assert json.loads(run.out)["candidate"] == "sd15-10"  # the cheapest
    assert "predictors.py" not in run.err  # no overflow warning from the choice


# =================================================================================================================
# 4. Data loss: "create if absent" is one atomic step
# =================================================================================================================
def test_data_loss_racing_writers_exactly_one_wins(tmp_path):
    from cost_aware_router.errors import RouterError
    from cost_aware_router.storage.files import atomic_write

    writers, races, bad = 4, 300, []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for i in range(races):
            target = tmp_path / f"r{i}.bin"
            barrier = threading.Barrier(writers)
            results: list = [None] * writers

            def run(j, target=target, barrier=barrier, results=results):
                def write(tmp):
                    Path(tmp).write_bytes(b"writer %d" % j)
                    barrier.wait()  # every writer has its file ready: now they race for the name
                try:
                    atomic_write(target, write)
                    results[j] = "won"
                except RouterError as exc:
                    results[j] = str(exc)

            threads = [threading.Thread(target=run, args=(j,)) for j in range(writers)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            won = [j for j, r in enumerate(results) if r == "won"]
            lost = [r for r in results if r != "won"]
            if len(won) != 1 or target.read_bytes() != b"writer %d" % won[0] or not all(
                    re.fullmatch(rf"{re.escape(str(target))} already exists; pass overwrite to replace it", m)
                    for m in lost):
                bad.append((i, results))
    finally:
        sys.setswitchinterval(old)
    assert not bad, f"{len(bad)} of {races} races: {bad[:3]}"
    assert sorted(os.listdir(tmp_path)) == sorted(f"r{i}.bin" for i in range(races))  # no temporary file left


def test_data_loss_a_link_at_the_output_name_is_not_replaced(tmp_path):
    from cost_aware_router.errors import RouterError
    from cost_aware_router.storage.files import atomic_write

    (tmp_path / "out.bin").symlink_to(tmp_path / "missing-target")  # dangling: "exists" used to say no
    with pytest.raises(RouterError, match="out.bin already exists; pass overwrite to replace it"):
        atomic_write(tmp_path / "out.bin", lambda tmp: Path(tmp).write_bytes(b"new"))
    assert os.readlink(tmp_path / "out.bin") == str(tmp_path / "missing-target")
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


# =================================================================================================================
# 5. Unclear crashes: one line naming the file and the problem, never "unexpected ..."
# =================================================================================================================
def _anchor(value):
    return lambda m, h: m["reference"]["anchors"].__setitem__(0, value)


CRASHES = [
    ("folder-named-png", lambda t: (t / "data" / "x.png").mkdir(parents=True), TRAIN,
     r"data holds no scored generations"),
    ("jsonl-row-nested-100000-deep", rows(nested(100_000)), TRAIN,
     r"generations\.jsonl:2: malformed JSON \(nested too deeply\)"),
    ("png-record-nested-100000-deep",
     both(rows(), png("data/deep.png", png_bytes_with(chunk(b"tEXt", b"cost_aware_router\x00"
                                                             + nested(100_000).encode()))))
     , TRAIN, r"deep\.png: malformed JSON in 'cost_aware_router' text chunk \(nested too deeply\)"),
    ("data-folder-nested-1500-levels", deep_folders(1500), TRAIN,
     r"data/d/d/.*: folders nested more than 32 levels below the data folder"),
    ("seed-is-a-list", rows({**GOOD[0], "seed": [1, 2]}), TRAIN,
     r"generations\.jsonl:2: 'seed' must be an integer or a string, got a list"),
    ("seed-is-an-object", rows({**GOOD[0], "seed": {"a": 1}}), TRAIN,
     r"generations\.jsonl:2: 'seed' must be an integer or a string, got an object"),
    ("seed-over-64-bits", rows({**GOOD[0], "seed": 2 ** 70}), TRAIN,
     r"generations\.jsonl:2: 'seed' must fit in 64 bits"),
    ("steps-is-text", rows({**GOOD[0], "steps": "many"}), TRAIN,
     r"generations\.jsonl:2: 'steps' must be a finite number >= 1, got \"many\""),
    ("checkpoint-is-an-object", rows({**GOOD[0], "checkpoint": {"path": "x"}}), TRAIN,
     r"generations\.jsonl:2: 'checkpoint' must be a string, got an object"),
    ("output-name-of-300-characters", rows(),
     ["evaluate", str(ROUTER), "{t}/data", "--plot", "{t}/out/" + "a" * 300 + ".png"],
     r"cannot write .*aaaa\.png: File name too long"),
    ("router-anchor-2-to-the-63", router(meta=_anchor(2 ** 63)), ROUTE,
     r"r\.safetensors: 'reference' needs 'anchors' \(row indices of 'ref_x', 0 to \d+\)"),
    ("router-anchor-2-to-the-64", router(meta=_anchor(2 ** 64)), ROUTE, r"'reference' needs 'anchors' \(row indices"),
    ("router-embedder-spec-is-a-number", router(meta=_set("embedder.spec", 5)), ROUTE,
     r"r\.safetensors: embedder identity 'spec' must be a text of at most 1000 characters, got int"),
    ("router-embedder-spec-is-a-list", router(meta=_set("embedder.spec", ["a", "b"])), ROUTE,
     r"embedder identity 'spec' must be a text .*, got list"),
    ("router-embedder-dim-is-huge", router(meta=_set("embedder.dim", 2 ** 63)), ROUTE,
     r"embedder identity lacks a positive 'dim' \(at most 65,536\)"),
    ("router-metadata-nested-100000-deep", raw_router(lambda text: text[:-1] + ', "x": ' + nested(100_000) + "}"),
     ROUTE, r"r\.safetensors: router metadata is not valid JSON \(nested too deeply\)"),
]


@pytest.mark.parametrize("setup, args, pattern", [pytest.param(*c[1:], id=c[0]) for c in CRASHES])
def test_crashes_become_one_clear_line(tmp_path, setup, args, pattern):
    try:
        check_cli_case(tmp_path, setup, args, pattern)
    finally:
        if (tmp_path / "data" / "d").is_dir():
            remove_deep(tmp_path / "data")


NAMES = [  # (function, arguments ({t} = a folder), message)
    ("safe-child-300-characters", "safe_child", ["{t}", "a" * 300, ".safetensors"],
     r"name 'a+'\.\.\. is 312 bytes long; names may be at most 200 bytes"),
    ("safe-child-70-emoji", "safe_child", ["{t}", "🦊" * 70], r"is 280 bytes long"),
    ("safe-child-lone-surrogate", "safe_child", ["{t}", "bad\udce9name"], r"is not valid Unicode"),
    ("child-dir-300-characters", "child_dir", ["{t}", "sub/" + "b" * 300], r"folder name 'b+'\.\.\. is 300 bytes"),
    ("resolve-under-300-characters", "resolve_under", ["c" * 300, ["{t}"], "data folder"],
     r"data folder c+ does not exist under"),
    ("check-writable-300-characters", "check_writable", ["{t}/" + "d" * 300], r"cannot write .*: File name too long"),
]


@pytest.mark.parametrize("func, args, message", [pytest.param(*c[1:], id=c[0]) for c in NAMES])
def test_crashes_over_long_names_are_refused_clearly(tmp_path, func, args, message):
    from cost_aware_router.errors import RouterError
    from cost_aware_router.storage import files as fileutil

    def fill(a):
        return [fill(x) for x in a] if isinstance(a, list) else a.format(t=tmp_path)

    with pytest.raises(RouterError, match=message):
        getattr(fileutil, func)(*fill(args))
    assert os.listdir(tmp_path) == []


# =================================================================================================================
# 6. Unsafe file handling
# =================================================================================================================
def _outside_rows(t):
    write_rows(t / "elsewhere", GOOD)


UNSAFE = [
    ("jsonl-links-outside-the-folder",
     both(_outside_rows, link("data/generations.jsonl", "{t}/elsewhere/generations.jsonl")), TRAIN,
     r"data/generations\.jsonl is a link to a file outside the data folder .*data; links may not leave it"),
    ("png-links-outside-the-folder",
     both(rows(), png("elsewhere/x.png", record_png({**GOOD[0], "prompt": "secret"})),
          link("data/x.png", "{t}/elsewhere/x.png")), TRAIN,
     r"data/x\.png is a link to a file outside the data folder"),
    ("png-links-to-a-device", both(rows(), link("data/zero.png", "/dev/zero")), TRAIN,
     r"data/zero\.png is a link to a file outside the data folder"),
    ("png-links-to-a-fifo-outside", both(rows(), fifo("pipe"), link("data/p.png", "{t}/pipe")), TRAIN,
     r"data/p\.png is a link to a file outside the data folder"),
]


@pytest.mark.parametrize("setup, args, pattern", [pytest.param(*c[1:], id=c[0]) for c in UNSAFE])
def test_unsafe_links_may_not_leave_the_data_folder(tmp_path, setup, args, pattern):
    check_cli_case(tmp_path, setup, args, pattern)


def test_unsafe_links_inside_the_data_folder_are_followed(tmp_path):
    from cost_aware_router.scored import read_records

    write_rows(tmp_path / "data" / "real", GOOD, name="rows.jsonl")
    (tmp_path / "data" / "generations.jsonl").symlink_to(tmp_path / "data" / "real" / "rows.jsonl")
    (tmp_path / "data" / "real" / "a.png").write_bytes(record_png({**GOOD[0], "prompt": "from a png"}))
    (tmp_path / "data" / "b.png").symlink_to("real/a.png")
    recs, bad = read_records(tmp_path / "data")
    assert bad == 0 and [r.prompt for r in recs].count("from a png") == 2
    (tmp_path / "outside.png").write_bytes(record_png(GOOD[0]))
    (tmp_path / "data" / "c.png").symlink_to(tmp_path / "outside.png")
    recs, bad = read_records(tmp_path / "data", skip_bad=True)
    assert bad == 1 and len(recs) == len(GOOD) + 2
    (tmp_path / "elsewhere").mkdir()  # a folder link is not searched at all (so it cannot lead out either)
    (tmp_path / "elsewhere" / "x.png").write_bytes(b"not a png")
    (tmp_path / "data" / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert len(read_records(tmp_path / "data", skip_bad=True)[0]) == len(GOOD) + 2


@pytest.fixture(scope="module")
def tiny_router_file(tiny_bert_dir, tmp_path_factory):
    """A router trained with a tiny local BERT folder (its identity names that folder)."""
    from cost_aware_router.embed import Embedder
    from cost_aware_router.router_file import save_router
    from cost_aware_router.scored import aggregate, parse_record
    from cost_aware_router.train import train_router

    ds = aggregate([parse_record(r, "row") for r in GOOD])
    path = tmp_path_factory.mktemp("tiny_router") / "tiny.safetensors"
    save_router(train_router(ds, Embedder(tiny_bert_dir), "knn", folds=2), path)
    return path


def test_unsafe_a_router_file_never_chooses_the_embedder_folder(tmp_path):
    """The recorded 'spec' used to be loaded as a folder (relative names from the current directory, pickled
    weights included); now the pack's default embedder is used and checked against the recorded identity."""
    rewrite_router(ROUTER, tmp_path / "r.safetensors", _set("embedder.spec", "evil_model"))
    (tmp_path / "evil_model").mkdir()
    (tmp_path / "evil_model" / "config.json").write_text('{"model_type": "bert"')  # would fail if it were read
    (tmp_path / "evil_model" / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    run = cli("route", "a red fox", "--router", tmp_path / "r.safetensors", "--json", cwd=tmp_path, timeout=SLOW)
    assert run.rc == 0, run.err[-500:]
    assert json.loads(run.out)["candidate"]


def test_unsafe_a_router_for_another_embedder_needs_it_given_explicitly(tiny_router_file, tiny_bert_dir):
    from cost_aware_router.embed import Embedder
    from cost_aware_router.errors import RouterError
    from cost_aware_router.router_file import load_router

    r = load_router(tiny_router_file)
    assert r.embedder_identity["spec"] == str(tiny_bert_dir)
    with pytest.raises(RouterError, match=r"trained on 32-dimensional embeddings from .* gives 384; pass the "
                                          r"embedder it was trained with explicitly \(--embedder FOLDER"):
        r.route(["a red cat"])
    r.use_embedder(Embedder(tiny_bert_dir))  # explicit: fine
    assert r.route(["a red cat"])[0].candidate in ("fast", "slow")


PRINTABLE = [
    ("escape-sequence", "name\x1b[2J\x1b]0;owned\x07", "name\\x1b[2J\\x1b]0;owned\\x07"),
    ("c1-csi", "a\x9b31mb", "a\\x9b31mb"),
    ("bidi-override", "abc\u202eexe.png", "abc\\u202eexe.png"),
    ("bidi-isolate", "x\u2066y\u2069", "x\\u2066y\\u2069"),
    ("newline-and-tab", "one\ntwo\tthree\r", "one\\ntwo\\tthree\\r"),
    ("line-separator", "a\u2028b\u2029c", "a\\u2028b\\u2029c"),
    ("zero-width-space-and-bom", "a\u200bb\ufeff", "a\\u200bb\\ufeff"),
    ("nul-and-del", "a\x00b\x7f", "a\\x00b\\x7f"),
    ("lone-surrogate", "caf\udce9", "caf\\udce9"),
    ("kept-as-is", "sd15-50 ünïcödé 🦊 東京 👨‍👩‍👧", "sd15-50 ünïcödé 🦊 東京 👨‍👩‍👧"),
    ("line-breaks-kept-when-asked", "line one\nline \x1b[31mtwo", "line one\nline \\x1b[31mtwo", True),
]


@pytest.mark.parametrize("text, shown, newlines", [pytest.param(*c[1:], *([False] * (4 - len(c))), id=c[0])
                                                   for c in PRINTABLE])
def test_unsafe_file_text_is_printable_on_a_terminal(text, shown, newlines):
    from cost_aware_router.storage.text import printable

    assert printable(text, newlines=newlines) == shown
    assert all(line.isprintable() or "\u200d" in line  # (a zero-width joiner inside an emoji is kept)
               for line in printable(text, newlines=newlines).split("\n"))
