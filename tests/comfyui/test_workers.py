"""Several ComfyUI workers on one collection: two real ComfyUI servers run the collection workflow, each
as Candidate Sweep worker i of 2, into one output folder."""

import json

from .harness import REPO, Comfy, error_message

PROMPTS = ["a red apple on a table", "an owl on a branch at night"]
MAX_STEPS = 3  # the template's candidates with at most this many steps (CPU)


def _second_server(first: Comfy, root) -> Comfy:
    """A second ComfyUI on the first one's models, custom nodes, input and output folders (its own user and
    temp folders and port): another worker writing the same collection folder."""
    for name in ("input", "output", "extra_model_paths.yaml"):
        (root / name).symlink_to(first.root / name)
    for name in ("user", "temp"):
        (root / name).mkdir()
    return Comfy(first.dir, first.python, root)


def _collection(comfy: Comfy, workflow: dict, worker: int, workers: int, folder: str) -> dict:
    api = comfy.convert(workflow)
    for node in api.values():
        if node["class_type"] == "CostAwareRouter.Candidate":
            node["inputs"]["steps"] = min(node["inputs"]["steps"], MAX_STEPS)
        node["inputs"].update({k: v for k, v in dict(width=64, height=64, timed_runs=1).items()
                               if node["class_type"] in ("CostAwareRouter.MeasureCosts", "EmptyLatentImage")
                               and k in node["inputs"]})
        if node["class_type"] == "CostAwareRouter.CandidateSweep":
            node["inputs"].update(seeds=1, output_folder=folder, prompts="\n".join(PROMPTS), worker=worker,
                                  workers=workers)
        if node["class_type"] == "CostAwareRouter.SaveScoredGeneration":
            node["inputs"]["folder"] = folder
        if node["class_type"] == "CostAwareRouter.QualityScorer":
            node["inputs"]["scorer_model"] = "tiny_clip"
    return api


def test_two_sweep_workers_split_one_collection_and_write_every_row_once(comfy, tmp_path_factory, monkeypatch):
    from cost_aware_router.pool import sweep_jobs

    workflow = json.loads((REPO / "example_workflows" / "2_collect_scored_generations.json").read_text())
    candidates = {n["widgets_values"][0]: {"steps": min(n["widgets_values"][2], MAX_STEPS)} for n in workflow["nodes"]
                  if n["type"] == "CostAwareRouter.Candidate"}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two servers on a small CPU machine
    other = _second_server(comfy, tmp_path_factory.mktemp("comfy_worker2"))
    other.start()
    try:
        ids = [server.queue(_collection(server, workflow, i + 1, 2, "two_workers"), workflow)
               for i, server in enumerate((comfy, other))]
        entries = [server.wait(pid) for server, pid in zip((comfy, other), ids)]
    finally:
        other.stop()
    for entry in entries:
        assert entry["status"]["status_str"] == "success", error_message(entry)
    folder = comfy.root / "output" / "two_workers"
    rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]
    keys = [(r["prompt"], r["candidate"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(PROMPTS) * len(candidates)  # every generation once
    assert {r["image"] for r in rows} == {p.name for p in folder.glob("*.png")}
    for rank in (0, 1):  # each server ran exactly its share
        mine = {k for k, r in zip(keys, rows) if (r["worker"]["rank"], r["worker"]["world_size"]) == (rank, 2)}
        share = sweep_jobs(PROMPTS, 1, 0, candidates, set(), rank=rank, world_size=2)
        assert mine == {(j["prompt"], j["label"], j["seed"]) for j in share} and mine
    # a worker whose share is done has nothing left to do; a save folder must be a dedicated folder
    again = comfy.run(_collection(comfy, workflow, 1, 2, "two_workers"))
    assert again["status"]["status_str"] == "error" and "nothing to do (worker 1 of 2)" in error_message(again)
    root = comfy.run(_collection(comfy, workflow, 1, 1, "."))
    assert root["status"]["status_str"] == "error" and "dedicated folder" in error_message(root)


def test_worker_number_out_of_range_is_an_error(comfy):
    workflow = json.loads((REPO / "example_workflows" / "2_collect_scored_generations.json").read_text())
    entry = comfy.run(_collection(comfy, workflow, 3, 2, "bad_worker"))
    assert entry["status"]["status_str"] == "error" and "worker 3 of 2" in error_message(entry)
