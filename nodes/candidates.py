"""One node per candidate, chained: label, checkpoint, steps, cfg, sampler, scheduler, optional cost."""

from __future__ import annotations

import comfy.samplers
import folder_paths
from comfy_api.latest import io, ui

from .common import CATEGORY, NODE_PREFIX, Candidates


def describe(c: dict) -> str:
    cost = f", {c['cost']:g} s/image" if c.get("cost") else ""
    return (f"{c['label']}: {c['checkpoint']}, {c['steps']} steps, cfg {c['cfg']:g}, "
            f"{c['sampler']}/{c['scheduler']}{cost}")


class CandidateNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.Candidate",
            display_name="Router Candidate",
            category=CATEGORY,
            description="Declares one candidate the router may choose: a checkpoint with its sampling settings. "
                        "Chain several into a Candidate Pool; several may share a checkpoint at different step counts.",
            inputs=[
                io.String.Input("label", default="sd15-50",
                                tooltip="Name of this candidate. Must match a candidate name in the router file."),
                io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"),
                               tooltip="Checkpoint this candidate samples with (from the checkpoints folder)."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps for this candidate."),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale for this candidate."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler for this candidate."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Scheduler for this candidate."),
                io.Float.Input("cost", default=0.0, min=0.0, max=100000.0, step=0.01,
                               tooltip="Seconds per image on your machine. 0 = the router file's cost."),
                Candidates.Input("candidates", optional=True,
                                 tooltip="Candidates declared so far (chain Router Candidate nodes)."),
            ],
            outputs=[Candidates.Output("candidates", display_name="candidates",
                                       tooltip="The chain of candidates including this one.")],
        )

    @classmethod
    def execute(cls, label, ckpt_name, steps, cfg, sampler_name, scheduler, cost, candidates=None) -> io.NodeOutput:
        label = label.strip()
        if not label:
            raise ValueError("Router Candidate: label is empty")
        chain = list(candidates or [])
        if any(c["label"] == label for c in chain):
            raise ValueError(f"Router Candidate: label '{label}' is used twice in the chain")
        chain.append({"label": label, "checkpoint": ckpt_name, "steps": int(steps), "cfg": float(cfg),
                      "sampler": sampler_name, "scheduler": scheduler, "cost": float(cost) or None})
        return io.NodeOutput(chain, ui=ui.PreviewText(describe(chain[-1])))
