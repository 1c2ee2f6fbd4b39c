"""Write example_workflows/*.json (ComfyUI UI format) and their .jpg thumbnails.

    python scripts/make_example_workflows.py

The workflows are built from a compact description so their links and widget values stay
consistent; the end-to-end tests convert them to API format with /object_info and run them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "example_workflows"
PROMPT = "a cozy cabin in a snowy forest at dusk, warm light in the windows, detailed illustration"


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
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


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


def candidate_chain(g: Graph, x: int, y: int, candidates) -> int:
    prev = None
    for i, (label, ckpt, steps, cfg, sampler, scheduler) in enumerate(candidates):
        nid = g.node("CostAwareRouter.Candidate", (x, y + i * 250), [label, ckpt, steps, cfg, sampler, scheduler, 0.0],
                     inputs=[("candidates", "COST_AWARE_CANDIDATES")],
                     outputs=[("candidates", "COST_AWARE_CANDIDATES")], size=(330, 230), color=PURPLE)
        if prev:
            g.link(prev, 0, nid, "candidates")
        prev = nid
    return prev


def route_and_generate() -> dict:
    g = Graph()
    last = candidate_chain(g, 0, 0, CANDIDATES)
    pool = g.node("CostAwareRouter.CandidatePool", (380, 0), ["load on first use", 0],
                  inputs=[("candidates", "COST_AWARE_CANDIDATES")], outputs=[("pool", "COST_AWARE_POOL")],
                  size=(330, 110), color=PURPLE)
    g.link(last, 0, pool, "candidates")
    text = g.node("PrimitiveStringMultiline", (380, 160), [PROMPT], outputs=[("STRING", "STRING")], size=(330, 150),
                  title="Prompt")
    router = g.node("CostAwareRouter.Route", (760, 0), [PROMPT, "default.safetensors", "router default", 1.0, 0.0, ""],
                    inputs=[("pool", "COST_AWARE_POOL"), ("prompt", "STRING", "prompt")],
                    outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("steps", "INT"), ("cfg", "FLOAT"),
                             ("sampler_name", "COMBO"), ("scheduler", "COMBO"), ("label", "STRING"),
                             ("explanation", "STRING")], size=(340, 330), color=PURPLE)
    g.link(pool, 0, router, "pool")
    g.link(text, 0, router, "prompt")
    pos = g.node("CLIPTextEncode", (1150, 0), [PROMPT], inputs=[("clip", "CLIP"), ("text", "STRING", "text")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=(300, 100), title="Positive")
    neg = g.node("CLIPTextEncode", (1150, 150), ["blurry, low quality, watermark"], inputs=[("clip", "CLIP")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=(300, 100), title="Negative")
    latent = g.node("EmptyLatentImage", (1150, 300), [512, 512, 1], outputs=[("LATENT", "LATENT")], size=(300, 110))
    ks = g.node("KSampler", (1500, 0), [42, "fixed", 20, 7.0, "euler", "normal", 1.0],
                inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("latent_image", "LATENT"), ("steps", "INT", "steps"), ("cfg", "FLOAT", "cfg"),
                        ("sampler_name", "COMBO", "sampler_name"), ("scheduler", "COMBO", "scheduler")],
                outputs=[("LATENT", "LATENT")], size=(300, 270))
    dec = g.node("VAEDecode", (1850, 0), inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")],
                 size=(210, 50))
    save = g.node("SaveImage", (1850, 100), ["routed"], inputs=[("images", "IMAGE")], size=(320, 330))
    show = g.node("PreviewAny", (760, 380), inputs=[("source", "*")], outputs=[("STRING", "STRING")], size=(520, 260),
                  title="Why this candidate")
    g.link(router, 0, ks, "model")
    g.link(router, 1, pos, "clip")
    g.link(router, 1, neg, "clip")
    g.link(text, 0, pos, "text")
    g.link(pos, 0, ks, "positive")
    g.link(neg, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    for slot, name in ((3, "steps"), (4, "cfg"), (5, "sampler_name"), (6, "scheduler")):
        g.link(router, slot, ks, name)
    g.link(ks, 0, dec, "samples")
    g.link(router, 2, dec, "vae")
    g.link(dec, 0, save, "images")
    g.link(router, 8, show, "source")
    return g.to_json()


def train_router() -> dict:
    g = Graph()
    train = g.node("CostAwareRouter.Train", (0, 0), ["scored_generations", "knn", "score", "my_router", False, False],
                   outputs=[("router_name", "STRING"), ("report", "STRING"), ("deferral_curve", "IMAGE")],
                   size=(360, 250), color=PURPLE)
    report = g.node("PreviewAny", (420, 0), inputs=[("source", "*")], outputs=[("STRING", "STRING")], size=(460, 240),
                    title="Training report")
    curve = g.node("PreviewImage", (420, 290), inputs=[("images", "IMAGE")], size=(520, 400), title="Deferral curve")
    g.link(train, 1, report, "source")
    g.link(train, 2, curve, "images")
    return g.to_json()


def add_candidate() -> dict:
    """The default router's anchor prompts (to generate and score the new candidate on, e.g. with the
    collect workflow's sweep), and the node that adds the scored candidate without retraining."""
    g = Graph()
    anchors = g.node("CostAwareRouter.AnchorPrompts", (0, 0), ["default.safetensors"],
                     outputs=[("prompts", "STRING"), ("count", "INT")], size=(330, 90), color=PURPLE)
    shown = g.node("PreviewAny", (380, 0), inputs=[("source", "*")], outputs=[("STRING", "STRING")], size=(460, 240),
                   title="Anchor prompts: generate and score the new candidate on these")
    add = g.node("CostAwareRouter.AddCandidate", (0, 300),
                 ["default.safetensors", "new_candidate", "sd15-25", "score", -1.0, "default_plus_sd15_25", False],
                 outputs=[("router_name", "STRING"), ("report", "STRING")], size=(330, 250), color=PURPLE)
    report = g.node("PreviewAny", (380, 300), inputs=[("source", "*")], outputs=[("STRING", "STRING")],
                    size=(460, 200), title="How the candidate was added")
    g.link(anchors, 0, shown, "source")
    g.link(add, 1, report, "source")
    return g.to_json()


