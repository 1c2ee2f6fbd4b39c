"""Routing inside a real ComfyUI (CPU, tiny random SD1.5 checkpoints).

    COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/bench_comfyui.py [--prompts 20] [--soak 200]

Queues N prompts that a router sends alternately to two candidates (two checkpoints) and the same
graph with a plain CheckpointLoaderSimple and fixed settings; reports checkpoint loads, median time
per prompt for both and their ratio, and (with --soak) the server's resident memory over many
routed prompts. Medians and ratios come from one run on one server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "comfyui"))

from harness import (  # noqa: E402
    Comfy,
    alternating_prompt,
    api_plain_graph,
    api_route_graph,
    comfy_paths,
    train_alternating_router,
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(comfy: Comfy, graph: dict) -> float:
    t = time.perf_counter()
    entry = comfy.run(graph)
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(json.dumps(entry["status"])[:2000])
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--soak", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    found = comfy_paths()
    if not found:
        print("set COMFYUI_DIR and COMFYUI_PYTHON", file=sys.stderr)
        return 2
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        comfy = Comfy(*found, Path(tmp))
        comfy.prepare()
        comfy.start()
        try:
            router = train_alternating_router(comfy.root / "models" / "router_weights")
            cands = [("cats", "alt_a.safetensors", 4, 7.0), ("cars", "alt_b.safetensors", 4, 7.0)]
            # warm-up: embedder, both routed checkpoints, the plain checkpoint
            timed(comfy, api_route_graph(cands, router, alternating_prompt(1000)))
            timed(comfy, api_plain_graph("plain.safetensors", "warm-up", 4, 7.0))
            routed, plain = [], []
            for i in range(args.prompts):  # interleaved, so both see the same machine load
                routed.append(timed(comfy, api_route_graph(cands, router, alternating_prompt(i))))
                plain.append(timed(comfy, api_plain_graph("plain.safetensors", alternating_prompt(i), 4, 7.0)))
            log = comfy.server_log()
            res["prompts"] = args.prompts
            res["checkpoint_loads"] = {n: log.count(f"loaded checkpoint '{n}'") for n in ("alt_a.safetensors",
                                                                                         "alt_b.safetensors")}
            res["routed_s_per_prompt_median"] = round(statistics.median(routed), 4)
            res["plain_s_per_prompt_median"] = round(statistics.median(plain), 4)
            res["routed_over_plain_ratio"] = round(statistics.median(routed) / statistics.median(plain), 3)
            if args.soak:
                start = rss_mb(comfy.proc.pid)
                marks = []
                for i in range(args.soak):
                    timed(comfy, api_route_graph(cands, router, alternating_prompt(10000 + i)))
                    if (i + 1) % max(1, args.soak // 4) == 0:
                        marks.append(round(rss_mb(comfy.proc.pid), 1))
                res["soak_prompts"] = args.soak
                res["soak_rss_mb_start"] = round(start, 1)
                res["soak_rss_mb_marks"] = marks
                res["soak_rss_growth_pct"] = round(100 * (marks[-1] - start) / start, 2)
        finally:
            comfy.stop()
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
