"""``cost-aware-router report`` on a long decision log: seconds and peak resident memory.

    python benchmarks/bench_report.py [--lines 2000000] [--root PATH] [--json benchmarks/results/report.json]
                                      [--store-row-mb 300]

Builds a decision log of ``--lines`` lines in a temporary folder (records as ``route --log`` writes
them: 4 candidates, prompts of 20-400 characters, a target, out-of-distribution fields, one line in
50 an exploration) and runs ``python -m cost_aware_router report LOG`` three ways (text, ``--json``,
``--plot``) in a child process whose peak resident size (``getrusage`` of the child, the whole
interpreter included) and wall time are reported. ``--root`` runs the CLI of another checkout (say
a ``git worktree`` of an older commit) on the same log, for a before/after comparison.

``--store-row-mb N`` also times the scored-generations store's resume index (``GenerationStore.keys``)
on a folder whose ``generations.jsonl`` holds one row of N MB between two ordinary rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cost_aware_router.decision_log import decision_record  # noqa: E402

CANDIDATES = {"sd15-8": 0.6, "sd15-25": 1.4, "sdxl-turbo-1": 0.3, "sdxl-50": 4.2}
WORDS = "a lighthouse on a cliff at sunset oil painting of an old sailor in the rain neon city street".split()

# the launcher reports the peak resident size of its child (not of this process)
_LAUNCH = ("import resource, subprocess, sys\n"
           "rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL)\n"
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
           "sys.exit(rc)\n")


def sample_lines(count: int = 1000, seed: int = 0) -> list[bytes]:
    """``count`` distinct log lines (the log cycles through them, with its own time stamps)."""
    rng = random.Random(seed)
    names = list(CANDIDATES)
    out = []
    for i in range(count):
        cand = rng.choice(names)
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60)))
        rec = decision_record(
            router="default.safetensors", router_fingerprint="3f2a9c0d11e4", prompt=prompt, candidate=cand,
            predicted_quality={c: round(rng.random(), 4) for c in names}, cost=CANDIDATES, cost_weight=0.0123,
            budget="hold target average cost 1.5 s/image", target=1.5, ood_distance=round(rng.random(), 4),
            explored=i % 50 == 0, prompt_id=f"{rng.getrandbits(64):016x}", realised_mean_cost=1.49, count=i,
            ood_fallback=round(rng.random() * 0.2, 3), time="TIME")
        out.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode())
    return out


def write_log(path: Path, lines: int) -> int:
    samples = sample_lines()
    t0 = 1_750_000_000
    with open(path, "wb", buffering=1 << 20) as fh:
        for i in range(lines):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i)) + ".000Z"
            fh.write(samples[i % len(samples)].replace(b'"TIME"', f'"{stamp}"'.encode(), 1) + b"\n")
    return path.stat().st_size


def measure(argv: list[str], root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as d:
        rss = Path(d) / "rss"
        start = time.monotonic()
        rc = subprocess.call([sys.executable, "-c", _LAUNCH, str(rss), *argv], cwd=root, env=env)
        seconds = time.monotonic() - start
        peak_mb = float(rss.read_text() or 0) / 1024 if rss.exists() else float("nan")
    return {"rc": rc, "seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1)}


def bench_report(lines: int, root: Path) -> dict:
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "decisions.jsonl"
        t = time.monotonic()
        size = write_log(log, lines)
        print(f"wrote {lines:,} lines, {size / 1e6:.0f} MB in {time.monotonic() - t:.1f} s", flush=True)
        out = {"lines": lines, "log_mb": round(size / 1e6, 1), "root": str(root)}
        cli = [sys.executable, "-m", "cost_aware_router", "report", str(log)]
        for name, extra in (("text", []), ("json", ["--json"]), ("plot", ["--plot", str(Path(d) / "p.png")])):
            out[name] = measure(cli + extra, root)
            print(f"report {name:>4}: {out[name]}", flush=True)
        return out


def bench_store_row(row_mb: int, root: Path) -> dict:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "data"
        folder.mkdir()
        row = {"prompt": "p", "candidate": "a", "score": 1.0, "cost": 1.0}
        with open(folder / "generations.jsonl", "wb") as fh:
            fh.write(json.dumps(row).encode() + b"\n")
            fh.write(b'{"prompt":"' + b"x" * (row_mb << 20) + b'","candidate":"b","score":1,"cost":1}\n')
            fh.write(json.dumps({**row, "candidate": "c"}).encode() + b"\n")
        code = ("import sys; from cost_aware_router.scored.store import GenerationStore\n"
                f"print(len(GenerationStore({str(folder)!r}, create=False).keys()))")
        out = {"row_mb": row_mb, **measure([sys.executable, "-c", code], root)}
        print(f"store index over a {row_mb} MB row: {out}", flush=True)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose CLI is measured (default: this one)")
    ap.add_argument("--store-row-mb", type=int, default=0, help="also time the store's index over a row this big")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    res = {}
    if not args.skip_report:
        res["report"] = bench_report(args.lines, args.root.resolve())
    if args.store_row_mb:
        res["store"] = bench_store_row(args.store_row_mb, args.root.resolve())
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
