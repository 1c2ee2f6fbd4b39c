"""Candidate pools, ComfyUI-free: the candidates a workflow declares, the checkpoints kept loaded for
them, and the generations a collection sweep still has to run.

The ComfyUI nodes supply only the loading and unloading of a checkpoint (``nodes/state.py``); the
bookkeeping here is tested without ComfyUI.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from .errors import RouterError
from .validate import finite


def candidate_entry(label: str, checkpoint: str, steps: int, cfg: float, sampler: str, scheduler: str,
                    cost: float = 0.0) -> dict:
    """One candidate as the nodes pass it on; a cost of 0 means "the router file's cost"."""
    label = str(label).strip()
    if not label:
        raise RouterError("Candidate Setup: label is empty")
    if not checkpoint:
        raise RouterError(f"Candidate Setup '{label}': no checkpoint chosen")
    cost = finite(cost, f"cost of '{label}'", minimum=0.0)
    return {"label": label, "checkpoint": checkpoint, "steps": int(steps), "cfg": finite(cfg, "cfg", minimum=0.0),
            "sampler": sampler, "scheduler": scheduler, "cost": cost or None}


def chain_candidates(chain: list[dict] | None, entry: dict) -> list[dict]:
    """The chain of candidates so far with ``entry`` appended; a label may appear once."""
    chain = list(chain or [])
    if any(c["label"] == entry["label"] for c in chain):
        raise RouterError(f"Candidate Setup: label '{entry['label']}' is used twice in the chain")
    return chain + [entry]


def default_label(checkpoint: str, steps: int, cfg: float, sampler: str, scheduler: str = "normal") -> str:
    """A label that says what a candidate is, for a Candidate Setup left without one: the checkpoint's
    file stem, steps, cfg and sampler (and the scheduler when it is not ``normal``), e.g.
    ``v1-5-pruned-emaonly-20steps-cfg7-euler``. Settings that differ give different labels."""
    stem = str(checkpoint).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf"):
        if stem.lower().endswith(ext):
            stem = stem[:-len(ext)]
            break
    parts = [stem.strip() or "checkpoint", f"{int(steps)}steps", f"cfg{float(cfg):g}", str(sampler)]
    if scheduler and scheduler != "normal":
        parts.append(str(scheduler))
    return "-".join(parts)


def describe(c: dict) -> str:
    """One candidate in one line: label, checkpoint, settings and its own cost if it has one."""
    cost = f", {c['cost']:g} s/image" if c.get("cost") else ""
    return (f"{c['label']}: {c['checkpoint']}, {c['steps']} steps, cfg {c['cfg']:g}, "
            f"{c['sampler']}/{c['scheduler']}{cost}")


class ResidentCache:
    """Process-wide LRU of loaded checkpoints: key -> whatever ``load(key)`` returned.

    ``load`` and ``unload`` do the real work (ComfyUI's loader and model management); ``capacity``
    (per call, 0 = no limit) bounds how many stay loaded, evicting the least recently used."""

    def __init__(self, load: Callable[[str], tuple], unload: Callable[[str, tuple], None]):
        self._load, self._unload = load, unload
        self.lock = threading.RLock()
        self.models: OrderedDict[str, tuple] = OrderedDict()
        self.loads: Counter = Counter()

    def get(self, key: str, capacity: int = 0) -> tuple:
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            if capacity > 0:
                while len(self.models) >= capacity:
                    self.evict_oldest()
            out = self._load(key)
            self.models[key] = out
            self.loads[key] += 1
            return out

    def evict_oldest(self) -> None:
        with self.lock:
            key, models = self.models.popitem(last=False)
            self._unload(key, models)

    def resident(self) -> list[str]:
        return list(self.models)


class CandidatePool:
    """What flows from the pool node to the router node: the candidates by label and the cache
    that loads their checkpoints."""

    def __init__(self, candidates: list[dict], max_resident: int, cache: ResidentCache):
        if not candidates:
            raise RouterError("Candidate Pool: no candidates connected")
        self.candidates = {c["label"]: c for c in candidates}
        self.max_resident = int(max_resident)
        self.cache = cache

    @property
    def labels(self) -> list[str]:
        return list(self.candidates)

    @property
    def checkpoints(self) -> list[str]:
        return list(dict.fromkeys(c["checkpoint"] for c in self.candidates.values()))

    def costs(self) -> dict[str, float]:
        return {k: c["cost"] for k, c in self.candidates.items() if c.get("cost")}

    def with_costs(self, measured: dict[str, float]) -> CandidatePool:
        """The same pool with measured seconds per image for the named candidates."""
        cands = [{**c, "cost": measured[k], "measured_seconds": measured[k]} if k in measured else dict(c)
                 for k, c in self.candidates.items()]
        return CandidatePool(cands, self.max_resident, self.cache)

    def load(self, label: str) -> tuple:
        return self.cache.get(self.candidates[label]["checkpoint"], self.max_resident)

    def preload(self, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Load every checkpoint of the pool (at most ``max_resident`` of them); returns their names."""
        names = self.checkpoints[:self.max_resident] if self.max_resident else self.checkpoints
        for i, name in enumerate(names):
            self.cache.get(name, self.max_resident)
            if progress:
                progress(i + 1, len(names))
        return names

    def report(self, when: str = "now") -> str:
        """The one description of this pool's residency, shown by the pool node (``when`` = "when this node
        ran") and under the router's decision ("after this decision"): each of its checkpoints, loaded or
        not with its loads so far, then any other checkpoint this process keeps loaded."""
        mine = self.checkpoints
        resident = self.cache.resident()
        lines = [f"{len(mine)} checkpoint(s), {len(self.candidates)} candidates; loaded {when}:"]
        for ckpt in mine:
            loads = self.cache.loads[ckpt]
            so_far = f"{loads} load{'s' if loads != 1 else ''} so far"
            if ckpt in resident:
                lines.append(f"  {ckpt}: loaded ({so_far})")
            else:
                lines.append(f"  {ckpt}: not loaded" + (f" ({so_far}; evicted)" if loads else
                                                        " (loads when the router first chooses it)"))
        other = [k for k in resident if k not in mine]
        if other:
            lines.append(f"also loaded in this ComfyUI for other workflows: {', '.join(other)}")
        return "\n".join(lines)


def split_jobs(jobs: list, rank: int, world_size: int, group: Callable[[Any], Hashable],
               cost: Callable[[Any], float] | None = None) -> list:
    """Worker ``rank``'s share (0-based, of ``world_size``) of ``jobs``: deterministic, grouped, balanced.

    The jobs are ordered by group (a candidate: groups in order of first appearance, jobs in their
    order within a group) and cut into ``world_size`` consecutive runs of equal estimated cost (a job
    belongs to the run its cost midpoint falls in). Every worker computes the same cut from the same
    full job list, so the shares are disjoint and cover every job whatever each worker already finds
    done; each worker's run covers consecutive groups (all workers together load each group once plus
    at most once more per cut, ``groups + world_size - 1`` loads), so it keeps few models resident,
    and the shares differ in cost by at most about one job. ``cost`` must be the same on
    every worker (declared costs or step counts, not times measured on each machine)."""
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise RouterError(f"worker {rank + 1} of {world_size}: need 1 <= worker <= workers")
    if world_size == 1:
        return list(jobs)
    first: dict = {}
    for j in jobs:
        first.setdefault(group(j), len(first))
    order = sorted(range(len(jobs)), key=lambda i: (first[group(jobs[i])], i))
    costs = [max(float(cost(jobs[i])), 0.0) if cost else 1.0 for i in order]
    total = sum(costs)
    if not total > 0:
        costs, total = [1.0] * len(order), float(len(order))
    share, done = [], 0.0
    for i, c in zip(order, costs):
        r = min(int((done + c / 2) * world_size / total), world_size - 1)
        done += c
        if r == rank:
            share.append(jobs[i])
    return share


def sweep_jobs(prompts: list[str], seeds: int, seed_start: int, candidates: dict[str, dict],
               done: set, rank: int = 0, world_size: int = 1) -> list[dict]:
    """Every (prompt, seed, candidate) not yet in ``done`` (a set of (prompt, label, seed)), in order.

    With ``world_size`` > 1, only worker ``rank``'s share (``split_jobs`` of the full list, grouped by
    candidate and balanced by steps, then what is done removed)."""
    jobs = [{**c, "prompt": prompt, "label": label, "seed": seed}
            for prompt in prompts for seed in range(seed_start, seed_start + seeds)
            for label, c in candidates.items()]
    jobs = split_jobs(jobs, rank, world_size, group=lambda j: j["label"], cost=lambda j: j["steps"])
    return [j for j in jobs if (j["prompt"], j["label"], j["seed"]) not in done]
