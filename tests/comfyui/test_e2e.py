"""End-to-end tests of the node pack inside a real, headless ComfyUI (CPU, tiny random checkpoints)."""

import json
import re

import numpy as np
import pytest

from cost_aware_router.decision.budget import HOLD

from .harness import (
    REPO,
    alternating_prompt,
    api_route_graph,
    copy_data,
    error_message,
    score_new_candidate_on_anchors,
    texts,
    train_alternating_router,
)

NODES = ("CostAwareRouter.Candidate", "CostAwareRouter.CandidatePool", "CostAwareRouter.Route",
         "CostAwareRouter.Train", "CostAwareRouter.AnchorPrompts", "CostAwareRouter.AddCandidate",
         "CostAwareRouter.Feedback", "CostAwareRouter.EscalationPlan", "CostAwareRouter.VerifyEscalate")
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
TIFA = REPO / "tests" / "data" / "tifa_160"


def train_path_router(path):
    """my_router as 3_train_router makes it: the exported TIFA table, trained on its CLIPScore column."""
    import tempfile

    from cost_aware_router.embed import get_embedder
    from cost_aware_router.scored import load_dataset
    from cost_aware_router.tables import PATH_METRIC, PATH_TABLE, export_table
    from cost_aware_router.train_run import train_and_save

    with tempfile.TemporaryDirectory() as tmp:
        export_table(PATH_TABLE, tmp)
        train_and_save(load_dataset(tmp, metric=PATH_METRIC), get_embedder(), path, overwrite=True)


def test_nodes_are_listed_with_descriptions_and_tooltips(comfy):
    for node_id in NODES:
        info = comfy.object_info[node_id]
        assert info["description"] and info["category"] == "cost-aware router"
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    route_out = comfy.object_info["CostAwareRouter.Route"]["output"]
    # typed so they plug into the core KSampler's combo inputs
    assert route_out[5] == comfy.object_info["KSampler"]["input"]["required"]["sampler_name"][0]
    assert route_out[6] == comfy.object_info["KSampler"]["input"]["required"]["scheduler"][0]


