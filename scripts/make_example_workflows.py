"""Write example_workflows/*.json (ComfyUI UI format) and their .jpg thumbnails.

    python scripts/make_example_workflows.py

The workflows are built from a compact description so their links and widget values stay
consistent; the end-to-end tests convert them to API format with /object_info and run them, and
tests/comfyui/test_browser.py loads them in the real ComfyUI page, checks that no two nodes overlap
before and after a run and that the frontend keeps the sizes given here.

Layout: every node gets an explicit size at least as large as the one ComfyUI's frontend (1.49.6)
computes for it, report box included (web/cost_aware_router.js gives each report a fixed height,
so a run does not resize a node), and nodes are stacked in columns with gaps. Each workflow opens
with a Markdown note: what it does, what it needs first and what to change on a CPU or a GPU.

Template browser: ComfyUI 1.49.6 shows a custom pack's template by its file name (as the title, and
with '_' as spaces as the description) and reads no title or description for it (an index.json beside
the workflows would be listed as a template of its own). So the file names carry the order of the path a
person walks (1 route, 2 collect, 3 train, 4 learn, 5 add, 6 verify: ``NAMES``), and each thumbnail
carries the title, a one-line description and what to install, in text large enough to read at card
size (the cards are about 240 px square).

One set of labels end to end: 3_train_router exports the public TIFA table (Export Rating Table) and
trains my_router on its CLIPScore column (ViT-B/32, the Quality Scorer's scale with that model);
4_route_score_learn and 6_route_verify_escalate route among two of its candidates (SD 1.5 and SD 2.1,
any subset of a router's candidates routes) and score with a CLIP ViT-B/32 model, so the feedback is on
the router's own scale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "example_workflows"
PROMPT = "a cozy cabin in a snowy forest at dusk, warm light in the windows, detailed illustration"
NO_FORCE = "(none)"  # the Route node's force_candidate when nothing is forced (nodes/route.py NO_FORCE)

TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
GAP_X, GAP_Y = 50, 40

# Sizes (width, height below the title) at least as large as the frontend's computeSize() for each
# node as these workflows configure it, report boxes included; measured in ComfyUI frontend 1.49.6
# by tests/comfyui/test_browser.py, which fails if the frontend draws any node larger than this.
SIZE = {
    "note": (460, 420),
    "candidate": (340, 280),
    "pool": (380, 200),
    "prompt": (360, 200),
    "route": (560, 796),
    "measure": (380, 250),
    "sweep": (400, 490),
    "encode": (340, 110),
    "latent": (340, 120),
    "ksampler": (340, 280),
    "decode": (240, 60),
    "save_image": (420, 460),
    "scorer": (360, 150),
    "save_scored": (400, 480),
    "train": (440, 420),
    "export": (560, 260),
    "preview_image": (560, 420),
    "anchors": (560, 290),
    "add": (560, 350),
    "feedback": (420, 260),
    "plan": (420, 380),
    "verify": (560, 290),
}


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def node(self, type_, pos, widgets=(), inputs=(), outputs=(), size=(320, 120), title=None, color=None):
        """inputs: [(name, type)] sockets, or (name, type, widget_name) for a widget fed by a link."""
        nid = len(self.nodes) + 1
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": nid - 1, "mode": 0,
             "inputs": [{"name": i[0], "type": i[1], "link": None, **({"widget": {"name": i[2]}} if len(i) > 2 else {})}
                        for i in inputs],
             "outputs": [{"name": o[0], "type": o[1], "links": [], "slot_index": k} for k, o in enumerate(outputs)],
             "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if title:
            n["title"] = title
        if color:
            n["color"], n["bgcolor"] = color
        self.nodes.append(n)
        return nid

    def note(self, pos, text, size=SIZE["note"]) -> int:
        """A Markdown note (frontend-only: never sent to the server)."""
        nid = self.node("MarkdownNote", pos, [text], size=size, title="Read me first")
        self.nodes[nid - 1]["properties"] = {}
        return nid

    def link(self, src, src_slot, dst, dst_input):
        lid = len(self.links) + 1
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        slot = next(i for i, x in enumerate(d["inputs"]) if x["name"] == dst_input)
        type_ = s["outputs"][src_slot]["type"]
        s["outputs"][src_slot]["links"].append(lid)
        d["inputs"][slot]["link"] = lid
        self.links.append([lid, src, src_slot, dst, slot, type_])

    def to_json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [40, 60]}},
                "version": 0.4}


class Column:
    """Nodes stacked top to bottom at one x, each below the previous one's body plus a gap and the
    next one's title bar."""

    def __init__(self, x: int, width: int, y: int = 0):
        self.x, self.width, self.y = x, width, y

    def place(self, kind: str) -> tuple[tuple[int, int], tuple[int, int]]:
        w, h = SIZE[kind]
        pos = (self.x, self.y)
        self.y += h + GAP_Y + TITLE_H
        return pos, (w, h)

    @property
    def right(self) -> int:
        return self.x + self.width + GAP_X


