"""Routing a user's own stream: a held target average cost, its state file, the decision log and
its report, through the CLI contract (in-process, so the embedder loads once)."""

import json

import numpy as np
import pytest
from conftest import DATA, cli_error, route_json

from cost_aware_router import cli
from cost_aware_router.decision_log import read_log

TARGETS = (1.0, 2.0, 4.0)


@pytest.fixture(scope="module")
def far_stream(tmp_path_factory):
    """280 real prompts (GenAI-Bench then TIFA) routed by the default router, trained on AGIQA-3K:
    another distribution, in file order, on which the calibrated budgets miss by 25-50%."""
    prompts = []
    for table in ("genai_bench_120", "tifa_160"):
        for line in (DATA / table / "generations.jsonl").read_text(encoding="utf-8").splitlines():
            p = json.loads(line)["prompt"].strip()  # one TIFA caption ends in a line break
            if p not in prompts:
                prompts.append(p)
    path = tmp_path_factory.mktemp("stream") / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path, prompts


def _costs(rows):
    return np.array([r["cost"][r["candidate"]] for r in rows])


@pytest.mark.parametrize("target", TARGETS)
def test_held_budget_meets_the_target_on_a_foreign_stream(capsys, far_stream, target):
    path, prompts = far_stream
    stateless = _costs(route_json(capsys, "--prompts-file", path, "--budget", target)).mean()
    held = route_json(capsys, "--prompts-file", path, "--budget", target, "--hold-budget")
    assert [r["prompt"] for r in held] == prompts
    assert abs(stateless / target - 1) > 0.2  # the stream really is off the calibration
    assert _costs(held).mean() == pytest.approx(target, rel=0.05)
    last = held[-1]["held"]
    assert last["count"] == len(prompts) and last["target"] == target
    assert last["realised_mean_cost"] == pytest.approx(_costs(held).mean(), rel=1e-6)


def test_state_file_carries_the_stream_across_runs(capsys, far_stream, tmp_path, agiqa_router_file):
    path, prompts = far_stream
    state = tmp_path / "state.json"
    halves = [prompts[:140], prompts[140:]]
    rows = []
    for i, half in enumerate(halves):
        part = tmp_path / f"part{i}.txt"
        part.write_text("\n".join(half) + "\n", encoding="utf-8")
        rows += route_json(capsys, "--prompts-file", part, "--budget", 2, "--hold-budget", "--state", state)
        saved = json.loads(state.read_text())
        assert saved["count"] == len(rows) and saved["target"] == 2
    assert rows[-1]["held"]["count"] == len(prompts)
    assert _costs(rows).mean() == pytest.approx(2.0, rel=0.05)
    before = state.read_bytes()
    assert "holds a target of 2 s/image, not 3" in cli_error(capsys, "route", "x", "--budget", 3, "--hold-budget",
                                                          "--state", state)
    assert "was made for router" in cli_error(capsys, "route", "x", "--budget", 2, "--hold-budget", "--state", state,
                                      "--router", agiqa_router_file)
    assert state.read_bytes() == before  # a refused run leaves the state alone
    state.write_text("{not json")
    assert str(state) in cli_error(capsys, "route", "x", "--budget", 2, "--hold-budget", "--state", state)


