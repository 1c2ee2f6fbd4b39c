"""Learning from routed generations (bandit feedback, ``cost_aware_router.online``).

    python benchmarks/bench_replay.py [--seeds 3] [--synthetic-seeds 1]

For every rating table (``tables.TABLES``: each table's first metric, plus AGIQA-3K mos_align) and
every 5-fold prompt split (``predictors.kfold``) of seeds 0..seeds-1:

* **static** -- a kNN router trained on a random 10% of the training prompts (every candidate scored);
* **replay P** -- that router, streamed the other training prompts (random order) with a share P of
  exploration (P = 0, 0.05, 0.10), at two budgets: the router's default (``Budget()``, stateless)
  and a held target average cost of 30% of a full row's cost (``hold.BudgetHolder``; the 10% start
  plus the stream then spend 37% of the full matrix); only the chosen candidate's score is
  revealed, the router is updated after every 32 prompts (``online.replay``); evaluated after each
  quarter of the stream (learning curve);
* **full** -- a kNN router trained offline on every candidate's score for every training prompt.

Each is evaluated on the held-out fold (``evaluate.evaluate_router``: gap closed between the best
fixed mix of candidates and the oracle, quality at the best single candidate's cost).
Generation spend: replay = the 10% start's full matrix + what the stream generated; full = every
candidate on every training prompt.

A semi-synthetic table checks recovery of a known signal: ~3000 real DiffusionDB prompts, 4
candidates at 0.5 / 1.3 / 13 / 27 s, true quality = candidate mean + 0.25 * standardised
tanh(random projection of the MiniLM embedding) per candidate, observed with noise sd 0.5; a second
version adds a prompt-difficulty term shared by every candidate (sd 0.5: real per-prompt signal that
does not change which candidate is best, as human ratings have).

Writes benchmarks/results/replay.json and docs/img/replay_*.png, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# isort: off
from bench_env import HERE, ROOT, THREAD_VARS  # first: sets the thread count before numpy loads
# isort: on

import numpy as np  # noqa: E402
from run_all import machine  # noqa: E402

from cost_aware_router.decision.budget import Budget  # noqa: E402
from cost_aware_router.decision.hold import BudgetHolder  # noqa: E402
from cost_aware_router.embed import get_embedder  # noqa: E402
from cost_aware_router.evaluate import evaluate_router  # noqa: E402
from cost_aware_router.online import replay  # noqa: E402
from cost_aware_router.plots import plot_curves, save_plot  # noqa: E402
from cost_aware_router.predictors import kfold  # noqa: E402
from cost_aware_router.scored import Dataset, aggregate  # noqa: E402
from cost_aware_router.tables import TABLES, default_data_dir, table_records  # noqa: E402

EXPLORE = (0.0, 0.05, 0.10)
# replay budgets: the router's default (stateless), and a held target of HELD_ROW_SHARE of a full row's
# cost, so that the 10% start plus the stream spend 0.1 + 0.9 * 0.3 = 37% of the full matrix
HELD_ROW_SHARE = 0.30
CONFIGS = [("default", P) for P in EXPLORE] + [("held", P) for P in EXPLORE]
START_SHARE = 0.10
QUARTERS = 4
FOLDS = 5
GOAL_GAP_RATIO = 0.90     # replayed >= 90% of the full-matrix gap closed
GOAL_SPEND = 0.40         # spend <= 40% of the full matrix
SYN_PROMPTS = 3000
SYN_COSTS = (0.5, 1.3, 13.0, 27.0)
SYN_MEANS = (-0.35, 0.0, 0.25, 0.35)  # gaps 0.35 / 0.25 / 0.10
SYN_SIGNAL_SD = 0.25
SYN_NOISE_SD = 0.5
SYN_COMMON_SD = 0.5  # the second synthetic table adds a prompt-difficulty term shared by every candidate
SYN_PROMPT_FILE = Path("/work/shared/data/prompts/diffusiondb_2m_first_5k.txt")
COLORS = {0.0: (30, 80, 220), 0.05: (220, 130, 20), 0.10: (150, 50, 190)}


class CachedEmbedder:
    """The embedder with an unbounded cache: every prompt of every table is embedded once."""

    def __init__(self, inner):
        self.inner, self.cache = inner, {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, prompts):
        prompts = list(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        for s in range(0, len(missing), 256):
            for p, v in zip(missing[s:s + 256], self.inner.embed(missing[s:s + 256])):
                self.cache[p] = v
        if not prompts:
            return np.zeros((0, self.inner.dim), np.float32)
        return np.stack([self.cache[p] for p in prompts]).astype(np.float32)


def config_key(budget: str, P: float) -> str:
    return f"{budget}:{P:g}"


def spend(ds: Dataset, idx) -> float:
    """Seconds to generate every scored cell of prompts ``idx``."""
    return float(((ds.counts[idx] > 0) * ds.cost[None, :]).sum())


def double_centred_corr(pred: np.ndarray, true: np.ndarray) -> float:
    """Correlation of per-prompt relative quality (centred per candidate and per prompt): the part of
    the signal that changes which candidate is best for a prompt."""
    def dc(a):
        a = a - a.mean(axis=0)
        return a - a.mean(axis=1, keepdims=True)
    a, b = dc(np.asarray(pred, float)).ravel(), dc(np.asarray(true, float)).ravel()
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def run_split(ds: Dataset, X: np.ndarray, emb, train: np.ndarray, test: np.ndarray, seed: int, rng,
              eval_ds: Dataset | None = None, true_q: np.ndarray | None = None, configs=None) -> dict:
    """One fold of one seed: static start, replay at every exploration share (with a learning curve),
    full-matrix router. ``eval_ds`` (default ``ds``) is what the test fold is scored on; ``true_q``
    (synthetic) the noise-free quality for the signal-recovery correlation."""
    from cost_aware_router.train import train_router

    eval_ds = eval_ds or ds
    test_ds = eval_ds.subset(test)
    perm = rng.permutation(train)
    n_start = max(4, int(round(START_SHARE * len(train))))
    start_idx, stream_idx = np.sort(perm[:n_start]), perm[n_start:]
    full_spend = spend(ds, train)
    start_spend = spend(ds, start_idx)

    def score(router) -> dict:
        s = evaluate_router(router, test_ds)["summary"]
        out = {"gap_closed": s["gap_closed"], "quality_at_best_single_cost": s["quality_at_best_single_cost"]}
        if true_q is not None:
            out["signal_corr"] = double_centred_corr(router.predict_embedded(X[test])[0], true_q[test])
        return out

    t = time.perf_counter()
    static = train_router(ds.subset(start_idx), emb, "knn", seed=seed, embeddings=X[start_idx])
    full = train_router(ds.subset(train), emb, "knn", seed=seed, embeddings=X[train])
    res = {"train": int(len(train)), "start": int(n_start), "stream": int(len(stream_idx)),
           "full_spend": full_spend, "start_spend": start_spend,
           "static": {**score(static), "alpha": static.predictor.alpha, "k": static.predictor.params["k"]},
           "full": {**score(full), "alpha": full.predictor.alpha, "k": full.predictor.params["k"]}, "replay": {}}
    # what the static start would realise on the stream, routing without learning
    stream_ds = ds.subset(stream_idx)
    zs = static.predict_embedded(X[stream_idx])[0]
    ch = static.choices(zs, stream_ds.prompts, Budget())[0]
    rows = np.arange(len(stream_idx))
    res["static_stream"] = {"mean_score": float(np.nanmean(stream_ds.quality[rows, ch])),
                            "mean_cost": float(static.cost[ch].mean())}
    zf = full.predict_embedded(X[stream_idx])[0]
    chf = full.choices(zf, stream_ds.prompts, Budget(budget=static.default_budget))[0]
    res["full_stream"] = {"mean_score": float(np.nanmean(stream_ds.quality[rows, chf])),
                          "mean_cost": float(full.cost[chf].mean())}
    row_cost = float(ds.cost.sum())
    for bkey, P in configs or CONFIGS:
        router, spent, curve, all_rows, summaries = static, start_spend, [], [], []
        budget, holder = Budget(), None
        if bkey == "held":  # a target average cost that keeps the whole spend under the goal, held on the stream
            target = HELD_ROW_SHARE * row_cost
            budget = Budget(budget=target)
            holder = BudgetHolder(target, static.plan(budget).blended_cost_weight, static.cost, "replay-benchmark")
        for chunk in np.array_split(stream_idx, QUARTERS):
            router, rows_, summ = replay(router, ds.subset(chunk), budget=budget, explore=P, seed=seed,
                                         embeddings=X[chunk], holder=holder)
            spent += sum(r["cost"] for r in rows_)
            all_rows += rows_
            summaries.append(summ)
            curve.append({"spend_share": spent / full_spend, "prompts_seen": len(all_rows), **score(router)})
        n = len(all_rows)
        res["replay"][config_key(bkey, P)] = {
            **curve[-1], "curve": curve, "spend": spent, "spend_share": spent / full_spend,
            "stream_mean_score": float(np.mean([r["score"] for r in all_rows])) if n else None,
            "stream_mean_cost": float(np.mean([r["cost"] for r in all_rows])) if n else None,
            "explored_share": float(np.mean([r["explored"] for r in all_rows])) if n else 0.0,
            "skipped": int(sum(s["skipped"] for s in summaries)),
            "mean_ood_fallback": float(np.mean([s["mean_ood_fallback"] for s in summaries])),
            "alpha": router.predictor.alpha, "k": router.predictor.params["k"],
            "memory": router.training.get("online_memory"),
            "online_observations": router.training.get("online_observations"),
        }
    res["seconds"] = time.perf_counter() - t
    return res


def mean_sd(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def aggregate_runs(runs: list[dict]) -> dict:
    keys = ["gap_closed", "quality_at_best_single_cost"] + (["signal_corr"] if "signal_corr" in runs[0]["full"] else [])
    out = {"runs": len(runs),
           "static": {k: mean_sd([r["static"][k] for r in runs]) for k in keys + ["alpha"]},
           "full": {k: mean_sd([r["full"][k] for r in runs]) for k in keys + ["alpha"]},
           "static_stream": {k: mean_sd([r["static_stream"][k] for r in runs]) for k in ("mean_score", "mean_cost")},
           "full_stream": {k: mean_sd([r["full_stream"][k] for r in runs]) for k in ("mean_score", "mean_cost")},
           "replay": {}}
    full_gap = out["full"]["gap_closed"]["mean"]
    static_gap = out["static"]["gap_closed"]["mean"]
    for bkey, P in CONFIGS:
        rr = [r["replay"][config_key(bkey, P)] for r in runs]
        agg = {k: mean_sd([x[k] for x in rr]) for k in keys + ["spend_share", "explored_share", "stream_mean_score",
                                                                 "stream_mean_cost", "alpha", "mean_ood_fallback"]}
        agg["runs_alpha_above_0"] = int(sum(x["alpha"] > 0 for x in rr))
        agg["runs_relative_memory"] = int(sum(x.get("memory") == "relative" for x in rr))
        agg["curve"] = [{k: float(np.mean([x["curve"][q][k] for x in rr])) for k in x0.keys()}
                        for q, x0 in enumerate(rr[0]["curve"])]
        below = [x["gap_closed"] < r["static"]["gap_closed"] - 1e-9 for x, r in zip(rr, runs)]
        gap = agg["gap_closed"]["mean"]
        ratio = gap / full_gap if full_gap and full_gap > 0 else None
        agg["goals"] = {
            "gap_ratio_to_full": ratio,
            "gap_ge_90pct_of_full": bool(ratio is not None and ratio >= GOAL_GAP_RATIO),
            "spend_le_40pct_of_full": bool(agg["spend_share"]["mean"] <= GOAL_SPEND),
            "runs_below_static": int(sum(below)),
            "mean_not_below_static": bool(gap >= static_gap - 1e-12),
            "never_below_static": bool(not any(below)),
        }
        out["replay"][config_key(bkey, P)] = agg
    return out


def table_cases(data_dir):
    for table, spec in TABLES.items():
        metrics = list(spec["metrics"])
        chosen = [metrics[0]] + (["mos_align"] if table == "agiqa_3k" and "mos_align" in metrics else [])
        records = table_records(table, data_dir)
        for metric in chosen:
            ds = aggregate(records, metric, spec["source"])
            yield table, metric, ds.subset(np.nonzero(ds.complete)[0])


def synthetic_table(emb, rng_seed: int = 0, common_sd: float = 0.0, n_prompts: int = SYN_PROMPTS):
    lines = [ln.strip() for ln in SYN_PROMPT_FILE.read_text(encoding="utf-8", errors="replace").splitlines()]
    prompts = list(dict.fromkeys(ln for ln in lines if ln))[:n_prompts]
    X = emb.embed(prompts)
    rng = np.random.default_rng(rng_seed)
    C = len(SYN_COSTS)
    W = rng.normal(size=(X.shape[1], C))  # a random projection per candidate
    proj = (X - X.mean(axis=0)) @ W
    f = np.tanh(1.5 * (proj - proj.mean(axis=0)) / proj.std(axis=0))
    f = (f - f.mean(axis=0)) / f.std(axis=0) * SYN_SIGNAL_SD
    true_q = 3.0 + np.asarray(SYN_MEANS)[None, :] + f
    if common_sd > 0:  # a prompt-difficulty term shared by every candidate: real, but irrelevant to routing
        d = np.tanh(1.5 * (lambda v: (v - v.mean()) / v.std())((X - X.mean(axis=0)) @ rng.normal(size=X.shape[1])))
        true_q = true_q + ((d - d.mean()) / d.std() * common_sd)[:, None]
    noisy = true_q + rng.normal(size=true_q.shape) * SYN_NOISE_SD
    names = [f"syn-{c:g}s" for c in SYN_COSTS]
    mk = lambda q: Dataset(prompts, names, q, np.ones_like(q), np.asarray(SYN_COSTS, float),  # noqa: E731
                           {n: {} for n in names}, "synthetic", 0, "synthetic DiffusionDB")
    # fraction of each candidate's true per-prompt variance that changes the best candidate
    best_true = np.argmax(true_q, axis=1)
    info = {"prompts": len(prompts), "costs": list(SYN_COSTS), "means": list(SYN_MEANS),
            "signal_sd": SYN_SIGNAL_SD, "noise_sd": SYN_NOISE_SD, "common_difficulty_sd": common_sd,
            "best_candidate_share_at_cost_weight_0": np.bincount(best_true, minlength=C).tolist()}
    return mk(noisy), mk(true_q), X, true_q, info


def plot_case(key: str, title: str, agg: dict, out_dir: Path, metric_key: str = "gap_closed",
              ylabel: str = "gap closed") -> str:
    lines = []
    for bkey, P in CONFIGS:
        cv = agg["replay"][config_key(bkey, P)]["curve"]
        xs = [START_SHARE] + [c["spend_share"] for c in cv]
        ys = [agg["static"][metric_key]["mean"]] + [c[metric_key] for c in cv]
        color = COLORS[P] if bkey == "default" else tuple(int(v * 0.55) for v in COLORS[P])
        lines.append((f"{SHORT_WORDS[bkey]}, P={P:g}", xs, ys, color, 3 if P == 0 else 2))
    dots = [("static 10%", START_SHARE, agg["static"][metric_key]["mean"], (120, 120, 120)),
            ("full matrix", 1.0, agg["full"][metric_key]["mean"], (40, 160, 40))]
    img = plot_curves(lines, dots, title=f"{title}: test {ylabel} vs generation spend",
                      xlabel="generation spend / full matrix", hline=0.0 if metric_key == "gap_closed" else None,
                      ylabel=f"test {ylabel}")
    path = out_dir / f"replay_{key}.png"
    save_plot(img, path, overwrite=True)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def fmt(x, pct=False, digits=3):
    if x is None:
        return "–"
    return f"{x:+.1%}" if pct else f"{x:.{digits}f}"


BUDGET_WORDS = {"default": "default budget", "held": f"held {HELD_ROW_SHARE:.0%} of a row"}
SHORT_WORDS = {"default": "default", "held": f"held {HELD_ROW_SHARE:.0%}"}


def markdown(results: list[dict]) -> str:
    head = ("| table / metric | replay budget | static 10% | replay P=0 | P=0.05 | P=0.10 | full matrix | "
            "replay / full (P=0 / .05 / .10) | spend (P=0 / .05 / .10) | runs below static (P=0 / .05 / .10) |")
    out = [head, "|" + "---|" * 10]
    g = lambda d: fmt(d["gap_closed"]["mean"], pct=True)  # noqa: E731
    for r in results:
        a = r["aggregate"]
        for bkey in BUDGET_WORDS:
            rp = [a["replay"][config_key(bkey, P)] for P in EXPLORE]
            ratio = [x["goals"]["gap_ratio_to_full"] for x in rp]
            out.append(
                f"| {r['table']} / {r['metric']} | {BUDGET_WORDS[bkey]} | {g(a['static'])} | "
                + " | ".join(g(x) for x in rp) + f" | {g(a['full'])} | "
                + " / ".join("–" if v is None else f"{v:.0%}" for v in ratio) + " | "
                + " / ".join(f"{x['spend_share']['mean']:.0%}" for x in rp) + " | "
                + " / ".join(f"{x['goals']['runs_below_static']}/{a['runs']}" for x in rp) + " |")
    out.append("")
    out.append("Quality at the best single candidate's cost (metric units) and, for the synthetic tables, "
               "correlation of predicted with true relative quality on held-out prompts:")
    out.append("")
    out.append("| table / metric | replay budget | static | replay P=0 | P=0.05 | P=0.10 | full | signal corr static / "
               "P=0 / .05 / .10 / full |")
    out.append("|" + "---|" * 8)
    for r in results:
        a = r["aggregate"]
        q = lambda d: fmt(d["quality_at_best_single_cost"]["mean"])  # noqa: E731
        for bkey in BUDGET_WORDS:
            rp = [a["replay"][config_key(bkey, P)] for P in EXPLORE]
            sc = "–"
            if "signal_corr" in a["full"]:
                sc = " / ".join(f"{d['signal_corr']['mean']:.2f}" for d in [a["static"]] + rp + [a["full"]])
            out.append(f"| {r['table']} / {r['metric']} | {BUDGET_WORDS[bkey]} | {q(a['static'])} | "
                       + " | ".join(q(x) for x in rp) + f" | {q(a['full'])} | {sc} |")
    return "\n".join(out)


def progress_line(name: str, agg: dict, seconds: float) -> str:
    return (f"{name}: static {agg['static']['gap_closed']['mean']:+.1%}, replay "
            + ", ".join(f"{b} P={P:g} {agg['replay'][config_key(b, P)]['gap_closed']['mean']:+.1%}" for b, P in CONFIGS)
            + f", full {agg['full']['gap_closed']['mean']:+.1%} ({seconds:.0f} s)")


def scale_check(emb, n_prompts: int, t0: float, folds: int = 3) -> int:
    """Does replay close more of the gap to the full matrix on a longer stream? ``folds`` of the 5."""
    noisy, clean, X, true_q, info = synthetic_table(emb, common_sd=SYN_COMMON_SD, n_prompts=n_prompts)
    runs = []
    for f, test in enumerate(kfold(len(noisy.prompts), FOLDS, 0)[:folds]):
        train = np.setdiff1d(np.arange(len(noisy.prompts)), test)
        run = run_split(noisy, X, emb, train, test, 0, np.random.default_rng(f), eval_ds=clean, true_q=true_q,
                        configs=[("held", 0.1)])
        rp = run["replay"][config_key("held", 0.1)]
        runs.append({"fold": f, "train": run["train"], "stream": run["stream"], "static": run["static"],
                     "full": run["full"], "replay_held_0.1": rp})
        print(f"fold {f}: static {run['static']['gap_closed']:+.1%}, replay {rp['gap_closed']:+.1%}, full "
              f"{run['full']['gap_closed']:+.1%} ({run['seconds']:.0f} s)", file=sys.stderr, flush=True)
    mean = lambda f: float(np.mean([f(r) for r in runs]))  # noqa: E731
    out = {"prompts": len(noisy.prompts), "folds": folds, "design": info, "runs": runs,
           "static_gap": mean(lambda r: r["static"]["gap_closed"]),
           "replay_gap": mean(lambda r: r["replay_held_0.1"]["gap_closed"]),
           "full_gap": mean(lambda r: r["full"]["gap_closed"]),
           "replay_spend_share": mean(lambda r: r["replay_held_0.1"]["spend_share"]),
           "replay_curve": [mean(lambda r, q=q: r["replay_held_0.1"]["curve"][q]["gap_closed"])
                            for q in range(QUARTERS)],
           "replay_signal_corr": mean(lambda r: r["replay_held_0.1"]["signal_corr"]),
           "full_signal_corr": mean(lambda r: r["full"]["signal_corr"]),
           "machine": machine(), "seconds": round(time.perf_counter() - t0, 1)}
    out["ratio_to_full"] = out["replay_gap"] / out["full_gap"]
    path = HERE / "results" / "replay_scale.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(noisy.prompts)} prompts, {folds} folds: static {out['static_gap']:+.1%}, replay held 30% P=0.1 "
          f"{out['replay_gap']:+.1%} (spend {out['replay_spend_share']:.0%}; curve "
          + " ".join(f"{c:+.1%}" for c in out["replay_curve"]) + f"), full {out['full_gap']:+.1%}, "
          f"ratio {out['ratio_to_full']:.0%}; signal corr {out['replay_signal_corr']:.2f} vs full "
          f"{out['full_signal_corr']:.2f}; {out['seconds']:.0f} s; wrote {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="fold-split seeds for the rating tables (default 5)")
    ap.add_argument("--synthetic-seeds", type=int, default=1, help="fold-split seeds for the synthetic table")
    ap.add_argument("--synthetic-folds", type=int, default=FOLDS, help="how many of the 5 folds to run (synthetic)")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--data", default=str(default_data_dir()))
    ap.add_argument("--json", default=str(HERE / "results" / "replay.json"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"), help="folder for the plots ('' for none)")
    ap.add_argument("--scale", type=int, default=0, metavar="N",
                    help="instead: the semi-synthetic table with a shared difficulty on N prompts, one fold, replay "
                         "held at 30%% of a row with 10%% exploration (writes results/replay_scale.json)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    emb = CachedEmbedder(get_embedder())
    if args.scale:
        return scale_check(emb, args.scale, t0)
    results = []
    cases = list(table_cases(args.data)) if args.seeds > 0 else []
    for table, metric, ds in cases:
        t = time.perf_counter()
        X = emb.embed(ds.prompts)
        runs = []
        for seed in range(args.seeds):
            for f, test in enumerate(kfold(len(ds.prompts), FOLDS, seed)):
                train = np.setdiff1d(np.arange(len(ds.prompts)), test)
                rng = np.random.default_rng(1000 * seed + f)
                runs.append({"seed": seed, "fold": f, **run_split(ds, X, emb, train, test, seed, rng)})
        agg = aggregate_runs(runs)
        results.append({"table": table, "metric": metric, "prompts": len(ds.prompts),
                        "candidates": {c: float(ds.cost[j]) for j, c in enumerate(ds.candidates)},
                        "seconds": time.perf_counter() - t, "aggregate": agg, "runs": runs})
        print(progress_line(f"{table} {metric}", agg, time.perf_counter() - t), file=sys.stderr, flush=True)
    variants = [] if args.no_synthetic else [("synthetic", 0.0), ("synthetic_difficulty", SYN_COMMON_SD)]
    for key, common_sd in variants:
        t = time.perf_counter()
        noisy, clean, X, true_q, info = synthetic_table(emb, common_sd=common_sd)
        runs = []
        for seed in range(args.synthetic_seeds):
            for f, test in enumerate(kfold(len(noisy.prompts), FOLDS, seed)[:args.synthetic_folds]):
                train = np.setdiff1d(np.arange(len(noisy.prompts)), test)
                rng = np.random.default_rng(1000 * seed + f)
                runs.append({"seed": seed, "fold": f, **run_split(noisy, X, emb, train, test, seed, rng,
                                                                  eval_ds=clean, true_q=true_q)})
                print(f"{key} seed {seed} fold {f}: {runs[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
        agg = aggregate_runs(runs)
        results.append({"table": key, "metric": "true quality (noise-free), test fold", "prompts": len(noisy.prompts),
                        "candidates": dict(zip(noisy.candidates, SYN_COSTS)), "design": info,
                        "seconds": time.perf_counter() - t, "aggregate": agg, "runs": runs})
        print(progress_line(key, agg, time.perf_counter() - t), file=sys.stderr, flush=True)
    plots = {}
    if args.img:
        out_dir = Path(args.img)
        for r in results:
            synthetic = r["table"].startswith("synthetic")
            key = r["table"] if synthetic else f"{r['table']}_{r['metric']}"
            plots[key] = plot_case(key, r["table"] if synthetic else f"{r['table']} {r['metric']}", r["aggregate"],
                                   out_dir)
            if "signal_corr" in r["aggregate"]["full"]:
                plots[key + "_signal"] = plot_case(key + "_signal", r["table"], r["aggregate"], out_dir,
                                                   "signal_corr", "signal correlation")
    table_md = markdown(results)
    doc = {
        "explore_shares": list(EXPLORE), "start_share": START_SHARE, "folds": FOLDS, "seeds": args.seeds,
        "synthetic_seeds": 0 if args.no_synthetic else args.synthetic_seeds,
        "synthetic_folds": 0 if args.no_synthetic else args.synthetic_folds,
        "budgets": {"default": "router default (Budget(), stateless)",
                    "held": f"held target average cost of {HELD_ROW_SHARE:g} x the sum of the candidates' costs"},
        "predictor": "knn", "batch": 32, "stream_quarters": QUARTERS,
        "goals": {"gap_closed_ratio_to_full": GOAL_GAP_RATIO, "spend_share_max": GOAL_SPEND,
                  "never_below_static": True},
        "machine": machine(), "threads": {v: os.environ.get(v) for v in THREAD_VARS},
        "seconds": round(time.perf_counter() - t0, 1), "plots": plots, "markdown": table_md,
        "tables": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    print(table_md)
    print(f"\n{doc['seconds']:.0f} s; wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
