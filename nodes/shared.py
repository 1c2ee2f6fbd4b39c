"""Process-wide state the nodes share: loaded router files and resident checkpoints.

Both live for the life of the ComfyUI process, so queue runs reuse them. The bookkeeping is the
core's (``cost_aware_router.pool``); this module supplies ComfyUI's loader and model management.
"""

from __future__ import annotations

import gc
import logging
import os
import threading

import comfy.model_management
import comfy.sd
import folder_paths

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.pool import ResidentCache
from ..cost_aware_router.router import Router
from ..cost_aware_router.router_file import load_router
from .common import FOLDER

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
            _ROUTERS[path] = (mtime, load_router(path))
        return _ROUTERS[path][1]


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
