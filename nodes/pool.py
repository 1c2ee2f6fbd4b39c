"""Candidate Pool (Loader): keeps the candidates' checkpoints resident across queue runs.

Loaded checkpoints live in one process-wide LRU (``shared.RESIDENT``), so they survive the pool node
being re-run with new settings. Loading goes through ComfyUI's own loader and eviction through its
model management; nothing moves memory by hand.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io, ui

from ..cost_aware_router.pool import CandidatePool
from .common import CATEGORY, KEEP_REPORT, NODE_PREFIX, Candidates, Pool
from .shared import RESIDENT

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
                Candidates.Input("candidates", tooltip="Chain of Router Candidate nodes."),
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
        return io.NodeOutput(pool, ui=ui.PreviewText(report(pool)))


def report(pool: CandidatePool) -> str:
    """What the node shows: this pool's checkpoints, loaded or not when the node ran (with loads so
    far), then any other checkpoint this ComfyUI process keeps loaded, said to be other workflows'."""
    mine = pool.checkpoints
    resident = pool.cache.resident()
    lines = [f"{len(mine)} checkpoint(s), {len(pool.candidates)} candidates, at this run:"]
    for ckpt in mine:
        loads = pool.cache.loads[ckpt]
        lines.append(f"  {ckpt}: " + (f"loaded ({loads} load{'s' if loads != 1 else ''} so far)" if ckpt in resident
                                      else "not loaded"))
    if not any(c in resident for c in mine):
        lines.append("each loads when the router first chooses it")
    other = [k for k in resident if k not in mine]
    if other:
        lines.append(f"also loaded in this ComfyUI for other workflows: {', '.join(other)}")
    return "\n".join(lines)
