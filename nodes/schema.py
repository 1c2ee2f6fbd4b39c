"""What node schemas are built from: the pack's custom socket types, the inputs and outputs several
nodes share (router file, generation outputs, KSampler settings), and the folders they name (the
router_weights model folder, the CLIP scorer folder, the allowed data roots). No state lives here:
process-wide state is in ``state.py``."""

from __future__ import annotations

import os
from pathlib import Path

import comfy.samplers
import folder_paths
from comfy_api.latest import io

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.storage.files import resolve_under, safe_child

PACK_DIR = Path(__file__).resolve().parent.parent
PACK_WEIGHTS = PACK_DIR / "router_weights"
FOLDER = "router_weights"
CATEGORY = "cost-aware router"
NODE_PREFIX = "CostAwareRouter"
DATA_ROOTS_ENV = "COST_AWARE_ROUTER_DATA_ROOTS"

SCORER_FOLDER = "clip_scorers"

# A node whose report is drawn on it (web/cost_aware_router.js) asks ComfyUI to re-send the report on a
# cached re-run; a ComfyUI whose schema lacks the flag simply does not.
KEEP_REPORT = ({"has_intermediate_output": True}
               if "has_intermediate_output" in getattr(io.Schema, "__dataclass_fields__", {}) else {})

Candidates = io.Custom("COST_AWARE_CANDIDATES")
Pool = io.Custom("COST_AWARE_POOL")
Job = io.Custom("COST_AWARE_JOB")
Routed = io.Custom("COST_AWARE_ROUTE")  # one prompt's routing decision (Route -> Escalation Plan)
Escalation = io.Custom("COST_AWARE_ESCALATION")  # kept or escalated (Escalation Plan -> Verify and Escalate)
Scored = io.Custom("COST_AWARE_SCORED")  # every scored image of one prompt (Verify and Escalate -> Learn from Scores)
# Typed as the V1 list types the core KSampler's combo inputs expect (a V3 Combo output is rejected there).
SamplerName = io.Custom(comfy.samplers.KSampler.SAMPLERS)
SchedulerName = io.Custom(comfy.samplers.KSampler.SCHEDULERS)


def generation_outputs(whose: str, sampler: str = "the KSampler") -> list:
    """A candidate's MODEL, CLIP, VAE and KSampler settings, typed so they plug into the core KSampler (the
    Route and Escalation Plan nodes' first seven outputs)."""
    return [io.Model.Output("model", display_name="MODEL", tooltip=f"{whose} model."),
            io.Clip.Output("clip", display_name="CLIP", tooltip=f"{whose} CLIP."),
            io.Vae.Output("vae", display_name="VAE", tooltip=f"{whose} VAE."),
            io.Int.Output("steps", tooltip=f"Steps for {sampler}."),
            io.Float.Output("cfg", tooltip=f"CFG for {sampler}."),
            SamplerName.Output("sampler_name", tooltip=f"Sampler for {sampler}."),
            SchedulerName.Output("scheduler", tooltip=f"Scheduler for {sampler}.")]


def settings(candidate: dict) -> tuple:
    """A pool candidate's KSampler settings, in the order of generation_outputs."""
    return candidate["steps"], candidate["cfg"], candidate["sampler"], candidate["scheduler"]


def register_folders() -> None:
    """``router_weights``: ComfyUI's models/router_weights (where training saves) and the pack's own."""
    user_dir = os.path.join(folder_paths.models_dir, FOLDER)
    paths, exts = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    paths = list(paths)
    for p in (user_dir, str(PACK_WEIGHTS)):
        if p not in paths:
            paths.append(p)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | {".safetensors"})
    register_scorer_folder()


def register_scorer_folder() -> None:
    paths, exts = folder_paths.folder_names_and_paths.get(SCORER_FOLDER, ([], set()))
    user_dir = os.path.join(folder_paths.models_dir, SCORER_FOLDER)
    folder_paths.folder_names_and_paths[SCORER_FOLDER] = (list(paths) + ([user_dir] if user_dir not in paths else []),
                                                          set(exts))


def scorer_models() -> list[str]:
    """Sub-folders of models/clip_scorers that hold a transformers model (config.json)."""
    names = set()
    for root in folder_paths.get_folder_paths(SCORER_FOLDER):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(names)


def scorer_folder() -> str:
    """Where a CLIP scorer model goes: ComfyUI's models/clip_scorers (the first folder of that kind)."""
    paths = folder_paths.get_folder_paths(SCORER_FOLDER)
    return paths[0] if paths else os.path.join(folder_paths.models_dir, SCORER_FOLDER)


def scorer_path(name: str) -> str:
    for root in folder_paths.get_folder_paths(SCORER_FOLDER):
        path = os.path.join(root, name)
        if os.path.isfile(os.path.join(path, "config.json")) and os.path.dirname(os.path.abspath(path)) == \
                os.path.abspath(root):
            return path
    raise RouterError(f"scorer model '{name}' is not a folder with config.json in "
                      f"{folder_paths.get_folder_paths(SCORER_FOLDER)}; put a CLIP model folder in {scorer_folder()}")


def router_files() -> list[str]:
    return sorted(folder_paths.get_filename_list(FOLDER))


def router_input() -> io.Combo.Input:
    """The router-file combo every node that reads a router shows (the pack's default preselected)."""
    files = router_files()
    return io.Combo.Input("router", options=files, default="default.safetensors" if "default.safetensors" in files
                          else None, tooltip="Router file from the router_weights folders "
                          "(models/router_weights and the pack's own).")


def save_dir() -> Path:
    """The first router_weights folder (models/router_weights unless configured otherwise)."""
    d = Path(folder_paths.get_folder_paths(FOLDER)[0])
    d.mkdir(parents=True, exist_ok=True)
    return d


def router_save_inputs(default_name: str) -> list:
    """The two inputs of a node that writes a new router file: its name and whether to replace one."""
    return [io.String.Input("output_name", default=default_name,
                            tooltip="File name to save in models/router_weights ('.safetensors' is added)."),
            io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing router file of the same name.")]


def router_name_output() -> io.String.Output:
    return io.String.Output("router_name", tooltip="Name of the saved router file, for the Cost-Aware Router node.")


def router_output(output_name: str, overwrite: bool) -> Path:
    """Where a node saves a router: ``output_name`` inside the save folder, refused if it exists
    unless ``overwrite``."""
    out = safe_child(save_dir(), output_name, ".safetensors")
    if out.exists() and not overwrite:
        raise RouterError(f"{out.name} already exists in {out.parent}; switch on overwrite to replace it")
    return out


DATA_FOLDER_TOOLTIP = ("Folder of scored generations: a name looked up in ComfyUI's input, output and user folders, "
                       "in that order (the collection workflow saves into output/<its folder>), or an absolute path "
                       "under one of them or under COST_AWARE_ROUTER_DATA_ROOTS.")


def find_data_folder(data_folder: str, what_to_do_first: str) -> Path:
    """``data_folder`` under the allowed roots; a folder that does not exist yet says what to do first."""
    try:
        return resolve_under(data_folder, data_roots(), "data folder")
    except RouterError as exc:
        if "does not exist" in str(exc):
            raise RouterError(f"{exc}. {what_to_do_first}") from exc
        raise


def data_roots() -> list[str]:
    """Folders the training node may read: ComfyUI's input, output and user directories, or the
    owner's own list in the COST_AWARE_ROUTER_DATA_ROOTS environment variable (os.pathsep-separated)."""
    configured = [p for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    if configured:
        return configured
    return [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
            folder_paths.get_user_directory()]
