"""Verify and escalate inside a real, headless ComfyUI: Escalation Plan decides from the routed image's
score, and Verify and Escalate's lazy inputs run the dear branch (a second KSampler) only when it escalates.

The router is trained by the core on a folder where escalation pays (harness.train_escalating_router); the
core's gate switches the policy on by itself. The scores are constants (PrimitiveFloat), so each run
chooses to keep or to escalate; ComfyUI's websocket says which nodes executed."""

import json
import re

import pytest

from cost_aware_router.decision.budget import HOLD, WEIGHT

from .harness import (
    ESCALATING_CANDIDATES,
    api_verify_graph,
    error_message,
    texts,
    train_alternating_router,
    train_escalating_router,
)


@pytest.fixture(scope="module")
def escalating(comfy):
    from cost_aware_router.router_file import load_router

    weights = comfy.root / "models" / "router_weights"
    name = train_escalating_router(weights)
    r = load_router(weights / name)
    assert r.escalates, r.training.get("cascade")  # switched on by the gate, not by the test
    return name


def _run(comfy, graph):
    entry, executed = comfy.run_watching(graph)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    return entry, executed


def test_the_dear_branch_runs_only_when_the_router_escalates(comfy, escalating):
    prompt = "a lighthouse on a rocky island, verify test"
    graph = dict(candidates=ESCALATING_CANDIDATES, router=escalating, prompt=prompt, budget_mode=WEIGHT,
                 budget_value=1.0)
    # a good first image: kept, and the second KSampler never runs
    entry, executed = _run(comfy, api_verify_graph(first_score=4.9, dear_score=5.0, **graph))
    assert texts(entry, "route")[0].startswith("chose 'cheap'")
    assert "sample" in executed and "plan" in executed and "verify" in executed
    assert not [n for n in executed if n.startswith("dear_")], executed  # fails without the lazy inputs
    plan = texts(entry, "plan")[0]
    assert plan.startswith("kept 'cheap'") and "the second KSampler does not run" in plan, plan
    report = texts(entry, "verify")[0]
    assert report.startswith("delivered 'cheap' (the first image, score 4.9): not escalated"), report
    assert len(entry["outputs"]["save"]["images"]) == 1

    # a bad first image: escalated; the dear branch runs and its better image is delivered
    entry, executed = _run(comfy, api_verify_graph(first_score=0.8, dear_score=4.2, **graph))
    assert {"dear_pos", "dear_sample", "dear_decode"} <= set(executed), executed
    assert executed.index("plan") < executed.index("dear_sample") < executed.index("dear_decode")
    assert "sample" not in executed  # the first image came from the cache: the same prompt, seed and model
    plan = texts(entry, "plan")[0]
    assert plan.startswith("escalated to 'dear' (2 s/image): 'cheap' scored") and "with 'dear' (3 steps" in plan
    report = texts(entry, "verify")[0]
    assert report.startswith("delivered 'dear' (the escalation's image, score 4.2; 'cheap' scored 0.8)"), report
    assert "escalated to 'dear'" in report.splitlines()[1]

    # escalated, but the dear image scores worse: the first one is delivered
    entry, _ = _run(comfy, api_verify_graph(first_score=0.8, dear_score=0.5, **graph))
    report = texts(entry, "verify")[0]
    assert report.startswith("delivered 'cheap' (the first image, score 0.8; 'dear' scored 0.5)"), report


def test_a_router_that_cannot_escalate_delivers_the_first_image_without_the_dear_branch(comfy):
    router = train_alternating_router(comfy.root / "models" / "router_weights", "no_cascade.safetensors")
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 3, 7.0)]
    entry, executed = _run(comfy, api_verify_graph(cands, router, "a photo of a tabby cat, verify test", 0.1, 5.0))
    assert not [n for n in executed if n.startswith("dear_")], executed
    report = texts(entry, "verify")[0]
    assert report.startswith("delivered 'cats' (the first image, score 0.1): not escalated"), report
    assert "this router cannot escalate" in report


def test_an_escalation_is_logged_and_counted_in_the_held_budget(comfy, escalating):
    log = comfy.root / "output" / "cost_aware_router" / "decisions.jsonl"
    before = log.read_text().count("\n") if log.exists() else 0
    prompt = "a red fox in the snow, held verify test"
    graph = api_verify_graph(ESCALATING_CANDIDATES, escalating, prompt, 0.8, 4.2, budget_mode=HOLD, budget_value=1.0,
                             reset_budget_state=True)
    entry, executed = _run(comfy, graph)
    assert texts(entry, "route")[0].startswith("chose 'cheap'")
    assert "dear_sample" in executed
    plan = texts(entry, "plan")[0]
    assert "holding 1 s/image on average: 2.5 s/image so far over 1 prompt(s), escalations included" in plan
    states = list((comfy.root / "user" / "cost_aware_router" / "budget_state").glob("escalating*@1s.json"))
    assert len(states) == 1, states  # the state kept for this router and target
    saved = json.loads(states[0].read_text())
    assert saved["count"] == 1 and saved["total_cost"] == pytest.approx(0.5 + 2.0)  # one prompt, two images
    lines = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    assert [(x["candidate"], x["chosen_cost"], x.get("escalation", False)) for x in lines] == [
        ("cheap", 0.5, False), ("dear", 2.0, True)]
    esc = lines[1]
    assert esc["escalated_from"] == "cheap" and esc["first_score"] == 0.8 and esc["prompt"] == prompt
    assert lines[0]["prompt_id"] == esc["prompt_id"] and esc["count"] == 1


def test_router_feedback_learns_both_images_of_an_escalated_prompt(comfy, escalating):
    from cost_aware_router.router_file import load_router

    weights = comfy.root / "models" / "router_weights"
    (weights / "escalating_learnt.safetensors").unlink(missing_ok=True)
    prompt = "a steam train crossing a viaduct, feedback verify test"
    graph = api_verify_graph(ESCALATING_CANDIDATES, escalating, prompt, 0.8, 4.2, budget_mode=WEIGHT,
                             budget_value=1.0)
    graph["learn"] = {"class_type": "CostAwareRouter.Feedback", "inputs": {
        "router": escalating, "prompt": prompt, "scored": ["verify", 3], "output_name": "escalating_learnt"}}
    entry, executed = _run(comfy, graph)
    assert "dear_sample" in executed
    report = texts(entry, "learn")[0]
    assert re.match(r"learnt: 'cheap' scored 0\.8 and 'dear' scored 4\.2 on this prompt; "
                    r"escalating_learnt\.safetensors now holds 2 scored generation", report), report
    learnt, base = load_router(weights / "escalating_learnt.safetensors"), load_router(weights / escalating)
    assert len(learnt.predictor.memory.X) == len(base.predictor.memory.X) + 1  # one memory row holding both cells
    row = learnt.predictor.memory.Y[-1]
    z = [(s - base.norm["mean"]) / base.norm["std"] for s in (0.8, 4.2)]
    assert row == pytest.approx(z, abs=1e-4)
    assert learnt.escalates  # the policy travels with the learnt copy
