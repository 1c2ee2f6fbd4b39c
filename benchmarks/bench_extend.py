"""A new candidate without retraining, measured against full retraining on real human ratings.

    python benchmarks/bench_extend.py [--seeds 3] [--json benchmarks/results/extend.json]

For every table, every candidate in turn is the "new" one. Prompt-level 5-fold
cross-validation: on the training folds a kNN router is trained without it; the new candidate
is then added from its true scores on 50, 100 or all of the router's anchor prompts
(``add_candidate``), and compared on the held-out fold with (a) the router that never has it
and (b) a router retrained on the training folds with every candidate. Choices are pooled over
folds and summarised as deferral-curve areas (``evaluate.curve_summary``); "recovered" is
(added - without) / (retrained - without) in area, reported where retraining gains at least
0.002 on the metric's scale.
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

from cost_aware_router.embed import get_embedder  # noqa: E402
from cost_aware_router.evaluate import N_BUDGETS, choice_points, curve_summary, sweep_budgets  # noqa: E402
from cost_aware_router.extend import add_candidate  # noqa: E402
from cost_aware_router.predictors import kfold  # noqa: E402
from cost_aware_router.scored import aggregate  # noqa: E402
from cost_aware_router.tables import TABLES, default_data_dir, table_records  # noqa: E402
from cost_aware_router.train import train_router  # noqa: E402

CASES = (("agiqa_3k", "mos_quality"), ("agiqa_3k", "mos_align"), ("genai_bench_527", "human_mean_1to5"))
ANCHOR_COUNTS = (50, 100, None)  # None: every anchor


def key(a) -> str:
    return f"added_{a or 'all'}"


def _choices(router, z, prompts, lo, hi, order):
    """[budgets, prompts] choices as indices into ``order`` (the dataset's candidate order)."""
    m = np.array([order.index(n) for n in router.names])
    return np.stack([m[router.choices(z, prompts, b)[0]] for b in sweep_budgets(router, lo, hi)])


def run_case(ds, X, emb, held: str, seed: int, folds: int = 5) -> dict:
    names = ds.candidates
    n = len(ds.prompts)
    others = [c for c in names if c != held]
    h = names.index(held)
    parts = kfold(n, folds, seed + 1)
    lo, hi = float(ds.cost.min()), float(ds.cost.max())
    keys = ["without", "retrained"] + [key(a) for a in ANCHOR_COUNTS]
    ch = {k: np.zeros((N_BUDGETS + 2, n), dtype=int) for k in keys}
    err = {k: [] for k in ["mean", "retrained"] + keys[2:]}
    info = []
    for test in parts:
        train = np.setdiff1d(np.arange(n), test)
        tp = [ds.prompts[i] for i in test]
        full = train_router(ds.subset(train), emb, "knn", seed=seed, embeddings=X[train])
        base = train_router(ds.subset(train).restrict(others), emb, "knn", seed=seed, embeddings=X[train])
        z_full = full.predict_embedded(X[test])[0]
        ch["retrained"][:, test] = _choices(full, z_full, tp, lo, hi, names)
        ch["without"][:, test] = _choices(base, base.predict_embedded(X[test])[0], tp, lo, hi, names)
        truth = (ds.quality[test, h] - base.norm["mean"]) / base.norm["std"]
        zf = (full.to_raw(z_full[:, h]) - base.norm["mean"]) / base.norm["std"]
        err["retrained"].append((zf - truth) ** 2)
        anchors = base.reference.anchor_prompts
        score = dict(zip(ds.subset(train).prompts, ds.quality[train, h]))
        rng = np.random.default_rng(seed)
        for a in ANCHOR_COUNTS:
            pick = anchors if a is None or a >= len(anchors) else list(rng.choice(anchors, a, replace=False))
            r = add_candidate(base, held, float(ds.cost[h]), {}, {p: score[p] for p in pick})
            z = r.predict_embedded(X[test])[0]
            k = key(a)
            ch[k][:, test] = _choices(r, z, tp, lo, hi, names)
            err[k].append((z[:, -1] - truth) ** 2)
            if a is None:
                info.append(r.candidates[-1]["added"])
                err["mean"].append((r.added[-1].mean - truth) ** 2)
    Y, cost = ds.quality, ds.cost
    out = {"held_out": held, "seed": seed, "anchors": [i["anchors"] for i in info], "fit": info}
    for k, c in ch.items():
        s = curve_summary(choice_points(c, Y, cost), Y, cost, names)
        out[k] = {"gap_closed": s["gap_closed"], "auc": s["auc_router"]}
    for k, e in err.items():
        out[f"rmse_{k}"] = float(np.sqrt(np.concatenate(e).mean()))
    gain = out["retrained"]["auc"] - out["without"]["auc"] if np.isfinite(out["without"]["auc"]) else 0.0
    for a in ANCHOR_COUNTS:
        k = key(a)
        out[k]["recovered"] = ((out[k]["auc"] - out["without"]["auc"]) / gain) if gain >= 0.002 else None
    return out


def markdown_table(rows: list[dict]) -> str:
    """Markdown: per table, means over held-out candidates and seeds."""
    out = ["| table, metric | runs | gap closed: retrained | added, 50 anchors | 100 | all | without the new one "
           "(runs where defined) | added/retrained gap, all anchors | RMSE new column: mean / retrained / added |",
           "|---|---|---|---|---|---|---|---|---|"]
    for t, m in dict.fromkeys((r["table"], r["metric"]) for r in rows):
        rs = [r for r in rows if (r["table"], r["metric"]) == (t, m)]

        def mean(k, rs=rs):
            return float(np.mean([r[k]["gap_closed"] for r in rs]))

        without = [r["without"]["gap_closed"] for r in rs if r["without"]["gap_closed"] is not None]
        out.append(f"| {t} {m} | {len(rs)} | {mean('retrained'):+.3f} | {mean(key(50)):+.3f} | {mean(key(100)):+.3f} | "
                   f"{mean(key(None)):+.3f} | {np.mean(without):+.3f} ({len(without)}) | "
                   f"{mean(key(None)) / mean('retrained'):.2f} | "
                   + " / ".join(f"{np.mean([r[f'rmse_{k}'] for r in rs]):.3f}"
                                for k in ("mean", "retrained", key(None))) + " |")
    return "\n".join(out)


def plot(rows: list[dict], path) -> None:
    """Gap closed against the number of anchors scored, per table, with full retraining as a flat line."""
    from cost_aware_router.plots import plot_curves, save_plot

    colors = [(30, 80, 220), (200, 60, 40), (40, 160, 40)]
    lines = []
    for (t, m), color in zip(dict.fromkeys((r["table"], r["metric"]) for r in rows), colors):
        rs = [r for r in rows if (r["table"], r["metric"]) == (t, m)]
        n_all = float(np.mean([a for r in rs for a in r["anchors"]]))
        xs = [a or n_all for a in ANCHOR_COUNTS]
        ys = [100 * float(np.mean([r[key(a)]["gap_closed"] for r in rs])) for a in ANCHOR_COUNTS]
        retrained = 100 * float(np.mean([r["retrained"]["gap_closed"] for r in rs]))
        short = {"agiqa_3k": "AGIQA", "genai_bench_527": "GenAI"}.get(t, t)
        lines.append((f"{short} {m.split('_')[-1] if t == 'agiqa_3k' else 'human'}: added", xs, ys, color, 3))
        lines.append(("  retrained", [xs[0], xs[-1]], [retrained, retrained], tuple(min(255, c + 110) for c in color),
                      2))
    save_plot(plot_curves(lines, title="A new candidate: gap closed (%) by anchors scored, vs full retraining",
                          xlabel="anchor prompts scored", x_from_zero=False, yfmt=".1f", size=(820, 440)), path,
              overwrite=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "extend.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "extend_gap_closed.png"), help="'' for none")
    args = ap.parse_args()
    emb = get_embedder()
    rows = []
    t0 = time.perf_counter()
    for table, metric in CASES:
        ds = aggregate(table_records(table, args.data), metric, TABLES[table]["source"])
        ds = ds.subset(np.nonzero(ds.complete)[0])
        X = emb.embed(ds.prompts)
        for held in ds.candidates:
            for seed in range(args.seeds):
                r = run_case(ds, X, emb, held, seed)
                r.update(table=table, metric=metric)
                rows.append(r)
                print(f"{table} {metric} new={held} seed={seed} gap closed: without {r['without']['gap_closed']:+.3f} "
                      f"retrained {r['retrained']['gap_closed']:+.3f} added(50/100/all) "
                      + " / ".join(f"{r[key(a)]['gap_closed']:+.3f}" for a in ANCHOR_COUNTS)
                      + f" | rmse mean {r['rmse_mean']:.3f} retrained {r['rmse_retrained']:.3f} "
                      f"added_all {r['rmse_added_all']:.3f}", flush=True)
    for r in rows:  # a router without the cheapest candidate has no curve below its cost: no area
        for k in ("without", *map(key, ANCHOR_COUNTS), "retrained"):
            if not np.isfinite(r[k]["gap_closed"]):
                r[k]["gap_closed"] = r[k]["auc"] = None
    result = {"seconds": round(time.perf_counter() - t0, 1), "seeds": args.seeds, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown_table(rows))
    if args.plot:
        plot(rows, args.plot)
    print(f"wrote {args.json} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