def test_example_workflows_are_served_as_templates(comfy):
    served = comfy.get("/api/workflow_templates")
    names = next(v for k, v in served.items() if "CostAwareRouter" in k)
    assert sorted(names) == sorted(p.stem for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_runs(comfy, path):
    api = comfy.convert(json.loads(path.read_text()))
    for node in api.values():  # CPU-sized: tiny latents
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "CostAwareRouter.Train":
            if isinstance(node["inputs"]["data_folder"], str):  # not linked from Export Rating Table
                copy_data(TIFA, comfy.root / "input" / node["inputs"]["data_folder"])
            node["inputs"]["overwrite"] = True
        if node["class_type"] == "CostAwareRouter.MeasureCosts":
            node["inputs"].update(width=64, height=64, timed_runs=1)
        if node["class_type"] == "CostAwareRouter.CandidateSweep":
            node["inputs"].update(seeds=1, output_folder="example_collection")
        if node["class_type"] == "CostAwareRouter.SaveScoredGeneration":
            node["inputs"]["folder"] = "example_collection"
        if node["class_type"] == "CostAwareRouter.QualityScorer":
            node["inputs"]["scorer_model"] = "tiny_clip"  # a tiny random CLIP built by the harness
        if node["class_type"] == "CostAwareRouter.AddCandidate":
            score_new_candidate_on_anchors(comfy.root / "input" / node["inputs"]["data_folder"],
                                            node["inputs"]["candidate"])
            node["inputs"]["overwrite"] = True
        if node["class_type"] == "CostAwareRouter.Route" and node["inputs"]["router"] == "my_router.safetensors":
            # what the note asks for: my_router, from 3_train_router (the exported table's CLIPScore column)
            train_path_router(comfy.root / "models" / "router_weights" / node["inputs"]["router"])
        if node["class_type"] == "CostAwareRouter.Feedback":
            (comfy.root / "models" / "router_weights" / f"{node['inputs']['output_name']}.safetensors").unlink(
                missing_ok=True)
    entry = comfy.run(api)
    assert entry["status"]["status_str"] == "success", error_message(entry) or entry["status"]
    outputs = entry["outputs"]
    if path.stem == "1_route_and_generate":
        saved = [img for out in outputs.values() for img in out.get("images", []) if img["type"] == "output"]
        assert len(saved) == 1 and (comfy.root / "output" / saved[0]["filename"]).is_file()
        why = [t for out in outputs.values() for t in out.get("text", []) if t.startswith("chose '")]
        assert why and re.search(r"chose '(sd15-50|sd15-10|sd15-50-lowcfg|sd15-50-highcfg|sdxl-50)'", why[0])
    elif path.stem == "2_collect_scored_generations":
        from cost_aware_router.scored import load_dataset

        ds = load_dataset(comfy.root / "output" / "example_collection")
        assert ds.quality.shape == (4, 3) and not np.isnan(ds.quality).any()
        assert (ds.cost > 0).all()  # measured on this machine
    elif path.stem == "4_route_score_learn":
        from cost_aware_router.router_file import load_router

        saved = [img for out in outputs.values() for img in out.get("images", []) if img["type"] == "output"]
        assert len(saved) == 1 and saved[0]["filename"].startswith("routed_learn")
        shown = [t for out in outputs.values() for t in out.get("text", [])]
        chose = [re.match(r"chose '([\w-]+)'", t) for t in shown if t.startswith("chose '")]
        assert chose and chose[0].group(1) in ("sd15-50", "sd21-50")
        learnt = [t for t in shown if t.startswith("learnt: ")]
        assert learnt and re.match(rf"learnt: '{chose[0].group(1)}' scored [-\d.e+]+ on this prompt; "
                                   r"my_router_learnt\.safetensors now holds 1 scored generation", learnt[0]), learnt
        weights = comfy.root / "models" / "router_weights"
        router = load_router(weights / "my_router_learnt.safetensors")
        assert router.training["online_observations"] == 1
        base = load_router(weights / "my_router.safetensors")
        assert len(router.predictor.memory.X) == len(base.predictor.memory.X) + 1
    elif path.stem == "6_route_verify_escalate":
        saved = [img for out in outputs.values() for img in out.get("images", []) if img["type"] == "output"]
        assert len(saved) == 1 and saved[0]["filename"].startswith("verified")
        shown = [t for out in outputs.values() for t in out.get("text", [])]
        assert any(re.match(r"delivered '(sd15-50|sd21-50)' \(the (first|escalation's) image", t)
                   for t in shown), shown
    elif path.stem == "5_add_candidate":
        from cost_aware_router.router_file import load_router

        added = load_router(comfy.root / "models" / "router_weights" / "default_plus_sd15_25.safetensors")
        assert added.names[-1] == "sd15-25" and added.cost[-1] == 0.8
        shown = [t for out in outputs.values() for t in out.get("text", [])]
        assert any(t.startswith("128 anchor prompts") for t in shown)
        assert any("added 'sd15-25'" in t and "from 128 of 128 anchor prompts" in t for t in shown)
    else:
        name = api[next(k for k, v in api.items() if v["class_type"] == "CostAwareRouter.Train")]["inputs"]
        assert (comfy.root / "models" / "router_weights" / f"{name['output_name']}.safetensors").is_file()
        assert any(img["type"] == "temp" for out in outputs.values() for img in out.get("images", []))


def test_twenty_alternating_prompts_load_each_checkpoint_once(comfy):
    router = train_alternating_router(comfy.root / "models" / "router_weights")
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 3, 7.0)]
    chosen = []
    for i in range(20):
        prompt = alternating_prompt(i)
        entry = comfy.run(api_route_graph(cands, router, prompt, save_prefix="alt"))
        assert entry["status"]["status_str"] == "success", error_message(entry)
        text = texts(entry, "route")[0]
        chosen.append(re.match(r"chose '(\w+)'", text).group(1))
    assert chosen == ["cats", "cars"] * 10
    assert "alt_a.safetensors: loaded (1 load so far)" in text and "alt_b.safetensors: loaded (1 load so far)" in text
    log = comfy.server_log()
    assert log.count("loaded checkpoint 'alt_a.safetensors'") == 1
    assert log.count("loaded checkpoint 'alt_b.safetensors'") == 1


