"""The example workflows in ComfyUI's real web page: headless Chromium driven by puppeteer-core
(tests/comfyui/browser/driver.cjs) against the headless ComfyUI the suite starts.

It opens the template browser, loads every template from its card, checks that nothing is missing
or flagged, that the frontend keeps the node sizes the workflows give and that no two nodes overlap,
presses Run on the templates (at test sizes: 64 px latents, the harness's tiny CLIP scorer), reads
the reports drawn on the nodes, reloads the page and re-runs from the cache. Screenshots go to the
test's temporary folder, all of them also to $COST_AWARE_ROUTER_SCREENSHOTS when set, and the
README's three (DOC_IMAGES) to $COST_AWARE_ROUTER_DOC_IMAGES when set (docs/img).

Needs node, Chromium (the Debian package: /usr/bin/chromium, or $CHROMIUM) and the npm package
puppeteer-core (in $PUPPETEER_NODE_MODULES, /opt/comfyui/browser/node_modules or
~/.cache/cost-aware-router/browser/node_modules, where .ci/run installs it); skips without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import REPO, score_new_candidate_on_anchors
from .ui_to_api import widget_layout

# in the template browser's order: the path a person walks (route, collect, train, learn, add, verify)
TEMPLATES = ["1_route_and_generate", "2_collect_scored_generations", "3_train_router", "4_route_score_learn",
             "5_add_candidate", "6_route_verify_escalate"]
EXAMPLES = {name: json.loads((REPO / "example_workflows" / f"{name}.json").read_text()) for name in TEMPLATES}
DRIVER = Path(__file__).resolve().parent / "browser" / "driver.cjs"
# screenshot -> its name in docs/img (the README's "First ten minutes in ComfyUI")
DOC_IMAGES = {"template_browser.png": "comfyui_templates.png",
              "1_route_and_generate_flow.png": "comfyui_route_and_generate.png",
              "2_collect_scored_generations_note.png": "comfyui_collect_note.png"}
WARNING = re.compile(r"missing|not found|error|invalid|warning|required", re.IGNORECASE)
SMALL = [{"type": "EmptyLatentImage", "widget": "width", "value": 64},
         {"type": "EmptyLatentImage", "widget": "height", "value": 64}]
# What a person types before pressing Run, at test sizes (the workflows' own sizes are for real models).
RUNS = {
    "1_route_and_generate": SMALL,
    "3_train_router": [],
    "5_add_candidate": [],
    "2_collect_scored_generations": SMALL + [
        {"type": "CostAwareRouter.MeasureCosts", "widget": "width", "value": 64},
        {"type": "CostAwareRouter.MeasureCosts", "widget": "height", "value": 64},
        {"type": "CostAwareRouter.QualityScorer", "widget": "scorer_model", "value": "tiny_clip"},
        {"type": "CostAwareRouter.CandidateSweep", "widget": "output_folder", "value": "browser_collection"},
        {"type": "CostAwareRouter.SaveScoredGeneration", "widget": "folder", "value": "browser_collection"},
    ],
    # my_router: what 3_train_router has just trained in this page from the exported table (one set of labels)
    "4_route_score_learn": SMALL + [
        {"type": "CostAwareRouter.QualityScorer", "widget": "scorer_model", "value": "tiny_clip"},
    ],
    "6_route_verify_escalate": SMALL + [
        {"type": "CostAwareRouter.QualityScorer", "widget": "scorer_model", "value": "tiny_clip"},
    ],
}
# A second run that fails, as a person's would: training again into my_router (another predictor, so ComfyUI does
# not answer from its cache) without overwrite. The node must then show the error, not the last run's report.
FAIL_RUNS = {"3_train_router": [{"type": "CostAwareRouter.Train", "widget": "predictor", "value": "ridge"}]}

# typed into the node search (double click on empty canvas): each lists the main node first
SEARCH_QUERIES = ["router", "cost", "route", "routing"]


CI_NODE_MODULES = Path.home() / ".cache" / "cost-aware-router" / "browser" / "node_modules"  # .ci/run installs here


def node_modules() -> Path | None:
    env = os.environ.get("PUPPETEER_NODE_MODULES")
    for d in ([Path(env)] if env else []) + [Path("/opt/comfyui/browser/node_modules"), CI_NODE_MODULES]:
        if (d / "puppeteer-core" / "package.json").is_file():
            return d
    return None


def chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)


@pytest.fixture(scope="module")
def page(comfy, tmp_path_factory):
    """Run the driver once; the tests read what it saw."""
    if not shutil.which("node"):
        pytest.skip("the browser test needs node (Node.js); .ci/run installs it with apt-get when missing")
    browser = chromium()
    if browser is None:
        pytest.skip("the browser test needs Chromium (apt-get install chromium, or set CHROMIUM)")
    modules = node_modules()
    if modules is None:
        pytest.skip("the browser test needs the npm package puppeteer-core (.ci/run installs it into "
                    "~/.cache/cost-aware-router/browser; or set PUPPETEER_NODE_MODULES)")
    module = next(k for k in comfy.get("/api/workflow_templates") if "CostAwareRouter" in k)
    # what the notes say to prepare first: the new candidate's scores (5_add_candidate); the path from a fresh
    # install needs nothing else: 3_train_router exports its table and trains my_router, which 4 and 6 route with
    score_new_candidate_on_anchors(comfy.root / "input" / "new_candidate", "sd15-25")
    for name in ("my_router.safetensors", "default_plus_sd15_25.safetensors", "my_router_learnt.safetensors"):
        (comfy.root / "models" / "router_weights" / name).unlink(missing_ok=True)
    shutil.rmtree(comfy.root / "output" / "rating_tables", ignore_errors=True)
    out = tmp_path_factory.mktemp("browser")
    config = {"url": comfy.url, "out_dir": str(out), "node_modules": str(modules), "chromium": browser,
              "module": module, "templates": TEMPLATES, "runs": RUNS, "fail_runs": FAIL_RUNS, "timeout_s": 600,
              # 4_route_score_learn picks my_router, which the 3_train_router run has just written: press R first
              "refresh_before": ["4_route_score_learn"], "search_queries": SEARCH_QUERIES}
    (out / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(["node", str(DRIVER), str(out / "config.json")], capture_output=True, text=True,
                          timeout=1500)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    if proc.returncode != 0:
        pytest.fail(f"browser driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n"
                    f"{results.get('fatal', '')}\nserver log:\n{comfy.server_log()[-3000:]}")
    shots = os.environ.get("COST_AWARE_ROUTER_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for f in [*out.glob("*.png"), out / "results.json"]:
            shutil.copy(f, Path(shots) / f.name)
    docs = os.environ.get("COST_AWARE_ROUTER_DOC_IMAGES")
    if docs:
        for src, dst in DOC_IMAGES.items():
            shutil.copy(out / src, Path(docs) / dst)
    results["out_dir"] = str(out)
    return results


def states(t: dict) -> dict[str, dict]:
    """Every graph state the driver recorded for a template: loaded, after a run, reloaded, cached re-run."""
    return {k: t[k] for k in ("loaded", "after_run", "after_reload", "after_cached_run") if k in t}


def by_type(state: dict, type_: str) -> list[dict]:
    return [n for n in state["nodes"] if n["type"] == type_]


def overlaps(state: dict) -> list[tuple]:
    """Pairs of nodes whose drawn boxes (title bar included) intersect."""
    out = []
    nodes = state["nodes"]
    for i, a in enumerate(nodes):
        ax, ay, aw, ah = a["bounding"]
        for b in nodes[i + 1:]:
            bx, by, bw, bh = b["bounding"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                out.append((a["id"], a["type"], b["id"], b["type"]))
    return out


def test_template_browser_shows_every_template_with_a_readable_thumbnail(page):
    cards = {c["name"]: c for c in page["cards"]}
    # ComfyUI lists a pack's templates in the server's directory order, or by name with Sort: Alphabetical;
    # the number that starts each name (and each card's title) gives the path's order either way
    assert sorted(cards) == TEMPLATES
    assert page["cards_sorted"] == TEMPLATES, (page["sort_setting"], page["cards_sorted"])  # Sort: Alphabetical
    for name, card in cards.items():
        assert card["img"] and card["img"]["natural"] == [600, 600], card  # the large-text card
        assert card["img"]["shown"][0] >= 200, card
        assert name in card["text"]


def test_every_template_loads_without_missing_nodes_or_warnings(page):
    for name in TEMPLATES:
        t = page["templates"][name]
        loaded = t["loaded"]
        assert t["active_workflow"] == name
        flagged = [d for d in t["dialogs_after_load"] if WARNING.search(d)]
        assert flagged == [], (name, flagged)
        assert [n for n in loaded["nodes"] if not n["registered"] or n["has_errors"]] == []
        wf = {n["id"]: n for n in EXAMPLES[name]["nodes"]}
        assert sorted(int(n["id"]) for n in loaded["nodes"]) == sorted(wf)
        for n in loaded["nodes"]:  # the frontend reads every widget value as written
            assert (n["widgets_values"] or []) == wf[int(n["id"])]["widgets_values"], (name, n["id"], n["type"])
        assert by_type(loaded, "MarkdownNote"), f"{name} has no note"
    assert not [e for e in page["page_errors"] if "cost_aware_router" in e.lower() or "CostAwareRouter" in e]


def test_widget_counts_match_the_server(comfy):
    """widgets_values has one entry per widget the frontend creates for that node (as the server
    describes it), so nothing is shifted when the UI converts a template to a prompt."""
    for name, wf in EXAMPLES.items():
        for n in wf["nodes"]:
            info = comfy.object_info.get(n["type"])
            if info is None:
                assert n["type"] == "MarkdownNote", (name, n["type"])
                continue
            widget_inputs = {i["widget"]["name"] for i in n["inputs"] if i.get("widget")}
            assert len(n["widgets_values"]) == len(widget_layout(info, widget_inputs)), (name, n["id"], n["type"])


def test_nodes_never_overlap_before_or_after_a_run(page):
    facts = {}
    for name in TEMPLATES:
        t = page["templates"][name]
        wf = {n["id"]: n for n in EXAMPLES[name]["nodes"]}
        for when, state in states(t).items():
            assert overlaps(state) == [], (name, when, overlaps(state))
            for n in state["nodes"]:  # drawn at the size the workflow gives, which is at least the computed one
                assert [round(v) for v in n["size"]] == wf[int(n["id"])]["size"], (name, when, n["id"], n["type"])
                assert n["compute"][1] <= n["size"][1] + 0.5, (name, when, n["id"], n["type"], n["compute"])
            facts[f"{name}/{when}"] = len(state["nodes"])
    assert set(facts) >= {f"{n}/loaded" for n in TEMPLATES} | {f"{n}/after_run" for n in TEMPLATES}


def _ran(t: dict, name: str) -> None:
    kinds = [e["type"] for e in t["events"]]
    errors = [e["error"] for e in t["events"] if e["type"] == "execution_error"]
    assert "execution_success" in kinds, (name, kinds, errors, t.get("dialogs_after_run"))


def test_the_decision_is_drawn_on_the_router_node(page):
    t = page["templates"]["1_route_and_generate"]
    _ran(t, "1_route_and_generate")
    route = by_type(t["after_run"], "CostAwareRouter.Route")[0]
    text = route["report"]
    assert re.match(r"chose '(sd15-50|sd15-10|sd15-50-lowcfg|sd15-50-highcfg|sdxl-50)' \([\d.]+ s/image\): ",
                    text), text
    assert "\nbudget: asked for about 3 s per image on average" in text
    plain = text.split("\ndetails:")[0]  # the paper's terms only in the details section
    assert "standard deviation" not in plain and "lambda" not in plain and "\ndetails:" in text
    assert "Costs: the router file's" in text
    assert route["report_dom"].replace("\u2011", "-") == text  # what the page shows is the report
    assert route["report_box"] >= 20 * 14  # twenty lines without scrolling


def test_the_decision_survives_a_new_page_session_and_a_cached_rerun(page):
    t = page["templates"]["1_route_and_generate"]
    decision = by_type(t["after_run"], "CostAwareRouter.Route")[0]["report"]
    assert t["reloaded_workflow"] == "1_route_and_generate"
    assert by_type(t["after_reload"], "CostAwareRouter.Route")[0]["report"] == decision
    assert by_type(t["cleared"], "CostAwareRouter.Route")[0]["report"] == ""
    route_id = str(by_type(t["after_run"], "CostAwareRouter.Route")[0]["id"])
    kinds = [(e["type"], e["node"]) for e in t["cached_events"]]
    assert ("execution_success", None) in kinds and ("executed", route_id) in kinds
    assert any(e["type"] == "execution_cached" and route_id in (e["nodes"] or []) for e in t["cached_events"])
    assert by_type(t["after_cached_run"], "CostAwareRouter.Route")[0]["report"] == decision


def test_every_node_with_something_to_say_draws_it(page):
    from cost_aware_router.reference import demo_safe

    t = page["templates"]["1_route_and_generate"]["after_run"]
    for n in by_type(t, "CostAwareRouter.Candidate"):
        assert re.match(r"[\w.-]+: \S+\.safetensors, \d+ steps, cfg [\d.]+, \w+/\w+; cost: the router file's$",
                        n["report"]), n["report"]
    pool = by_type(t, "CostAwareRouter.CandidatePool")[0]["report"]
    assert pool.startswith("2 checkpoint(s), 5 candidates") and "v1-5-pruned-emaonly.safetensors: " in pool

    t = page["templates"]["3_train_router"]
    _ran(t, "3_train_router")
    train = by_type(t["after_run"], "CostAwareRouter.Train")[0]["report"]
    assert train.startswith("saved my_router.safetensors (3 candidates, 160 prompts"), train

    t = page["templates"]["5_add_candidate"]
    _ran(t, "5_add_candidate")
    anchors = by_type(t["after_run"], "CostAwareRouter.AnchorPrompts")[0]["report"].splitlines()
    assert anchors[0].startswith("128 anchor prompts") and len(anchors) == 129
    assert [p for p in anchors[1:] if not demo_safe(p)] == []  # fit for a public demo
    added = by_type(t["after_run"], "CostAwareRouter.AddCandidate")[0]["report"]
    assert "added 'sd15-25'" in added and "saved default_plus_sd15_25.safetensors" in added

    t = page["templates"]["2_collect_scored_generations"]
    _ran(t, "2_collect_scored_generations")
    measure = by_type(t["after_run"], "CostAwareRouter.MeasureCosts")[0]["report"]
    assert measure.startswith("s/image on this machine, 64x64") and re.search(r"^sd15-25: [\d.]+ s \(25 steps\)$",
                                                                              measure, re.M), measure
    assert by_type(t["after_run"], "CostAwareRouter.SaveScoredGeneration")[0]["report"]
    for state in states(t).values():  # every report box keeps its text inside the node
        for n in state["nodes"]:
            if n["report"] is not None and n["report_box"]:
                assert n["report_box"] > 0


def test_route_score_learn_teaches_a_learnt_copy(page):
    t = page["templates"]["4_route_score_learn"]
    _ran(t, "4_route_score_learn")
    route = by_type(t["after_run"], "CostAwareRouter.Route")[0]["report"]
    chose = re.match(r"chose '(sd15-50|sd21-50)' \([\d.]+ s/image\): ", route)  # the pool's two of my_router's
    assert chose, route
    learnt = by_type(t["after_run"], "CostAwareRouter.Feedback")[0]["report"]
    assert re.match(rf"learnt: '{chose.group(1)}' scored [-\d.e+]+ on this prompt; my_router_learnt\.safetensors "
                    r"now holds 1 scored generation", learnt), learnt


def test_screenshots_are_saved(page):
    out = Path(page["out_dir"])
    expected = ["template_browser.png", "1_route_and_generate_flow.png",
                "1_route_and_generate_router_after_cached_rerun.png"]
    expected += [f"{name}_{when}.png" for name in TEMPLATES for when in ("loaded", "note", "run")]
    for name in expected:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_the_path_from_a_fresh_install_to_routing_with_a_router_trained_here(page):
    """3_train_router: Export Rating Table writes the public table under output (no shell step), Train fits
    my_router on its CLIPScore column and says to press R; after R (refresh node definitions) 4_route_score_learn
    opens without missing models, routes with that router among its candidates and learns the scorer's score."""
    t = page["templates"]["3_train_router"]
    _ran(t, "3_train_router")
    export = by_type(t["after_run"], "CostAwareRouter.ExportTable")[0]["report"]
    assert export.startswith("wrote 480 rows of tifa_160 to output/rating_tables/tifa_160/generations.jsonl"), export
    assert "candidates: sd11-50 1.59 s, sd15-50 1.59 s, sd21-50 3.578 s" in export
    train = by_type(t["after_run"], "CostAwareRouter.Train")[0]["report"]
    assert train.startswith("saved my_router.safetensors (3 candidates, 160 prompts, metric clipscore_vitb32)"), train
    assert train.endswith("press R (refresh node definitions) to see my_router.safetensors in the router lists")
    learn = page["templates"]["4_route_score_learn"]
    assert [d for d in learn["dialogs_after_load"] if WARNING.search(d)] == []  # no "Missing Models: my_router"
    assert page["refreshed"]["4_route_score_learn"]["router_options_have_my_router"]
    _ran(learn, "4_route_score_learn")