def columns(*widths: int, x: int = 0) -> list[Column]:
    out = []
    for w in widths:
        out.append(Column(x, w))
        x = out[-1].right
    return out


PURPLE = ("#323", "#535")
CANDIDATES = [  # the default router's candidates (router_weights/README.md)
    ("sd15-50", "v1-5-pruned-emaonly.safetensors", 50, 7.5, "euler", "normal"),
    ("sd15-10", "v1-5-pruned-emaonly.safetensors", 10, 7.5, "euler", "normal"),
    ("sd15-50-lowcfg", "v1-5-pruned-emaonly.safetensors", 50, 3.0, "euler", "normal"),
    ("sd15-50-highcfg", "v1-5-pruned-emaonly.safetensors", 50, 12.0, "euler", "normal"),
    ("sdxl-50", "sd_xl_base_1.0.safetensors", 50, 7.0, "euler", "normal"),
]
SWEEP_CANDIDATES = [  # your own candidates: a full and a low step count, and SDXL-Turbo
    ("sd15-25", "v1-5-pruned-emaonly.safetensors", 25, 7.5, "euler", "normal"),
    ("sd15-8", "v1-5-pruned-emaonly.safetensors", 8, 7.5, "euler", "normal"),
    ("sdxl-turbo-1", "sd_xl_turbo_1.0_fp16.safetensors", 1, 1.0, "euler_ancestral", "sgm_uniform"),
]
SWEEP_PROMPTS = "\n".join([
    "a lighthouse on a cliff at sunset, oil painting",
    "a close-up photo of a honeybee on a sunflower",
    "an isometric pixel-art city block at night",
    "two astronauts playing chess on the moon, photorealistic",
])
# The route_and_generate budget: a target average cost on the default router's calibration curve
# (router_weights/README.md): about half of always-SDXL's cost.
TARGET_MODE, TARGET_SECONDS = "target average cost (s/image)", 3.0
LEARN_ROUTER = "my_router.safetensors"  # 4_route_score_learn: the router 3_train_router saves
# 3_train_router: the public table it exports and the metric it trains on (tables.PATH_TABLE, PATH_METRIC)
PATH_TABLE, PATH_METRIC = "tifa_160", "clipscore_vitb32"
PATH_SCORER = "clip-vit-base-patch32"  # the CLIP model whose CLIPScore is the table's clipscore_vitb32
PATH_CANDIDATES = [  # two of the TIFA table's candidates (tables.TABLES["tifa_160"]): labels of my_router
    ("sd15-50", "v1-5-pruned-emaonly.safetensors", 50, 7.5, "euler", "normal"),
    ("sd21-50", "v2-1_768-ema-pruned.safetensors", 50, 7.0, "euler", "normal"),
]
# file name (the template browser's title and order) of each workflow
NAMES = {"route_and_generate": "1_route_and_generate", "collect_scored_generations": "2_collect_scored_generations",
         "train_router": "3_train_router", "route_score_learn": "4_route_score_learn",
         "add_candidate": "5_add_candidate", "route_verify_escalate": "6_route_verify_escalate"}

