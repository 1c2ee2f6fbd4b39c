"""BudgetHolder (cost_aware_router/decision/hold.py): holding a target average cost on a prompt stream.

Synthetic streams only (no model): seven candidates from 0.03 s to 30 s per image, predicted quality
rising with log cost at a per-prompt rate (some prompts gain a lot from a dearer candidate, some
little), plus noise.
"""

import json
import math

import numpy as np
import pytest

from cost_aware_router.decision.budget import Budget, Plan
from cost_aware_router.decision.hold import BudgetHolder, trade_off
from cost_aware_router.decision.hold_state import load_state, save_state
from cost_aware_router.decision.loop import decide
from cost_aware_router.errors import RouterError

COST = np.array([0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0])
FP = "router-fingerprint-1"


def stream(n, seed, scale=1.0, cost=COST):
    rng = np.random.default_rng(seed)
    gain = scale * np.exp(rng.normal(0.0, 0.7, n))
    z = 0.3 * gain[:, None] * np.log(cost)[None, :] + rng.normal(0.0, 0.05, (n, len(cost)))
    return z, gain


def pick(z, cost, lam):
    return np.argmax(z - np.asarray(lam).reshape(-1, 1) * cost[None, :] - 1e-12 * cost[None, :], axis=1)


def oracle_lam(z, cost, target):
    """The one cost weight that spends ``target`` on average over the whole stream (hindsight)."""
    lo, hi = 1e-9, 1e6
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cost[pick(z, cost, mid)].mean() > target else (lo, mid)
    return hi


def run_z(holder, z, cost=COST, allowed=None):
    """The product's decision loop (``loop.decide``, as ``Router.route`` and ``replay`` call it) over a
    stream of predicted qualities with a held budget: (choices, cost weight used for each prompt)."""
    plan = Plan(Budget(), 0.0, 0.0, 0.0, allowed, None, holder.target)
    picks, lams, _, _ = decide(np.atleast_2d(z), cost, plan, [f"prompt {i}" for i in range(len(z))], holder=holder)
    return picks, lams


def run_cost_only(holder, z, cost=COST):
    lams, picks = [], []
    for row in z:
        lam = holder.lam()
        i = int(pick(row[None], cost, lam)[0])
        holder.observe(float(cost[i]))
        lams.append(lam)
        picks.append(i)
    return np.array(picks), np.array(lams)


def assert_held(costs, target, tol=0.05):
    whole, last = costs.mean(), costs[-500:].mean()
    assert abs(whole / target - 1) <= tol, f"whole-stream average {whole:.4g} vs target {target:g}"
    assert abs(last / target - 1) <= tol, f"last-500 average {last:.4g} vs target {target:g}"


# -- holding the target ----------------------------------------------------------------

@pytest.mark.parametrize("target", [0.5, 3.0])
@pytest.mark.parametrize("wrong", [0.1, 10.0])
def test_start_lam_wrong_by_10x_still_ends_on_target(target, wrong):
    z, _ = stream(1000, 1)
    lam_star = oracle_lam(z, COST, target)
    # the start alone misses by far: that is what the holder has to correct
    assert abs(COST[pick(z, COST, lam_star * wrong)].mean() / target - 1) > 0.5
    h = BudgetHolder(target, lam_star * wrong, COST, FP)
    picks, lams = run_z(h, z)
    assert_held(COST[picks], target)
    assert h.count == 1000 and h.mean_cost == pytest.approx(COST[picks].mean())
    # lam settles near the hindsight value that meets the target, not at either end
    assert 0.7 < np.median(lams[-500:]) / lam_star < 1.4


@pytest.mark.parametrize("order", ["ascending", "descending"])
@pytest.mark.parametrize("target", [0.5, 3.0])
def test_streams_sorted_by_need(order, target):
    z, gain = stream(1000, 2)
    idx = np.argsort(gain if order == "ascending" else -gain)
    z = z[idx]
    # a fixed lam at the hindsight value is badly off on both halves of a sorted stream
    fixed = COST[pick(z, COST, oracle_lam(z, COST, target))]
    assert abs(fixed[-500:].mean() / target - 1) > 0.3
    h = BudgetHolder(target, oracle_lam(stream(1000, 9)[0], COST, target), COST, FP)
    picks, _ = run_z(h, z)
    assert_held(COST[picks], target)