def test_a_failed_run_is_an_error_that_names_the_file(page):
    """Training again into my_router without overwrite fails, naming the file and what to do."""
    t = page["templates"]["3_train_router"]
    errors = [e["error"] for e in t["fail_events"] if e["type"] == "execution_error"]
    assert errors and "my_router.safetensors already exists" in errors[0], t["fail_events"]
    assert "switch on overwrite" in errors[0]


def test_a_failed_run_replaces_the_report_with_its_error(page):
    """After that failed run the Train node shows the error, not the report of the run before."""
    t = page["templates"]["3_train_router"]
    before = by_type(t["after_run"], "CostAwareRouter.Train")[0]["report"]
    after = by_type(t["after_fail"], "CostAwareRouter.Train")[0]["report"]
    assert after != before and "my_router.safetensors already exists" in after, after


def test_report_text_fits_its_box(page):
    """What the page draws: a report box never scrolls sideways, and the export and train reports fit their
    boxes without scrolling (the DOM's text size against the box)."""
    for name in TEMPLATES:
        for when, state in states(page["templates"][name]).items():
            for n in state["nodes"]:
                if n.get("report_scroll"):
                    sw, cw, sh, ch = n["report_scroll"]
                    assert sw <= cw + 1, (name, when, n["type"], n["report_scroll"])
                    if n["type"] in ("CostAwareRouter.ExportTable", "CostAwareRouter.Train"):
                        assert sh <= ch + 1, (name, when, n["type"], n["report_scroll"], n["report"])


def test_the_node_search_lists_the_cost_aware_router_first(page):
    """Double click on empty canvas, type "router" (or "cost", "route", "routing"): the Cost-Aware Router is the first
    result, its other nodes after it (the frontend ranks a display name that starts with the query above one
    that has it as a later word, so no other node's display name starts with "Router")."""
    search = page["search"]
    assert search["opened_by"] == "double click", search
    for query in SEARCH_QUERIES:
        assert search["results"][query][:1] == ["Cost-Aware Router"], (query, search["results"][query])
    ours = ["Train Cost-Aware Router", "Candidate Setup (checkpoint + settings)", "Learn from Scores (router feedback)",
            "Anchor Prompts (to add a candidate)"]
    assert set(ours) <= set(search["results"]["router"]), search["results"]["router"]
    data = (Path(page["out_dir"]) / "node_search.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
