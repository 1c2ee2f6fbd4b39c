"""Hostile inputs, round three (issue 20), families 4 and 5: shared held-budget state without a lock,
state files bigger than their reader, collection that aborts or mixes late."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_collect import PROMPTS, _candidates_file

from cost_aware_router.collect import collect, read_candidates
from cost_aware_router.decision.hold import WINDOW_MAX, BudgetHolder
from cost_aware_router.decision.hold_state import load_state, save_state
from cost_aware_router.errors import RouterError
from cost_aware_router.scored import load_dataset
from cost_aware_router.scored.record import MAX_CANDIDATES, MAX_PROMPT_CHARS


def _route_proc(*args):
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cost_aware_router", "route", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_concurrent_cli_runs_sharing_a_state_file_lose_no_decision(tmp_path):
    state, log = tmp_path / "state.json", tmp_path / "log.jsonl"
    procs = []
    for k in range(4):
        prompts = tmp_path / f"p{k}.txt"
        prompts.write_text("".join(f"prompt {k} number {i}\n" for i in range(5)))
        procs.append(_route_proc("--prompts-file", prompts, "--budget", 2, "--hold-budget", "--state", state,
                                 "--log", log, "--json"))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    saved = json.loads(state.read_text())
    assert len(log.read_text().splitlines()) == 20 and saved["count"] == 20


@pytest.mark.parametrize("window", [200, WINDOW_MAX])
def test_largest_router_state_is_readable_by_its_own_reader(tmp_path, window):
    rng = np.random.default_rng(0)
    cost = rng.uniform(0.1, 10.0, MAX_CANDIDATES)
    holder = BudgetHolder(2.0, 0.1, cost, "fp", window=window)
    for _ in range(window):
        allowed = rng.uniform(size=MAX_CANDIDATES) < 0.9  # a cap: the state keeps each prompt's mask too
        allowed[0] = True
        holder.observe(float(cost[0]), rng.normal(size=MAX_CANDIDATES) * 1e-7 + np.pi, allowed)
    path = save_state(holder, tmp_path / "s.json")
    assert path.stat().st_size > 1 << 20  # over the old 1 MiB limit of the reader
    again = load_state(path, "fp", 2.0, 0.1, cost)
    assert again.count == window and again.lam() == pytest.approx(holder.lam())


def test_window_over_the_limit_is_refused():
    with pytest.raises(RouterError, match=f"window must be a whole number from 1 to {WINDOW_MAX}, got 1001"):
        BudgetHolder(2.0, 0.1, [1.0, 2.0], "fp", window=WINDOW_MAX + 1)


def _rows(out):
    return (out / "generations.jsonl").read_text().splitlines() if (out / "generations.jsonl").exists() else []


@pytest.mark.parametrize("bad_prompt, message", [
    ("x" * (MAX_PROMPT_CHARS + 1), "prompt 3: 'prompt' is 10,001 characters long; at most 10,000 are allowed"),
    ("a \ud800 lone surrogate", "prompt 3: 'prompt' is not valid Unicode (it holds a lone surrogate)"),
])
def test_a_prompt_the_store_would_refuse_is_refused_before_anything_is_generated(
        tmp_path, tiny_pipelines, tiny_scorer_dir, bad_prompt, message):
    out = tmp_path / "c"
    cands = read_candidates(_candidates_file(tmp_path, tiny_pipelines))
    with pytest.raises(RouterError) as info:
        collect(PROMPTS[:2] + [bad_prompt], cands, out, tiny_scorer_dir, size=32)
    assert message in str(info.value) and "nothing was generated" in str(info.value)
    assert _rows(out) == []


@pytest.mark.parametrize("change, message", [
    (("steps = 3", "steps = 4"), "candidate 'slow' in {out} was made with steps 3"),
    (("cfg = 5.0", "cfg = 6.5"), "candidate 'slow' in {out} was made with cfg 5.0"),
])
def test_a_changed_candidate_is_refused_at_the_start_naming_it(tmp_path, tiny_pipelines, tiny_scorer_dir, change,
                                                               message):
    out = tmp_path / "c"
    path = _candidates_file(tmp_path, tiny_pipelines)
    collect(PROMPTS[:2], read_candidates(path), out, tiny_scorer_dir, size=32)
    before = _rows(out)
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(RouterError) as info:
        collect(PROMPTS, read_candidates(path), out, tiny_scorer_dir, size=32)
    assert message.format(out=out) in str(info.value) and "Give the changed candidate a new name" in str(info.value)
    assert _rows(out) == before
    # renamed, it is a new candidate and the folder still trains
    path.write_text(path.read_text().replace('name = "slow"', 'name = "slow-v2"'))
    collect(PROMPTS[:2], read_candidates(path), out, tiny_scorer_dir, size=32)
    assert sorted(load_dataset(out).candidates) == ["fast", "slow", "slow-v2"]


def test_route_json_escapes_del_c1_and_separators(capsys, tmp_path):
    """--json output is strict JSON whose text holds no DEL, C1 control, separator or bidi control raw."""
    from cost_aware_router import cli

    prompt = "a cat\x7f\x85\u2028\u202e \u00e9\U0001F98A"
    (tmp_path / "p.txt").write_bytes((prompt + "\n").encode("utf-8", "surrogatepass"))
    assert cli.main(["route", "--prompts-file", str(tmp_path / "p.txt"), "--json"]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\x7f\x85\u2028\u202e") and "\u00e9\U0001F98A" in out
    assert json.loads(out)["prompt"] == prompt


def test_held_state_survives_a_feedback_update_of_a_learnt_router(capsys, tmp_path, agiqa_router_file, agiqa_split):
    """A learnt router keeps its lineage: its held average carries on after Learn from Scores rewrites it."""
    from cost_aware_router import cli
    from cost_aware_router.online import update_router
    from cost_aware_router.router_file import load_router, save_router

    state, prompts = tmp_path / "s.json", agiqa_split[1].prompts[:6]
    learnt = tmp_path / "learnt.safetensors"
    base = load_router(agiqa_router_file)
    save_router(update_router(base, prompts[:1], ["sd15-10"], [2.0])[0], learnt)
    for i in range(3):
        argv = ["route", prompts[i + 1], "--router", str(learnt), "--budget", "2", "--hold-budget", "--state",
                str(state), "--json"]
        assert cli.main(argv) == 0, capsys.readouterr().err
        r = load_router(learnt)
        save_router(update_router(r, [prompts[i + 1]], ["sd15-50"], [3.0])[0], learnt, overwrite=True)
        assert load_router(learnt).fingerprint != r.fingerprint
    capsys.readouterr()
    assert json.loads(state.read_text())["count"] == 3
