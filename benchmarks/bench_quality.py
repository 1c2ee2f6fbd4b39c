"""Router quality (issue 5): every predictor on every human-rating table, by prompt-level CV.

    python benchmarks/bench_quality.py [--seeds 10] [--predictors knn,ridge,mlp,knn_or_ridge]

For each table and metric shipped in data/ (cost_aware_router.tables.TABLES), each predictor is
cross-validated (evaluate.cross_validate, 5 prompt-level folds) once per seed; the seed moves
both the fold split and the predictor's own inner cross-validation. A no-skill reference
("none": every prompt predicted at the training means, through the same budget machinery)
measures what the curve-and-envelope protocol gives a router that knows nothing about prompts.

Writes benchmarks/results/quality.json, one deferral plot per table and metric under docs/img/,
regenerates the marked figures section of docs/router_quality.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

# isort: off
from bench_env import HERE, ROOT, THREAD_VARS  # first: sets the thread count before numpy loads
# isort: on

import numpy as np  # noqa: E402
from run_all import machine  # noqa: E402

from cost_aware_router.embed import get_embedder  # noqa: E402
from cost_aware_router.evaluate import N_BUDGETS, cross_validate, env_at  # noqa: E402
from cost_aware_router.plots import plot_curves, save_plot  # noqa: E402
from cost_aware_router.predictors import Predictor, column_means  # noqa: E402
from cost_aware_router.scored import aggregate  # noqa: E402
from cost_aware_router.tables import TABLES, default_data_dir, table_records  # noqa: E402

ALL_PREDICTORS = ("knn", "ridge", "mlp", "knn_or_ridge")
NO_SKILL = "none"
BUDGET_PREDICTORS = ("knn", "knn_or_ridge")
BELOW_MIX = 1e-6  # a seed counts as below the best fixed mix when its margin is under -BELOW_MIX
WITHIN = 0.10  # "within 10%" of the target budget
COLORS = {"knn": (30, 80, 220), "ridge": (220, 130, 20), "mlp": (150, 50, 190), "knn_or_ridge": (20, 170, 170),
          NO_SKILL: (200, 200, 200)}
MARK_START, MARK_END = "<!-- quality-figures:start -->", "<!-- quality-figures:end -->"


class NoSkill(Predictor):
    """Training means for every prompt (alpha 0): the best fixed mix, realised by the router's own
    calibration and per-prompt budget mixing on held-out prompts."""

    kind = NO_SKILL

    def fit(self, X, Y, cost, folds=5, seed=0, progress=None):
        self.mu, self.alpha = column_means(Y), 0.0
        return np.tile(self.mu, (len(X), 1))

    def _raw(self, X):
        return np.tile(self.mu, (len(X), 1))

    def _state(self):
        return {}, {}


def mean_sd(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def budget_checks(points: list[dict], cheapest: float) -> tuple[list[tuple[float, float]], int, int]:
    """(target, relative error of the realised mean cost) for the evenly spread Budget(budget=b)
    points of one CV run, and how many targets were left out: below the cheapest candidate (cannot
    be met) or above what the router spends at best quality (it is not meant to spend more)."""
    spend_at_best = points[-1]["mean_cost"]  # the Budget(best_quality=True) point
    checks, below, above = [], 0, 0
    for p in points:
        b = p["budget"]
        if b is None:
            continue
        if b < cheapest - 1e-12:
            below += 1
        elif b > spend_at_best + 1e-9:
            above += 1
        else:
            checks.append((b, (p["mean_cost"] - b) / b if b > 0 else 0.0))
    return checks, below, above


def budget_summary(checks: list[tuple[float, float]], below: int, above: int) -> dict:
    errs = np.array([e for _, e in checks])
    if not len(errs):
        return {"targets_checked": 0, "targets_below_cheapest": below, "targets_above_best_quality_spend": above}
    by_target = {}
    for b, e in checks:
        by_target.setdefault(round(b, 9), []).append(e)
    return {
        "targets_checked": int(len(errs)), "targets_below_cheapest": below, "targets_above_best_quality_spend": above,
        "median_abs_rel_error": float(np.median(np.abs(errs))),
        "share_within_10pct": float(np.mean(np.abs(errs) <= WITHIN + 1e-12)),
        "max_abs_rel_error": float(np.abs(errs).max()),
        "mean_signed_rel_error": float(errs.mean()),
        "share_over_by_more_than_10pct": float(np.mean(errs > WITHIN + 1e-12)),
        "by_target": [{"target": b, "checked": len(v), "mean_signed_rel_error": float(np.mean(v)),
                       "median_abs_rel_error": float(np.median(np.abs(v)))} for b, v in sorted(by_target.items())],
    }


def run_cell(ds, emb, predictor: str, seeds: int, folds: int) -> tuple[dict, dict]:
    """Figures over seeds for one predictor on one table, and the seed-0 CV result (for the plot)."""
    cheapest = float(ds.cost.min())
    cols = {k: [] for k in ("seconds", "gap_closed", "quality_at_best_single_cost", "cost_at_best_single_quality",
                            "cost_ratio_at_best_single_quality", "min_margin_vs_best_fixed_mix",
                            "folds_with_alpha_above_0", "best_quality_spend", "budget_median_abs_rel_error")}
    checks, below, above, plot = [], 0, 0, None
    for seed in range(seeds):
        t = time.perf_counter()
        res = cross_validate(ds, emb, NoSkill if predictor == NO_SKILL else predictor, folds=folds, seed=seed)
        s = {**res["summary"], "seconds": time.perf_counter() - t, "best_quality_spend": res["points"][-1]["mean_cost"],
             "folds_with_alpha_above_0": sum(1 for p in res["summary"]["fold_params"] if p.get("alpha", 0) > 0)}
        c, lo, hi = budget_checks(res["points"], cheapest)
        checks, below, above = checks + c, below + lo, above + hi
        s["budget_median_abs_rel_error"] = float(np.median(np.abs([e for _, e in c]))) if c else None
        for k in cols:
            cols[k].append(s[k])
        if seed == 0:
            plot = res
    reached = [x for x in cols["cost_ratio_at_best_single_quality"] if x is not None]
    return {
        "seeds": seeds,
        "seconds_per_cv": mean_sd(cols["seconds"]),
        "gap_closed": mean_sd(cols["gap_closed"]),
        "quality_at_best_single_cost": mean_sd(cols["quality_at_best_single_cost"]),
        "cost_at_best_single_quality": mean_sd(cols["cost_at_best_single_quality"]),
        "cost_ratio_at_best_single_quality": mean_sd(reached),
        "seeds_reaching_best_single_quality": len(reached),
        "min_margin_vs_best_fixed_mix": float(min(cols["min_margin_vs_best_fixed_mix"])),
        "seeds_below_best_fixed_mix": sum(1 for m in cols["min_margin_vs_best_fixed_mix"] if m < -BELOW_MIX),
        "folds_with_alpha_above_0": sum(cols["folds_with_alpha_above_0"]),
        "folds_total": seeds * folds,
        "budgets": budget_summary(checks, below, above),
        "per_seed": cols,
        "seed0_curve": {"router_envelope": plot["summary"]["router_envelope"],
                        "points": [(p["mean_cost"], p["mean_quality"]) for p in plot["points"]]},
    }, plot


def versus(cells: dict, ref: str) -> None:
    """Paired (same seed) difference in gap closed against predictor ``ref``, and the ratio of the means."""
    if ref not in cells:
        return
    base = cells[ref]["per_seed"]["gap_closed"]
    base_mean = float(np.mean(base))
    for cell in cells.values():
        d = np.array(cell["per_seed"]["gap_closed"]) - base
        cell[f"vs_{ref}"] = {
            "paired_diff_mean": float(d.mean()),
            "paired_diff_se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None,
            "ratio_of_means": cell["gap_closed"]["mean"] / base_mean if base_mean > 1e-9 else None,
        }


def plot_table(title: str, plot_results: dict, path: Path) -> None:
    """Deferral curves of every predictor (seed 0) beside their margin over the best fixed mix."""
    from PIL import Image

    any_res = next(iter(plot_results.values()))
    s = any_res["summary"]
    mix, oracle = s["best_fixed_mix"], s["oracle"]
    lines = [("oracle", oracle["cost"], oracle["quality"], (40, 160, 40), 2),
             ("best fixed mix", mix["cost"], mix["quality"], (150, 150, 150), 2)]
    lines += [(p, r["summary"]["router_envelope"]["cost"], r["summary"]["router_envelope"]["quality"], COLORS[p], 2)
              for p, r in plot_results.items() if p != NO_SKILL]
    dots = [(n, v["cost"], v["mean_quality"], (200, 60, 40)) for n, v in any_res["candidates"].items()]
    left = plot_curves(lines, dots, f"{title}: deferral curves (5-fold CV, seed 0)")
    mix_env = (np.asarray(mix["cost"]), np.asarray(mix["quality"]))
    grid = np.linspace(min(mix["cost"]), max(mix["cost"]), 300)
    margin_lines = []
    for p, r in sorted(plot_results.items(), key=lambda kv: kv[0] != NO_SKILL):  # no-skill first, underneath
        env = r["summary"]["router_envelope"]
        gain = np.interp(grid, env["cost"], env["quality"], left=np.nan) - env_at(mix_env, grid)
        ok = np.isfinite(gain)
        label, width = ("no-skill ref.", 5) if p == NO_SKILL else (p, 2)
        margin_lines.append((label, grid[ok].tolist(), gain[ok].tolist(), COLORS[p], width))
    right = plot_curves(margin_lines, (), f"{title}: router minus best fixed mix", x_from_zero=False,
                        yfmt="+.3f", hline=0.0)
    img = Image.new("RGB", (left.width + right.width, left.height), "white")
    img.paste(left, (0, 0))
    img.paste(right, (left.width, 0))
    save_plot(img, path, overwrite=True)  # a benchmark re-writes its own results


def fmt(ms: dict, pct: bool = True) -> str:
    if ms["mean"] is None:
        return "-"
    if pct:
        return f"{ms['mean']:+.1%}" + (f" ± {ms['sd']:.1%}" if ms["n"] > 1 else "")
    return f"{ms['mean']:.3f}" + (f" ± {ms['sd']:.3f}" if ms["n"] > 1 else "")


def diff_text(v: dict | None) -> str:
    if not v:
        return "-"
    se = v["paired_diff_se"]
    return f"{v['paired_diff_mean']:+.1%}" + ("" if se is None else f" ± {se:.1%}")


def ratio_text(v: dict | None) -> str:
    return "-" if not v or v["ratio_of_means"] is None else f"{v['ratio_of_means']:.2f}×"


def markdown(result: dict) -> str:
    seeds = result["seeds"]
    out = [f"Seeds: {seeds} per predictor and table; {result['folds']}-fold prompt-level CV; embedder "
           f"{result['embedder']}; {result['seconds']:.0f} s on {result['machine']}.", ""]
    out += ["**Gap closed** (mean ± sd over seeds; against knn and against the no-skill reference: paired "
            "difference ± standard error over seeds; ratio of the means)", "",
            "| table | metric | prompts | predictor | gap closed | vs knn | ratio to knn | above no skill | "
            "folds with α>0 |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["tables"]:
        for p, c in row["predictors"].items():
            out.append(f"| {row['table']} | {row['metric']} | {row['prompts']} | {p} | {fmt(c['gap_closed'])} | "
                       f"{'-' if p == 'knn' else diff_text(c.get('vs_knn'))} | {ratio_text(c.get('vs_knn'))} | "
                       f"{'-' if p == NO_SKILL else diff_text(c.get('vs_' + NO_SKILL))} | "
                       f"{c['folds_with_alpha_above_0']}/{c['folds_total']} |")
    out += ["", "**Against the best single candidate and the best fixed mix** (quality at the best single "
            "candidate's cost, mean ± sd; cost at its quality as a share of its cost, over the seeds that reach it; "
            "worst margin under the best fixed mix over seeds)", "",
            "| table | metric | best single (cost s, quality) | predictor | quality at its cost | "
            "cost at its quality | min margin | seeds below mix |", "|---|---|---|---|---|---|---|---|"]
    for row in result["tables"]:
        for p, c in row["predictors"].items():
            r = c["cost_ratio_at_best_single_quality"]
            reach = c["seeds_reaching_best_single_quality"]
            cq = ("never reaches it" if reach == 0 else f"{r['mean']:.0%}" + (
                f" ± {r['sd']:.0%}" if reach > 1 else "") + ("" if reach == seeds else f" ({reach}/{seeds} seeds)"))
            out.append(f"| {row['table']} | {row['metric']} | {row['best_single']} ({row['best_single_cost']:.3g}, "
                       f"{row['best_single_quality']:.3f}) | {p} | {fmt(c['quality_at_best_single_cost'], False)} | "
                       f"{cq} | {c['min_margin_vs_best_fixed_mix']:+.4f} | "
                       f"{c['seeds_below_best_fixed_mix']}/{seeds} |")
    out += ["", f"**Budgets that hold** (target average cost vs the mean cost realised on held-out prompts; "
            f"{result['budget_targets']} targets per seed spread evenly from the cheapest to the dearest candidate's "
            "cost, all seeds; targets above what the router spends at best quality are left out and counted)", "",
            "| table | metric | predictor | targets checked | median abs. rel. error | within 10% | over by >10% | "
            "mean signed error | worst | above best-quality spend | below cheapest |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["tables"]:
        for p in BUDGET_PREDICTORS:
            if p not in row["predictors"]:
                continue
            b = row["predictors"][p]["budgets"]
            if not b["targets_checked"]:
                continue
            out.append(f"| {row['table']} | {row['metric']} | {p} | {b['targets_checked']} | "
                       f"{b['median_abs_rel_error']:.1%} | {b['share_within_10pct']:.0%} | "
                       f"{b['share_over_by_more_than_10pct']:.0%} | {b['mean_signed_rel_error']:+.1%} | "
                       f"{b['max_abs_rel_error']:.0%} | {b['targets_above_best_quality_spend']} | "
                       f"{b['targets_below_cheapest']} |")
    out += ["", "**All tables** (mean over the table/metric rows of each predictor's mean gap closed; paired "
            "differences averaged over the rows, ± their combined standard error)", "",
            "| predictor | mean gap closed | vs knn | ratio to knn | above no skill |", "|---|---|---|---|---|"]
    for p, o in result["overall"].items():
        out.append(f"| {p} | {o['gap_closed']:+.1%} | {'-' if p == 'knn' else diff_text(o.get('vs_knn'))} | "
                   f"{ratio_text(o.get('vs_knn'))} | {'-' if p == NO_SKILL else diff_text(o.get('vs_' + NO_SKILL))} |")
    return "\n".join(out) + "\n"


def overall(rows: list[dict]) -> dict:
    """Each predictor's mean gap closed over the table/metric rows, and its paired differences against
    knn and the no-skill reference averaged over the rows (rows taken as independent for the error)."""
    preds = [p for p in rows[0]["predictors"] if all(p in r["predictors"] for r in rows)]
    means = {p: float(np.mean([r["predictors"][p]["gap_closed"]["mean"] for r in rows])) for p in preds}
    out = {p: {"gap_closed": m} for p, m in means.items()}
    for ref in ("knn", NO_SKILL):
        if ref not in preds:
            continue
        for p in preds:
            vs = [r["predictors"][p][f"vs_{ref}"] for r in rows]
            ses = [v["paired_diff_se"] for v in vs]
            out[p][f"vs_{ref}"] = {
                "paired_diff_mean": float(np.mean([v["paired_diff_mean"] for v in vs])),
                "paired_diff_se": None if None in ses else math.sqrt(sum(x * x for x in ses)) / len(ses),
                "ratio_of_means": means[p] / means[ref] if means[ref] > 1e-9 else None}
    return out


def rounded(obj, digits: int = 6):
    """Floats to ``digits`` significant digits, for a JSON file that diffs and reads well."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def dump(result: dict) -> str:
    """Indented JSON with every innermost list or object (numbers, short records) on one line."""
    text = json.dumps(rounded(result), indent=1, ensure_ascii=False)
    for pattern in (r"\[\s+([^\[\]{}]*?)\s+\]", r"\{\s+([^\[\]{}]*?)\s+\}"):
        text = re.sub(pattern, lambda m: m.group(0)[0] + " ".join(m.group(1).split()) + m.group(0)[-1], text)
    return text + "\n"