def test_topic_blocks_and_shuffled_stream():
    a, _ = stream(1000, 3)
    b, _ = stream(1000, 4, scale=3.0)  # a "topic" that gains much more from dear candidates
    blocks = np.concatenate([a[i:i + 150] if (i // 150) % 2 == 0 else b[i:i + 150] for i in range(0, 1200, 150)])
    shuffled = blocks[np.random.default_rng(0).permutation(len(blocks))]
    for zz in (blocks, shuffled):
        h = BudgetHolder(2.0, oracle_lam(a, COST, 2.0), COST, FP)
        picks, _ = run_z(h, zz)
        assert_held(COST[picks], 2.0)


def test_budget_goes_where_quality_gain_per_second_is_highest():
    z, _ = stream(1000, 5)
    target = 3.0
    h = BudgetHolder(target, oracle_lam(stream(1000, 9)[0], COST, target), COST, FP)
    picks, _ = run_z(h, z)
    rows = np.arange(len(z))
    got = z[rows, picks].mean()
    best = z[rows, pick(z, COST, oracle_lam(z, COST, target))].mean()
    # blind alternation between the cheapest and the dearest at the same average cost
    share = (target - COST[0]) / (COST[-1] - COST[0])
    blind = share * z[:, -1].mean() + (1 - share) * z[:, 0].mean()
    assert got > blind + 0.5 * (best - blind)
    assert got > best - 0.05 * abs(best - blind)


def test_zero_start_lam_works():
    z, _ = stream(600, 6)
    h = BudgetHolder(1.0, 0.0, COST, FP)
    assert h.lam() == 0.0
    picks, lams = run_z(h, z)
    assert_held(COST[picks], 1.0)
    assert COST[picks[0]] < COST[-1]  # the first prompt already weighed its own trade-off
    assert lams[-1] > 0


def test_short_stream_of_200():
    z, _ = stream(200, 7)
    h = BudgetHolder(1.0, 10 * oracle_lam(z, COST, 1.0), COST, FP)
    picks, _ = run_z(h, z)
    assert abs(COST[picks].mean() - 1.0) <= 0.05


# -- saturation: unreachable targets -----------------------------------------------------

@pytest.mark.parametrize("start", [0.0, 1.0, 1e6])
def test_target_below_the_cheapest_saturates_on_the_cheapest(start):
    z, _ = stream(400, 8)
    h = BudgetHolder(0.01, start, COST, FP)
    picks, lams = run_z(h, z)
    assert np.all(picks == 0)
    assert np.all(np.isfinite(lams)) and np.all(lams >= 0)
    assert math.isfinite(h.debt) and h.debt == 0.0  # no debt can ever be paid back: none is kept
    json.dumps(h.state(), allow_nan=False)


@pytest.mark.parametrize("start", [0.0, 1.0, 1e6])
def test_target_above_the_dearest_saturates_on_best_quality(start):
    z, _ = stream(400, 8)
    h = BudgetHolder(100.0, start, COST, FP)
    picks, lams = run_z(h, z)
    assert np.mean(picks == np.argmax(z, axis=1)) > 0.97  # all but the first few (start lam blended in)
    assert np.all(lams[25:] == 0.0)
    assert np.all(np.isfinite(lams)) and h.debt == 0.0


@pytest.mark.parametrize("target", [0.01, 100.0])
def test_unreachable_targets_cost_only_stay_finite(target):
    z, _ = stream(400, 8)
    h = BudgetHolder(target, 1.0, COST, FP)
    picks, lams = run_cost_only(h, z)
    assert np.all(np.isfinite(lams)) and np.all(lams >= 0)
    # without predicted qualities lam can only creep up to where every prompt takes the cheapest,
    # or down to zero
    if target < COST[0]:
        assert np.mean(picks[100:] == 0) > 0.9 and lams[-1] > lams[0]
    else:
        assert np.mean(picks[100:] == np.argmax(z[100:], axis=1)) > 0.95
    json.dumps(h.state(), allow_nan=False)


def test_random_costs_and_targets_never_give_nan_or_inf():
    rng = np.random.default_rng(11)
    for _ in range(30):
        cost = np.sort(np.exp(rng.uniform(np.log(0.03), np.log(30.0), rng.integers(2, 8))))
        target = float(np.exp(rng.uniform(np.log(0.01), np.log(60.0))))
        start = float(rng.choice([0.0, 1e-9, 0.1, 1e9]))
        z = rng.normal(0, rng.choice([1e-3, 1.0, 100.0]), (150, len(cost)))
        h = BudgetHolder(target, start, cost, FP)
        for k, row in enumerate(z):
            lam = h.lam()
            assert math.isfinite(lam) and lam >= 0
            if k % 2:
                run_z(h, row[None], cost)
            else:
                h.observe(float(cost[pick(row[None], cost, lam)[0]]))
        assert math.isfinite(h.debt) and math.isfinite(h.mean_cost)


# -- without predicted qualities (lam / observe only) ----------------------------------------

@pytest.mark.parametrize("wrong", [0.3, 3.0])
def test_cost_only_observations_hold_the_target(wrong):
    cost = np.array([0.3, 1.6, 1.6, 6.0])  # a router like the shipped one
    z, _ = stream(1000, 12, cost=cost)
    lam_star = oracle_lam(z, cost, 2.0)
    h = BudgetHolder(2.0, lam_star * wrong, cost, FP)
    picks, lams = run_cost_only(h, z, cost)
    assert_held(cost[picks], 2.0)
    assert 0.6 < np.median(lams[-500:]) / lam_star < 1.6


def test_cost_only_from_zero_start():
    cost = np.array([0.3, 1.6, 6.0])
    z, _ = stream(1000, 13, cost=cost)
    h = BudgetHolder(2.0, 0.0, cost, FP)
    assert h.lam() == 0.0
    picks, _ = run_cost_only(h, z, cost)
    assert_held(cost[picks], 2.0)


def test_cost_only_short_stream_from_zero_start_finds_lam_fast():
    # 300 prompts, lam = 0 (every prompt on the dearest) far below what a 1 s target needs: the search
    # must take a few dozen prompts, or the overspending cannot be paid back within the stream
    cost = np.array([0.3, 1.6, 6.0])
    for seed in range(3):
        z, _ = stream(300, seed, cost=cost)
        h = BudgetHolder(1.0, 0.0, cost, FP)
        picks, _ = run_cost_only(h, z, cost)
        assert abs(cost[picks].mean() - 1.0) <= 0.05


# -- the trade-off curve -----------------------------------------------------------------

def test_trade_off_matches_brute_force_choice():
    rng = np.random.default_rng(3)
    for _ in range(50):
        z = rng.normal(size=len(COST))
        allowed = rng.random(len(COST)) < 0.7
        allowed[rng.integers(len(COST))] = True
        c0, lams, drops = trade_off(z, COST, allowed)
        assert np.all(np.diff(lams) >= 0) and np.all(drops > 0)
        masked = np.where(allowed, z, -np.inf)
        for lam in np.concatenate([[0.0], lams + 1e-9, lams - 1e-9, [1e3]]):
            if lam < 0:
                continue
            expected = COST[pick(masked[None], COST, lam)[0]]
            assert c0 - drops[lams <= lam].sum() == pytest.approx(expected)


# -- state -------------------------------------------------------------------------------

def test_state_round_trip_through_a_file_continues_identically(tmp_path):
    z, _ = stream(600, 14)
    a = BudgetHolder(1.0, 0.5, COST, FP)
    run_z(a, z[:300])
    path = tmp_path / "hold.json"
    save_state(a, path)
    saved = json.loads(path.read_text())
    assert saved["format"] and saved["version"] == 1 and saved["router_fingerprint"] == FP
    assert saved["count"] == 300 and saved["target"] == 1.0
    b = load_state(path, FP, 1.0, 0.5, COST)
    assert b.count == 300 and b.mean_cost == pytest.approx(a.mean_cost) and b.lam() == a.lam()
    pa, la = run_z(a, z[300:])
    pb, lb = run_z(b, z[300:])
    assert np.array_equal(pa, pb) and np.array_equal(la, lb)
    # saving again replaces the file whole and leaves no temporary files behind
    save_state(b, path)
    assert json.loads(path.read_text())["count"] == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hold.json"]


def test_cost_only_state_round_trip(tmp_path):
    z, _ = stream(400, 15)
    a = BudgetHolder(2.0, 0.0, COST, FP)
    run_cost_only(a, z[:200])
    save_state(a, tmp_path / "s.json")
    b = load_state(tmp_path / "s.json", FP, 2.0, 0.0, COST)
    pa, _ = run_cost_only(a, z[200:])
    pb, _ = run_cost_only(b, z[200:])
    assert np.array_equal(pa, pb)


def test_missing_state_file_gives_a_fresh_holder(tmp_path):
    h = load_state(tmp_path / "none.json", FP, 2.0, 0.3, COST)
    assert h.count == 0 and h.lam() == pytest.approx(0.3) and h.target == 2.0


def _saved(tmp_path, **changes):
    h = BudgetHolder(2.0, 0.3, COST, FP)
    run_z(h, stream(50, 16)[0])
    state = h.state()
    state.update(changes)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    return path


def test_refuses_a_state_for_another_router(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(RouterError, match="router") as exc:
        load_state(path, "another-router", 2.0, 0.3, COST)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_refuses_a_state_for_another_target(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(RouterError, match="target") as exc:
        load_state(path, FP, 3.0, 0.3, COST)
    assert str(path) in str(exc.value)


def test_refuses_a_state_for_another_candidate_count(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(RouterError, match="candidates") as exc:
        load_state(path, FP, 2.0, 0.3, COST[:4])
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("content", [
    "not json at all {",
    "",
    "[1, 2, 3]",
    '{"format": "something else", "version": 1}',
])
def test_refuses_a_corrupt_state_file(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(RouterError) as exc:
        load_state(path, FP, 2.0, 0.3, COST)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("changes", [
    {"count": "300"},
    {"count": -1},
    {"total_cost": None},
    {"debt": "x"},
    {"log_lam": [1]},
    {"rows": "nope"},
    {"rows": [[[1, 2], None]]},
    {"rows": [[["a"] * 7, None]]},
    {"version": 99},
    {"cost": 5},
])
def test_refuses_a_state_with_wrong_types(tmp_path, changes):
    path = _saved(tmp_path, **changes)
    with pytest.raises(RouterError) as exc:
        load_state(path, FP, 2.0, 0.3, COST)
    assert str(path) in str(exc.value)


def test_refuses_nan_in_a_state_file(tmp_path):
    path = _saved(tmp_path)
    path.write_text(path.read_text().replace('"debt": ', '"debt": NaN, "x": '))
    with pytest.raises(RouterError) as exc:
        load_state(path, FP, 2.0, 0.3, COST)
    assert str(path) in str(exc.value)


def test_refuses_a_folder_as_state_file(tmp_path):
    with pytest.raises(RouterError, match="is a folder"):
        load_state(tmp_path, FP, 2.0, 0.3, COST)


@pytest.mark.parametrize("args", [
    (float("nan"), 0.1, COST),
    (-1.0, 0.1, COST),
    (1.0, float("inf"), COST),
    (1.0, -0.1, COST),
    (1.0, 0.1, []),
    (1.0, 0.1, [1.0, -2.0]),
    (1.0, 0.1, [1.0, float("nan")]),
])
def test_bad_arguments_are_refused(args):
    with pytest.raises(RouterError):
        BudgetHolder(*args, FP)


def test_bad_rows_and_costs_are_refused():
    h = BudgetHolder(1.0, 0.1, COST, FP)
    with pytest.raises(RouterError):
        run_z(h, np.zeros((1, 3)))
    with pytest.raises(RouterError):
        run_z(h, np.full((1, len(COST)), np.nan))
    with pytest.raises(RouterError):
        run_z(h, np.zeros((1, len(COST))), allowed=np.zeros(len(COST), dtype=bool))
    with pytest.raises(RouterError):
        h.observe(float("inf"))
    assert h.count == 0


def test_allowed_mask_is_respected():
    z, _ = stream(300, 17)
    allowed = COST <= 3.0
    h = BudgetHolder(2.0, 0.1, COST, FP)
    picks, _ = run_z(h, z, allowed=allowed)
    assert np.all(allowed[picks])
    assert abs(COST[picks].mean() / 2.0 - 1) <= 0.05
