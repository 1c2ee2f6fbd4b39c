"""Verify and escalate (issue 18): the policy fitted on real human ratings (AGIQA-3K subset in
tests/data, one image per prompt and candidate, its MOS read as the scorer), the ``route --observed``
contract, old router files, a scorer that tells nothing, and budgets that count escalations."""

import json

import numpy as np
import pytest
from conftest import DATA, cli_error, rewrite_router, route_json

from cost_aware_router import cli
from cost_aware_router.cascade import MIN_COMPLETE, expected_improvement
from cost_aware_router.decision.budget import Budget
from cost_aware_router.decision.hold import BudgetHolder
from cost_aware_router.router_file import load_router, save_router
from cost_aware_router.scored import aggregate, read_records


def _table(ds):
    return {p: {c: float(ds.quality[i, j]) for j, c in enumerate(ds.candidates)} for i, p in enumerate(ds.prompts)}


def test_expected_improvement_matches_the_gaussian_formula():
    rng = np.random.default_rng(0)
    draws = rng.normal(0.3, 0.8, 400_000)
    assert expected_improvement(0.3, 0.8) == pytest.approx(np.maximum(draws, 0).mean(), abs=3e-3)
    assert expected_improvement(-0.5, 0.0) == 0.0 and expected_improvement(0.5, 0.0) == 0.5


def test_policy_fitted_on_real_ratings_pays_and_is_stored(agiqa_router, agiqa_router_file):
    cas = agiqa_router.cascade
    assert cas is not None and cas.identity and cas.names == agiqa_router.names
    rep = cas.report
    # switched on by the gate: the hybrid's utility beats routing alone's by more than 2 SE
    assert cas.enabled and rep["utility_gain"] > 2 * rep["utility_gain_se"] > 0
    assert rep["prompts"] >= MIN_COMPLETE and 0 < max(rep["escalation_share"]) <= 1
    # the curve counts every generation: at each cost weight at least what routing alone spends
    assert len(cas.calibration["mean_cost"]) == len(agiqa_router.calibration["mean_cost"])
    assert all(h >= r - 1e-9 for h, r in zip(cas.calibration["mean_cost"], agiqa_router.calibration["mean_cost"]))
    assert max(cas.calibration["mean_images"]) > 1.0
    loaded = load_router(agiqa_router_file)
    assert loaded.escalates and loaded.cascade.report == rep
    np.testing.assert_allclose(loaded.cascade.pair_w, cas.pair_w, rtol=1e-5, atol=1e-6)


def test_budget_is_read_off_the_curve_that_counts_escalations(agiqa_router):
    for target in (1.0, 2.0, 3.0):
        plain, esc = agiqa_router.plan(Budget(budget=target)), agiqa_router.plan(Budget(budget=target), escalating=True)
        assert esc.blended_cost_weight >= plain.blended_cost_weight
    assert agiqa_router.plan(Budget(budget=2.0), escalating=True).blended_cost_weight > agiqa_router.plan(
        Budget(budget=2.0)).blended_cost_weight