def collect_scored_generations() -> dict:
    g = Graph()
    last = candidate_chain(g, 0, 0, SWEEP_CANDIDATES)
    pool = g.node("CostAwareRouter.CandidatePool", (380, 0), ["load on first use", 0],
                  inputs=[("candidates", "COST_AWARE_CANDIDATES")], outputs=[("pool", "COST_AWARE_POOL")],
                  size=(330, 110), color=PURPLE)
    measure = g.node("CostAwareRouter.MeasureCosts", (380, 160), [512, 512, 2],
                     inputs=[("pool", "COST_AWARE_POOL")], outputs=[("pool", "COST_AWARE_POOL"), ("report", "STRING")],
                     size=(330, 150), color=PURPLE)
    sweep = g.node("CostAwareRouter.CandidateSweep", (760, 0), [SWEEP_PROMPTS, "", 2, 0, "scored_generations"],
                   inputs=[("pool", "COST_AWARE_POOL")],
                   outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("prompt", "STRING"),
                            ("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
                            ("scheduler", "COMBO"), ("job", "COST_AWARE_JOB")], size=(360, 380), color=PURPLE)
    pos = g.node("CLIPTextEncode", (1170, 0), [""], inputs=[("clip", "CLIP"), ("text", "STRING", "text")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=(300, 100), title="Positive")
    neg = g.node("CLIPTextEncode", (1170, 150), ["blurry, low quality"], inputs=[("clip", "CLIP")],
                 outputs=[("CONDITIONING", "CONDITIONING")], size=(300, 100), title="Negative")
    latent = g.node("EmptyLatentImage", (1170, 300), [512, 512, 1], outputs=[("LATENT", "LATENT")], size=(300, 110))
    ks = g.node("KSampler", (1520, 0), [0, "fixed", 20, 7.0, "euler", "normal", 1.0],
                inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("latent_image", "LATENT"), ("seed", "INT", "seed"), ("steps", "INT", "steps"),
                        ("cfg", "FLOAT", "cfg"), ("sampler_name", "COMBO", "sampler_name"),
                        ("scheduler", "COMBO", "scheduler")], outputs=[("LATENT", "LATENT")], size=(300, 270))
    dec = g.node("VAEDecode", (1870, 0), inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")],
                 size=(210, 50))
    score = g.node("CostAwareRouter.QualityScorer", (1870, 100), ["", "clip-vit-large-patch14", "clipscore"],
                   inputs=[("image", "IMAGE"), ("prompt", "STRING", "prompt")], outputs=[("score", "FLOAT")],
                   size=(330, 170), color=PURPLE)
    save = g.node("CostAwareRouter.SaveScoredGeneration", (2240, 0), ["scored_generations", "clipscore"],
                  inputs=[("images", "IMAGE"), ("job", "COST_AWARE_JOB"), ("score", "FLOAT")], size=(330, 330),
                  color=PURPLE)
    show = g.node("PreviewAny", (380, 360), inputs=[("source", "*")], outputs=[("STRING", "STRING")], size=(330, 160),
                  title="Measured costs")
    g.link(last, 0, pool, "candidates")
    g.link(pool, 0, measure, "pool")
    g.link(measure, 0, sweep, "pool")
    g.link(measure, 1, show, "source")
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


