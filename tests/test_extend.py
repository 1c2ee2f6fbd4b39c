"""The reference set: out-of-distribution fallback, anchor prompts and adding a candidate
without retraining, on the real AGIQA-3K ratings in tests/data."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import DATA, rewrite_router, run_cli, write_rows

from cost_aware_router.decision.budget import Budget
from cost_aware_router.decision.rule import choose
from cost_aware_router.errors import DataError, RouterError, RouterFileError
from cost_aware_router.evaluate import evaluate_router
from cost_aware_router.extend import add_candidate, add_candidate_from_dataset, anchor_prompts
from cost_aware_router.router_file import load_router, save_router
from cost_aware_router.train import train_router

NEW = "sd15-10"  # the cheapest AGIQA configuration: without it the router cannot go below 1.59 s/image


@pytest.fixture(scope="module")
def without_new(agiqa_split, embedder):
    train = agiqa_split[0]
    return train_router(train.restrict([c for c in train.candidates if c != NEW]), embedder)


@pytest.fixture(scope="module")
def added(without_new, agiqa_split):
    return add_candidate_from_dataset(without_new, agiqa_split[0], NEW)


def test_trained_router_keeps_a_representative_anchor_set(agiqa_router, agiqa_split):
    ref = agiqa_router.reference
    prompts = anchor_prompts(agiqa_router)
    assert len(prompts) == len(set(prompts)) == len(ref.anchors) == min(128, len(agiqa_split[0].prompts) // 2)
    assert set(prompts) <= set(agiqa_split[0].prompts)
    # representative: every training prompt is nearer its nearest anchor than a random prompt is to a random anchor
    sims = ref.x @ ref.x[ref.anchors].T
    assert np.median(sims.max(axis=1)) > np.median(sims) + 0.2


def test_added_candidate_routes_like_a_retrained_router(added, without_new, agiqa_split, agiqa_router):
    new, report = added
    assert new.names == without_new.names + [NEW]
    assert report["anchors_scored"] == len(without_new.reference.anchors) and report["ignored_prompts"] > 0
    test = agiqa_split[1]
    got = evaluate_router(new, test)["summary"]
    retrained = evaluate_router(agiqa_router, test)["summary"]
    # held out: the router with the added candidate is never below the best fixed mix of all five candidates
    # by more than 0.02 MOS and its deferral area is within 0.02 of full retraining (measured: +0.018, 0.000)
    assert got["min_margin_vs_best_fixed_mix"] > -0.02
    assert got["auc_router"] > retrained["auc_router"] - 0.02
    # and the new, cheapest candidate really is used: the cheapest operating point costs what it costs
    assert min(got["router_envelope"]["cost"]) == pytest.approx(new.cost[-1])
    # the calibration was redone with the new candidate: a budget below every old candidate is met
    ch, _ = new.choices(new.predict_normalised(test.prompts), test.prompts, Budget(budget=1.0))
    assert new.cost[ch].mean() == pytest.approx(1.0, rel=0.25)


def test_added_candidate_round_trips_and_fails_loudly_when_broken(added, tmp_path):
    new, _ = added
    path = save_router(new, tmp_path / "r.safetensors")
    loaded = load_router(path)
    prompts = ["a lighthouse in a storm", "portrait of an old sailor, oil painting"]
    assert [d.to_json() for d in loaded.route(prompts)] == [d.to_json() for d in new.route(prompts)]
    assert loaded.calibration == new.calibration

    def shrink_out_of_range(meta, header):
        meta["added"][0]["shrink"] = 2.0

    def wrong_scores(t):
        t["added_scores"] = t["added_scores"][:10]

    def anchors_out_of_range(meta, header):
        meta["reference"]["anchors"][0] = 10 ** 6

    for i, (m, t, message) in enumerate([(shrink_out_of_range, None, "shrink"),
                                         (None, wrong_scores, "added_scores"),
                                         (anchors_out_of_range, None, "anchors")]):
        bad = rewrite_router(path, tmp_path / f"bad{i}.safetensors", m, t)
        with pytest.raises(RouterFileError, match=message):
            load_router(bad)


def test_a_clearly_better_free_candidate_takes_over_and_a_bad_one_is_never_chosen(agiqa_router):
    prompts = anchor_prompts(agiqa_router)
    top = float(np.max(agiqa_router.calibration["mean_quality"][:1] + [5.0]))
    good = add_candidate(agiqa_router, "free-and-great", 0.0, {"steps": 4}, {p: top for p in prompts})
    bad = add_candidate(agiqa_router, "slow-and-poor", 10.0, {}, {p: 0.0 for p in prompts})
    probe = ["a cat on a sofa", "an astronaut riding a horse", "a bowl of ramen, studio light"]
    assert {d.candidate for d in good.route(probe, Budget(best_quality=True))} == {"free-and-great"}
    assert good.route(probe)[0].config == {"steps": 4}
    assert "slow-and-poor" not in {d.candidate for d in bad.route(probe, Budget(best_quality=True))}


def test_adding_refuses_what_it_cannot_do(agiqa_router, without_new, agiqa_split):
    prompts = anchor_prompts(without_new)
    with pytest.raises(RouterError, match="already in the router"):
        add_candidate(agiqa_router, agiqa_router.names[0], 1.0, {}, {p: 1.0 for p in prompts})
    with pytest.raises(RouterError, match="at least 20 are needed"):
        add_candidate(without_new, "x", 1.0, {}, {p: 1.0 for p in prompts[:19]})
    with pytest.raises(RouterError, match="cost of 'x'"):
        add_candidate(without_new, "x", float("nan"), {}, {p: 1.0 for p in prompts})
    with pytest.raises(RouterError, match="no anchor prompts"):
        add_candidate(without_new.copy(reference=None), "x", 1.0, {}, {p: 1.0 for p in prompts})
    with pytest.raises(DataError, match="no 'score' scores for candidate 'nope'"):
        add_candidate_from_dataset(without_new, agiqa_split[0], "nope")


def test_far_prompts_fall_back_to_the_best_fixed_candidate(agiqa_router, agiqa_split):
    held_out = agiqa_split[1].prompts
    far = ["SELECT name, total FROM invoices WHERE paid = 0 ORDER BY due_date;",
           "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
           "Quarterly revenue rose 4.2% year over year, driven by subscription renewals."]
    _, d_in, w_in = agiqa_router.predict_embedded(agiqa_router.embedder.embed(held_out))
    _, d_far, w_far = agiqa_router.predict_embedded(agiqa_router.embedder.embed(far))
    assert (w_in == 0).mean() >= 0.9
    assert d_far.min() > np.percentile(d_in, 99) and (w_far > 0).all()
    decisions = agiqa_router.route(far, Budget(best_quality=True))
    for d in decisions:
        assert d.extra["ood_fallback"] > 0 and "out of distribution" in d.explanation
    assert "in distribution" in agiqa_router.route([held_out[0]])[0].explanation
    # beyond the full-fallback distance every prompt gets the best fixed candidate for its cost weight
    near = dataclasses.replace(agiqa_router.reference, start=0.0, full=1e-6)
    r = agiqa_router.copy(reference=near)
    z = r.predict_normalised(held_out)
    assert np.allclose(z, r.mean_quality_z[None, :])
    for lam in (0.0, 0.05, 0.5):
        expected = choose(r.mean_quality_z[None, :], r.cost, lam)[0]
        assert set(choose(z, r.cost, lam).tolist()) == {expected}


def test_cli_anchors_then_add_candidate(without_new, agiqa_split, tmp_path):
    router = save_router(without_new, tmp_path / "four.safetensors")
    res = run_cli("anchors", "--router", router)
    assert res.returncode == 0, res.stderr
    anchors = res.stdout.splitlines()
    assert anchors == anchor_prompts(without_new)
    rows = [json.loads(line) for line in (DATA / "agiqa_3k" / "generations.jsonl").read_text().splitlines()]
    new_rows = [r for r in rows if r["candidate"] == NEW and r["prompt"] in set(anchors)]
    data = write_rows(tmp_path / "new", new_rows)
    out = tmp_path / "five.safetensors"
    res = run_cli("add-candidate", data, "--candidate", NEW, "--router", router, "--out", out)
    assert res.returncode == 0, res.stderr
    assert f"added '{NEW}'" in res.stdout and f"from {len(anchors)} of {len(anchors)} anchor prompts" in res.stdout
    res = run_cli("route", "a foggy harbour at dawn", "--router", out, "--json", "--budget", "0.5")
    assert res.returncode == 0, res.stderr
    decision = json.loads(res.stdout)
    assert NEW in decision["predicted_quality"] and "ood_distance" in decision
    again = run_cli("add-candidate", data, "--candidate", NEW, "--router", router, "--out", out)
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = run_cli("add-candidate", data, "--candidate", "sdxl-50", "--router", router, "--out", tmp_path / "x")
    assert wrong.returncode == 2 and "no 'score' scores for candidate 'sdxl-50'; it has ['sd15-10']" in wrong.stderr
