"""The decision in plain words (issue 19): candidates sorted by cost, no negative zero, the budget's
figures read at the target it aims at, and costs said to be this machine's when they were timed here."""

import re
import socket

import numpy as np
import pytest

from cost_aware_router.budget import Budget
from cost_aware_router.explain import _num, cost_source


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
