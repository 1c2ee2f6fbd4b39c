"""Run every benchmark and print the results table for the README.

    python benchmarks/run_all.py            # core; plus ComfyUI when COMFYUI_DIR/COMFYUI_PYTHON are set
    python benchmarks/run_all.py --quality  # also router quality on the rating tables (minutes; bench_quality.py)

Results go to benchmarks/results/*.json. The machine is described from what this process sees.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(ln for ln in lines if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", action="store_true",
                    help="also run bench_quality.py (every predictor on every rating table, 10 seeds)")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    subprocess.run([sys.executable, str(HERE / "bench_core.py"), "--json", str(RESULTS / "core.json")], check=True)
    if os.environ.get("COMFYUI_DIR") and os.environ.get("COMFYUI_PYTHON"):
        subprocess.run([sys.executable, str(HERE / "bench_comfyui.py"), "--prompts", "20", "--soak", "200",
                        "--json", str(RESULTS / "comfyui.json")], check=True)
    else:
        print("ComfyUI benchmark skipped: set COMFYUI_DIR and COMFYUI_PYTHON", file=sys.stderr)
    if args.quality:
        subprocess.run([sys.executable, str(HERE / "bench_quality.py"), "--json", str(RESULTS / "quality.json")],
                       check=True)
    (RESULTS / "machine.txt").write_text(machine() + "\n")
    print(f"machine: {machine()}")
    for name in ("core", "comfyui"):
        path = RESULTS / f"{name}.json"
        if path.exists():
            print(f"\n{name}:")
            for k, v in json.loads(path.read_text()).items():
                print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
