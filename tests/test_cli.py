import json

import numpy as np
import pytest
from conftest import DATA, ROOT, run_cli, write_rows

from cost_aware_router.scored import load_dataset


def _one_error_line(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_route_json_with_the_shipped_default_router(tmp_path):
    pf = tmp_path / "prompts.txt"
    pf.write_text("a bowl of ramen, studio lighting\n\nan astronaut riding a horse\n", encoding="utf-8")
    proc = run_cli("route", "a watercolor fox", "--prompts-file", pf, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["a watercolor fox", "a bowl of ramen, studio lighting",
                                           "an astronaut riding a horse"]
    for r in rows:
        assert {"prompt", "candidate", "config", "predicted_quality", "cost"} <= set(r)
        assert r["candidate"] in r["cost"] and set(r["cost"]) == set(r["predicted_quality"])
        assert r["config"]["checkpoint"].endswith(".safetensors") and r["config"]["steps"] > 0
    cheap = run_cli("route", "a watercolor fox", "--json", "--budget", "0")
    assert json.loads(cheap.stdout)["candidate"] == min(rows[0]["cost"], key=rows[0]["cost"].get)


def test_train_then_evaluate_contract(tmp_path):
    out = tmp_path / "r.safetensors"
    proc = run_cli("train", DATA / "tifa_160", "--out", out, "--predictor", "ridge")
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    again = run_cli("train", DATA / "tifa_160", "--out", out)
    assert "already exists" in _one_error_line(again)
    plot = tmp_path / "curve.png"
    ev = run_cli("evaluate", out, DATA / "tifa_160", "--json", "--plot", plot)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ds = load_dataset(DATA / "tifa_160")
    assert set(res["candidates"]) == set(ds.candidates)
    assert len(res["points"]) >= 20
    cost = {c: v["cost"] for c, v in res["candidates"].items()}
    quality = {p: dict(zip(ds.candidates, ds.quality[i])) for i, p in enumerate(ds.prompts)}
    mean_costs = []
    for pt in res["points"]:
        assert set(pt["choices"]) == set(ds.prompts)
        assert "budget" in pt and "cost_weight" in pt
        mc = np.mean([cost[c] for c in pt["choices"].values()])
        mq = np.mean([quality[p][c] for p, c in pt["choices"].items()])
        assert mc == pytest.approx(pt["mean_cost"]) and mq == pytest.approx(pt["mean_quality"])
        mean_costs.append(mc)
    # the sweep spans the cheapest operating point to the best-quality one
    assert min(mean_costs) == pytest.approx(min(cost.values()))
    assert res["points"][-1]["budget"] is None and res["points"][-1]["cost_weight"] == 0.0
    assert {"gap_closed", "quality_at_best_single_cost", "cost_at_best_single_quality"} <= set(res["summary"])


@pytest.mark.parametrize("args, message", [
    (["route", "x", "--router", "missing.safetensors"], "does not exist"),
    (["route", "x", "--budget", "-1"], "budget must be a finite number >= 0, got -1"),
    (["route", "x", "--cost-weight", "nan"], "finite"),
    (["route", "x", "--force", "nope"], "'nope' is not in the router"),
    (["route"], "no prompt given"),
    (["route", "x", "--budget", "1", "--cost-weight", "2"], "not allowed with"),
    (["train", "tests/data/nope", "--out", "x.safetensors"], "does not exist"),
    (["train", "tests/data/README.md", "--out", "x.safetensors"], "is a file"),
    (["train", "tests/data/agiqa_3k", "--out", "x.safetensors", "--metric", "pickscore"], "no row has metric"),
    (["train", "tests/data/agiqa_3k", "--out", "x.safetensors", "--predictor", "forest"], "invalid choice"),
    (["evaluate", "router_weights/default.safetensors", "tests/data/tifa_160", "--metric", "score"],
     "has no rows for candidate"),
    (["evaluate", "router_weights/default.safetensors", "tests/data/tifa_160"], "no row has metric 'mos_quality'"),
])
def test_errors_are_one_line_with_exit_2(args, message):
    line = _one_error_line(run_cli(*args))
    assert message in line
    assert not (ROOT / "x.safetensors").exists()


def test_bad_row_error_names_file_and_line(tmp_path):
    write_rows(tmp_path, [{"prompt": "a", "candidate": "x", "score": 1, "cost": 1}, '{"prompt": "b", "candid'])
    line = _one_error_line(run_cli("train", tmp_path, "--out", tmp_path / "r.safetensors"))
    assert "generations.jsonl:2: malformed JSON" in line
    assert not (tmp_path / "r.safetensors").exists()


def test_pickled_router_is_refused(tmp_path):
    import pickle

    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(["not", "weights"]))
    assert "pickle" in _one_error_line(run_cli("route", "x", "--router", p))
