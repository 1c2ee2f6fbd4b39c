"""A routing decision in plain words: what was chosen and why, what the budget buys on the router's
training prompts, every candidate sorted by cost, where the costs come from and how familiar the
prompt is. ``Router.route`` calls ``explain`` for each decision; nothing here decides anything.

Quality figures are in the router's metric, in its own units; the number the router maximises (predicted
quality in standard deviations minus the cost weight times seconds) is in the details section at the end.
"""

from __future__ import annotations

import re
import socket

import numpy as np


def _num(x: float, digits: int = 2) -> str:
    """``x`` rounded for reading: no ``-0.00``."""
    v = round(float(x), digits)
    return f"{(0.0 if v == 0 else v):.{digits}f}"


DETAILS = "details:"  # the line after which the terms of the paper (cost weight, standard units, distances) come


def explain(router, d, z: np.ndarray, allowed, lam: float, target: float | None = None,
            calibration: dict | None = None) -> str:
    """Words for decision ``d`` (``router.Decision``) made with cost weight ``lam`` on normalised
    predictions ``z``; ``target``: the average cost the budget aims at, if any; ``calibration``: the
    curve the budget was read off (the router's, or its verify-and-escalate curve).

    Plain words first (what was chosen and why, the budget in seconds, every candidate cheapest first in
    the metric's own units, where the costs come from, how familiar the prompt is); the cost weight, the
    standard units it is in and the distance thresholds only after the ``details:`` line."""
    names, cost, q = router.names, router.cost, d.predicted_quality
    c = names.index(d.candidate)
    ok = np.ones(len(names), bool) if allowed is None else np.asarray(allowed, bool)
    best = int(np.argmax(np.where(ok, z, -np.inf)))
    lines = []
    if d.extra.get("verify"):
        lines.append(d.extra["verify"])
    lines.append(f"chose '{d.candidate}' ({cost[c]:.3g} s/image): {_why(d, names, cost, q, c, best)}")
    lines.append(f"budget: {asked(d.budget, target, lam)}; this image costs {cost[c]:.3g} s.")
    if "forced candidate" not in d.budget:  # a forced candidate is no point of the curve
        lines.append(budget_words(router, lam, target, calibration))
    if "held" in d.extra:
        h = d.extra["held"]
        lines.append(f"holding {h['target']:g} s/image on average: {h['realised_mean_cost']:.3g} s/image so far over "
                     f"{h['count']} prompt(s)")
    order = sorted(range(len(names)), key=lambda j: (cost[j], names[j]))
    lines += _table(names, cost, q, c, ok, order, router.metric)
    lines.append(cost_source(router))
    details = []
    if "ood_distance" in d.extra:
        # the reference set's sentence: its plain head above, its distances and thresholds in the details
        head, _, figures = router.reference.describe(d.extra["ood_distance"], d.extra["ood_fallback"]).partition(": ")
        lines.append(head)
        details.append(figures)
    with np.errstate(over="ignore"):  # a cost weight near 1e308
        values = ", ".join(f"{names[j]} {_num(z[j] - lam * cost[j])}" for j in order)
    details.insert(0, f"value = predicted quality in standard deviations of {router.metric} - cost weight (lambda) "
                      f"{lam:.3g} x seconds; the router picks the highest value: {values}")
    lines.append(DETAILS)
    lines += ["  " + t for t in details]
    return "\n".join(lines)


def asked(budget: str, target: float | None, lam: float) -> str:
    """What the budget asks for, in seconds where it has a target (``budget``: ``Budget.describe()``'s words,
    "holding ..." for a held budget)."""
    held = budget.startswith("holding ")
    cap = re.search(r"cap ([^ ,]+) s/image", budget)
    if budget.removeprefix("holding ").startswith("forced candidate"):
        words = budget.removeprefix("holding ").replace("forced candidate", "always", 1)
    elif target is not None:
        words = (f"{'holding' if held else 'asked for'} about {target:.3g} s per image on average"
                 + (" on your prompts" if held else "") + (" (the router's default)" if "router default" in budget
                                                           else ""))
    elif "best quality" in budget:
        words = "the best predicted quality, whatever it costs"
    elif "cost weight" in budget:
        words = f"a fixed trade of quality for seconds (cost weight {lam:.3g}, see details)"
    else:
        words = "the router's default"
    return words + (f", never more than {cap.group(1)} s per image" if cap else "")


