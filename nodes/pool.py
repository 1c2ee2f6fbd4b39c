"""Candidate Pool (Loader): keeps the candidates' checkpoints resident across queue runs.

Loaded checkpoints live in one process-wide LRU (``state.RESIDENT``), so they survive the pool node
being re-run with new settings. Loading goes through ComfyUI's own loader and eviction through its
model management; nothing moves memory by hand.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io, ui

from ..cost_aware_router.pool import CandidatePool
from .schema import CATEGORY, KEEP_REPORT, NODE_PREFIX, Candidates, Pool
from .state import RESIDENT

PRELOAD, ON_FIRST_USE = "preload all", "load on first use"


class CandidatePoolNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.CandidatePool",
            display_name="Candidate Pool (Loader)",
            category=CATEGORY,
            description="Keeps the candidates' checkpoints resident across queue runs, so switching candidates "
                        "between prompts costs no reload. Each distinct checkpoint is loaded once.",
            **KEEP_REPORT,
            inputs=[
                Candidates.Input("candidates", tooltip="Chain of Candidate Setup nodes."),
                io.Combo.Input("load_policy", options=[ON_FIRST_USE, PRELOAD], default=ON_FIRST_USE,
                               tooltip="'load on first use': a checkpoint loads when the router first chooses it "
                                       "(only chosen candidates are ever loaded). 'preload all': load every "
                                       "checkpoint now."),
                io.Int.Input("max_resident", default=0, min=0, max=64, advanced=True,
                             tooltip="Most checkpoints kept loaded at once; the least recently used is evicted "
                                     "beyond it. 0 = no limit."),
            ],
            outputs=[Pool.Output("pool", tooltip="The candidate pool, for the Cost-Aware Router.")],
        )

    @classmethod
    def execute(cls, candidates, load_policy, max_resident) -> io.NodeOutput:
        pool = CandidatePool(candidates or [], int(max_resident), RESIDENT)
        if load_policy == PRELOAD:
            bar = comfy.utils.ProgressBar(max(1, len(pool.checkpoints)))
            pool.preload(lambda done, total: bar.update_absolute(done, total))
        # the core's one pool report; the router's report says what is loaded after each decision
        return io.NodeOutput(pool, ui=ui.PreviewText(pool.report("when this node ran")))

