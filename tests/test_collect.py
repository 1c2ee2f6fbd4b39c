import json
import re

import numpy as np
import pytest
from conftest import run_cli

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
        assert set(row) == RECORD_KEYS
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