def test_held_budget_keeps_its_state_and_every_decision_is_logged(comfy):
    router = train_alternating_router(comfy.root / "models" / "router_weights", "held.safetensors")
    cands = [("cats", "alt_a.safetensors", 2, 7.0, 0.5), ("cars", "alt_b.safetensors", 3, 7.0, 2.0)]
    log = comfy.root / "output" / "cost_aware_router" / "decisions.jsonl"
    states = comfy.root / "user" / "cost_aware_router" / "budget_state"
    before = log.read_text().count("\n") if log.exists() else 0
    ids, costs = [], []
    for i in range(6):
        graph = api_route_graph(cands, router, alternating_prompt(100 + i), budget_mode=HOLD, budget_value=1.0,
                                save_prefix="held", reset_budget_state=i == 0)
        ids.append(comfy.queue(graph))
        entry = comfy.wait(ids[-1])
        assert entry["status"]["status_str"] == "success", error_message(entry)
        text = texts(entry, "route")[0]
        costs.append({"cats": 0.5, "cars": 2.0}[re.match(r"chose '(\w+)'", text).group(1)])
        assert f"holding 1 s/image on average: {np.mean(costs):.3g} s/image so far over {i + 1} prompt(s)" in text
    state = next(states.glob("held-*@1s.json"))  # the name's hash keeps "held" apart from "held " or "held_"
    saved = json.loads(state.read_text())
    assert saved["count"] == 6 and saved["target"] == 1.0 and saved["total_cost"] == pytest.approx(sum(costs))
    lines = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    assert [x["prompt_id"] for x in lines] == ids
    assert [x["chosen_cost"] for x in lines] == costs and all(x["router"] == router for x in lines)
    assert lines[-1]["count"] == 6 and lines[-1]["target"] == 1.0
    # reset starts the tally afresh; logging can be switched off
    entry = comfy.run(api_route_graph(cands, router, alternating_prompt(200), budget_mode=HOLD, budget_value=1.0,
                                      save_prefix="held", reset_budget_state=True, log_decisions=False))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert json.loads(state.read_text())["count"] == 1 and len(log.read_text().splitlines()) == before + 6


def test_a_rewritten_router_file_is_routed_with_at_once(comfy):
    """The same graph queued again after its router file changed (as Learn from Scores rewrites a learnt
    router) decides with the new file instead of ComfyUI's cached decision."""
    from cost_aware_router.router_file import load_router, save_router

    weights = comfy.root / "models" / "router_weights"
    router = train_alternating_router(weights, "rewritten.safetensors")
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 3, 7.0)]
    graph = api_route_graph(cands, router, alternating_prompt(500), save_prefix="rewritten")
    first = comfy.run(graph)
    assert first["status"]["status_str"] == "success", error_message(first)
    assert texts(first, "route")[0].startswith("chose 'cats'")
    r = load_router(weights / router)  # the same file with its two labels swapped: cat prompts now go to 'cars'
    swapped = [{**r.candidates[0], "name": "cars"}, {**r.candidates[1], "name": "cats"}]
    save_router(r.copy(candidates=swapped), weights / router, overwrite=True)
    again = comfy.run(graph)
    assert again["status"]["status_str"] == "success", error_message(again)
    assert texts(again, "route")[0].startswith("chose 'cars'")