@pytest.mark.parametrize("args, message", [
    (["--cost-weight", "0.1", "--hold-budget"], "--hold-budget holds a target average cost"),
    (["--best-quality", "--hold-budget"], "--hold-budget holds a target average cost"),
    (["--force", "sd15-10", "--hold-budget"], "--hold-budget holds a target average cost"),
    (["--budget", "2", "--state", "s.json"], "--state keeps the state of --hold-budget; add --hold-budget"),
])
def test_hold_budget_flag_errors(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert message in cli_error(capsys, "route", "a fox", *args)
    assert list(tmp_path.iterdir()) == []


def test_decision_log_and_report(capsys, far_stream, tmp_path):
    path, prompts = far_stream
    log = tmp_path / "decisions.jsonl"
    rows = route_json(capsys, "--prompts-file", path, "--budget", 2, "--hold-budget", "--log", log)
    rows += route_json(capsys, "a red fox", "--best-quality", "--log", log)
    records, bad = read_log(log)
    assert bad == 0 and len(records) == len(prompts) + 1
    for rec, row in zip(records, rows):
        assert rec["prompt"] == row["prompt"] and rec["candidate"] == row["candidate"]
        assert rec["router"] == "default.safetensors" and len(rec["router_fingerprint"]) == 24
        assert rec["chosen_cost"] == row["cost"][row["candidate"]] and rec["explored"] is False
        assert rec["time"].endswith("Z") and rec["cost_weight"] == pytest.approx(row["cost_weight"])
    assert records[0]["target"] == 2 and records[-2]["count"] == len(prompts) and records[-1]["target"] is None

    assert cli.main(["report", str(log), "--json", "--plot", str(tmp_path / "report.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == len(prompts) + 1
    counts = {c: sum(r["candidate"] == c for r in rows) for c in {r["candidate"] for r in rows}}
    assert {v["candidate"]: v["count"] for v in summary["candidates"]} == counts
    assert summary["mean_cost"] == pytest.approx(_costs(rows).mean())
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "already exists" in cli_error(capsys, "report", log, "--plot", tmp_path / "report.png")
    assert cli.main(["report", str(log)]) == 0
    assert f"{len(prompts) + 1} decisions" in capsys.readouterr().out


def test_exploration_is_a_stable_share_counted_in_the_held_budget(capsys, far_stream, tmp_path):
    path, prompts = far_stream
    greedy = route_json(capsys, "--prompts-file", path, "--budget", 2)
    explored = route_json(capsys, "--prompts-file", path, "--budget", 2, "--explore", 0.2)
    marked = [r["explored"] for r in explored]
    assert 0.13 <= np.mean(marked) <= 0.27
    for g, e in zip(greedy, explored):  # an explored prompt leaves the greedy choice, the others keep it
        assert (g["candidate"] != e["candidate"]) == e["explored"]
    again = route_json(capsys, "--prompts-file", path, "--budget", 2, "--explore", 0.2)
    assert [r["candidate"] for r in again] == [r["candidate"] for r in explored]  # stable per prompt
    log = tmp_path / "log.jsonl"
    held = route_json(capsys, "--prompts-file", path, "--budget", 2, "--hold-budget", "--explore", 0.2, "--log", log)
    assert _costs(held).mean() == pytest.approx(2.0, rel=0.05)  # exploration spend is inside the target
    records, _ = read_log(log)
    assert [r["explored"] for r in records] == [r["explored"] for r in held] and any(r["explored"] for r in held)


def test_replay_reveals_only_the_chosen_score_and_writes_a_learnt_router(capsys, tmp_path, agiqa_router_file):
    from cost_aware_router.router_file import load_router
    from cost_aware_router.scored import load_dataset

    data = DATA / "agiqa_3k"
    ds = load_dataset(data, metric="mos_quality")
    out = tmp_path / "learnt.safetensors"
    assert cli.main(["replay", str(agiqa_router_file), str(data), "--out", str(out), "--json", "--explore", "0.1",
                     "--budget", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    rows, summary = lines[:-1], lines[-1]["summary"]
    assert [r["prompt"] for r in rows] == ds.prompts  # in first-appearance order, every prompt scored
    truth = {p: dict(zip(ds.candidates, ds.quality[i])) for i, p in enumerate(ds.prompts)}
    for r in rows:
        assert set(r) == {"prompt", "candidate", "explored", "cost", "score"}
        assert r["score"] == pytest.approx(truth[r["prompt"]][r["candidate"]])
    assert summary["prompts"] == len(rows) and summary["explored_share"] == pytest.approx(
        np.mean([r["explored"] for r in rows]))
    assert summary["mean_score"] == pytest.approx(np.mean([r["score"] for r in rows]))
    assert summary["mean_cost"] == pytest.approx(np.mean([r["cost"] for r in rows]))
    learnt = load_router(out)
    assert learnt.training["online_observations"] == len(rows)
    # the 225 training prompts' rows learn their replayed scores in place (a prompt the memory holds merges
    # into its row: memory.DUPLICATE_SIM); the 75 held-out prompts are new rows
    assert len(load_router(agiqa_router_file).predictor.memory.X) == 225
    assert len(learnt.predictor.memory.X) == len(ds.prompts)
    assert cli.main(["evaluate", str(out), str(DATA / "agiqa_3k"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["prompts"] == len(ds.prompts)
    before = out.read_bytes()
    assert "already exists" in cli_error(capsys, "replay", agiqa_router_file, data, "--out", out)
    assert out.read_bytes() == before