NOTES = {
    "route_and_generate": """\
## 1. Route each prompt to the cheapest good candidate

Five **Candidate Setup** nodes (the default router's: SD 1.5 at 50 and 10 steps, at low and high CFG, and SDXL \
at 50 steps) → **Candidate Pool** → **Cost-Aware Router** → KSampler. For each prompt the router predicts \
every candidate's quality and picks the best trade-off of quality and cost. After a run its choice, every \
candidate's predicted quality and cost, and what the budget means are drawn on the router node.

**Needs first:** `v1-5-pruned-emaonly.safetensors` and `sd_xl_base_1.0.safetensors` in \
`models/checkpoints`. Other checkpoints: pick them in the candidates but keep the labels (the router's names).

**Budget:** this workflow asks for an average of **3 s/image** on the router's A100 costs: about half the \
cost of always using SDXL, for an expected quality of 3.09 instead of 3.30 (AGIQA-3K human ratings, 0-5). \
`router default` (5.46 s/image) gives 3.27, 2 s/image gives 2.99, `best quality` always picks SDXL.

**CPU only:** an image takes minutes. Set `max_cost` to 1.6 to stay on SD 1.5, or to 0.4 for 10 steps only.

**GPU:** nothing to change. SDXL is at its best at 1024×1024 (Empty Latent Image). To route on your own \
machine's costs, measure them (2_collect_scored_generations) and type the seconds into each candidate's `cost`.
""",
    "collect_scored_generations": """\
## 2. Collect scored generations: the data for your own router

Your candidates → Candidate Pool → **Measure Candidate Costs** (seconds per image on this machine) → \
**Candidate Sweep** (every prompt × seed × candidate) → KSampler → **Quality Scorer** → **Save Scored \
Generation**, into `output/scored_generations`. A rerun resumes where it stopped; then train with 3_train_router.

**Needs first**
- `v1-5-pruned-emaonly.safetensors` and `sd_xl_turbo_1.0_fp16.safetensors` in `models/checkpoints` (or your \
own checkpoints in the candidates);
- a CLIP model for the scorer: Hugging Face `openai/clip-vit-large-patch14` (the folder with `config.json`, \
weights, tokenizer and `preprocessor_config.json`) in `models/clip_scorers/clip-vit-large-patch14` (create \
the folder). For PickScore put `yuvalkirstain/PickScore_v1` there and set kind to `pickscore`.

**CPU only:** 4 prompts × 3 candidates take many minutes at 512×512; try 256×256 first (Measure Candidate \
Costs and Empty Latent Image).

**GPU:** add prompts (a useful router needs 100 or more) and raise `seeds` to 2-4.
""",
    "train_router": """\
## 3. Train your own router

**Export Rating Table** writes a public rating table into `output/rating_tables/tifa_160` (TIFA: 160 \
prompts, each made by SD 1.1, 1.5 and 2.1 and scored); **Train Cost-Aware Router** fits a router on its \
`clipscore_vitb32` scores and saves `my_router.safetensors` into `models/router_weights`. The node shows \
what it trained and how well (the file is written only once that succeeded); the preview shows the curve.

**Then:** press **R** (refresh node definitions) so `my_router` shows in the router lists, and open \
**4_route_score_learn**: it routes among my_router's candidates and scores on the same scale.

**Your own data instead:** after 2_collect_scored_generations, delete Export Rating Table and type \
`scored_generations` in `data_folder` and `score` in `metric`; then use the same candidates and scorer in \
4_route_score_learn. A table and a collection mixed in one folder are refused.

**CPU or GPU:** training runs on the CPU, in seconds to a minute.
""",
    "add_candidate": """\
## 5. Add a candidate to a router without retraining

1. **Anchor Prompts** lists the router's anchor prompts (for the default router, 128 prompts chosen \
to be fit for a demo: no real people, drugs or violence).
2. Generate and score the new candidate on them, in the router's metric: the 2_collect_scored_generations \
workflow with the anchor prompts linked into Candidate Sweep's `prompts`, only the new candidate in the \
pool, saving into `new_candidate`.
3. **Add Candidate to Router** reads that folder and saves `default_plus_sd15_25.safetensors`; add the \
candidate with the same label to your pool.

**Needs first:** the folder `new_candidate` from step 2. The default router's metric is human ratings \
(AGIQA-3K perceptual quality, 0-5); a CLIPScore or PickScore is on another scale: for those, train your \
own router (3_train_router).

**CPU or GPU:** adding takes seconds; nothing to change.
""",
    "route_score_learn": """\
## 4. Route, score, and learn from every image

Two of my_router's candidates (SD 1.5 and SD 2.1: a pool may hold any of a router's candidates) → \
Candidate Pool → **Cost-Aware Router** (`my_router`) → KSampler → **Quality Scorer** → **Learn from Scores**. \
Only the chosen candidate is generated and scored; Learn from Scores adds that score to \
`my_router_learnt.safetensors` (made from `my_router` the first time), so the router improves on your own \
prompts without a full sweep. `explore` sends 10% of prompts to the candidate it knows least about here.

**Needs first:** `my_router.safetensors` from **3_train_router** (press R after training so it is listed); \
`v1-5-pruned-emaonly.safetensors` and `v2-1_768-ema-pruned.safetensors` in `models/checkpoints`; Hugging \
Face `openai/clip-vit-base-patch32` in `models/clip_scorers/clip-vit-base-patch32`: its CLIPScore is the \
scale my_router was trained on. A score on another scale would teach it wrong things.

**Then:** pick `my_router_learnt.safetensors` in the router node to route with what it learnt.

**CPU only:** 256×256 (Empty Latent Image). **GPU:** nothing to change.
""",
    "route_verify_escalate": """\
## 6. Verify and escalate: a second try only for a bad image

Top row: **Cost-Aware Router** (`my_router`) → KSampler → **Quality Scorer** → **Escalation Plan**, which asks \
the router's verify-and-escalate policy whether a dearer candidate is expected to add more than its cost. \
Bottom row, run **only** when it is: a second KSampler on the plan's model and settings → decode → scorer. \
**Verify and Escalate** saves the better image; for a kept image the bottom row never runs (its inputs are lazy).

**Needs first:** what 4_route_score_learn needs: `my_router.safetensors` from **3_train_router**, its \
checkpoints and the CLIP ViT-B/32 scorer. Its policy is fitted from the folder it was trained on (20 or \
more prompts scored for every candidate) and switched on only if escalating beat routing alone there; a \
router without it (e.g. the default one) never escalates, and the nodes say so.

**Budget:** the router node's `verify_and_escalate` (advanced) is on, so the budget counts escalations.

**Learn from both images:** link Verify and Escalate's `scored` into Learn from Scores' `scored`.

**CPU only:** 256×256 (Empty Latent Image). **GPU:** nothing to change.
""",
}