def _feedback_graph(cands, router, prompt, output_name, score_link=None):
    g = api_route_graph(cands, router, prompt, budget_mode="router default", save_prefix="learn")
    g["score"] = {"class_type": "CostAwareRouter.QualityScorer",
                  "inputs": {"image": ["decode", 0], "prompt": prompt, "scorer_model": "tiny_clip",
                             "kind": "clipscore"}}
    g["learn"] = {"class_type": "CostAwareRouter.Feedback",
                  "inputs": {"router": router, "prompt": prompt, "label": ["route", 7],
                             "score": score_link or ["score", 0], "output_name": output_name}}
    return g


def test_router_feedback_learns_into_its_own_file(comfy):
    from cost_aware_router.router_file import load_router

    weights = comfy.root / "models" / "router_weights"
    router = train_alternating_router(weights, "to_learn.safetensors")
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 3, 7.0)]
    base_rows = len(load_router(weights / router).predictor.memory.X)
    for i in range(3):
        entry = comfy.run(_feedback_graph(cands, router, alternating_prompt(300 + i), "learnt"))
        assert entry["status"]["status_str"] == "success", error_message(entry)
        report = texts(entry, "learn")[0]
        assert re.match(r"learnt: '(cats|cars)' scored [-\d.e+]+ on this prompt; learnt\.safetensors now holds "
                        f"{i + 1} scored generation", report), report
    learnt = load_router(weights / "learnt.safetensors")
    assert learnt.training["online_observations"] == 3 and len(learnt.predictor.memory.X) == base_rows + 3
    assert load_router(weights / router).training.get("online_observations") is None  # the base is untouched
    # a trained router that holds no feedback is never changed
    before = (weights / router).read_bytes()
    entry = comfy.run(_feedback_graph(cands, router, alternating_prompt(400), router.removesuffix(".safetensors")))
    assert entry["status"]["status_str"] == "error"
    assert "is not a router learnt by this node" in error_message(entry)
    assert (weights / router).read_bytes() == before


def test_a_pool_with_some_of_the_routers_candidates_routes_among_them(comfy):
    """A pool may hold any of the router's candidates: with only 'cars' loaded every prompt goes there, and a
    held budget keeps its own state for the subset (a file apart from the whole router's)."""
    router = train_alternating_router(comfy.root / "models" / "router_weights", "subset.safetensors")
    for i in range(2):
        entry = comfy.run(api_route_graph([("cars", "alt_b.safetensors", 3, 7.0, 2.0)], router, alternating_prompt(i),
                                          save_prefix="subset", budget_mode=HOLD, budget_value=1.0))
        assert entry["status"]["status_str"] == "success", error_message(entry)
        assert texts(entry, "route")[0].startswith("chose 'cars'")
    entry = comfy.run(api_route_graph([("cats", "alt_a.safetensors", 2, 7.0, 0.5), ("cars", "alt_b.safetensors", 3,
                                                                                   7.0, 2.0)],
                                      router, alternating_prompt(0), save_prefix="subset", budget_mode=HOLD,
                                      budget_value=1.0))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    states = sorted((comfy.root / "user" / "cost_aware_router" / "budget_state").glob("subset-*@1s.json"))
    assert len(states) == 2 and sorted(json.loads(s.read_text())["count"] for s in states) == [1, 2]


def test_mismatched_router_and_pool_fail_with_both_sides(comfy):
    cands = [("fast", "v1-5-pruned-emaonly.safetensors", 2, 7.0), ("slow", "sd_xl_base_1.0.safetensors", 3, 7.0)]
    entry = comfy.run(api_route_graph(cands, "default.safetensors", "a lighthouse"))
    assert entry["status"]["status_str"] == "error"
    msg = error_message(entry)
    assert "do not match pool candidates ['fast', 'slow']" in msg and "sdxl-50" in msg
    assert "missing from the pool" in msg and "not in the router: ['fast', 'slow']" in msg


def _train_graph(data_folder, name, predictor="knn", overwrite=True):
    return {"train": {"class_type": "CostAwareRouter.Train", "inputs": {
        "data_folder": data_folder, "predictor": predictor, "metric": "score", "output_name": name,
        "overwrite": overwrite, "skip_bad_rows": False}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["train", 2]}}}


