import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

from cost_aware_router.collect import collect, read_candidates
from cost_aware_router.errors import RouterError
from cost_aware_router.scored import (
    RECORD_KEYS,
    GenerationStore,
    load_dataset,
    png_bytes,
    png_text_chunks,
    record_text_chunk,
)
from cost_aware_router.scoring import ClipScorer

PROMPTS = ["a red apple", "a blue car", "a green tree", "a yellow sun"]


def _candidates_file(tmp_path, pipes, cost_fast=None):
    extra = f"\ncost = {cost_fast}" if cost_fast is not None else ""
    text = (f'[[candidate]]\nname = "fast"\npipeline = "{pipes[0]}"\nsteps = 1\ncfg = 1.0{extra}\n\n'
            f'[[candidate]]\nname = "slow"\npipeline = "{pipes[1]}"\nsteps = 3\ncfg = 5.0\n')
    path = tmp_path / "candidates.toml"
    path.write_text(text)
    return path


def test_scorer_scores_pairs_and_differs_by_kind(tiny_scorer_dir):
    rng = np.random.default_rng(0)
    images = [rng.uniform(size=(48, 64, 3)) for _ in range(2)]
    clip = ClipScorer(tiny_scorer_dir, "clipscore").score(images, ["a cat", "a dog"])
    pick = ClipScorer(tiny_scorer_dir, "pickscore").score(images, ["a cat", "a dog"])
    assert len(clip) == 2 and all(0 <= s <= 100 for s in clip)
    assert pick != clip
    with pytest.raises(RouterError, match="unknown scorer"):
        ClipScorer(tiny_scorer_dir, "aesthetic")


def test_collector_writes_a_folder_that_trains_a_router(tmp_path, tiny_pipelines, tiny_scorer_dir):
    out = tmp_path / "collected"
    cands = read_candidates(_candidates_file(tmp_path, tiny_pipelines, cost_fast=0.25))
    counts = collect(PROMPTS, cands, out, tiny_scorer_dir, seeds=2, size=32)
    assert counts == {"written": 16, "skipped": 0}
    ds = load_dataset(out)
    assert ds.quality.shape == (4, 2) and (ds.counts == 2).all()
    assert ds.cost[ds.candidates.index("fast")] == pytest.approx(0.25)  # given cost wins
    assert ds.cost[ds.candidates.index("slow")] > 0  # measured
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    for row in rows:  # every PNG carries its own record, in the layout the ComfyUI save node writes too
        assert set(row) == RECORD_KEYS | {"worker"}  # + which process wrote it
        assert row["worker"] == {"rank": 0, "world_size": 1, "host": socket.gethostname()}
        chunk = json.loads(png_text_chunks(out / row["image"])["cost_aware_router"])
        assert chunk == row
    # a rerun skips everything, and train fits a router from the folder
    assert collect(PROMPTS, cands, out, tiny_scorer_dir, seeds=2, size=32) == {"written": 0, "skipped": 16}
    proc = run_cli("train", out, "--out", tmp_path / "r.safetensors")
    assert proc.returncode == 0, proc.stderr
    route = run_cli("route", "a purple apple", "--router", tmp_path / "r.safetensors", "--json")
    assert json.loads(route.stdout)["candidate"] in ("fast", "slow")


def test_interrupted_collection_loses_nothing(tmp_path, tiny_pipelines, tiny_scorer_dir):
    out = tmp_path / "interrupted"
    cands = read_candidates(_candidates_file(tmp_path, tiny_pipelines))
    seen = []

    def stop_after_three(record):
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(PROMPTS, cands, out, tiny_scorer_dir, size=32, on_image=stop_after_three)
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert not list(out.glob(".*.tmp"))
    counts = collect(PROMPTS, cands, out, tiny_scorer_dir, size=32)
    assert counts == {"written": 5, "skipped": 3}
    assert len(load_dataset(out).prompts) == 4


def test_store_write_interrupted_between_png_and_row_is_recovered(tmp_path):
    store = GenerationStore(tmp_path)
    rec = {"prompt": "p", "candidate": "a", "score": 1.0, "cost": 0.1, "seed": 0}
    store.add(rec, lambda r: png_bytes(np.zeros((8, 8, 3)), record_text_chunk(r)))

    def crash(r):  # the PNG is written by the caller's render, then the process dies before the row
        (tmp_path / "orphan.png").write_bytes(png_bytes(np.zeros((8, 8, 3)), record_text_chunk(
            {**r, "image": "orphan.png"})))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.add({**rec, "seed": 1}, crash)
    assert len((tmp_path / "generations.jsonl").read_text().splitlines()) == 1
    ds = load_dataset(tmp_path)  # the orphan PNG describes itself, so nothing is lost
    assert ds.counts.sum() == 2
    assert store.add({**rec, "seed": 1}) is None  # and a rerun skips it
    with pytest.raises(RouterError, match="missing field 'cost'"):
        store.add({"prompt": "p", "candidate": "a", "score": 1.0})