def _why(d, names, cost, q, c, best) -> str:
    if c == best:
        why = f"the best predicted quality for this prompt ({q[d.candidate]:.3g})"
    else:
        share = cost[c] / cost[best] if cost[best] > 0 else float("inf")
        how = f"{share:.0%} of its cost" if share < 1 else f"{cost[c]:.3g} against {cost[best]:.3g} s/image"
        why = (f"predicted quality {q[d.candidate]:.3g} against {q[names[best]]:.3g} for the best, "
               f"'{names[best]}', at {how}")
    if d.extra.get("explored"):
        why = (f"explored: {why} (a share of prompts goes to the candidate with the fewest scored examples "
               "nearby, so the router can learn from its own generations)")
    return why


def _table(names, cost, q, chosen, ok, order, metric) -> list[str]:
    """Every candidate, cheapest first: its cost and predicted quality in the metric's own units."""
    width = max(9, *(len(n) for n in names)) + 2
    head = f"predicted {metric}"
    out = [f"{'candidate':<{width}}{'s/image':>9}  {head}"]
    for j in order:
        flag = "  <- chosen" if j == chosen else ("  (over the cap)" if not ok[j] else "")
        out.append(f"{names[j]:<{width}}{cost[j]:>9.3g}  {q[names[j]]:>{len(head)}.3f}{flag}")
    return out


def _curve(cal: dict) -> list[tuple[float, float]]:
    """(average cost, average quality) points of a calibration curve, by cost, the best quality per cost."""
    pts: dict[float, float] = {}
    for c, qq in zip(cal.get("mean_cost", []), cal.get("mean_quality", [])):
        if qq is not None:
            pts[round(c, 6)] = max(qq, pts.get(round(c, 6), -np.inf))
    return sorted(pts.items())


def budget_words(router, lam: float, target: float | None = None, calibration: dict | None = None) -> str:
    """What this budget gives on the router's training prompts, and what spending a step more or less
    would change, read off the calibration curve (at the target when there is one, else at ``lam``)."""
    cal = calibration or router.calibration
    pts = _curve(cal)
    if not pts:
        return "This router file has no calibration curve."
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if target is not None:
        here_c = float(np.clip(target, xs[0], xs[-1]))
    else:
        i = int(np.argmin(np.abs(np.log1p(np.asarray(cal["cost_weight"])) - np.log1p(lam))))
        here_c = float(np.clip(cal["mean_cost"][i], xs[0], xs[-1]))
    here_q = float(np.interp(here_c, xs, ys))
    text = (f"On the router's {cal.get('prompts', 'training')} training prompts this averages {here_c:.3g} s/image "
            f"for an average {router.metric} of {here_q:.3g}")
    dearer = next(((c, qq) for c, qq in pts if c > here_c * 1.1 and qq > here_q + 1e-9), None)
    cheaper = next(((c, qq) for c, qq in reversed(pts) if c < here_c / 1.1), None)
    more = []
    if dearer:
        more.append(f"spending {dearer[0]:.3g} s/image would raise it to {dearer[1]:.3g}")
    if cheaper:
        more.append(f"{cheaper[0]:.3g} s/image would lower it to {cheaper[1]:.3g}")
    return text + ("; " + ", ".join(more) if more else "") + "."


def cost_source(router) -> str:
    """Where the seconds per image come from, and whether they are this machine's."""
    if router.measured:
        rest = [n for n in router.names if n not in router.measured]
        return (f"Costs: measured on this machine for {', '.join(router.measured)}"
                + (f"; the router file's for {', '.join(rest)}." if rest else "."))
    hosts = router.training.get("cost_hosts") or []
    if router.training.get("measured_cost_rows"):
        if socket.gethostname() in hosts:
            return "Costs: measured on this machine when the router's training images were made."
        where = f" (on {', '.join(hosts)})" if hosts else ""
        return f"Costs: measured when the router's training images were made{where}; measure them here to be sure."
    return ("Costs: the router file's seconds per image, from the hardware its training data was timed on (not this "
            "machine); measure them here with the Measure Candidate Costs node.")
