"""What a person sees on the nodes inside a real ComfyUI (issue 19): force_candidate offers the routers'
labels and names the valid ones, a Candidate Setup without a label is named by its settings, the pool and
router nodes describe one pool in one wording, the main node is found by "router", and errors carry the
short type name."""

from .harness import alternating_prompt, api_route_graph, error_message, texts, train_alternating_router


def _error(entry: dict) -> dict:
    return next(data for kind, data in entry["status"].get("messages", []) if kind == "execution_error")


def test_force_candidate_offers_the_routers_labels_and_is_checked(comfy):
    router = train_alternating_router(comfy.root / "models" / "router_weights", "force.safetensors")
    info = comfy.get("/object_info/CostAwareRouter.Route")["CostAwareRouter.Route"]
    spec = info["input"]["optional"]["force_candidate"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert options[0] == "(none)" and {"sd15-10", "sdxl-50", "cats", "cars"} <= set(options)
    assert "router" in info.get("search_aliases", [])

    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 2, 7.0)]
    graph = api_route_graph(cands, router, alternating_prompt(1))
    graph["route"]["inputs"]["force_candidate"] = "cats"
    entry = comfy.run(graph)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert texts(entry, "route")[0].startswith("chose 'cats'") and "budget: always 'cats'" in texts(entry, "route")[0]

    graph["route"]["inputs"]["force_candidate"] = "no router has this label"  # refused before anything runs
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": "ux"})
    assert status == 400
    details = str(body["node_errors"]["route"]["errors"])
    assert "'no router has this label' is not a candidate of any router file" in details and "cats, cars" in details

    graph["route"]["inputs"]["force_candidate"] = "sd15-10"  # another router's label: named at run time
    entry = comfy.run(graph)
    assert entry["status"]["status_str"] == "error"
    assert ("force_candidate 'sd15-10' is not a candidate of force.safetensors; choose (none) or one of: cats, cars"
            in error_message(entry))
    assert _error(entry)["exception_type"] == "cost_aware_router.RouterError"  # not the pack's folder path

    one = api_route_graph(cands[:1], router, alternating_prompt(1))
    one["route"]["inputs"]["force_candidate"] = "cars"  # the router's, but not in this pool
    entry = comfy.run(one)
    assert "force_candidate 'cars' is not in the Candidate Pool; choose (none) or one of the candidates the pool " \
           "holds: cats" in error_message(entry)


def test_a_candidate_without_a_label_is_named_by_its_settings_and_pool_reports_agree(comfy):
    graph = api_route_graph([("", "alt_a.safetensors", 2, 7.0)], "default.safetensors", "a lighthouse")
    graph["pool"]["inputs"]["load_policy"] = "preload all"
    entry = comfy.run(graph)  # the default router has no such candidate: the error names the derived label
    assert "not in the router: ['alt_a-2steps-cfg7-euler']" in error_message(entry)
    assert texts(entry, "c1")[0].startswith("alt_a-2steps-cfg7-euler: alt_a.safetensors, 2 steps, cfg 7")
    pool = texts(entry, "pool")[0].splitlines()
    assert pool[0] == "1 checkpoint(s), 1 candidates; loaded when this node ran:"
    assert pool[1].startswith("  alt_a.safetensors: loaded (")

    router = train_alternating_router(comfy.root / "models" / "router_weights", "agree.safetensors")
    cands = [("cats", "alt_a.safetensors", 2, 7.0), ("cars", "alt_b.safetensors", 2, 7.0)]
    entry = comfy.run(api_route_graph(cands, router, alternating_prompt(1)))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    shown_pool = texts(entry, "pool")[0].splitlines()
    shown_route = texts(entry, "route")[0].split("\npool: ", 1)[1].splitlines()
    assert shown_pool[0].endswith("loaded when this node ran:") and shown_route[0].endswith(
        "loaded after this decision:")
    assert shown_pool[0].split(";")[0] == shown_route[0].split(";")[0] == "2 checkpoint(s), 2 candidates"
    for line in shown_pool[1:3] + shown_route[1:3]:  # one wording: "<checkpoint>: loaded (...)" / "not loaded ..."
        assert line.split(": ", 1)[1].startswith(("loaded (", "not loaded")), line


def test_a_failing_node_reports_the_short_error_type(comfy):
    entry = comfy.run(api_route_graph([("x", "alt_a.safetensors", 2, 7.0)], "default.safetensors", "a lighthouse"))
    assert entry["status"]["status_str"] == "error" and "do not match pool candidates" in error_message(entry)
    assert _error(entry)["exception_type"] == "cost_aware_router.RouterError"