@pytest.mark.parametrize("text, message", [
    ("", "no [[candidate]] tables"),
    ("[[candidate]]\nname = 'x'\n", "missing 'pipeline'"),
    ("[[candidate]]\nname = 'x'\npipeline = '/nowhere'\nsteps = 1\ncfg = 1\n", "not a local diffusers pipeline"),
    ("[[candidate", "not valid TOML"),
])
def test_bad_candidates_files(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(RouterError, match=re.escape(message)):
        read_candidates(p)


def test_collect_cli_errors(tmp_path, tiny_pipelines):
    (tmp_path / "p.txt").write_text("\n\n")
    cands = _candidates_file(tmp_path, tiny_pipelines)
    proc = run_cli("collect", "--prompts", tmp_path / "p.txt", "--candidates", cands, "--out", tmp_path / "o",
                   "--scorer", tmp_path)
    assert proc.returncode == 2 and "has no prompts" in proc.stderr and not (tmp_path / "o").exists()
    proc = run_cli("collect", "--prompts", tmp_path / "p.txt", "--candidates",
                   _candidates_file(tmp_path, tiny_pipelines), "--out", tmp_path / "o")
    assert proc.returncode == 2 and "no scorer" in proc.stderr and "Traceback" not in proc.stderr


# -- several processes with accelerate --------------------------------------------------------------------------
MANY_PROMPTS = [f"a photo of object number {i}" for i in range(6)]


def _launcher() -> list[str] | None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return None
    script = Path(sys.executable).with_name("accelerate")
    return [str(script), "launch"] if script.exists() else [sys.executable, "-m", "accelerate.commands.launch"]


def _launch(tmp_path, pipes, scorer, out, processes: int | None, token: str) -> subprocess.Popen:
    """``accelerate launch --multi_gpu --num_processes N -m cost_aware_router collect ...`` on the CPU (accelerate's
    ``--cpu`` starts one process unless MPI is set up; ``--multi_gpu`` starts N through torch.distributed.run, and
    without CUDA each process runs on the CPU with gloo); ``processes=None``: one plain process."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(MANY_PROMPTS) + "\n")
    args = ["-m", "cost_aware_router", "collect", "--prompts", str(prompts), "--candidates",
            str(_candidates_file(tmp_path, pipes)), "--out", str(out), "--scorer", str(scorer), "--seeds", "2",
            "--size", "32"]
    if processes is None:
        cmd = [sys.executable, *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [*_launcher(), "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1", "COLLECT_TEST_TOKEN": token}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(out):
    from cost_aware_router.scored import read_records

    records, bad = read_records(out)
    assert bad == 0
    return records


def _assert_complete_once(out):
    """Every (prompt, candidate, seed) once: rows that all parse (none torn) plus PNGs whose row a killed process
    never wrote, which describe themselves."""
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_bytes().decode().split("\n") if line]
    keys = [(r.prompt, r.candidate, r.extra["seed"]) for r in _records(out)]
    assert len(keys) == len(set(keys)) == len(MANY_PROMPTS) * 2 * 2
    assert len(rows) <= len(keys)
    return rows


def _workers_of(token: str) -> dict[int, int]:
    """rank -> pid of the collect processes started with this test's token."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in kv)
        except OSError:
            continue
        if env.get("COLLECT_TEST_TOKEN") == token and "RANK" in env and "LOCAL_RANK" in env:
            found[int(env["RANK"])] = int(d.name)
    return found


def _wait_rows(out, n, proc, timeout=300):
    deadline = time.time() + timeout
    path = out / "generations.jsonl"
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"collection ended before {n} rows:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {timeout} s")


needs_accelerate = pytest.mark.skipif(_launcher() is None or not Path("/proc/self/environ").exists(),
                                      reason="needs accelerate (pip install accelerate) and Linux /proc")


@needs_accelerate
def test_two_accelerate_processes_split_one_collection(tmp_path, tiny_pipelines, tiny_scorer_dir):
    from cost_aware_router.pool import split_jobs

    out = tmp_path / "two"
    proc = _launch(tmp_path, tiny_pipelines, tiny_scorer_dir, out, 2, uuid.uuid4().hex)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    rows = _assert_complete_once(out)
    assert len(rows) == len(MANY_PROMPTS) * 2 * 2  # every row in generations.jsonl
    by_rank = {r: {(x["prompt"], x["candidate"], x["seed"]) for x in rows if x["worker"]["rank"] == r}
               for r in (0, 1)}
    assert {x["worker"]["world_size"] for x in rows} == {2} and all(by_rank.values())
    # each process wrote exactly its share of the split (not both doing everything, the store hiding it)
    jobs = [(c, p, s) for c in ("fast", "slow") for p in MANY_PROMPTS for s in range(2)]
    steps = {"fast": 1, "slow": 3}
    for r in (0, 1):
        share = split_jobs(jobs, r, 2, group=lambda j: j[0], cost=lambda j: steps[j[0]])
        assert by_rank[r] == {(p, c, s) for c, p, s in share}
    assert log.count("wrote ") == 2  # one summary line per process


@needs_accelerate
def test_a_killed_process_loses_and_duplicates_nothing_and_reruns_resume(tmp_path, tiny_pipelines, tiny_scorer_dir):
    out = tmp_path / "killed"
    token = uuid.uuid4().hex
    proc = _launch(tmp_path, tiny_pipelines, tiny_scorer_dir, out, 2, token)
    _wait_rows(out, 4, proc)
    workers = _workers_of(token)
    assert set(workers) == {0, 1}, workers
    os.kill(workers[1], signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0  # the launcher stops the other process too
    before = len(_records(out))
    assert 4 <= before < 24
    # a rerun on one plain process, itself killed part-way
    token = uuid.uuid4().hex
    one = _launch(tmp_path, tiny_pipelines, tiny_scorer_dir, out, None, token)
    _wait_rows(out, before + 2, one)
    one.kill()
    one.communicate(timeout=60)
    middle = len(_records(out))
    assert before + 2 <= middle < 24
    # and a rerun on three processes finishes the job
    three = _launch(tmp_path, tiny_pipelines, tiny_scorer_dir, out, 3, uuid.uuid4().hex)
    log = three.communicate(timeout=600)[0]
    assert three.returncode == 0, log[-3000:]
    rows = _assert_complete_once(out)
    assert {x["worker"]["world_size"] for x in rows} == {1, 2, 3}