def test_training_node_writes_a_router_the_routing_node_uses(comfy):
    copy_data(TIFA, comfy.root / "input" / "tifa")
    entry = comfy.run(_train_graph("tifa", "e2e_trained", "ridge"))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert (comfy.root / "models" / "router_weights" / "e2e_trained.safetensors").is_file()
    cands = [("sd11-50", "v1-5-pruned-emaonly.safetensors", 2, 7.0),
             ("sd15-50", "v1-5-pruned-emaonly.safetensors", 3, 7.0),
             ("sd21-50", "v2-1_768-ema-pruned.safetensors", 2, 7.0)]
    entry = comfy.run(api_route_graph(cands, "e2e_trained.safetensors", "two dogs playing in a park",
                                      budget_mode="router default"))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert re.match(r"chose '(sd11-50|sd15-50|sd21-50)'", texts(entry, "route")[0])


@pytest.mark.parametrize("folder, name, message", [
    ("/etc", "x", "outside the allowed folders"),
    ("../../", "x", "outside the allowed folders"),
    ("no_such_folder", "x", "does not exist"),
    ("tifa", "../escape", "must be a plain file name"),
    ("tifa", "/tmp/abs", "absolute path"),
])
def test_training_node_refuses_unsafe_paths(comfy, folder, name, message):
    copy_data(TIFA, comfy.root / "input" / "tifa")
    entry = comfy.run(_train_graph(folder, name))
    assert entry["status"]["status_str"] == "error"
    assert message in error_message(entry)


def test_training_node_does_not_overwrite_unless_asked(comfy):
    copy_data(TIFA, comfy.root / "input" / "tifa")
    target = comfy.root / "models" / "router_weights" / "keep_me.safetensors"
    target.write_bytes(b"precious")
    entry = comfy.run(_train_graph("tifa", "keep_me", overwrite=False))
    assert entry["status"]["status_str"] == "error" and "already exists" in error_message(entry)
    assert target.read_bytes() == b"precious"


def test_interrupted_training_leaves_no_file(comfy):
    import time

    # 3,000 prompts: embedding alone takes seconds, so the interrupt lands mid-training
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "agiqa_3k" / "generations.jsonl").read_text(
        encoding="utf-8").splitlines()]
    big = comfy.root / "input" / "agiqa_x10"
    big.mkdir(parents=True, exist_ok=True)
    with open(big / "generations.jsonl", "w", encoding="utf-8") as fh:
        for i in range(10):
            for row in rows:
                fh.write(json.dumps({**row, "prompt": f"{row['prompt']} (variant {i})"}) + "\n")
    pid = comfy.queue(_train_graph("agiqa_x10", "interrupted", "mlp"))
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the training node is running, then interrupt it
        running = comfy.get("/queue")["queue_running"]
        if running and running[0][1] == pid:
            time.sleep(1.0)
            comfy.post("/interrupt", {})
            break
        time.sleep(0.05)
    entry = comfy.wait(pid)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    leftovers = [p.name for p in (comfy.root / "models" / "router_weights").iterdir() if "interrupted" in p.name]
    assert leftovers == []