def thumbnail(wf: dict, path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    xs = [n["pos"][0] for n in wf["nodes"]] + [n["pos"][0] + n["size"][0] for n in wf["nodes"]]
    ys = [n["pos"][1] for n in wf["nodes"]] + [n["pos"][1] + n["size"][1] for n in wf["nodes"]]
    W, H = 640, 400
    sx = (W - 40) / (max(xs) - min(xs))
    sy = (H - 70) / (max(ys) - min(ys))
    s = min(sx, sy)

    def P(x, y):
        return 20 + (x - min(xs)) * s, 50 + (y - min(ys)) * s

    img = Image.new("RGB", (W, H), (32, 32, 36))
    d = ImageDraw.Draw(img)
    d.text((20, 16), title, fill=(235, 235, 235))
    byid = {n["id"]: n for n in wf["nodes"]}
    for _, a, _, b, _, _ in wf["links"]:
        na, nb = byid[a], byid[b]
        d.line([P(na["pos"][0] + na["size"][0], na["pos"][1] + 15), P(nb["pos"][0], nb["pos"][1] + 15)],
               fill=(120, 160, 220), width=2)
    for n in wf["nodes"]:
        x0, y0 = P(*n["pos"])
        x1, y1 = P(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        ours = n["type"].startswith("CostAwareRouter")
        d.rectangle([x0, y0, x1, y1], fill=(83, 51, 83) if ours else (53, 53, 60), outline=(200, 200, 200))
        d.text((x0 + 4, y0 + 3), (n.get("title") or n["type"].replace("CostAwareRouter.", ""))[:24], fill="white")
    img.save(path, "JPEG", quality=90)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, build, title in (("route_and_generate", route_and_generate, "Cost-Aware Router: route and generate"),
                               ("train_router", train_router, "Cost-Aware Router: train from scored generations"),
                               ("collect_scored_generations", collect_scored_generations,
                                "Cost-Aware Router: collect scored generations"),
                               ("add_candidate", add_candidate,
                                "Cost-Aware Router: add a candidate without retraining")):
        wf = build()
        (OUT / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n", encoding="utf-8")
        thumbnail(wf, OUT / f"{name}.jpg", title)
        print(f"wrote {OUT / name}.json/.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
