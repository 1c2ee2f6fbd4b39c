"""Holding a target average cost on real prompt streams: stateless budget vs BudgetHolder.

    python benchmarks/bench_stream.py [--router router_weights/default.safetensors] [--data ../shared/data]
                                      [--targets 1 2 4] [--seeds 3] [--json benchmarks/results/stream.json]

The shipped router's predictions for four prompt corpora (none seen in training) are routed as a
stream, in file order (PartiPrompts and DrawBench are grouped by category, DiffusionDB by user
session) and shuffled (``--seeds`` orders), at each target average cost, by

* ``stateless``: ``Router.choices`` with ``Budget(budget=B)``: the cost weight read off the
  calibration curve of the training prompts, two neighbouring operating points mixed by prompt hash;
* ``hold``: the product's decision loop (``decision.loop.decide``, as ``Router.route`` calls it) with a
  ``BudgetHolder`` (cost_aware_router/decision/hold.py), prompt by prompt, started
  from the calibrated cost weight (the two neighbouring operating points of ``budget_mixture``
  interpolated in log lam by the share on the dearer one);
* ``hold_cost_only``: the same holder told only the cost of each choice (``lam()`` / ``observe(cost)``);
* ``oracle`` (reference, not a method): the one cost weight that, in hindsight, spends the target
  on this stream.

Reported per stream: realised average cost over the whole stream and over its last 500 prompts
(the whole stream when shorter), their error against the target in %, and the mean predicted
quality of the choices (normalised units, z of the chosen candidate), which shows whether the
budget went where the predicted gain per second is highest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from prompt_corpora import SHARED_DATA, read_corpora  # noqa: E402

from cost_aware_router.decision.budget import Budget  # noqa: E402
from cost_aware_router.decision.hold import BudgetHolder  # noqa: E402
from cost_aware_router.decision.loop import decide  # noqa: E402
from cost_aware_router.decision.rule import choose  # noqa: E402
from cost_aware_router.router_file import load_router  # noqa: E402

LAST = 500
TOL = 5.0  # % the holder is meant to stay within


def corpora(data: Path) -> dict[str, list[str]]:
    named = read_corpora(data)
    return {"PartiPrompts": named["PartiPrompts"], "DrawBench": named["DrawBench"],
            "COCO captions": named["COCO captions"], "DiffusionDB (first 1000)": named["DiffusionDB"][:1000]}


def predictions(router, prompts: list[str], cache: Path | None, key: str) -> np.ndarray:
    if cache is not None:
        digest = hashlib.sha256(("\n".join(prompts) + key).encode("utf-8")).hexdigest()[:16]
        f = cache / f"z_{digest}.npy"
        if f.exists():
            return np.load(f)
    z = np.asarray(router.predict_embedded(router.embedder.embed(prompts))[0], dtype=np.float64)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(f, z)
    return z


def oracle_lam(z: np.ndarray, cost: np.ndarray, target: float) -> float:
    """The smallest single cost weight whose choices on this stream cost at most ``target`` on average."""
    def spend(lam):
        return cost[choose(z, cost, lam)].mean()
    if spend(0.0) <= target:
        return 0.0
    lo, hi = 1e-9, 1.0
    while spend(hi) > target and hi < 1e12:
        hi *= 4
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if spend(mid) > target else (lo, mid)
    return hi


def summarise(picks: np.ndarray, z: np.ndarray, cost: np.ndarray, target: float) -> dict:
    c = cost[picks]
    last = min(LAST, len(c))
    whole, tail = float(c.mean()), float(c[-last:].mean())
    return {"mean_cost": round(whole, 4), "last_cost": round(tail, 4), "last_n": last,
            "err_whole_pct": round(100 * (whole / target - 1), 2), "err_last_pct": round(100 * (tail / target - 1), 2),
            "mean_quality": round(float(z[np.arange(len(z)), picks].mean()), 4)}


def run_stream(router, fingerprint: str, z: np.ndarray, prompts: list[str], target: float, lam0: float) -> dict:
    cost = np.asarray(router.cost, dtype=np.float64)
    out = {}
    picks, _ = router.choices(z, prompts, Budget(budget=target))
    out["stateless"] = summarise(np.asarray(picks), z, cost, target)

    holder = BudgetHolder(target, lam0, cost, fingerprint)
    t = time.perf_counter()
    plan = router.plan(Budget(budget=target))
    picks, _, _, _ = decide(z, cost, plan, prompts, holder=holder)
    out["hold"] = {**summarise(picks, z, cost, target), "final_lam": round(holder.lam(), 5),
                   "ms_per_prompt": round(1000 * (time.perf_counter() - t) / len(z), 3)}

    holder = BudgetHolder(target, lam0, cost, fingerprint)
    picks = np.empty(len(z), dtype=int)
    for i, row in enumerate(z):
        lam = holder.lam()
        picks[i] = int(choose(row[None, :], cost, lam)[0])
        holder.observe(float(cost[picks[i]]))
    out["hold_cost_only"] = {**summarise(picks, z, cost, target), "final_lam": round(holder.lam(), 5)}

    lam = oracle_lam(z, cost, target)
    picks = choose(z, cost, lam)
    out["oracle"] = {**summarise(picks, z, cost, target), "lam": round(lam, 5)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--router", type=Path, default=ROOT / "router_weights" / "default.safetensors")
    ap.add_argument("--data", type=Path, default=SHARED_DATA,
                    help="folder holding prompts/ (default: the development checkout's ../shared/data)")
    ap.add_argument("--targets", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--seeds", type=int, default=3, help="shuffled orders per corpus (besides file order)")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep predicted qualities in between runs")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "stream.json")
    args = ap.parse_args()
    if not (args.data / "prompts").is_dir():
        ap.error(f"no prompts folder in {args.data}; pass --data pointing at the folder that holds prompts/")

    t0 = time.time()
    router = load_router(args.router)
    fingerprint = router.fingerprint
    texts = corpora(args.data)
    rows = []
    lam0 = {b: router.plan(Budget(budget=b)).blended_cost_weight for b in args.targets}
    for name, prompts in texts.items():
        z = predictions(router, prompts, args.cache, fingerprint)
        print(f"{name}: {len(prompts)} prompts ({time.time() - t0:.0f} s)", file=sys.stderr)
        orders = [("file", None)] + [(f"shuffled {s}", s) for s in range(args.seeds)]
        for order, seed in orders:
            idx = np.arange(len(prompts)) if seed is None else np.random.default_rng(seed).permutation(len(prompts))
            zz, pp = z[idx], [prompts[i] for i in idx]
            for target in args.targets:
                res = run_stream(router, fingerprint, zz, pp, target, lam0[target])
                rows.append({"corpus": name, "n": len(prompts), "order": order, "target": target, **res})

    methods = ("stateless", "hold", "hold_cost_only")
    summary = {}
    for m in methods:
        errs = [max(abs(r[m]["err_whole_pct"]), abs(r[m]["err_last_pct"])) for r in rows]
        summary[m] = {"worst_abs_err_pct": round(max(errs), 2), "mean_abs_err_pct": round(float(np.mean(errs)), 2),
                      "streams_within_5pct": int(sum(e <= TOL for e in errs)), "streams": len(errs),
                      "mean_quality_gap_to_oracle": round(float(np.mean(
                          [r["oracle"]["mean_quality"] - r[m]["mean_quality"] for r in rows])), 4)}
    result = {"router": str(args.router), "router_fingerprint": fingerprint, "targets": args.targets,
              "seeds": args.seeds, "last": LAST, "start_lam": {str(b): round(v, 5) for b, v in lam0.items()},
              "corpora": {k: len(v) for k, v in texts.items()}, "rows": rows, "summary": summary,
              "seconds": round(time.time() - t0, 1)}

    head = (f"{'corpus':<26}{'order':<11}{'B':>4} | {'stateless: whole  last   err%   q':<36}| "
            f"{'hold: whole  last   err%   q':<36}| {'cost-only: whole last err%':<28}| oracle q")
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for m in methods:
            x = r[m]
            err = max(x["err_whole_pct"], x["err_last_pct"], key=abs)
            cells.append(f"{x['mean_cost']:>7.3f} {x['last_cost']:>6.3f} {err:>+7.1f} {x['mean_quality']:>7.4f}"
                         if m != "hold_cost_only" else f"{x['mean_cost']:>7.3f} {x['last_cost']:>6.3f} {err:>+7.1f}")
        print(f"{r['corpus']:<26}{r['order']:<11}{r['target']:>4g} | {cells[0]:<35}| {cells[1]:<35}| "
              f"{cells[2]:<27}| {r['oracle']['mean_quality']:.4f}")
    for m, s in summary.items():
        print(f"{m}: {s['streams_within_5pct']}/{s['streams']} streams within {TOL:g}% (whole and last {LAST}); "
              f"worst {s['worst_abs_err_pct']}%, mean {s['mean_abs_err_pct']}%; "
              f"mean quality gap to the hindsight oracle {s['mean_quality_gap_to_oracle']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json} ({result['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
