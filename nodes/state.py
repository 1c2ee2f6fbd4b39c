"""Process-wide state the nodes share across queue runs: loaded router files, resident checkpoints,
held budgets, the decision log.

Routers and checkpoints live for the life of the ComfyUI process, so queue runs reuse them (the
bookkeeping is the core's ``cost_aware_router.pool``; this module supplies ComfyUI's loader and model
management). A held budget's state is a small JSON file per (router, target) in ComfyUI's user
folder, so it survives restarts; decisions are appended to output/cost_aware_router/decisions.jsonl.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import comfy.sd
import folder_paths

from ..cost_aware_router.decision.budget import Budget
from ..cost_aware_router.decision.hold_state import load_state, save_state
from ..cost_aware_router.decision_log import append_decisions, decision_records
from ..cost_aware_router.embed import get_embedder
from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.pool import ResidentCache
from ..cost_aware_router.router import Decision, Router
from ..cost_aware_router.router_file import candidate_labels, load_router
from ..cost_aware_router.storage.files import child_dir
from ..cost_aware_router.storage.lines import exclusive
from .schema import FOLDER, router_files

log = logging.getLogger("cost_aware_router")

_ROUTERS: dict[str, tuple[float, Router]] = {}
_ROUTERS_LOCK = threading.Lock()


def get_router(name: str) -> Router:
    """A router file from the router_weights folders, loaded once per modification time."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise RouterError(f"router '{name}' is not in the router_weights folders "
                          f"{folder_paths.get_folder_paths(FOLDER)}")
    mtime = os.path.getmtime(path)
    with _ROUTERS_LOCK:
        hit = _ROUTERS.get(path)
        if hit is None or hit[0] != mtime:
            # the pack's prompt embedder runs where ComfyUI runs its text encoders (a GPU when there is one)
            get_embedder().to(comfy.model_management.text_encoder_device())
            _ROUTERS[path] = (mtime, load_router(path))
        return _ROUTERS[path][1]


_LABELS: dict[str, tuple[int, list[str]]] = {}


def router_labels(name: str) -> list[str]:
    """The candidate labels of a router file, read from its header alone (no tensors, no embedder), cached
    per modification time; [] for a file that cannot be read (routing with it names the problem)."""
    path = folder_paths.get_full_path(FOLDER, name) if name else None
    try:
        stamp = os.stat(path).st_mtime_ns if path else None
    except OSError:
        stamp = None
    if stamp is None:
        return []
    hit = _LABELS.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        labels = candidate_labels(path)
    except (RouterError, OSError):
        labels = []
    _LABELS[path] = (stamp, labels)
    return labels


def all_router_labels() -> list[str]:
    """Every candidate label of the router files in the router_weights folders, in file order, once each:
    the choices the Route node's force_candidate offers (it checks the label against the chosen router)."""
    return list(dict.fromkeys(label for name in router_files() for label in router_labels(name)))


def router_stamp(name: str):
    """What identifies a router file's current content for ComfyUI's cache: its modification time
    (Learn from Scores rewrites a learnt router after every run), or None when it cannot be found."""
    path = folder_paths.get_full_path(FOLDER, name) if name else None
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


def _load_checkpoint(ckpt_name: str) -> tuple:
    path = folder_paths.get_full_path("checkpoints", ckpt_name)
    if path is None:
        raise RouterError(f"checkpoint '{ckpt_name}' is not in any checkpoints folder "
                          f"({folder_paths.get_folder_paths('checkpoints')})")
    out = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                embedding_directory=folder_paths.get_folder_paths("embeddings"))[:3]
    log.info("[CostAwareRouter] loaded checkpoint '%s' (load #%d, %d resident)", ckpt_name,
             RESIDENT.loads[ckpt_name] + 1, len(RESIDENT.models) + 1)
    return out


def _unload_checkpoint(ckpt_name: str, models: tuple) -> None:
    log.info("[CostAwareRouter] evicting checkpoint '%s'", ckpt_name)
    try:
        comfy.model_management.unload_model_and_clones(models[0])
    except (AttributeError, RuntimeError, ValueError) as exc:  # differs between ComfyUI versions
        log.warning("[CostAwareRouter] unload of %s: %s", ckpt_name, exc)
    del models
    gc.collect()
    comfy.model_management.soft_empty_cache()


RESIDENT = ResidentCache(_load_checkpoint, _unload_checkpoint)


LOG_FOLDER = "cost_aware_router"
LOG_NAME = "decisions.jsonl"


def hold_state_path(router_name: str, target: float, labels: list[str] | None = None) -> Path:
    """user/cost_aware_router/budget_state/<router>-<hash>@<target>s.json: one file per router name, target
    and (for a pool holding some of the router's candidates) subset. The readable part is shortened and
    cleaned; the hash of the exact name and subset keeps "my router", "my_router" and long names apart."""
    folder = child_dir(folder_paths.get_user_directory(), os.path.join(LOG_FOLDER, "budget_state"))
    key = "\x00".join([router_name, *(labels or [])]).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key, digest_size=5).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", router_name.removesuffix(".safetensors"))[:60]
    return folder / f"{stem}-{digest}@{target:g}s.json"


def route_held(router: Router, router_name: str, prompt: str, budget: Budget, reset: bool,
               explore: float = 0.0, observed: dict | None = None) -> Decision:
    """Route one prompt holding the budget's target average cost with the state kept for this router
    and target; ``reset`` starts it afresh. ``observed`` as for ``Router.route``: a prompt with observed
    images is not counted again, an escalation's cost is added to the state."""
    plan = router.plan(budget)
    if plan.target is None or plan.force is not None:
        raise RouterError("'hold target average cost' needs a target (budget_value, seconds per image) and no "
                          "forced candidate")
    path = hold_state_path(router_name, plan.target, router.names if router.columns is not None else None)
    with exclusive(path.with_name(f".{path.name}.lock")):
        if reset and path.exists():
            path.unlink()
        # keyed by lineage: a learnt router's held average survives Learn from Scores rewriting its file
        holder = load_state(path, router.lineage, plan.target, plan.blended_cost_weight, router.cost)
        decision = router.route([prompt], budget, holder, explore=explore, observed=observed)[0]
        save_state(holder, path)
    return decision


def log_decision(decision: Decision, router_name: str, router: Router, budget: Budget, **changes) -> None:
    """Append the decision to output/cost_aware_router/decisions.jsonl, with ComfyUI's prompt id; ``changes``
    replace or add fields of its record (an escalation names its own candidate; ``chosen_cost`` follows)."""
    prompt_id = None
    try:
        from server import PromptServer

        prompt_id = getattr(PromptServer.instance, "last_prompt_id", None)
    except (ImportError, AttributeError):  # headless: no server, no prompt id
        pass
    path = child_dir(folder_paths.get_output_directory(), LOG_FOLDER) / LOG_NAME
    records = decision_records([decision], router_name, router.fingerprint, router.plan(budget).target, prompt_id)
    for rec in records:
        rec.update(changes)
        rec["chosen_cost"] = rec["cost"].get(rec["candidate"])
    append_decisions(path, records)


@dataclass
class RoutedPrompt:
    """One prompt as the Route node routed it (its ``route`` output, for Escalation Plan): the router as it
    decided (measured costs applied), the pool, the budget and the decision."""

    router_name: str
    router: Router
    pool: object  # cost_aware_router.pool.CandidatePool
    prompt: str
    budget: Budget
    decision: Decision
    held: bool  # 'hold target average cost': an escalation's cost goes into the held state
    escalating: bool  # the budget was read off the router's curve that counts escalations
    log: bool  # decisions are logged
