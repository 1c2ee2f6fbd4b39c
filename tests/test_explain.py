"""The decision in plain words (issue 19): candidates sorted by cost, no negative zero, the budget's
figures read at the target it aims at, and costs said to be this machine's when they were timed here."""

import re
import socket
from pathlib import Path

import numpy as np
import pytest

from cost_aware_router.decision.budget import Budget
from cost_aware_router.explain import DETAILS, _num, cost_source


def _table_rows(text):
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("candidate"))
    return [ln for ln in lines[start + 1:] if not ln.startswith("value")][:5]


@pytest.mark.parametrize("target", [1.0, 2.0, 3.0])
def test_budget_figures_are_read_at_the_target(agiqa_router, target):
    d = agiqa_router.route(["a red bicycle leaning on a wall"], Budget(budget=target))[0]
    m = re.search(r"this averages ([0-9.]+) s/image for an average \S+ of ([0-9.]+)", d.explanation)
    assert m and float(m.group(1)) == pytest.approx(target, rel=1e-3)
    assert "would raise it to" in d.explanation or "would lower it to" in d.explanation


def test_candidates_are_listed_cheapest_first_without_negative_zero(agiqa_router):
    d = agiqa_router.route(["a bowl of soup"], Budget(cost_weight=0.0))[0]
    rows = _table_rows(d.explanation)
    costs = [float(r.split()[1]) for r in rows]
    assert costs == sorted(costs) and len(rows) == len(agiqa_router.names)
    assert "-0.00" not in d.explanation and _num(-0.001) == "0.00" and _num(-0.006) == "-0.01"


def test_costs_timed_on_this_machine_are_said_to_be(agiqa_router):
    r = agiqa_router.copy(training={**agiqa_router.training, "measured_cost_rows": 10,
                                    "cost_hosts": [socket.gethostname()]})
    assert cost_source(r) == "Costs: measured on this machine when the router's training images were made."
    r.training["cost_hosts"] = ["gpu-box-7"]
    assert "measured when the router's training images were made (on gpu-box-7)" in cost_source(r)
    assert "not this machine" in cost_source(agiqa_router)
    assert "measured on this machine for sd15-10" in cost_source(agiqa_router.with_costs({"sd15-10": 0.5}))
    assert np.isfinite(agiqa_router.cost).all()


# -- the README's example: the 1_route_and_generate template's prompt at its 3 s target ------------------------
README = Path(__file__).resolve().parent.parent / "README.md"
TEMPLATE_PROMPT = "a cozy cabin in a snowy forest at dusk, warm light in the windows, detailed illustration"
JARGON = re.compile(r"standard deviation|standard unit|λ|lambda|cost weight|distance|from \d\.\d+ and are replaced",
                    re.IGNORECASE)


def _readme_table() -> dict[str, tuple[float, float]]:
    """The README's table of the shipped router: budget -> (average cost, expected quality)."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.match(r"^[\d.]+$", cells[1]) and re.match(r"^[\d.]+$", cells[4]):
            rows[cells[0].replace("*", "")] = (float(cells[1]), float(cells[4]))
    return rows


@pytest.fixture(scope="module")
def default_router():
    from cost_aware_router.router_file import load_router

    return load_router(Path(__file__).resolve().parent.parent / "router_weights" / "default.safetensors")


def test_readme_example_at_3s_is_plain_before_its_details_and_agrees_with_the_readme(default_router):
    d = default_router.route([TEMPLATE_PROMPT], Budget(budget=3.0))[0]
    plain, sep, details = d.explanation.partition("\n" + DETAILS + "\n")
    assert sep and details.strip(), d.explanation
    assert not JARGON.search(plain), JARGON.search(plain)
    assert JARGON.search(details)  # the terms are there, behind the details line
    assert plain.splitlines()[0].startswith(f"chose '{d.candidate}' (")
    cost = d.cost[d.candidate]
    assert f"budget: asked for about 3 s per image on average; this image costs {cost:.3g} s." in plain
    rows = _table_rows(d.explanation)  # cheapest first, the chosen row marked, quality in MOS units
    assert [float(r.split()[1]) for r in rows] == sorted(float(r.split()[1]) for r in rows)
    assert [r for r in rows if r.endswith("<- chosen")] == [
        next(r for r in rows if r.split()[0] == d.candidate)]
    assert "predicted mos_quality" in plain and "-0.00" not in d.explanation
    for r in rows:
        assert 0 <= float(r.split()[2]) <= 5  # MOS is 0-5, not standard units
    readme = _readme_table()
    cost3, quality3 = readme["target 3 s/image (the `1_route_and_generate` template)"]
    m = re.search(r"this averages ([0-9.]+) s/image for an average mos_quality of ([0-9.]+)", plain)
    assert m and float(m.group(1)) == pytest.approx(cost3) and round(float(m.group(2)), 2) == quality3


@pytest.mark.parametrize("budget, key", [(Budget(budget=4.0), "target 4 s/image"),
                                         (Budget(budget=2.0), "target 2 s/image"),
                                         (Budget(budget=1.0), "target 1 s/image"),
                                         (Budget(best_quality=True), "`best quality`"),
                                         (Budget(), "`router default` (5.46 s)")])
def test_every_budget_row_of_the_readme_table_is_what_the_explanation_says(default_router, budget, key):
    cost, quality = _readme_table()[key]
    d = default_router.route([TEMPLATE_PROMPT], budget)[0]
    m = re.search(r"this averages ([0-9.]+) s/image for an average mos_quality of ([0-9.]+)", d.explanation)
    assert m and float(m.group(1)) == pytest.approx(cost, abs=0.005)
    assert float(m.group(2)) == pytest.approx(quality, abs=0.005)
