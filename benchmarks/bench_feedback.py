"""What one Learn from Scores update costs as the learnt router's memory grows.

    python benchmarks/bench_feedback.py [--sizes 1000 8000 32000 32768 100000] [--runs 5]

For each memory size N, a learnt kNN router is built and saved: 300 fully scored "trained" rows and
N - 300 rows learnt from bandit feedback (one scored candidate each), a relative memory (row
difficulties, ``knn_d``) with its probes (``memory.py``), 5 candidates, 384-d embeddings drawn
around 2,000 random topics (so prompts have near neighbours, as real ones do). Then, in a fresh
process (so its peak resident memory is the update's, not the setup's), what the Learn from Scores
node does for one scored image, ``runs`` times from the same file:

* ``load``: ``router_file.load_router`` of the learnt file;
* ``update``: ``online.update_router`` with one new prompt, its routed candidate and its score;
* ``save``: ``router_file.save_router`` of the learnt router (atomic, replacing the file);
* ``update_selecting``: the same update when k, shrinkage and the memory variant are due to be chosen
  again (the first update, then once 5% of the memory is new: ``online.RESELECT_SHARE``), the
  dearest kind.

Reports medians (seconds; the fastest run too, as the machine may be shared), the process's peak
resident memory, the update's own peak allocation (tracemalloc, which sees numpy's buffers) and the
file size before and after one update. Writes
benchmarks/results/feedback.json and prints a markdown table. Runs against an older checkout too
(copy the file into its benchmarks/): what it lacks (probes, the selection schedule) is skipped; give
that run's JSON as ``--before`` to keep it and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

# isort: off
from bench_env import HERE, ROOT  # first: sets the thread count before numpy loads
# isort: on

import numpy as np  # noqa: E402
from run_all import machine  # noqa: E402

SIZES = (1000, 8000, 32000, 32768, 100000)
C, DIM, TRAINED, TOPICS = 5, 384, 300, 2000
COSTS = (0.318, 0.8, 1.59, 3.0, 5.93)


class _Identity:
    identity = {"spec": "bench", "name": "bench-feedback", "kind": "synthetic", "dim": DIM, "fingerprint": "bench"}

    def check_identity(self, identity: dict) -> None:
        pass


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _prompts(rng, n: int, centres: np.ndarray) -> np.ndarray:
    topic = rng.integers(len(centres), size=n)
    return _unit(centres[topic] + rng.normal(size=(n, DIM)) * 0.06)


def build(n: int, path: Path, seed: int = 0) -> dict:
    """A learnt router of ``n`` memory rows, saved at ``path``."""
    from cost_aware_router.predictors import KNNPredictor
    from cost_aware_router.router_file import save_router
    from cost_aware_router.scored import Dataset
    from cost_aware_router.train import train_router

    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(TOPICS, DIM)))
    X = _prompts(rng, n, centres)
    difficulty = X @ rng.normal(size=DIM) * 0.8
    Q = 3.0 + difficulty[:, None] + (X @ rng.normal(size=(DIM, C))) * 0.3 + np.linspace(-0.3, 0.3, C)
    Q += rng.normal(size=Q.shape) * 0.2
    names = [f"cand-{c}" for c in range(C)]
    trained = Dataset([f"trained {i}" for i in range(TRAINED)], names, Q[:TRAINED], np.ones((TRAINED, C)),
                      np.asarray(COSTS), {c: {} for c in names}, "mos", 0, "synthetic")
    router = train_router(trained, _Identity(), "knn", embeddings=X[:TRAINED], escalate=False)
    Y = np.full((n, C), np.nan, np.float32)
    Y[:TRAINED] = (Q[:TRAINED] - router.norm["mean"]) / router.norm["std"]
    chosen = rng.integers(C, size=n - TRAINED)
    Y[np.arange(TRAINED, n), chosen] = (Q[np.arange(TRAINED, n), chosen] - router.norm["mean"]) / router.norm["std"]
    D = ((difficulty - difficulty[:TRAINED].mean()) / router.norm["std"]).astype(np.float32)
    tensors = {"knn_x": X, "knn_y": Y, "knn_d": D, "mu": np.nanmean(Y, axis=0).astype(np.float32)}
    pred = KNNPredictor.from_state(tensors, {"k": 16, "alpha": 0.5, "partial_weight": 0.5})
    t = time.perf_counter()
    extra = _with_probes(pred)
    training = {**router.training, "online_observations": n - TRAINED, "online_prompts": n - TRAINED,
                "online_updates": 1, "online_k": 16, "online_alpha": 0.5, "online_memory": "relative",
                "online_selection": {"observations": n - TRAINED, "rows": n}, "online_difficulty_k": 8}
    save_router(router.copy(predictor=pred, training=training), path, overwrite=True)
    return {"rows": n, "probe_setup_seconds": round(time.perf_counter() - t, 2) if extra else None,
            "centres_seed": seed}


def _with_probes(pred) -> bool:
    """Give the predictor its probes and cell counts (this version's memory); False on an older checkout."""
    try:
        from cost_aware_router.memory import PROBES, top_up
    except ImportError:
        return False
    mem = pred.memory.for_update()
    rng = np.random.default_rng(1)
    while len(mem.probe) < min(PROBES, len(mem.X)):
        mem = top_up(mem, rng, work=1 << 25)
    pred.memory = mem
    return True


def measure(path: Path, runs: int, seed: int = 0) -> dict:
    """Load, update with one observation and save, ``runs`` times from the same file; then the selecting update."""
    from cost_aware_router.online import update_router
    from cost_aware_router.router_file import load_router, save_router

    rng = np.random.default_rng(100 + seed)
    centres = _unit(np.random.default_rng(seed).normal(size=(TOPICS, DIM)))
    out = path.with_name("learnt.safetensors")
    times: dict[str, list[float]] = {"load": [], "update": [], "save": [], "update_selecting": []}
    peaks: dict[str, int] = {"update": 0, "update_selecting": 0}
    report = {}
    for run in range(2 * runs):
        selecting = run >= runs
        t0 = time.perf_counter()
        router = load_router(path)
        t1 = time.perf_counter()
        if selecting:
            router.training.pop("online_selection", None)
        e = _prompts(rng, 1, centres)
        name = router.names[int(rng.integers(len(router.names)))]
        score = float(router.norm["mean"] + router.norm["std"] * rng.normal())
        tracemalloc.start()
        t2 = time.perf_counter()
        new, report = update_router(router, [f"new prompt {run}"], [name], [score], embeddings=e)
        t3 = time.perf_counter()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        kind = "update_selecting" if selecting else "update"
        times[kind].append(t3 - t2)
        peaks[kind] = max(peaks[kind], peak)
        if not selecting:
            save_router(new, out, overwrite=True)
            times["save"].append(time.perf_counter() - t3)
            times["load"].append(t1 - t0)
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    return {"seconds": med, "min_seconds": {k: float(np.min(v)) for k, v in times.items() if v},
            "all_seconds": times, "update_peak_alloc_mb": {k: v / 2 ** 20 for k, v in peaks.items()},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "file_mb": path.stat().st_size / 2 ** 20, "file_mb_after_one_update": out.stat().st_size / 2 ** 20,
            "memory_rows_after": report.get("memory_rows"),
            "rows_added": report.get("rows_added"), "rows_merged": report.get("rows_merged"),
            "selected_on_last_update": report.get("selected")}


def _child(args) -> int:
    path = Path(args.dir) / f"router_{args.one}.safetensors"
    if args.build:
        print(json.dumps(build(args.one, path)))
    else:
        print(json.dumps(measure(path, args.runs)))
    return 0


def _run(cmd: list[str]) -> dict:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *cmd], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict]) -> str:
    out = ["| memory rows | update s | update s, choosing k/α/variant | load + update + save s | peak RSS MB | "
           "update's peak allocation MB (choosing) | file MB before / after |", "|" + "---|" * 7]
    for r in rows:
        s, m = r["seconds"], r["update_peak_alloc_mb"]
        sel = s.get("update_selecting")
        out.append(f"| {r['rows']:,} | {s['update']:.3f} | {'–' if sel is None else f'{sel:.3f}'} | "
                   f"{s['load'] + s['update'] + s['save']:.3f} | {r['peak_rss_mb']:.0f} | {m['update']:.0f} "
                   f"({m.get('update_selecting', 0):.0f}) | {r['file_mb']:.1f} / {r['file_mb_after_one_update']:.1f} |")
    return "\n".join(out)