def candidate_chain(g: Graph, col: Column, candidates) -> int:
    prev = None
    for label, ckpt, steps, cfg, sampler, scheduler in candidates:
        pos, size = col.place("candidate")
        nid = g.node("CostAwareRouter.Candidate", pos, [label, ckpt, steps, cfg, sampler, scheduler, 0.0],
                     inputs=[("candidates", "COST_AWARE_CANDIDATES")],
                     outputs=[("candidates", "COST_AWARE_CANDIDATES")], size=size, color=PURPLE)
        if prev:
            g.link(prev, 0, nid, "candidates")
        prev = nid
    return prev


def pool_node(g: Graph, col: Column) -> int:
    pos, size = col.place("pool")
    return g.node("CostAwareRouter.CandidatePool", pos, ["load on first use", 0],
                  inputs=[("candidates", "COST_AWARE_CANDIDATES")], outputs=[("pool", "COST_AWARE_POOL")],
                  size=size, color=PURPLE)


def encoders(g: Graph, col: Column, positive: str, negative: str, size_px: int) -> tuple[int, int, int]:
    p, s = col.place("encode")
    pos = g.node("CLIPTextEncode", p, [positive], inputs=[("clip", "CLIP"), ("text", "STRING", "text")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=s, title="Positive")
    p, s = col.place("encode")
    neg = g.node("CLIPTextEncode", p, [negative], inputs=[("clip", "CLIP")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=s, title="Negative")
    p, s = col.place("latent")
    latent = g.node("EmptyLatentImage", p, [size_px, size_px, 1], outputs=[("LATENT", "LATENT")], size=s)
    return pos, neg, latent


ROUTE_OUTPUTS = [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("steps", "INT"), ("cfg", "FLOAT"),
                 ("sampler_name", "COMBO"), ("scheduler", "COMBO"), ("label", "STRING"), ("explanation", "STRING"),
                 ("route", "COST_AWARE_ROUTE")]
KSAMPLER_INPUTS = [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                   ("latent_image", "LATENT"), ("steps", "INT", "steps"), ("cfg", "FLOAT", "cfg"),
                   ("sampler_name", "COMBO", "sampler_name"), ("scheduler", "COMBO", "scheduler")]
SETTINGS = ((3, "steps"), (4, "cfg"), (5, "sampler_name"), (6, "scheduler"))  # the same slots on Route and Plan


def routed_generation(g: Graph, cols: list[Column], candidates, route_widgets: list, save_prefix: str | None
                      ) -> tuple[int, int, int]:
    """Candidates -> pool -> Cost-Aware Router (fed by a Prompt node) -> KSampler -> VAEDecode -> SaveImage
    (none without ``save_prefix``), in columns (candidates, pool, router, encoders, KSampler, output).
    Returns (prompt, router, decode)."""
    c_cand, c_pool, c_route, c_enc, c_ks, c_out = cols
    last = candidate_chain(g, c_cand, candidates)
    pool = pool_node(g, c_pool)
    g.link(last, 0, pool, "candidates")
    p, s = c_pool.place("prompt")
    text = g.node("PrimitiveStringMultiline", p, [PROMPT], outputs=[("STRING", "STRING")], size=s, title="Prompt")
    p, s = c_route.place("route")
    router = g.node("CostAwareRouter.Route", p, [PROMPT, *route_widgets],
                    inputs=[("pool", "COST_AWARE_POOL"), ("prompt", "STRING", "prompt")],
                    outputs=ROUTE_OUTPUTS, size=s, color=PURPLE)
    g.link(pool, 0, router, "pool")
    g.link(text, 0, router, "prompt")
    pos, neg, latent = encoders(g, c_enc, PROMPT, "blurry, low quality, watermark", 512)
    dec = sampled(g, c_ks, c_out, router, text, pos, neg, latent)
    if save_prefix is not None:
        p, s = c_out.place("save_image")
        save = g.node("SaveImage", p, [save_prefix], inputs=[("images", "IMAGE")], size=s)
        g.link(dec, 0, save, "images")
    return text, router, dec


def sampled(g: Graph, c_ks: Column, c_out: Column, source: int, text: int, pos: int, neg: int, latent: int) -> int:
    """KSampler -> VAEDecode on the model, CLIP, VAE and settings of ``source`` (a Route or Escalation Plan
    node: the same output slots); returns the decode node."""
    p, s = c_ks.place("ksampler")
    ks = g.node("KSampler", p, [42, "fixed", 20, 7.0, "euler", "normal", 1.0], inputs=KSAMPLER_INPUTS,
                outputs=[("LATENT", "LATENT")], size=s)
    p, s = c_out.place("decode")
    dec = g.node("VAEDecode", p, inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")], size=s)
    g.link(source, 0, ks, "model")
    g.link(source, 1, pos, "clip")
    g.link(source, 1, neg, "clip")
    g.link(text, 0, pos, "text")
    g.link(pos, 0, ks, "positive")
    g.link(neg, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    for slot, name in SETTINGS:
        g.link(source, slot, ks, name)
    g.link(ks, 0, dec, "samples")
    g.link(source, 2, dec, "vae")
    return dec


ROUTE_COLUMNS = ("candidate", "pool", "route", "encode", "ksampler", "save_image")


def scorer_node(g: Graph, col: Column, model: str = "clip-vit-large-patch14") -> int:
    """A Quality Scorer (its image and prompt linked by the caller)."""
    p, s = col.place("scorer")
    return g.node("CostAwareRouter.QualityScorer", p, ["", model, "clipscore"],
                  inputs=[("image", "IMAGE"), ("prompt", "STRING", "prompt")], outputs=[("score", "FLOAT")],
                  size=s, color=PURPLE)


def route_and_generate() -> dict:
    g = Graph()
    c_note, *cols = columns(SIZE["note"][0], *(SIZE[k][0] for k in ROUTE_COLUMNS))
    g.note(c_note.place("note")[0], NOTES["route_and_generate"])
    routed_generation(g, cols, CANDIDATES,
                      ["default.safetensors", TARGET_MODE, TARGET_SECONDS, 0.0, NO_FORCE, True, 0.0, False, False],
                      "routed")
    return g.to_json()


def train_router() -> dict:
    """Export Rating Table (a public table, no shell step) -> Train Cost-Aware Router on the table's CLIPScore
    column -> the curve. Export's folder feeds Train's data_folder, so the two run in order."""
    g = Graph()
    c_note, c_export, c_train, c_curve = columns(SIZE["note"][0], SIZE["export"][0], SIZE["train"][0],
                                                 SIZE["preview_image"][0])
    g.note(c_note.place("note")[0], NOTES["train_router"])
    p, s = c_export.place("export")
    export = g.node("CostAwareRouter.ExportTable", p, [PATH_TABLE, "rating_tables", False],
                    outputs=[("data_folder", "STRING"), ("report", "STRING")], size=s, color=PURPLE)
    p, s = c_train.place("train")
    train = g.node("CostAwareRouter.Train", p, ["rating_tables/tifa_160", "knn", PATH_METRIC, "my_router", False,
                                                False],
                   inputs=[("data_folder", "STRING", "data_folder")],
                   outputs=[("router_name", "STRING"), ("report", "STRING"), ("deferral_curve", "IMAGE")],
                   size=s, color=PURPLE)
    g.link(export, 0, train, "data_folder")
    p, s = c_curve.place("preview_image")
    curve = g.node("PreviewImage", p, inputs=[("images", "IMAGE")], size=s, title="Cost-quality curve")
    g.link(train, 2, curve, "images")
    return g.to_json()


def add_candidate() -> dict:
    """The default router's anchor prompts (to generate and score the new candidate on, e.g. with the
    collect workflow's sweep), and the node that adds the scored candidate without retraining."""
    g = Graph()
    c_note, c_nodes = columns(SIZE["note"][0], SIZE["anchors"][0])
    g.note(c_note.place("note")[0], NOTES["add_candidate"])
    p, s = c_nodes.place("anchors")
    g.node("CostAwareRouter.AnchorPrompts", p, ["default.safetensors"],
           outputs=[("prompts", "STRING"), ("count", "INT")], size=s, color=PURPLE)
    p, s = c_nodes.place("add")
    g.node("CostAwareRouter.AddCandidate", p,
           ["default.safetensors", "new_candidate", "sd15-25", "score", -1.0, "default_plus_sd15_25", False],
           outputs=[("router_name", "STRING"), ("report", "STRING")], size=s, color=PURPLE)
    return g.to_json()


def collect_scored_generations() -> dict:
    g = Graph()
    c_note, c_cand, c_pool, c_sweep, c_enc, c_ks, c_score, c_save = columns(
        SIZE["note"][0], SIZE["candidate"][0], SIZE["measure"][0], SIZE["sweep"][0], SIZE["encode"][0],
        SIZE["ksampler"][0], SIZE["scorer"][0], SIZE["save_scored"][0])
    g.note(c_note.place("note")[0], NOTES["collect_scored_generations"])
    last = candidate_chain(g, c_cand, SWEEP_CANDIDATES)
    pool = pool_node(g, c_pool)
    p, s = c_pool.place("measure")
    measure = g.node("CostAwareRouter.MeasureCosts", p, [512, 512, 1],
                     inputs=[("pool", "COST_AWARE_POOL")], outputs=[("pool", "COST_AWARE_POOL"), ("report", "STRING")],
                     size=s, color=PURPLE)
    p, s = c_sweep.place("sweep")
    sweep = g.node("CostAwareRouter.CandidateSweep", p, [SWEEP_PROMPTS, "", 1, 0, "scored_generations", 1, 1],
                   inputs=[("pool", "COST_AWARE_POOL")],
                   outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("prompt", "STRING"),
                            ("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
                            ("scheduler", "COMBO"), ("job", "COST_AWARE_JOB")], size=s, color=PURPLE)
    pos, neg, latent = encoders(g, c_enc, "", "blurry, low quality", 512)
    p, s = c_ks.place("ksampler")
    ks = g.node("KSampler", p, [0, "fixed", 20, 7.0, "euler", "normal", 1.0],
                inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("latent_image", "LATENT"), ("seed", "INT", "seed"), ("steps", "INT", "steps"),
                        ("cfg", "FLOAT", "cfg"), ("sampler_name", "COMBO", "sampler_name"),
                        ("scheduler", "COMBO", "scheduler")], outputs=[("LATENT", "LATENT")], size=s)
    p, s = c_score.place("decode")
    dec = g.node("VAEDecode", p, inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")], size=s)
    score = scorer_node(g, c_score)
    p, s = c_save.place("save_scored")
    save = g.node("CostAwareRouter.SaveScoredGeneration", p, ["scored_generations", "clipscore"],
                  inputs=[("images", "IMAGE"), ("job", "COST_AWARE_JOB"), ("score", "FLOAT")], size=s, color=PURPLE)
    g.link(last, 0, pool, "candidates")
    g.link(pool, 0, measure, "pool")
    g.link(measure, 0, sweep, "pool")
    g.link(sweep, 1, pos, "clip")
    g.link(sweep, 1, neg, "clip")
    g.link(sweep, 3, pos, "text")
    g.link(sweep, 0, ks, "model")
    g.link(pos, 0, ks, "positive")
    g.link(neg, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    for slot, name in ((4, "seed"), (5, "steps"), (6, "cfg"), (7, "sampler_name"), (8, "scheduler")):
        g.link(sweep, slot, ks, name)
    g.link(ks, 0, dec, "samples")
    g.link(sweep, 2, dec, "vae")
    g.link(dec, 0, score, "image")
    g.link(sweep, 3, score, "prompt")
    g.link(dec, 0, save, "images")
    g.link(sweep, 9, save, "job")
    g.link(score, 0, save, "score")
    return g.to_json()


def route_score_learn() -> dict:
    """Route with your own router, generate, score the image, and teach the router that score."""
    g = Graph()
    c_note, *cols, c_learn = columns(SIZE["note"][0], *(SIZE[k][0] for k in ROUTE_COLUMNS), SIZE["feedback"][0])
    g.note(c_note.place("note")[0], NOTES["route_score_learn"])
    text, router, dec = routed_generation(g, cols, PATH_CANDIDATES,
                                          [LEARN_ROUTER, "router default", 0.0, 0.0, NO_FORCE, True, 0.1, False, False],
                                          "routed_learn")
    score = scorer_node(g, c_learn, PATH_SCORER)
    p, s = c_learn.place("feedback")
    learn = g.node("CostAwareRouter.Feedback", p, [LEARN_ROUTER, "my_router_learnt"],
                   inputs=[("prompt", "STRING"), ("label", "STRING"), ("score", "FLOAT"),
                           ("scored", "COST_AWARE_SCORED")],
                   outputs=[("router_name", "STRING"), ("report", "STRING")], size=s, color=PURPLE)
    g.link(dec, 0, score, "image")
    g.link(text, 0, score, "prompt")
    g.link(text, 0, learn, "prompt")
    g.link(router, 7, learn, "label")
    g.link(score, 0, learn, "score")
    return g.to_json()


def route_verify_escalate() -> dict:
    """Route, generate and score (top row); Escalation Plan; the dear branch (bottom row: a second KSampler on
    the plan's model, decode, scorer), which Verify and Escalate's lazy inputs run only on an escalation."""
    g = Graph()
    c_note, *cols, c_verify, c_save = columns(SIZE["note"][0], *(SIZE[k][0] for k in ROUTE_COLUMNS[:-1]),
                                               SIZE["scorer"][0], SIZE["verify"][0], SIZE["save_image"][0])
    c_route, c_enc, c_ks, c_out = cols[2:]
    g.note(c_note.place("note")[0], NOTES["route_verify_escalate"])
    text, router, dec = routed_generation(g, cols, PATH_CANDIDATES,
                                          [LEARN_ROUTER, "router default", 0.0, 0.0, NO_FORCE, True, 0.0, False, True],
                                          None)
    first_score = scorer_node(g, c_out, PATH_SCORER)
    p, s = c_route.place("plan")
    plan = g.node("CostAwareRouter.EscalationPlan", p, inputs=[("route", "COST_AWARE_ROUTE"), ("first_score", "FLOAT")],
                  outputs=[*ROUTE_OUTPUTS[:8], ("escalate", "BOOLEAN"), ("escalation", "COST_AWARE_ESCALATION"),
                           ("report", "STRING")], size=s, color=PURPLE)
    # the bottom row starts below the router and the plan, so the two rows read apart
    for col in (c_enc, c_ks, c_out):
        col.y = max(col.y, c_route.y - SIZE["plan"][1] - GAP_Y - TITLE_H)
    p, s = c_enc.place("encode")
    pos = g.node("CLIPTextEncode", p, [PROMPT], inputs=[("clip", "CLIP"), ("text", "STRING", "text")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=s, title="Positive (escalation)")
    p, s = c_enc.place("encode")
    neg = g.node("CLIPTextEncode", p, ["blurry, low quality, watermark"], inputs=[("clip", "CLIP")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=s, title="Negative (escalation)")
    latent = next(n["id"] for n in g.nodes if n["type"] == "EmptyLatentImage")
    dear = sampled(g, c_ks, c_out, plan, text, pos, neg, latent)
    dear_score = scorer_node(g, c_out, PATH_SCORER)
    p, s = c_verify.place("verify")
    verify = g.node("CostAwareRouter.VerifyEscalate", p,
                    inputs=[("escalation", "COST_AWARE_ESCALATION"), ("first_image", "IMAGE"), ("dear_image", "IMAGE"),
                            ("dear_score", "FLOAT")],
                    outputs=[("image", "IMAGE"), ("label", "STRING"), ("score", "FLOAT"),
                             ("scored", "COST_AWARE_SCORED"), ("report", "STRING")], size=s, color=PURPLE)
    p, s = c_save.place("save_image")
    save = g.node("SaveImage", p, ["verified"], inputs=[("images", "IMAGE")], size=s)
    for src, dst in ((dec, first_score), (dear, dear_score)):
        g.link(src, 0, dst, "image")
        g.link(text, 0, dst, "prompt")
    g.link(router, 9, plan, "route")
    g.link(first_score, 0, plan, "first_score")
    g.link(plan, 9, verify, "escalation")
    g.link(dec, 0, verify, "first_image")
    g.link(dear, 0, verify, "dear_image")
    g.link(dear_score, 0, verify, "dear_score")
    g.link(verify, 0, save, "images")
    return g.to_json()


# -- thumbnails -------------------------------------------------------------------------------------
# (title, one-line description, the flow in three steps, what to install first)
CARDS = {
    "route_and_generate": ("Route and generate", "Picks the cheapest candidate that still gives a good image "
                           "for each prompt, then generates it.",
                           ("5 candidates", "router picks one", "image"),
                           "Needs: SD 1.5 + SDXL checkpoints"),
    "collect_scored_generations": ("Collect scored generations", "Times and scores your candidates on your "
                                   "prompts: the data to train your own router.",
                                   ("your candidates", "sweep, score", "save to a folder"),
                                   "Needs: a CLIP model in models/clip_scorers"),
    "train_router": ("Train a router", "Exports a public rating table (or takes your scored generations), fits "
                     "a router and draws its curve.", ("rating table", "train", "my_router"),
                     "Needs: nothing (exports a public table)"),
    "add_candidate": ("Add a candidate", "Adds a new checkpoint or step count to a router without "
                      "retraining.", ("anchor prompts", "score new one", "router + 1"),
                      "Needs: the new candidate's scores"),
    "route_score_learn": ("Route, score, learn", "Scores each routed image and teaches the router that score.",
                          ("route", "generate, score", "learn"),
                          "Needs: my_router (3), CLIP ViT-B/32"),
    "route_verify_escalate": ("Verify and escalate", "Scores the routed image; only a bad one is made again "
                              "with a dearer candidate.",
                              ("route, generate", "score, verify", "keep or escalate"),
                              "Needs: my_router (3), CLIP ViT-B/32"),
}


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    for name in (("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"),
                 "/usr/share/fonts/truetype/dejavu/" + ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def thumbnail(name: str, path: Path) -> None:
    """A 600 x 600 card (the template browser shows it about 240 px square): the pack, a large title,
    what the workflow does, its flow in three boxes and what to install first."""
    from PIL import Image, ImageDraw

    title, blurb, flow, needs = CARDS[name]
    title = f"{NAMES[name].split('_')[0]}. {title}"  # its place on the path, as in the file name
    W = H = 600
    img = Image.new("RGB", (W, H), (30, 32, 38))
    d = ImageDraw.Draw(img)
    # the pack's name in a band at the bottom
    d.rectangle([0, H - 56, W, H], fill=(83, 51, 83))
    d.text((32, H - 46), "Cost-Aware Router", font=_font(30, bold=True), fill=(245, 225, 245))
    y = 100  # below the "Node graph" badge the browser draws over the top-left corner
    for line in _wrap(d, title, _font(50, bold=True), W - 64):
        d.text((32, y), line, font=_font(50, bold=True), fill=(255, 255, 255))
        y += 58
    y += 8
    for line in _wrap(d, blurb, _font(28), W - 64):
        d.text((32, y), line, font=_font(28), fill=(210, 214, 222))
        y += 37
    # from the bottom up: what to install, above it the flow in three boxes with arrows
    fn = _font(28, bold=True)
    needs_lines = _wrap(d, needs, fn, W - 64)
    ny = H - 56 - 18 - 36 * len(needs_lines)
    for i, line in enumerate(needs_lines):
        d.text((32, ny + 36 * i), line, font=fn, fill=(250, 214, 120))
    box_w, box_h, gap = 172, 90, 14
    x0 = (W - 3 * box_w - 2 * gap) // 2
    by = ny - 22 - box_h
    assert by >= y, f"thumbnail of {name}: the text does not fit"
    f = _font(25, bold=True)
    for i, label in enumerate(flow):
        x = x0 + i * (box_w + gap)
        d.rounded_rectangle([x, by, x + box_w, by + box_h], radius=14, fill=(83, 51, 83) if i == 1 else (58, 62, 72),
                            outline=(200, 200, 210), width=2)
        lines = _wrap(d, label, f, box_w - 16)
        ty = by + (box_h - 30 * len(lines)) // 2
        for line in lines:
            d.text((x + (box_w - d.textlength(line, font=f)) / 2, ty), line, font=f, fill=(255, 255, 255))
            ty += 30
        if i < 2:
            ax = x + box_w + 2
            d.polygon([(ax, by + box_h / 2 - 8), (ax + gap - 4, by + box_h / 2), (ax, by + box_h / 2 + 8)],
                      fill=(230, 230, 235))
    img.save(path, "JPEG", quality=92)


BUILDERS = {"route_and_generate": route_and_generate, "train_router": train_router,
            "collect_scored_generations": collect_scored_generations, "add_candidate": add_candidate,
            "route_score_learn": route_score_learn, "route_verify_escalate": route_verify_escalate}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    keep = {f"{NAMES[n]}{ext}" for n in BUILDERS for ext in (".json", ".jpg")}
    for old in [*OUT.glob("*.json"), *OUT.glob("*.jpg")]:  # a renamed workflow's old files
        if old.name not in keep:
            old.unlink()
    for name, build in BUILDERS.items():
        wf = build()
        (OUT / f"{NAMES[name]}.json").write_text(json.dumps(wf, indent=1) + "\n", encoding="utf-8")
        thumbnail(name, OUT / f"{NAMES[name]}.jpg")
        print(f"wrote {OUT / NAMES[name]}.json/.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
