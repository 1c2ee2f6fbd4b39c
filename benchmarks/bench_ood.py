"""Out-of-distribution prompts: how far unseen corpora are from a router's training prompts,
how often the fallback engages, and what it does to quality.

    python benchmarks/bench_ood.py [--seeds 3] [--json benchmarks/results/ood.json]

1. Distances. A kNN router is trained on each table; the prompt corpora in shared/data/prompts
   (none of which it saw) and the table's own held-out prompts (5-fold) are routed, and the
   share of prompts with any fallback (distance past the 99th percentile of the training
   prompts) and with full fallback is reported.
2. Quality. Topic hold-out: the table's prompts are split into 6 spherical k-means clusters;
   each cluster in turn is held out, the router is trained on the other five and routes the held-out
   cluster with and without the fallback. Random 5-fold CV measures what the fallback costs
   in distribution. Both give pooled deferral-curve areas (``evaluate.curve_summary``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_corpora import SHARED_DATA, read_corpora  # noqa: E402

from cost_aware_router.decision.budget import Budget  # noqa: E402
from cost_aware_router.embed import get_embedder  # noqa: E402
from cost_aware_router.evaluate import N_BUDGETS, choice_points, curve_summary, sweep_budgets  # noqa: E402
from cost_aware_router.predictors import kfold  # noqa: E402
from cost_aware_router.reference import spherical_kmeans_medoids  # noqa: E402
from cost_aware_router.scored import aggregate  # noqa: E402
from cost_aware_router.tables import TABLES, table_records  # noqa: E402
from cost_aware_router.train import train_router  # noqa: E402

CASES = (("agiqa_3k", "mos_quality"), ("agiqa_3k", "mos_align"), ("genai_bench_527", "human_mean_1to5"),
         ("tifa_160", "human_avg_1to5"))
CLUSTERS = 6


def corpora(data: Path) -> dict[str, list[str]]:
    """The first 2,000 distinct prompts of each corpus (DiffusionDB: of its first 5k)."""
    named = read_corpora(data)
    named["DiffusionDB (first 5k)"] = named.pop("DiffusionDB")
    return {k: named[k][:2000] for k in ("DiffusionDB (first 5k)", "COCO captions", "PartiPrompts", "DrawBench",
                                          "GenEval", "TIFA v1.0 text inputs")}


def routed_areas(ds, X, emb, parts, seed) -> dict:
    """Pooled deferral-curve areas over held-out ``parts``, with and without the fallback."""
    n = len(ds.prompts)
    lo, hi = float(ds.cost.min()), float(ds.cost.max())
    ch = {k: np.zeros((N_BUDGETS + 2, n), dtype=int) for k in ("fallback", "no_fallback")}
    fb = np.zeros(n)
    for test in parts:
        train = np.setdiff1d(np.arange(n), test)
        r = train_router(ds.subset(train), emb, "knn", seed=seed, embeddings=X[train])
        tp = [ds.prompts[i] for i in test]
        z, _, w = r.predict_embedded(X[test])
        fb[test] = w
        bare = r.copy(reference=None)
        z0 = bare.predict_embedded(X[test])[0]
        for b_i, b in enumerate(sweep_budgets(r, lo, hi)):
            ch["fallback"][b_i, test] = r.choices(z, tp, b)[0]
            ch["no_fallback"][b_i, test] = bare.choices(z0, tp, b)[0]
    Y, cost = ds.quality, ds.cost
    out = {"prompts_with_fallback": float((fb > 0).mean()), "mean_fallback": float(fb.mean()),
           "choices_changed": float((ch["fallback"] != ch["no_fallback"]).mean())}
    for k, c in ch.items():
        s = curve_summary(choice_points(c, Y, cost), Y, cost, ds.candidates)
        out[k] = {"auc": s["auc_router"], "gap_closed": s["gap_closed"],
                  "min_margin": s["min_margin_vs_best_fixed_mix"]}
    out["auc_gain"] = out["fallback"]["auc"] - out["no_fallback"]["auc"]
    return out


COLORS = [(30, 30, 30), (30, 80, 220), (200, 60, 40), (40, 160, 40), (150, 60, 200), (230, 140, 20),
          (20, 170, 170)]


def plot_distances(table: str, curves: dict, ref, path: Path) -> None:
    """Cumulative share of each corpus's prompts by distance, with the fallback's start and full points."""
    from cost_aware_router.plots import plot_curves, save_plot

    lines = []
    for (name, d), color in zip(curves.items(), COLORS):
        xs = np.sort(d)
        lines.append((name[:24], list(xs), list(np.arange(1, len(xs) + 1) / len(xs)), color, 2))
    lines.append(("fallback starts", [ref.start, ref.start], [0.0, 1.0], (160, 160, 160), 1))
    lines.append(("full fallback", [ref.full, ref.full], [0.0, 1.0], (90, 90, 90), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_plot(plot_curves(lines, title=f"Distance to the {table} router's training prompts: share of prompts at or "
                                       "below it", xlabel="distance (1 - mean cosine similarity of 8 nearest)",
                          x_from_zero=False, yfmt=".2f", size=(860, 460)), path, overwrite=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED_DATA),
                    help="folder with the rating tables and prompts/ (the development checkout's ../shared/data)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "ood.json"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"), help="folder for the distance plots ('' for none)")
    args = ap.parse_args()
    emb = get_embedder()
    t0 = time.perf_counter()
    texts = corpora(Path(args.data))
    result = {"distances": [], "quality": []}
    for table, metric in CASES:
        ds = aggregate(table_records(table, args.data), metric, TABLES[table]["source"])
        ds = ds.subset(np.nonzero(ds.complete)[0])
        X = emb.embed(ds.prompts)
        n = len(ds.prompts)
        if metric == next(iter(TABLES[table]["metrics"])):
            r = train_router(ds, emb, "knn", embeddings=X)
            ref = r.reference
            row = {"table": table, "training_prompts": n, "median": ref.median, "start": ref.start, "full": ref.full,
                   "corpora": {}}
            held, held_d = np.zeros(n), np.zeros(n)
            for test in kfold(n, 5, 1):
                rr = train_router(ds.subset(np.setdiff1d(np.arange(n), test)), emb, "knn",
                                  embeddings=X[np.setdiff1d(np.arange(n), test)])
                _, held_d[test], held[test] = rr.predict_embedded(X[test])
            curves = {"held-out (5-fold)": held_d}
            row["corpora"]["held-out prompts of the same table"] = {
                "n": n, "any_fallback": float((held > 0).mean()), "full_fallback": float((held >= 1).mean())}
            bare = r.copy(reference=None)
            for name, prompts in texts.items():
                E = emb.embed(prompts)
                z, d, w = r.predict_embedded(E)
                curves[name] = d
                changed = [float((r.choices(z, prompts, b)[0] != bare.choices(bare.predict_embedded(E)[0], prompts,
                                                                                b)[0]).mean())
                           for b in (Budget(), Budget(best_quality=True))]
                row["corpora"][name] = {"n": len(prompts), "median_distance": float(np.median(d)),
                                        "mean_fallback": float(w.mean()),
                                        "choices_changed_default_budget": changed[0],
                                        "choices_changed_best_quality": changed[1],
                                        "any_fallback": float((w > 0).mean()), "full_fallback": float((w >= 1).mean())}
            result["distances"].append(row)
            if args.img:
                plot_distances(table, curves, ref, Path(args.img) / f"ood_distances_{table}.png")
            print(f"{table}: training median {ref.median:.3f}, fallback from {ref.start:.3f} to {ref.full:.3f}; "
                  + "; ".join(f"{k} {v['any_fallback']:.0%}/{v['full_fallback']:.0%}"
                              + (f" changed {v['choices_changed_default_budget']:.1%}/"
                                 f"{v['choices_changed_best_quality']:.1%}" if "mean_fallback" in v else "")
                              for k, v in row["corpora"].items()),
                  flush=True)
        for seed in range(args.seeds):
            labels = np.argmax(X @ X[spherical_kmeans_medoids(X, CLUSTERS, seed)].T, axis=1)
            topic = routed_areas(ds, X, emb, [np.nonzero(labels == c)[0] for c in range(CLUSTERS)
                                              if (labels == c).any()], seed)
            rand = routed_areas(ds, X, emb, kfold(n, 5, seed + 1), seed)
            result["quality"].append({"table": table, "metric": metric, "seed": seed, "topic_holdout": topic,
                                      "random_cv": rand})
            print(f"  {table} {metric} seed {seed}: topic hold-out fallback on {topic['prompts_with_fallback']:.0%}, "
                  f"{topic['choices_changed']:.1%} of choices changed, area gain {topic['auc_gain']:+.4f} "
                  f"(gap closed {topic['no_fallback']['gap_closed']:+.3f} -> "
                  f"{topic['fallback']['gap_closed']:+.3f}); "
                  f"random CV fallback on {rand['prompts_with_fallback']:.0%}, "
                  f"area gain {rand['auc_gain']:+.4f}", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
