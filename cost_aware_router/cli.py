"""Command line: ``cost-aware-router route|train|evaluate|cv|collect|anchors|add-candidate|replay|report|
export-table``.

Errors a user can cause exit with code 2 and one line on stderr (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import RouterError
from .storage.files import check_writable
from .storage.lines import exclusive
from .storage.prompts import read_prompts
from .storage.text import json_text, printable

PACK_DIR = Path(__file__).resolve().parent.parent
DEFAULT_ROUTER = PACK_DIR / "router_weights" / "default.safetensors"


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _folds(text: str) -> int:
    value = _non_negative_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"cross-validation needs at least 2 folds, got {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid share: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one readable line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _budget(args):
    from .decision.budget import Budget

    return Budget(cost_weight=args.cost_weight, budget=args.budget, best_quality=args.best_quality,
                  max_cost=args.max_cost, force=args.force)


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    for i, p in enumerate(prompts, 1):
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise RouterError(f"prompt argument {i} is not valid UTF-8") from None
    if args.prompts_file:
        prompts += read_prompts(args.prompts_file)
    if not prompts:
        raise RouterError("no prompt given: pass PROMPT arguments or --prompts-file")
    return prompts


def _load(args):
    from .router_file import load_router

    router = load_router(args.router or DEFAULT_ROUTER)
    if getattr(args, "embedder", None):
        from .embed import get_embedder

        router.use_embedder(get_embedder(args.embedder))
    return router


def _holder(args, router, budget):
    """The budget holder of ``--hold-budget``: resumed from ``--state`` when that file exists."""
    from .decision.hold import BudgetHolder
    from .decision.hold_state import load_state

    if not args.hold_budget:
        if args.state:
            raise RouterError("--state keeps the state of --hold-budget; add --hold-budget")
        return None
    plan = router.plan(budget)
    if plan.target is None or plan.force is not None:
        raise RouterError("--hold-budget holds a target average cost: give --budget SECONDS (or no budget flag, for "
                          "the router's default), not --cost-weight, --best-quality or --force")
    # a learnt router keeps its lineage across feedback updates, so its held average is not lost
    if args.state:
        return load_state(args.state, router.lineage, plan.target, plan.blended_cost_weight, router.cost)
    return BudgetHolder(plan.target, plan.blended_cost_weight, router.cost, router.lineage)


def _warn_scale(router, observed) -> None:
    """Say on stderr when an observed score looks like another metric than the one the router verifies with."""
    text = router.cascade.scale_warning([s for obs in observed.values() for _, _, s in obs]) if router.cascade else ""
    if text:
        print(f"cost-aware-router: warning: {printable(text)}", file=sys.stderr)


def cmd_route(args) -> int:
    router = _load(args)
    if args.candidates:
        from .subset import restrict

        router = restrict(router, [x.strip() for x in args.candidates.split(",") if x.strip()])
    budget = _budget(args)
    prompts = _read_prompts(args)
    if not args.state:
        return _route(args, router, budget, prompts)
    if not args.hold_budget:
        raise RouterError("--state keeps the state of --hold-budget; add --hold-budget")
    check_writable(args.state, overwrite=True)
    with exclusive(str(args.state) + ".lock"):  # two runs sharing a state file take turns, none is lost
        return _route(args, router, budget, prompts)


def _route(args, router, budget, prompts) -> int:
    from .decision_log import append_decisions, decision_records

    holder = _holder(args, router, budget)
    observed = None
    if args.observed:
        from .cascade import read_observations

        observed = read_observations(args.observed, router.names)
        _warn_scale(router, observed)
    decisions = router.route(prompts, budget, holder, explore=args.explore, observed=observed)
    if args.log:
        append_decisions(args.log, decision_records(decisions, Path(args.router or DEFAULT_ROUTER).name,
                                                    router.fingerprint, router.plan(budget).target))
    if holder is not None and args.state:
        from .decision.hold_state import save_state

        save_state(holder, args.state)
    for d in decisions:
        if args.json:
            print(json_text(d.to_json()))
        else:
            cfg = ", ".join(f"{k}={v}" for k, v in d.config.items())
            short = d.prompt if len(d.prompt) <= 70 else d.prompt[:67] + "..."
            print(f"{short!r} -> {printable(d.candidate)}" + (f" ({printable(cfg)})" if cfg else ""))
            if observed is not None:
                nxt, dlv = d.extra.get("next"), d.extra.get("deliver")
                print("  " + (f"next: generate '{printable(nxt['candidate'])}' seed {printable(nxt['seed'])}" if nxt
                              else f"deliver: '{printable(dlv['candidate'])}' seed {printable(dlv['seed'])}"))
            if args.explain:
                print("  " + printable(d.explanation, newlines=True).replace("\n", "\n  "))
    return 0


def _loaded(ds):
    """A dataset just read: say on stderr how many bad rows were skipped and what looked wrong."""
    if ds.skipped:
        print(f"skipped {ds.skipped} bad row(s)", file=sys.stderr)
    for warning in ds.warnings:
        print(f"cost-aware-router: warning: {printable(warning)}", file=sys.stderr)
    return ds


def _output(args) -> Path:
    """``--out``, refused if it exists (unless ``--overwrite``) or cannot be written."""
    out = Path(args.out)
    if os.path.lexists(out) and not os.path.isdir(out) and not args.overwrite:
        raise RouterError(f"{out} already exists; pass --overwrite to replace it")
    check_writable(out, args.overwrite)
    return out


def cmd_train(args) -> int:
    from .embed import get_embedder
    from .router_file import save_router
    from .scored import load_dataset
    from .train import train_router

    out = _output(args)
    ds = _loaded(load_dataset(args.data_dir, metric=args.metric, skip_bad=args.skip_bad,
                              verify_metric=args.verify_metric))
    router = train_router(ds, get_embedder(args.embedder), args.predictor, folds=args.folds, seed=args.seed,
                          progress=_progress("training") if sys.stderr.isatty() else None)
    save_router(router, out, overwrite=args.overwrite)
    p = router.predictor.state()[1]
    print(f"wrote {out}: {len(router.names)} candidates, {len(ds.prompts)} prompts, predictor {router.predictor.kind} "
          f"{p}, default budget {router.default_budget:.3g} s/image; {_cascade_words(router)}")
    return 0


def _cascade_words(router) -> str:
    """What training found about verify and escalate, in one clause."""
    cas = router.cascade
    if cas is None:
        return "no verify-and-escalate policy (it needs at least 20 prompts scored by every candidate)"
    r = cas.report
    verdict = "on" if cas.enabled else "off (it did not beat routing alone by 2 standard errors)"
    return (f"verify and escalate {verdict}: reading '{cas.verify_metric}', utility {r['utility_gain']:+.3f} "
            f"± {r['utility_gain_se']:.3f} per prompt against routing alone on {r['prompts']} prompts")


def _progress(label):
    def report(done, total):
        sys.stderr.write(f"\r{label}: {100 * done / max(total, 1):5.1f}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _check_plot(args) -> None:
    """Refuse a --plot target before any long work."""
    if args.plot:
        check_writable(args.plot, args.overwrite)


def _emit(result: dict, args, title: str) -> None:
    if args.plot:
        from .plots import plot_deferral, save_plot

        save_plot(plot_deferral(result, title), args.plot, overwrite=args.overwrite)
    if args.json:
        print(json_text(result))
    else:
        s = result["summary"]
        print(f"{title}: {s['prompts']} prompts, metric {s['metric']}")
        for name, v in result["candidates"].items():
            print(f"  {printable(name):<24} cost {v['cost']:8.3f} s  mean quality {v['mean_quality']:.4f}")
        cb = s["cost_at_best_single_quality"]
        print(f"  gap closed {s['gap_closed']:.1%}; quality at {printable(s['best_single'])}'s cost "
              f"{s['quality_at_best_single_cost']:.4f} (vs {s['best_single_quality']:.4f}); cost at its quality "
              + (f"{cb:.3f} s ({s['cost_ratio_at_best_single_quality']:.0%})" if cb is not None else "not reached"))
        ve = s.get("verify_escalate")
        if ve:
            ci = ve["difference_ci95"]
            print(f"  verify and escalate (reading '{printable(ve['verify_metric'])}'), gap closed over the full cost "
                  f"range: routing alone {ve['routing_gap_closed']:.1%}, with escalation {ve['hybrid_gap_closed']:.1%}"
                  + (f" (difference 95% interval {ci[0]:+.1%} to {ci[1]:+.1%} over prompts)" if ci else ""))
        if args.plot:
            print(f"  plot: {args.plot}")


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_router
    from .scored import load_dataset

    _check_plot(args)
    router = _load(args)
    verify = router.cascade.verify_metric if router.cascade is not None else None
    ds = _loaded(load_dataset(args.data_dir, metric=args.metric or router.metric, skip_bad=args.skip_bad,
                              verify_metric=verify))
    _emit(evaluate_router(router, ds), args, f"router {Path(args.router).name} on {Path(args.data_dir).name}")
    return 0


def cmd_cv(args) -> int:
    from .embed import get_embedder
    from .evaluate import cross_validate
    from .scored import load_dataset

    _check_plot(args)
    ds = _loaded(load_dataset(args.data_dir, metric=args.metric, skip_bad=args.skip_bad,
                              verify_metric=args.verify_metric))
    result = cross_validate(ds, get_embedder(args.embedder), args.predictor, folds=args.folds, seed=args.seed)
    _emit(result, args, f"{args.folds}-fold CV of {args.predictor} on {Path(args.data_dir).name}")
    return 0


def cmd_export_table(args) -> int:
    from .tables import export_table

    out, rows, written = export_table(args.table, args.out, overwrite=args.overwrite, data_dir=args.data)
    print(f"wrote {rows} rows to {out}" if written
          else f"{out} already holds {args.table} ({rows} rows); left as it is")
    return 0


def cmd_collect(args) -> int:
    import os

    from .collect import collect, read_candidates

    scorer = args.scorer or os.environ.get("COST_AWARE_ROUTER_SCORER")
    if not scorer:
        raise RouterError("no scorer: pass --scorer MODEL_DIR (a local CLIP or PickScore folder) "
                          "or set COST_AWARE_ROUTER_SCORER")
    prompts = read_prompts(args.prompts, clean=True)
    if not prompts:
        raise RouterError(f"prompts file {args.prompts} has no prompts")
    counts = collect(prompts, read_candidates(args.candidates), args.out, scorer,
                     args.scorer_kind, seeds=args.seeds, size=args.size)
    print(f"{args.out}: wrote {counts['written']} generation(s), skipped {counts['skipped']} already there")
    return 0


def cmd_anchors(args) -> int:
    from .extend import anchor_prompts
    from .storage.files import atomic_write

    prompts = anchor_prompts(_load(args))
    text = "".join(p + "\n" for p in prompts)
    if args.out:
        atomic_write(_output(args), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=args.overwrite)
        print(f"wrote {len(prompts)} anchor prompts to {args.out}")
    else:  # a terminal gets escapes for control characters; a pipe or a file gets the prompts as they are
        sys.stdout.write(printable(text, newlines=True) if sys.stdout.isatty() else text)
    return 0


def cmd_add_candidate(args) -> int:
    from .extend import add_candidate_from_dataset, describe_addition
    from .router_file import save_router
    from .scored import load_dataset

    out = _output(args)
    router = _load(args)
    ds = _loaded(load_dataset(args.data_dir, metric=args.metric, skip_bad=args.skip_bad))
    new, report = add_candidate_from_dataset(router, ds, args.candidate, args.cost)
    save_router(new, out, overwrite=args.overwrite)
    print(printable(describe_addition(args.candidate, report), newlines=True))
    print(f"wrote {out}: {len(new.names)} candidates, default budget {new.default_budget:.3g} s/image")
    return 0


def cmd_replay(args) -> int:
    from .online import replay
    from .router_file import save_router
    from .scored import load_dataset

    out = _output(args)
    router = _load(args)
    ds = _loaded(load_dataset(args.data_dir, metric=router.metric if args.metric is None else args.metric,
                              skip_bad=args.skip_bad))
    budget = _budget(args)
    progress = _progress("replaying") if sys.stderr.isatty() and not args.json else None
    new, rows, summary = replay(router, ds, budget, explore=args.explore, seed=args.seed, progress=progress,
                                holder=_holder(args, router, budget))
    save_router(new, out, overwrite=args.overwrite)
    keys = ("prompts", "mean_score", "mean_cost", "explored_share")
    if args.json:
        for row in rows:
            print(json_text(row))
        print(json_text({"summary": {k: summary[k] for k in keys}}))
    else:
        print(f"replayed {summary['prompts']} prompts of {Path(args.data_dir).name}: mean {ds.metric} "
              f"{summary['mean_score']:.4g}, mean cost {summary['mean_cost']:.3g} s/image, explored "
              f"{summary['explored_share']:.1%}" + (f", {summary['skipped']} skipped (chosen candidate unscored)"
                                                    if summary["skipped"] > summary["unlearnable"] else "")
              + (f"; {summary['unlearnable']} not learnt: {printable(summary['unlearnable_note'])}"
                 if summary["unlearnable"] else ""))
        print(f"wrote {out}: learnt from {new.training.get('online_observations', 0)} scored generation(s)")
    return 0


def cmd_report(args) -> int:
    from .report import format_summary, report_json, summarise_log

    _check_plot(args)
    summary = summarise_log(args.log)  # the log and its rotated parts, streamed: constant memory
    if args.plot:
        from .plots import plot_log_summary, save_plot

        title = f"decisions in {printable(Path(args.log).name)}"
        save_plot(plot_log_summary(summary, title), args.plot, overwrite=args.overwrite)
    if args.json:
        print(report_json(summary))  # strict, pure-ASCII JSON
    else:
        print(printable(format_summary(summary), newlines=True))
    return 0


def _budget_flags(sp, hold_help: str, limits: bool = True) -> None:
    """The budget flags of ``route`` and ``replay``: one of --budget and --cost-weight (and, with ``limits``,
    --best-quality), --max-cost and --force with ``limits`` (else their defaults stand in), and --hold-budget."""
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--budget", type=float, help="target average cost, seconds per image")
    g.add_argument("--cost-weight", type=float, help="lambda: normalised quality traded per second")
    if limits:
        g.add_argument("--best-quality", action="store_true", help="ignore cost (lambda = 0)")
        sp.add_argument("--max-cost", type=float, help="never choose a candidate costing more per image")
        sp.add_argument("--force", help="always choose this candidate")
    else:
        sp.set_defaults(best_quality=False, max_cost=None, force=None)
    sp.add_argument("--hold-budget", action="store_true", help=hold_help)


def _data_flags(sp) -> None:
    sp.add_argument("--skip-bad", action="store_true", help="skip bad rows, reporting how many")
    sp.add_argument("--embedder", default=None, help="local transformers model folder (default: all-MiniLM-L6-v2)")


def _verify_metric_flag(sp) -> None:
    sp.add_argument("--verify-metric", default=None,
                    help="the metric the scorer that checks each image gives (default: --metric): verify and escalate "
                         "is fitted on it and judged on --metric")


CURVE_PLOT = "write the deferral curve to this PNG (refused if it exists, unless --overwrite)"


def _plot_flags(sp, plot_help: str = CURVE_PLOT) -> None:
    sp.add_argument("--plot", help=plot_help)
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")


def _add_route(sub) -> None:
    r = sub.add_parser("route", help="choose a candidate for each prompt")
    r.add_argument("prompt", nargs="*")
    r.add_argument("--prompts-file", help="UTF-8 text file, one prompt per line")
    r.add_argument("--router", help=f"router file (default {DEFAULT_ROUTER})")
    r.add_argument("--json", action="store_true", help="JSON Lines output, one object per prompt")
    r.add_argument("--explain", action="store_true", help="print every candidate's predicted quality and cost")
    r.add_argument("--embedder", default=None, help="the embedder folder the router was trained with, when it is not "
                                                    "the default (a router file never chooses what is loaded)")
    r.add_argument("--state", help="JSON file keeping --hold-budget's state between runs (read if present, written "
                                   "after the run; refused if made for another router or target)")
    r.add_argument("--log", help="append every decision as one JSON line to this file (safe with concurrent writers)")
    r.add_argument("--candidates", metavar="A,B,...",
                   help="route among these candidates only (any of the router's; budgets recalibrated over them)")
    r.add_argument("--observed", metavar="OBS.jsonl",
                   help="verify and escalate: JSON Lines {prompt, candidate, seed, score} of images already "
                        "generated; each prompt gets 'next' (generate) or 'deliver' (an observed image); budgets "
                        "count escalations")
    r.add_argument("--explore", type=_share, default=0.0, metavar="P",
                   help="send a stable share P of prompts to the candidate with the fewest scored examples nearby "
                        "(so feedback can correct it); counted in a held budget and marked in the log")
    _budget_flags(r, "hold the target average cost (--budget, or the router's default) on this stream: the cost "
                     "weight follows the realised average of the decisions (a prompt may route differently later)")
    r.set_defaults(func=cmd_route)


def _add_train(sub) -> None:
    from .predictors import PREDICTORS
    from .train import DEFAULT_PREDICTOR

    t = sub.add_parser("train", help="fit a router from a scored-generations folder")
    t.add_argument("data_dir")
    t.add_argument("--out", required=True)
    t.add_argument("--predictor", default=DEFAULT_PREDICTOR, choices=sorted(PREDICTORS))
    t.add_argument("--metric", default="score", help="'score' or a key of each row's 'scores'")
    _verify_metric_flag(t)
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--folds", type=_folds, default=5)
    t.add_argument("--seed", type=_non_negative_int, default=0)
    _data_flags(t)
    t.set_defaults(func=cmd_train)


def _add_evaluation(sub) -> None:
    from .predictors import PREDICTORS
    from .train import DEFAULT_PREDICTOR

    e = sub.add_parser("evaluate", help="deferral curve of a router on a held-out folder")
    e.add_argument("router")
    e.add_argument("data_dir")
    e.add_argument("--json", action="store_true")
    _plot_flags(e)
    e.add_argument("--metric", default=None, help="metric to evaluate (default: the router's)")
    _data_flags(e)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("cv", help="cross-validated deferral curve of a predictor on a folder")
    c.add_argument("data_dir")
    c.add_argument("--predictor", default=DEFAULT_PREDICTOR, choices=sorted(PREDICTORS))
    c.add_argument("--metric", default="score")
    _verify_metric_flag(c)
    c.add_argument("--folds", type=_folds, default=5)
    c.add_argument("--seed", type=_non_negative_int, default=0)
    c.add_argument("--json", action="store_true")
    _plot_flags(c)
    _data_flags(c)
    c.set_defaults(func=cmd_cv)


def _add_collect(sub) -> None:
    from .scoring import SCORERS

    k = sub.add_parser("collect", help="generate, time and score images with diffusers into a scored folder")
    k.add_argument("--prompts", required=True, help="UTF-8 text file, one prompt per line")
    k.add_argument("--candidates", required=True, help="TOML file of [[candidate]] tables")
    k.add_argument("--out", required=True, help="scored-generations folder to write (resumed if it exists)")
    k.add_argument("--scorer", help="local CLIP / PickScore model folder (default $COST_AWARE_ROUTER_SCORER)")
    k.add_argument("--scorer-kind", default="clipscore", choices=list(SCORERS))
    k.add_argument("--seeds", type=_non_negative_int, default=1)
    k.add_argument("--size", type=int, default=512)
    k.set_defaults(func=cmd_collect)


def _add_extend(sub) -> None:
    a = sub.add_parser("anchors", help="print (or --out) the router's anchor prompts, to score a new candidate on")
    a.add_argument("--router", help=f"router file (default {DEFAULT_ROUTER})")
    a.add_argument("--out", help="write them to this text file, one per line")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=cmd_anchors)

    n = sub.add_parser("add-candidate", help="add a candidate scored on the anchor prompts, without retraining")
    n.add_argument("data_dir", help="scored-generations folder with the new candidate's rows")
    n.add_argument("--candidate", required=True, help="the new candidate's name in that folder")
    n.add_argument("--out", required=True, help="router file to write")
    n.add_argument("--router", help=f"router to extend (default {DEFAULT_ROUTER})")
    n.add_argument("--cost", type=float, help="seconds per image (default: the median of the folder's rows)")
    n.add_argument("--metric", default="score", help="'score' or a key of each row's 'scores' (the router's metric)")
    n.add_argument("--overwrite", action="store_true")
    n.add_argument("--skip-bad", action="store_true", help="skip bad rows, reporting how many")
    n.set_defaults(func=cmd_add_candidate)


def _add_replay(sub) -> None:
    p = sub.add_parser("replay", help="stream a scored folder's prompts through a router, revealing only the "
                                      "chosen candidate's score, and learn from it (bandit feedback)")
    p.add_argument("router", help="router file to start from")
    p.add_argument("data_dir", help="scored-generations folder: its prompts in first-appearance order")
    p.add_argument("--out", required=True, help="router file to write (refused if it exists, unless --overwrite)")
    p.add_argument("--json", action="store_true", help="one line per prompt, then a summary line")
    p.add_argument("--explore", type=_share, default=0.0, metavar="P",
                   help="share of prompts sent to the least-supported candidate")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="salts which prompts are explored")
    p.add_argument("--metric", default=None, help="metric of the folder to reveal (default: the router's)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows, reporting how many")
    _budget_flags(p, "hold the target average cost (--budget, or the router's default) over the stream",
                  limits=False)
    p.set_defaults(func=cmd_replay, state=None)


def _add_report(sub) -> None:
    g = sub.add_parser("report", help="summarise a decision log (route --log): choices, cost against target, "
                                      "out-of-distribution share, explorations")
    g.add_argument("log", help="decision log file (JSON Lines)")
    g.add_argument("--json", action="store_true")
    _plot_flags(g, "write a PNG of average cost over time and choices (refused if it exists, unless --overwrite)")
    g.set_defaults(func=cmd_report)


def _add_export_table(sub) -> None:
    x = sub.add_parser("export-table",
                       help="write one of the shipped rating tables (data/) as a scored-generations folder")
    x.add_argument("table")
    x.add_argument("out")
    x.add_argument("--data", help="folder of rating tables (default: the pack's data/)")
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(func=cmd_export_table)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cost-aware-router", description="Route text-to-image prompts to the cheapest good candidate.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_route, _add_train, _add_evaluation, _add_collect, _add_extend, _add_replay, _add_report,
                _add_export_table):
        add(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RouterError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"cost-aware-router: error: {printable(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("cost-aware-router: interrupted\n")
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        sys.stderr.write(f"cost-aware-router: error: unexpected {type(exc).__name__}: {printable(exc)} "
                         "(run with --debug)\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
