"""Collection at scale: the store's write rate against the folder's size, collection throughput with
one and two processes, and training from 50,000 rows.

    python benchmarks/bench_store.py [--json benchmarks/results/store.json] [--skip-collect] [--skip-train]

* **Store**: a folder with 1k, 10k and 100k existing rows (written straight into ``generations.jsonl``),
  then ``GenerationStore.add`` of new generations, each with a 64x64 PNG (encoded once beforehand,
  so what is timed is the store: temp file + fsync, lock, re-check, rename, append) and rows only.
  The first use (reading the folder's index) is timed separately. For comparison, the store before
  issue 12 (``git show HEAD~N:.../store.py``, which rewrote the file per write) at 1k and 10k rows,
  and four processes writing one 100k folder at once.
* **Collection**: the tiny random pipelines of the tests (``tests/tiny_models.py``), 2 candidates x
  64 prompts x 1 seed at 64 px on the CPU, one thread per process (as one GPU per process): one
  process against ``accelerate launch --multi_gpu --num_processes 2``. The wall time includes
  starting Python and loading the pipelines; the steady rate is from the PNGs' modification times.
* **Training**: every distinct prompt of ``../shared/data/prompts`` (10,225) x 5 candidates with
  synthetic scores (51,125 rows), read, embedded (``train.embed_prompts``, chunks of 256, on the
  CPU: the embedder has no device option) and fitted (``train_router``, kNN) in a child process
  whose peak RSS is reported.

The machines are shared and noisy: figures are medians of a few repeats in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost_aware_router.scored import GenerationStore, generation_record, png_bytes, record_text_chunk  # noqa: E402

OLD_STORE_COMMIT = "bedb591"  # the last commit with the store that rewrote generations.jsonl per write


def synthetic_rows(folder: Path, n: int, tag: str = "old") -> None:
    """``n`` rows in the layout the collectors write, straight into generations.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    cands = ("sd15-25", "sd15-8", "sdxl-turbo-1", "sdxl-50")
    with open(folder / "generations.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            c = cands[i % 4]
            rec = generation_record(f"{tag} prompt number {i // 4}: a lighthouse on a cliff at sunset, oil painting",
                                    c, 20.0 + (i % 13), 1.5, "clipscore", 0, f"{c}.safetensors", 25, 7.0, "euler",
                                    "normal", measured_seconds=1.5, size="512x512",
                                    worker={"rank": 0, "world_size": 1, "host": "bench"})
            rec["image"] = f"{c}_0_{i:012x}.png"
            fh.write(json.dumps(rec) + "\n")


def _record(i: int, tag: str) -> dict:
    return generation_record(f"{tag} {i}: a new prompt", "sd15-8", 21.5, 1.5, "clipscore", 0, "sd15.safetensors", 8,
                             7.0, "euler", "normal", measured_seconds=1.5, size="64x64")


PNG = png_bytes(np.random.default_rng(0).uniform(size=(64, 64, 3)), record_text_chunk({"prompt": "x"}))


def timed_writes(store, n: int, tag: str, png: bool) -> float:
    """Writes per second of ``n`` new generations."""
    render = (lambda rec: PNG) if png else None
    t = time.perf_counter()
    for i in range(n):
        if store.add(_record(i, tag), render) is None:
            raise AssertionError("a new record was skipped")
    return n / (time.perf_counter() - t)


def store_rates(tmp: Path, sizes: list[int], writes: int, repeats: int) -> dict:
    out = {}
    for n in sizes:
        folder = tmp / f"rows_{n}"
        synthetic_rows(folder, n)
        store = GenerationStore(folder)
        t = time.perf_counter()
        keys = len(store.keys())
        first = time.perf_counter() - t
        assert keys == n
        png = [timed_writes(store, writes, f"png{r}", True) for r in range(repeats)]
        rows = [timed_writes(store, writes, f"row{r}", False) for r in range(repeats)]
        out[str(n)] = {"existing_rows": n, "index_read_s": round(first, 4),
                       "writes_per_s_with_png": round(statistics.median(png), 1),
                       "writes_per_s_rows_only": round(statistics.median(rows), 1)}
        print(f"store {n:>7} rows: index {first:.3f} s; {statistics.median(png):.0f} writes/s with PNG, "
              f"{statistics.median(rows):.0f} rows only", flush=True)
    return out


def old_store_seconds(tmp: Path, sizes: list[int], writes: int) -> dict:
    """Seconds per write of the store before issue 12 (from git), for comparison."""
    try:
        src = subprocess.run(["git", "show", f"{OLD_STORE_COMMIT}:cost_aware_router/scored/store.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"note": "git history not available"}
    mod = types.ModuleType("cost_aware_router.scored._old_store")
    mod.__package__ = "cost_aware_router.scored"
    exec(compile(src, "old_store.py", "exec"), mod.__dict__)
    out = {}
    for n in sizes:
        folder = tmp / f"old_{n}"
        synthetic_rows(folder, n)
        store = mod.GenerationStore(folder)
        t = time.perf_counter()
        for i in range(writes):
            store.add(_record(i, "old"), lambda rec: PNG)
        out[str(n)] = round((time.perf_counter() - t) / writes, 4)
        print(f"old store {n:>7} rows: {out[str(n)]:.3f} s per write", flush=True)
    return out


_WRITER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
from cost_aware_router.scored import GenerationStore, generation_record
folder, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
png = open(sys.argv[5], "rb").read()
store = GenerationStore(folder)
store.keys()
t0 = time.time()
for i in range(n):
    rec = generation_record(f"writer {me} prompt {i}", "c", 1.0, 1.0, "clipscore", 0, "x", 1, 1.0)
    assert store.add(rec, lambda r: png) is not None
print(json.dumps({"start": t0, "end": time.time()}))
"""


def concurrent_writers(tmp: Path, existing: int, procs: int, writes: int) -> dict:
    folder = tmp / f"concurrent_{existing}"
    synthetic_rows(folder, existing)
    (tmp / "one.png").write_bytes(PNG)
    ps = [subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), str(k), str(writes), str(ROOT),
                            str(tmp / "one.png")], stdout=subprocess.PIPE, text=True) for k in range(procs)]
    spans = [json.loads(p.communicate()[0]) for p in ps]
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    lines = (folder / "generations.jsonl").read_bytes().count(b"\n")
    assert lines == existing + procs * writes
    rate = procs * writes / wall
    print(f"{procs} processes into one {existing}-row folder: {rate:.0f} writes/s together", flush=True)
    return {"processes": procs, "existing_rows": existing, "writes_each": writes, "writes_per_s_total": round(rate, 1)}


# -- collection ---------------------------------------------------------------------------------------------------
def collection(tmp: Path, prompts: int, size: int) -> dict:
    from tiny_models import make_tiny_pipeline, make_tiny_scorer

    pipes = [make_tiny_pipeline(tmp / "fast", 0), make_tiny_pipeline(tmp / "slow", 1)]
    scorer = make_tiny_scorer(tmp / "scorer")
    cands = tmp / "candidates.toml"
    cands.write_text(f'[[candidate]]\nname = "fast"\npipeline = "{pipes[0]}"\nsteps = 2\ncfg = 1.0\n\n'
                     f'[[candidate]]\nname = "slow"\npipeline = "{pipes[1]}"\nsteps = 4\ncfg = 5.0\n')
    (tmp / "prompts.txt").write_text("".join(f"a photo of object number {i}\n" for i in range(prompts)))
    args = ["-m", "cost_aware_router", "collect", "--prompts", str(tmp / "prompts.txt"), "--candidates", str(cands),
            "--scorer", str(scorer), "--size", str(size)]
    launcher = Path(sys.executable).with_name("accelerate")
    res = {"images": prompts * 2, "size": size}
    for procs in (1, 2):
        out = tmp / f"collected_{procs}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        if procs == 1:
            cmd = [sys.executable, *args, "--out", str(out)]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            env["ACCELERATE_USE_CPU"] = "true"
            cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args,
                   "--out", str(out)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
        assert len(rows) == prompts * 2 and len({(r["prompt"], r["candidate"]) for r in rows}) == prompts * 2
        mtimes = sorted(p.stat().st_mtime for p in out.glob("*.png"))
        steady = (len(mtimes) - 1) / (mtimes[-1] - mtimes[0]) if mtimes[-1] > mtimes[0] else float("nan")
        res[f"{procs}_process"] = {"wall_s": round(wall, 2), "images_per_s_wall": round(len(rows) / wall, 3),
                                   "images_per_s_steady": round(steady, 3),
                                   "rows_per_rank": {str(r): sum(x["worker"]["rank"] == r for x in rows)
                                                     for r in range(procs)}}
        print(f"collection, {procs} process(es): {wall:.1f} s wall, {steady:.2f} images/s steady", flush=True)
    res["speedup_steady"] = round(res["2_process"]["images_per_s_steady"] / res["1_process"]["images_per_s_steady"], 2)
    res["speedup_wall"] = round(res["1_process"]["wall_s"] / res["2_process"]["wall_s"], 2)
    return res


# -- training -----------------------------------------------------------------------------------------------------
_TRAIN = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[3])
t0 = time.perf_counter()
from cost_aware_router.embed import get_embedder
from cost_aware_router.reference import MAX_REFERENCE
from cost_aware_router.router_file import save_router
from cost_aware_router.scored import load_dataset
from cost_aware_router.train import embed_prompts, train_router
t = time.perf_counter()
ds = load_dataset(sys.argv[1])
read = time.perf_counter() - t
emb = get_embedder()
t = time.perf_counter()
X = embed_prompts(emb, ds.prompts)
embed = time.perf_counter() - t
t = time.perf_counter()
router = train_router(ds, emb, sys.argv[4], embeddings=X)
fit = time.perf_counter() - t
save_router(router, sys.argv[2], overwrite=True)
ref = router.reference
print(json.dumps({"rows": int(ds.counts.sum()), "prompts": len(ds.prompts), "candidates": len(ds.candidates),
                  "read_s": round(read, 2), "embed_s": round(embed, 2), "fit_s": round(fit, 2),
                  "total_s": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "reference_prompts": int(len(ref.x)), "max_reference": MAX_REFERENCE,
                  "anchors": int(len(ref.anchors)), "router_file_mb": round(os.path.getsize(sys.argv[2]) / 2**20, 2),
                  "embedder_device": "cpu"}))
"""


def training(tmp: Path, predictor: str) -> dict:
    from prompt_corpora import read_corpora

    prompts = list(dict.fromkeys(p for corpus in read_corpora().values() for p in corpus))
    rng = np.random.default_rng(0)
    cands = {"sd15-8": 0.6, "sd15-25": 1.8, "sdxl-turbo-1": 0.3, "sdxl-50": 6.0, "sd15-50-highcfg": 3.5}
    difficulty = rng.normal(size=len(prompts))
    folder = tmp / "train_50k"
    folder.mkdir()
    t = time.perf_counter()
    with open(folder / "generations.jsonl", "w", encoding="utf-8") as fh:
        for j, (c, cost) in enumerate(cands.items()):
            q = 25 + 2 * j * difficulty * (1 if j % 2 else -1) + rng.normal(scale=1.0, size=len(prompts))
            for p, s in zip(prompts, q):
                fh.write(json.dumps({"prompt": p, "candidate": c, "score": round(float(s), 4), "cost": cost,
                                     "seed": 0}) + "\n")
    written = time.perf_counter() - t
    proc = subprocess.run([sys.executable, "-c", _TRAIN, str(folder), str(tmp / "r.safetensors"), str(ROOT), predictor],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                               "TRANSFORMERS_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(predictor=predictor, write_jsonl_s=round(written, 2))
    assert res["reference_prompts"] <= res["max_reference"]
    print(f"training: {res['rows']} rows ({res['prompts']} prompts x {res['candidates']}): read {res['read_s']} s, "
          f"embed {res['embed_s']} s, fit {res['fit_s']} s, peak RSS {res['peak_rss_mb']} MB, "
          f"reference {res['reference_prompts']}", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-collect", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--predictor", default="knn")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    res: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        res["store"] = store_rates(tmp, sizes, args.writes, args.repeats)
        lo, hi = res["store"][str(sizes[0])], res["store"][str(sizes[-1])]
        res["store_ratio_largest_to_smallest"] = {
            "with_png": round(hi["writes_per_s_with_png"] / lo["writes_per_s_with_png"], 3),
            "rows_only": round(hi["writes_per_s_rows_only"] / lo["writes_per_s_rows_only"], 3)}
        res["old_store_s_per_write"] = old_store_seconds(tmp, [s for s in sizes if s <= 10_000], 5)
        res["concurrent"] = concurrent_writers(tmp, sizes[-1], 4, 250)
        if not args.skip_collect:
            res["collection"] = collection(tmp / "collect", 64, 64)
        if not args.skip_train:
            res["training"] = training(tmp, args.predictor)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        df = subprocess.run(["df", "-T", str(tmp.parent)], capture_output=True, text=True).stdout
        fs = df.splitlines()[1].split()[1]
    except (OSError, IndexError):
        fs = "unknown"
    res["machine"] = (f"{os.cpu_count()} cores, store folders on {fs} ({tmp.parent}), load average "
                      f"{os.getloadavg()[0]:.1f} at the end (a shared machine)")
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