def write_section(page: Path, text: str) -> bool:
    if not page.exists():
        return False
    doc = page.read_text(encoding="utf-8")
    if MARK_START not in doc or MARK_END not in doc:
        return False
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    page.write_text(f"{head}{MARK_START}\n{text}{MARK_END}{tail}", encoding="utf-8")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="CV repetitions per predictor and table (default 10)")
    ap.add_argument("--predictors", default=",".join(ALL_PREDICTORS),
                    help=f"comma-separated subset of {','.join(ALL_PREDICTORS)} (the no-skill reference always runs)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--embedder", default=None, help="embedder folder (default: the repo's MiniLM)")
    ap.add_argument("--json", default=str(HERE / "results" / "quality.json"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"), help="folder for the plots ('' for none)")
    ap.add_argument("--page", default=str(ROOT / "docs" / "router_quality.md"),
                    help="page whose marked figures section is regenerated ('' for none)")
    args = ap.parse_args()
    preds = [p.strip() for p in args.predictors.split(",") if p.strip()]
    unknown = [p for p in preds if p not in ALL_PREDICTORS]
    if unknown or not preds or args.seeds < 1:
        ap.error(f"--predictors must name some of {ALL_PREDICTORS} (got {unknown or preds}); --seeds >= 1")
    t0 = time.perf_counter()
    emb = get_embedder(args.embedder)
    rows = []
    for table, spec in TABLES.items():
        records = table_records(table, args.data)
        for metric in spec["metrics"]:
            ds = aggregate(records, metric, spec["source"])
            t = time.perf_counter()
            emb.embed(ds.prompts)  # once per table: cross_validate's calls then hit the embedder's cache
            embed_s = time.perf_counter() - t
            cells, plots = {}, {}
            for p in preds + [NO_SKILL]:
                cells[p], plots[p] = run_cell(ds, emb, p, args.seeds, args.folds)
                g = cells[p]["gap_closed"]
                print(f"{table} {metric} {p}: gap closed {g['mean']:+.1%} ± {g['sd']:.1%} "
                      f"({cells[p]['seconds_per_cv']['mean']:.2f} s per CV)", file=sys.stderr, flush=True)
            versus(cells, "knn")
            versus(cells, NO_SKILL)
            s = plots[preds[0]]["summary"]
            row = {"table": table, "metric": metric, "prompts": s["prompts"], "embed_seconds": round(embed_s, 3),
                   "candidates": plots[preds[0]]["candidates"], "best_single": s["best_single"],
                   "best_single_cost": s["best_single_cost"], "best_single_quality": s["best_single_quality"],
                   "auc_best_fixed_mix": s["auc_best_fixed_mix"], "auc_oracle": s["auc_oracle"],
                   "best_fixed_mix": s["best_fixed_mix"], "oracle": s["oracle"],
                   "predictors": cells}
            rows.append(row)
            if args.img:
                Path(args.img).mkdir(parents=True, exist_ok=True)
                name = f"quality_{table}_{metric}.png"
                plot_table(f"{table} {metric}", plots, Path(args.img) / name)
                row["plot"] = f"img/{name}"
    result = {"seeds": args.seeds, "folds": args.folds, "predictors": preds, "no_skill_reference": NO_SKILL,
              "budget_targets": N_BUDGETS, "embedder": emb.identity["name"], "machine": machine(),
              "threads": {v: os.environ[v] for v in THREAD_VARS},
              "seconds": round(time.perf_counter() - t0, 1), "tables": rows, "overall": overall(rows)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(dump(result))
    text = markdown(result)
    print(text)
    if args.page and write_section(Path(args.page), text):
        print(f"updated the figures section of {args.page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
