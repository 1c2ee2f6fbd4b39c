"""Verify and escalate (issue 18) against routing alone, by prompt-level cross-validation.

    python benchmarks/bench_verify.py [--seeds 3] [--boot 200]

Every shipped human-rating table (cost_aware_router.tables.TABLES, first metric) with scorers that
read the delivered images:
* ``human`` (correlation 1.0): the table's own rating of the image, the case of a router trained on the
  very scorer that checks the images (Quality Scorer in ComfyUI);
* ``r=0.9 / 0.7 / 0.5``: semi-synthetic scorers, the rating plus Gaussian noise per image, scaled so the
  scorer correlates r with the rating over the table's images (a new noise draw per seed);
* on TIFA-160 the real automatic scores shipped beside the human ones: CLIPScore (ViT-B/32) and the
  TIFA VQA score. The policy decides on them; the result is judged on the human rating.

Each seed moves the fold split and the noise. ``evaluate.cross_validate`` trains each fold's router
(kNN) with its cascade fitted on the training prompts' rows, then compares on the held-out prompts:
gap closed of routing alone and of the hybrid (each budget's average cost counts every image), with
a bootstrap 95% interval over prompts of the difference (seed 0), and how many folds' gates switched
escalation on. Writes benchmarks/results/verify.json, docs/img/verify_escalate.png, and the marked
figures section of docs/verify_escalate.md.
"""

from __future__ import annotations

import argparse
import json
import re
import time

# isort: off
from bench_env import HERE, ROOT  # first: sets the thread count before numpy loads
# isort: on

import numpy as np  # noqa: E402
from run_all import machine  # noqa: E402

from cost_aware_router.embed import get_embedder  # noqa: E402
from cost_aware_router.evaluate import cross_validate, envelope  # noqa: E402
from cost_aware_router.plots import plot_curves, save_plot  # noqa: E402
from cost_aware_router.scored import aggregate  # noqa: E402
from cost_aware_router.tables import TABLES, default_data_dir, table_records  # noqa: E402

SYNTHETIC = (0.9, 0.7, 0.5)
REAL_SCORERS = {"tifa_160": ("clipscore_vitb32", "tifa_mplug_large")}
MARK_START, MARK_END = "<!-- verify-figures:start -->", "<!-- verify-figures:end -->"
DOC = ROOT / "docs" / "verify_escalate.md"


def with_scorer(records, metric: str, r: float, rng) -> list:
    """Records with ``scores['scorer']`` = the metric plus noise correlating ``r`` with it over the images."""
    values = np.array([x.metric(metric) for x in records], dtype=float)
    sd = float(values.std()) * np.sqrt(1.0 / r ** 2 - 1.0)
    for x, v in zip(records, values):
        x.scores["scorer"] = float(v + rng.normal(0.0, sd))
    return records


def run(table: str, scorer: str, seeds: int, boot: int, emb) -> dict:
    metric = next(iter(TABLES[table]["metrics"]))
    rows = []
    for seed in range(seeds):
        records = table_records(table, default_data_dir())
        if scorer.startswith("r="):
            verify = "scorer"
            with_scorer(records, metric, float(scorer[2:]), np.random.default_rng(1000 + seed))
        else:
            verify = None if scorer == "human" else scorer
        ds = aggregate(records, metric, table, verify)
        res = cross_validate(ds, emb, "knn", seed=seed, boot=boot if seed == 0 else 0)
        rows.append(res["summary"]["verify_escalate"])
    first = rows[0]
    diff = np.array([r["difference"] for r in rows])
    return {
        "table": table, "metric": metric, "scorer": scorer, "seeds": seeds, "prompts": first["prompts"],
        "routing": [r["routing_gap_closed"] for r in rows], "hybrid": [r["hybrid_gap_closed"] for r in rows],
        "difference": diff.tolist(), "difference_ci95_seed0": first["difference_ci95"],
        "routing_budget_error": [r["routing_budget_error"] for r in rows],
        "hybrid_budget_error": [r["hybrid_budget_error"] for r in rows],
        "routing_ci95_seed0": first["routing_ci95"], "hybrid_ci95_seed0": first["hybrid_ci95"],
        "folds_escalating": [r["folds_escalating"] for r in rows],
        "routing_points_seed0": first["routing_points"], "hybrid_points_seed0": first["hybrid_points"],
        "hybrid_mean_images_seed0": first["hybrid_mean_images"],
    }


def fmt(v) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")


def table_md(results: list[dict]) -> str:
    lines = ["| table (judged on) | scorer the policy reads | prompts | routing alone: gap closed | verify and "
             "escalate | difference (mean ± sd over seeds) | 95% interval, seed 0 | folds escalating | median "
             "budget error: routing / hybrid |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ci = r["difference_ci95_seed0"]
        lines.append(f"| {r['table']} ({r['metric']}) | {r['scorer']} | {r['prompts']} | {fmt(r['routing'])} | "
                     f"{fmt(r['hybrid'])} | {fmt(r['difference'])} | [{ci[0]:+.3f}, {ci[1]:+.3f}] | "
                     f"{sum(r['folds_escalating'])}/{5 * r['seeds']} | {np.mean(r['routing_budget_error']):.1%} / "
                     f"{np.mean(r['hybrid_budget_error']):.1%} |")
    return "\n".join(lines)


def plot(results: list[dict], path) -> None:
    """Routing alone against verify and escalate, seed 0: AGIQA-3K and TIFA-160 with the human rating as
    the scorer, and TIFA-160 with CLIPScore."""
    from PIL import Image

    panels = []
    for r in results:
        if r["scorer"] not in ("human", "clipscore_vitb32") or r["table"] not in ("agiqa_3k", "tifa_160"):
            continue
        rt = envelope(*zip(*r["routing_points_seed0"]))
        hy = envelope(*zip(*r["hybrid_points_seed0"]))
        lines = [("routing alone", rt[0], rt[1], (30, 80, 220), 2),
                 ("verify+escalate", hy[0], hy[1], (220, 60, 40), 2)]
        same = r["routing_points_seed0"] == r["hybrid_points_seed0"]
        title = f"{r['table']}, scorer: {r['scorer']}" + (" (escalation off: the curves coincide)" if same else "")
        panels.append(plot_curves(lines, (), title, size=(620, 400), ylabel=f"mean {r['metric']} (human)"))
    if not panels:
        return
    img = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        img.paste(p, (x, 0))
        x += p.width
    save_plot(img, path, overwrite=True)  # a benchmark re-writes its own results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    emb = get_embedder()
    results, t0 = [], time.time()
    for table in TABLES:
        for scorer in ("human", *[f"r={r}" for r in SYNTHETIC], *REAL_SCORERS.get(table, ())):
            t = time.time()
            results.append(run(table, scorer, args.seeds, args.boot, emb))
            r = results[-1]
            print(f"{table:16s} {scorer:18s} routing {fmt(r['routing'])}  hybrid {fmt(r['hybrid'])}  "
                  f"ci {r['difference_ci95_seed0']}  {time.time() - t:.0f}s", flush=True)
    out = {"machine": machine(), "seconds": round(time.time() - t0, 1), "seeds": args.seeds, "boot": args.boot,
           "results": results}
    (HERE / "results" / "verify.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    plot(results, ROOT / "docs" / "img" / "verify_escalate.png")
    md = table_md(results)
    if DOC.exists():
        text = DOC.read_text(encoding="utf-8")
        new = re.sub(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), lambda _: f"{MARK_START}\n{md}\n{MARK_END}",
                     text, flags=re.S)
        DOC.write_text(new, encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