def test_collected_folder_resumes_and_trains_a_router(comfy):
    """The collection workflow's folder: a rerun has nothing left to do, and the training node fits a
    router from it that routes among the collected candidates."""
    path = REPO / "example_workflows" / "2_collect_scored_generations.json"
    workflow = json.loads(path.read_text())
    api = comfy.convert(workflow)
    for node in api.values():
        node["inputs"].update({k: v for k, v in dict(width=64, height=64, timed_runs=1).items()
                               if node["class_type"] in ("CostAwareRouter.MeasureCosts", "EmptyLatentImage")
                               and k in node["inputs"]})
        if node["class_type"] == "CostAwareRouter.CandidateSweep":
            node["inputs"].update(seeds=1, output_folder="resume_collection",
                                  prompts="a red apple on a table\na blue bicycle in the rain\n"
                                          "a snowy mountain village\nan owl on a branch at night")
        if node["class_type"] == "CostAwareRouter.SaveScoredGeneration":
            node["inputs"]["folder"] = "resume_collection"
        if node["class_type"] == "CostAwareRouter.QualityScorer":
            node["inputs"]["scorer_model"] = "tiny_clip"
    entry = comfy.run(api, workflow=workflow)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    folder = comfy.root / "output" / "resume_collection"
    rows = (folder / "generations.jsonl").read_text().splitlines()
    assert len(rows) == 4 * 1 * 3  # prompts x seeds x candidates
    from cost_aware_router.scored import RECORD_KEYS

    for row in map(json.loads, rows):  # the same record layout as the headless collector's
        assert set(row) == RECORD_KEYS and row["measured_seconds"] == row["cost"] > 0
    png = json.loads(rows[0])["image"]
    from cost_aware_router.scored import png_text_chunks

    chunks = png_text_chunks(folder / png)
    assert {"prompt", "workflow", "cost_aware_router"} <= set(chunks)  # ComfyUI's metadata and our record
    again = comfy.run(api)
    assert again["status"]["status_str"] == "error" and "nothing to do" in error_message(again)
    assert len((folder / "generations.jsonl").read_text().splitlines()) == 12
    entry = comfy.run(_train_graph(str(folder), "from_collection"))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert (comfy.root / "models" / "router_weights" / "from_collection.safetensors").is_file()


def test_checkpoint_missing_from_disk_is_named(comfy):
    router = train_alternating_router(comfy.root / "models" / "router_weights")
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "gone.safetensors", 2, 7.0)]
    graph = api_route_graph(cands, router, "a red sports car")
    graph["route"]["inputs"]["force_candidate"] = "cars"
    entry = comfy.run(graph)
    assert entry["status"]["status_str"] == "error"
    assert "checkpoint 'gone.safetensors' is not in any checkpoints folder" in error_message(entry)


def test_a_candidate_scored_on_the_anchor_prompts_is_added_and_routed_to(comfy):
    """Anchor prompts out of one node; a new candidate scored on them (better than both old ones on cat
    prompts only) added by another; the routing node then sends a cat prompt to it."""
    router = train_alternating_router(comfy.root / "models" / "router_weights")
    entry = comfy.run({"anchors": {"class_type": "CostAwareRouter.AnchorPrompts", "inputs": {"router": router}}})
    assert entry["status"]["status_str"] == "success", error_message(entry)
    shown = texts(entry, "anchors")[0].splitlines()
    count = int(shown[0].split()[0])
    anchors = shown[1:]
    assert count == len(anchors) >= 20
    folder = comfy.root / "input" / "dogs_on_anchors"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": p, "candidate": "dogs", "score": 2.0 if "cat" in p else -1.0, "cost": 1.0,
             "checkpoint": "alt_a.safetensors", "steps": 3, "cfg": 6.0, "sampler": "euler", "scheduler": "normal"}
            for p in anchors]
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    add = {"add": {"class_type": "CostAwareRouter.AddCandidate", "inputs": {
        "router": router, "data_folder": "dogs_on_anchors", "candidate": "dogs", "metric": "score", "cost": -1.0,
        "output_name": "alternating_plus_dogs", "overwrite": False}}}
    entry = comfy.run(add)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert "added 'dogs' (cost 1 s/image" in texts(entry, "add")[0]
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 2, 7.0),
             ("dogs", "alt_a.safetensors", 3, 6.0)]
    entry = comfy.run(api_route_graph(cands, "alternating_plus_dogs.safetensors", "a photo of a tabby cat, number 4"))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    explanation = texts(entry, "route")[0]
    assert explanation.startswith("chose 'dogs'") and "prompt distance to training prompts" in explanation
    again = comfy.run(add)
    assert again["status"]["status_str"] == "error" and "already exists" in error_message(again)