@pytest.fixture(scope="module")
def contract_case(agiqa_split, tmp_path_factory):
    """Test prompts with random observed subsets of candidates, scored with the table's real ratings."""
    test = agiqa_split[1]
    rng = np.random.default_rng(3)
    table = _table(test)
    lines, observed = [], {}
    for i, p in enumerate(test.prompts):
        k = i % 4  # 0..3 images already generated (0: a fresh prompt)
        cands = list(rng.choice(test.candidates, size=k, replace=False))
        for s, c in enumerate(cands):
            lines.append({"prompt": p, "candidate": c, "seed": s, "score": table[p][c]})
        observed[p] = cands
    folder = tmp_path_factory.mktemp("contract")
    (folder / "prompts.txt").write_text("\n".join(test.prompts) + "\n", encoding="utf-8")
    (folder / "obs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return folder, test, observed


def _check_contract(rows, observed, cost_cap=None):
    escalated = delivered = 0
    for r in rows:
        seen = observed[r["prompt"]]
        assert {"candidate", "config", "predicted_quality", "cost", "next", "deliver"} <= set(r)
        if not seen:
            assert r["next"] == {"candidate": r["candidate"], "seed": 0} and r["deliver"] is None
            continue
        if r["next"] is not None:
            assert r["deliver"] is None and r["next"]["candidate"] not in seen  # never asked twice
            assert r["next"]["seed"] == len(seen)
            if cost_cap is not None:
                assert sum(r["cost"][c] for c in seen) + r["cost"][r["next"]["candidate"]] <= cost_cap + 1e-9
            escalated += 1
        else:
            assert r["deliver"]["candidate"] in seen
            assert r["deliver"]["seed"] == seen.index(r["deliver"]["candidate"])
            delivered += 1
    return escalated, delivered


def test_observed_contract(capsys, agiqa_router_file, contract_case):
    folder, test, observed = contract_case
    rows = route_json(capsys, "--router", agiqa_router_file, "--prompts-file", folder / "prompts.txt",
                  "--observed", folder / "obs.jsonl")
    assert [r["prompt"] for r in rows] == test.prompts
    escalated, delivered = _check_contract(rows, observed)
    assert escalated > 0 and delivered > 0  # both outcomes occur on real ratings
    # without --observed routing is unchanged
    plain = route_json(capsys, "--router", agiqa_router_file, "--prompts-file", folder / "prompts.txt")
    assert all("next" not in r and "deliver" not in r for r in plain)
    # a delivered image is the observed image with the best score (the scorer is the router's metric)
    table = _table(test)
    for r in rows:
        if r["deliver"] is not None:
            best = max(observed[r["prompt"]], key=lambda c: table[r["prompt"]][c])
            assert table[r["prompt"]][r["deliver"]["candidate"]] == table[r["prompt"]][best]


@pytest.mark.parametrize("cap", [1.6, 2.0, 7.6])
def test_never_escalates_past_max_cost(capsys, agiqa_router_file, contract_case, cap):
    folder, _, observed = contract_case
    rows = route_json(capsys, "--router", agiqa_router_file, "--prompts-file", folder / "prompts.txt",
                  "--observed", folder / "obs.jsonl", "--max-cost", cap, "--best-quality")
    escalated, _ = _check_contract(rows, observed, cost_cap=cap)
    if cap > 7.5:
        assert escalated > 0  # best quality with room for sdxl after a cheap image: it escalates


def test_old_router_files_never_escalate(capsys, agiqa_router_file, contract_case, tmp_path):
    folder, test, observed = contract_case

    def drop(meta, header):
        meta.pop("cascade")

    def drop_tensors(tensors):
        for k in [k for k in tensors if k.startswith("cascade_")]:
            del tensors[k]

    old = rewrite_router(agiqa_router_file, tmp_path / "old.safetensors", drop, drop_tensors)
    assert load_router(old).cascade is None
    rows = route_json(capsys, "--router", old, "--prompts-file", folder / "prompts.txt", "--observed",
                      folder / "obs.jsonl")
    escalated, delivered = _check_contract(rows, observed)
    assert escalated == 0 and delivered == sum(1 for p in test.prompts if observed[p])
    assert "cannot escalate" in next(r["verify"] for r in rows if r["deliver"])


def test_a_scorer_that_tells_nothing_is_switched_off(agiqa_split, embedder):
    """The same prompts and ratings, but the verifying score is noise: escalating on it cannot pay."""
    from cost_aware_router.train import train_router

    records, _ = read_records(DATA / "agiqa_3k")
    rng = np.random.default_rng(1)
    for r in records:
        r.scores["noise"] = float(rng.normal())
    ds = aggregate(records, "score", "agiqa+noise", verify_metric="noise")
    router = train_router(ds, embedder, "knn")
    cas = router.cascade
    assert cas is not None and not cas.identity and not cas.enabled
    assert cas.report["utility_gain"] <= 2 * cas.report["utility_gain_se"]
    p = ds.prompts[0]
    d = router.route([p], observed={p: [(2, 0, -3.0)]})[0]
    assert d.extra["next"] is None and d.extra["deliver"] == {"candidate": router.names[2], "seed": 0}
    assert "switched off" in d.extra["verify"]


@pytest.mark.parametrize("target", [1.0, 2.0])
def test_held_budget_counts_escalations(agiqa, agiqa_router, target):
    """Route, score, verify for every AGIQA prompt in turn (the table's rating is the scorer): the held
    average cost, escalations included, ends within 5% of the target."""
    router, table = agiqa_router, _table(agiqa)
    plan = router.plan(Budget(budget=target), escalating=True)
    holder = BudgetHolder(target, plan.blended_cost_weight, router.cost, "agiqa-test")
    spent, escalations = [], 0
    order = np.random.default_rng(5).permutation(len(agiqa.prompts))
    for i in np.concatenate([order, order]):
        p = agiqa.prompts[i]
        d = router.route([p], Budget(budget=target), holder, observed={})[0]
        first = d.extra["next"]["candidate"]
        obs = [(router.names.index(first), 0, table[p][first])]
        v = router.route([p], Budget(budget=target), holder, observed={p: obs})[0]
        cost = router.cost[obs[0][0]]
        if v.extra["next"] is not None:
            escalations += 1
            cost += d.cost[v.extra["next"]["candidate"]]
        spent.append(cost)
    assert escalations > 0.05 * len(spent)
    assert holder.count == len(spent) and holder.mean_cost == pytest.approx(np.mean(spent), rel=1e-9)
    assert np.mean(spent) == pytest.approx(target, rel=0.05)


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "x", "candidate": "nope", "seed": 0, "score": 1}', "candidate 'nope' is not in the router"),
    ('{"prompt": "x", "candidate": "sd15-10", "seed": 0, "score": "NaN"}', "'score' must be a finite number"),
    ('{"prompt": "x", "candidate": "sd15-10", "seed": 0, "score": 1e999}', "'score' must be a finite number"),
    ('{"prompt": "x", "candidate": "sd15-10", "seed": 0, "score": true}', "'score' must be a finite number"),
    ('{"prompt": "x", "candidate": "sd15-10", "seed": [1], "score": 1}', "'seed' must be an integer"),
    ('[1, 2]', "not a JSON object"),
    ('{"prompt": 3, "candidate": "sd15-10", "score": 1}', "'prompt' and 'candidate' must be strings"),
    ('{"prompt": "x", "candidate": "sd15-10", "seed": 0, "score": 1}\n'
     '{"prompt": "x", "candidate": "sd15-10", "seed": 0, "score": 2}', "given twice"),
])
def test_bad_observation_files_are_refused_naming_the_line(capsys, agiqa_router_file, tmp_path, line, message):
    obs = tmp_path / "obs.jsonl"
    obs.write_text(line + "\n", encoding="utf-8")
    err = cli_error(capsys, "route", "x", "--router", agiqa_router_file, "--observed", obs)
    assert message in err and f"{obs}:" in err


def test_far_off_scores_are_flagged(capsys, agiqa_router_file, tmp_path):
    obs = tmp_path / "obs.jsonl"
    obs.write_text(json.dumps({"prompt": "x", "candidate": "sd15-10", "seed": 0, "score": 31.2}) + "\n")
    rc = cli.main(["route", "x", "--router", str(agiqa_router_file), "--observed", str(obs), "--json"])
    _, err = capsys.readouterr()
    assert rc == 0 and "1 observed score(s) (e.g. 31.2) are over 10 standard deviations" in err and "'score'" in err


def test_save_load_round_trip_keeps_decisions(agiqa_router, tmp_path, agiqa_split):
    path = save_router(agiqa_router, tmp_path / "r.safetensors")
    loaded = load_router(path)
    loaded.use_embedder(agiqa_router.embedder)
    p = agiqa_split[1].prompts[0]
    obs = {p: [(2, 0, 1.0)]}
    assert loaded.route([p], observed=obs)[0].to_json() == agiqa_router.route([p], observed=obs)[0].to_json()