def compare(rows: list[dict], before: list[dict]) -> str:
    """Before (an older checkout's run) against now, where both measured a size."""
    old = {r["rows"]: r for r in before}
    out = ["| memory rows | update s before / now | load + update + save s before / now | peak RSS MB before / now |",
           "|" + "---|" * 4]
    for r in rows:
        b = old.get(r["rows"])
        if b is None:
            continue
        cyc = [sum(x["seconds"][k] for k in ("load", "update", "save")) for x in (b, r)]
        out.append(f"| {r['rows']:,} | {b['seconds']['update']:.2f} / {r['seconds']['update']:.3f} | "
                   f"{cyc[0]:.2f} / {cyc[1]:.3f} | {b['peak_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=str(HERE / "results" / "feedback.json"))
    ap.add_argument("--before", help="feedback.json of an older checkout's run, to compare with (kept in the output)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return _child(args)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_feedback_") as tmp:
        for n in args.sizes:
            setup = _run(["--one", str(n), "--build", "--dir", tmp])
            res = _run(["--one", str(n), "--runs", str(args.runs), "--dir", tmp])
            rows.append({**setup, **res})
            print(f"{n:,} rows: update {res['seconds']['update']:.3f} s, cycle "
                  f"{sum(res['seconds'][k] for k in ('load', 'update', 'save')):.3f} s, peak RSS "
                  f"{res['peak_rss_mb']:.0f} MB, file {res['file_mb']:.1f} MB", file=sys.stderr, flush=True)
            (Path(tmp) / f"router_{n}.safetensors").unlink()
    doc = {"runs": args.runs, "candidates": C, "dim": DIM, "trained_rows": TRAINED, "machine": machine(),
           "threads": os.environ.get("OMP_NUM_THREADS"), "seconds": round(time.perf_counter() - t0, 1),
           "markdown": markdown(rows), "sizes": rows}
    if args.before:
        before = json.loads(Path(args.before).read_text())
        doc.update(before={k: before[k] for k in ("machine", "runs", "sizes")},
                   compare_markdown=compare(rows, before["sizes"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    print(doc["markdown"] + ("\n\n" + doc["compare_markdown"] if args.before else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
