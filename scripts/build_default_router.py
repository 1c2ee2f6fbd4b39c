"""Rebuild router_weights/default.safetensors and the cross-validated figures of its data card.

    python scripts/build_default_router.py [--data DIR] [--overwrite]

Trains the default router (knn_or_ridge on AGIQA-3K perceptual-quality MOS over SD 1.5 at 50 and 10
steps, low/high CFG, and SDXL) and cross-validates every predictor on every table and metric of
the rating tables shipped in data/ (or --data DIR laid out the same way), writing
router_weights/cv_figures.json and router_weights/default_cv.png. The router's anchor prompts are
chosen among prompts fit for a public demo (``Reference.with_demo_safe_anchors``). Existing files
are replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cost_aware_router.embed import get_embedder  # noqa: E402
from cost_aware_router.evaluate import cross_validate  # noqa: E402
from cost_aware_router.plots import plot_deferral, save_plot  # noqa: E402
from cost_aware_router.predictors import PREDICTORS  # noqa: E402
from cost_aware_router.router_file import save_router  # noqa: E402
from cost_aware_router.scored import aggregate  # noqa: E402
from cost_aware_router.storage.files import atomic_write  # noqa: E402
from cost_aware_router.tables import TABLES, default_data_dir, table_records  # noqa: E402
from cost_aware_router.train import train_router  # noqa: E402

DEFAULT_TABLE, DEFAULT_METRIC, DEFAULT_PREDICTOR = "agiqa_3k", "mos_quality", "knn_or_ridge"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--out", default=str(ROOT / "router_weights"))
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--router-only", action="store_true", help="rebuild the router file only, not the CV figures")
    args = ap.parse_args()
    out = Path(args.out)
    emb = get_embedder()
    if not args.router_only:
        cv_figures(args, out, emb)
    return build_router(args, out, emb)


def cv_figures(args, out: Path, emb) -> None:
    figures = []
    for table, spec in TABLES.items():
        records = table_records(table, args.data)
        for metric in spec["metrics"]:
            ds = aggregate(records, metric, spec["source"])
            for pred in PREDICTORS:
                t = time.perf_counter()
                res = cross_validate(ds, emb, pred, folds=5, seed=0)
                s = res["summary"]
                row = {"table": table, "metric": metric, "predictor": pred, "prompts": s["prompts"],
                       "candidates": res["candidates"], "gap_closed": s["gap_closed"],
                       "auc_router": s["auc_router"], "auc_best_fixed_mix": s["auc_best_fixed_mix"],
                       "auc_oracle": s["auc_oracle"], "best_single": s["best_single"],
                       "best_single_quality": s["best_single_quality"],
                       "quality_at_best_single_cost": s["quality_at_best_single_cost"],
                       "cost_ratio_at_best_single_quality": s["cost_ratio_at_best_single_quality"],
                       "min_margin_vs_best_fixed_mix": s["min_margin_vs_best_fixed_mix"],
                       "seconds": round(time.perf_counter() - t, 2)}
                figures.append(row)
                ratio = row["cost_ratio_at_best_single_quality"]
                print(f"| {table} | {metric} | {pred} | {s['prompts']} | {s['gap_closed']:+.1%} | "
                      f"{s['quality_at_best_single_cost']:.4f} / {s['best_single_quality']:.4f} | "
                      f"{'-' if ratio is None else f'{ratio:.0%}'} | {s['min_margin_vs_best_fixed_mix']:+.4f} |",
                      flush=True)
                if (table, metric, pred) == (DEFAULT_TABLE, DEFAULT_METRIC, DEFAULT_PREDICTOR):
                    save_plot(plot_deferral(res, f"5-fold CV, {pred}, {table} {metric}"), out / "default_cv.png",
                              overwrite=args.overwrite)
    atomic_write(out / "cv_figures.json", lambda tmp: Path(tmp).write_text(json.dumps(figures, indent=1)),
                 overwrite=args.overwrite)


def build_router(args, out: Path, emb) -> int:
    """The default router; its verify-and-escalate policy reads the same metric (mos_quality)."""
    ds = aggregate(table_records(DEFAULT_TABLE, args.data), DEFAULT_METRIC, TABLES[DEFAULT_TABLE]["source"])
    router = train_router(ds, emb, DEFAULT_PREDICTOR)
    # its anchors are shown in public demos: no real people, drugs, violence (reference.DEMO_BLOCKLIST)
    router.reference = router.reference.with_demo_safe_anchors(ds.prompts)
    for c in router.candidates:
        c["cost_note"] = next(v["cost_note"] for v in TABLES[DEFAULT_TABLE]["candidates"].values()
                              if v["name"] == c["name"])
    save_router(router, out / "default.safetensors", overwrite=args.overwrite)
    cas = router.cascade
    print(f"wrote {out / 'default.safetensors'}; predictor {router.predictor.state()[1]}; "
          f"default budget {router.default_budget:.3f} s/image; verify and escalate "
          + ("none" if cas is None else f"{'on' if cas.enabled else 'off'} ({cas.report})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
