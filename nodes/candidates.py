"""One node per candidate, chained: label, checkpoint, steps, cfg, sampler, scheduler, optional cost."""

from __future__ import annotations

import comfy.samplers
import folder_paths
from comfy_api.latest import io, ui

from ..cost_aware_router.pool import candidate_entry, chain_candidates, default_label, describe
from .schema import CATEGORY, KEEP_REPORT, NODE_PREFIX, Candidates


class CandidateNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.Candidate",
            display_name="Candidate Setup (checkpoint + settings)",
            search_aliases=["router candidate"],  # its name before; see SEARCH_ALIASES in route.py
            category=CATEGORY,
            description="Declares one candidate the router may choose: a checkpoint with its sampling settings. "
                        "Chain several into a Candidate Pool; several may share a checkpoint at different step counts.",
            **KEEP_REPORT,
            inputs=[
                io.String.Input("label", default="",
                                tooltip="Name of this candidate; it must match a candidate name in the router file "
                                        "you route with. Empty = named by its settings (checkpoint-steps-cfg-"
                                        "sampler, e.g. v1-5-pruned-emaonly-20steps-cfg7-euler), as a router you "
                                        "train from this candidate's generations will call it."),
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
                                 tooltip="Candidates declared so far (chain Candidate Setup nodes)."),
            ],
            outputs=[Candidates.Output("candidates", tooltip="The chain of candidates including this one.")],
        )

    @classmethod
    def execute(cls, label, ckpt_name, steps, cfg, sampler_name, scheduler, cost, candidates=None) -> io.NodeOutput:
        label = str(label).strip() or default_label(ckpt_name or "", steps, cfg, sampler_name, scheduler)
        chain = chain_candidates(candidates, candidate_entry(label, ckpt_name, steps, cfg, sampler_name, scheduler,
                                                             cost))
        return io.NodeOutput(chain, ui=ui.PreviewText(report(chain)))


def report(chain: list[dict]) -> str:
    """What the node shows: this candidate's settings and where its cost comes from."""
    c = chain[-1]
    return describe(c) + ("" if c.get("cost") else "; cost: the router file's")
