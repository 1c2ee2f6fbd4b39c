"""Candidate pool: loads each distinct checkpoint once and keeps it resident across queue runs.

Loaded checkpoints live in one process-wide LRU (``RESIDENT``), so they survive the pool node being
re-run with new settings. Loading goes through ComfyUI's own loader and eviction through its model
management; nothing moves memory by hand.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter, OrderedDict

import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from .candidates import describe
from .common import CATEGORY, NODE_PREFIX, Candidates, Pool

log = logging.getLogger("cost_aware_router")
PRELOAD, ON_FIRST_USE = "preload all", "load on first use"


class ResidentCheckpoints:
    """Process-wide LRU of loaded checkpoints: path -> (MODEL, CLIP, VAE)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.models: OrderedDict[str, tuple] = OrderedDict()
        self.loads: Counter = Counter()

    def get(self, ckpt_name: str, capacity: int) -> tuple:
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            raise FileNotFoundError(f"checkpoint '{ckpt_name}' is not in any checkpoints folder "
                                    f"({folder_paths.get_folder_paths('checkpoints')})")
        with self.lock:
            if path in self.models:
                self.models.move_to_end(path)
                return self.models[path]
            if capacity > 0:
                while len(self.models) >= capacity:
                    self.evict_oldest()
            out = comfy.sd.load_checkpoint_guess_config(
                path, output_vae=True, output_clip=True,
                embedding_directory=folder_paths.get_folder_paths("embeddings"))[:3]
            self.models[path] = out
            self.loads[ckpt_name] += 1
            log.info("[CostAwareRouter] loaded checkpoint '%s' (load #%d, %d resident)", ckpt_name,
                     self.loads[ckpt_name], len(self.models))
            return out

    def evict_oldest(self) -> None:
        path, (model, _clip, _vae) = self.models.popitem(last=False)
        log.info("[CostAwareRouter] evicting checkpoint '%s'", path)
        try:
            comfy.model_management.unload_model_and_clones(model)
        except Exception as exc:  # model management differs between versions; dropping references still frees
            log.warning("[CostAwareRouter] unload of %s: %s", path, exc)
        del model
        gc.collect()
        comfy.model_management.soft_empty_cache()

    def resident_names(self) -> list[str]:
        return [p.replace("\\", "/").rsplit("/", 1)[-1] for p in self.models]


RESIDENT = ResidentCheckpoints()


class CandidatePool:
    """What flows from the pool node to the router node."""

    def __init__(self, candidates: list[dict], max_resident: int):
        self.candidates = {c["label"]: c for c in candidates}
        self.max_resident = max_resident

    @property
    def labels(self) -> list[str]:
        return list(self.candidates)

    def costs(self) -> dict[str, float]:
        return {k: c["cost"] for k, c in self.candidates.items() if c.get("cost")}

    def load(self, label: str) -> tuple:
        return RESIDENT.get(self.candidates[label]["checkpoint"], self.max_resident)

    def report(self) -> str:
        loads = ", ".join(f"{k} x{v}" for k, v in sorted(RESIDENT.loads.items())) or "none yet"
        return (f"{len(self.candidates)} candidates, "
                f"{len({c['checkpoint'] for c in self.candidates.values()})} distinct checkpoints; "
                f"resident: {RESIDENT.resident_names() or 'none'}; loads so far: {loads}")


class CandidatePoolNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.CandidatePool",
            display_name="Candidate Pool (Loader)",
            category=CATEGORY,
            description="Keeps the candidates' checkpoints resident across queue runs, so switching candidates "
                        "between prompts costs no reload. Each distinct checkpoint is loaded once.",
            inputs=[
                Candidates.Input("candidates", tooltip="Chain of Router Candidate nodes."),
                io.Combo.Input("load_policy", options=[ON_FIRST_USE, PRELOAD], default=ON_FIRST_USE,
                               tooltip="'load on first use': a checkpoint loads when the router first chooses it "
                                       "(only chosen candidates are ever loaded). 'preload all': load every "
                                       "checkpoint now."),
                io.Int.Input("max_resident", default=0, min=0, max=64,
                             tooltip="Most checkpoints kept loaded at once; the least recently used is evicted "
                                     "beyond it. 0 = no limit."),
            ],
            outputs=[Pool.Output("pool", display_name="pool",
                                 tooltip="The candidate pool, for the Cost-Aware Router.")],
        )

    @classmethod
    def execute(cls, candidates, load_policy, max_resident) -> io.NodeOutput:
        if not candidates:
            raise ValueError("Candidate Pool: no candidates connected")
        pool = CandidatePool(candidates, int(max_resident))
        if load_policy == PRELOAD:
            names = list(dict.fromkeys(c["checkpoint"] for c in candidates))
            if max_resident:
                names = names[:max_resident]
            bar = comfy.utils.ProgressBar(len(names))
            for i, name in enumerate(names):
                RESIDENT.get(name, int(max_resident))
                bar.update_absolute(i + 1)
        text = "\n".join(describe(c) for c in candidates) + "\n" + pool.report()
        return io.NodeOutput(pool, ui=ui.PreviewText(text))
