"""Candidate sweep: every prompt x seed x candidate as list outputs (downstream nodes run per item)."""

from __future__ import annotations

import socket

import folder_paths
from comfy_api.latest import io, ui

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.pool import sweep_jobs
from ..cost_aware_router.scored import JSONL_NAME
from ..cost_aware_router.scored.store import open_store, store_folder
from ..cost_aware_router.storage.files import child_dir, resolve_under
from ..cost_aware_router.storage.prompts import read_prompts, split_prompts
from .schema import CATEGORY, NODE_PREFIX, Job, Pool, SamplerName, SchedulerName


def sweep_prompts(text: str, prompts_file: str) -> list[str]:
    prompts = split_prompts(text or "", clean=True)
    if prompts_file and prompts_file.strip():
        prompts += read_prompts(resolve_under(prompts_file, [folder_paths.get_input_directory()], "prompts file"),
                                clean=True)
    prompts = list(dict.fromkeys(prompts))
    if not prompts:
        raise RouterError("Candidate Sweep: no prompts (type one per line or name a prompts file)")
    return prompts


def existing(folder: str) -> set:
    """(prompt, label, seed) already in the save folder (empty name: nothing is skipped)."""
    if not folder.strip():
        return set()
    path = store_folder(folder_paths.get_output_directory(), folder, create=False)
    return open_store(path, create=False).keys() if path.is_dir() else set()


class CandidateSweepNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        out = dict(is_output_list=True)
        return io.Schema(
            node_id=f"{NODE_PREFIX}.CandidateSweep",
            display_name="Candidate Sweep",
            category=CATEGORY,
            description="For each prompt and seed, runs every candidate of the pool: list outputs, so the "
                        "downstream KSampler, decoder, scorer and save node run once per generation. "
                        "Generations already in the output folder are skipped, so a rerun resumes.",
            inputs=[
                Pool.Input("pool", tooltip="Candidate Pool (ideally after Measure Candidate Costs)."),
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="One prompt per line."),
                io.String.Input("prompts_file", default="",
                                tooltip="Optional text file (one prompt per line) in ComfyUI's input folder."),
                io.Int.Input("seeds", default=1, min=1, max=1000, tooltip="Seeds per prompt."),
                io.Int.Input("seed_start", default=0, min=0, max=2**31 - 1, tooltip="First seed; then +1, +2, ..."),
                io.String.Input("output_folder", default="scored_generations",
                                tooltip="Folder (in ComfyUI's output folder) the save node writes; generations "
                                        "already there are skipped. Empty = skip nothing."),
                io.Int.Input("worker", default=1, min=1, max=1024, optional=True, advanced=True,
                             tooltip="This ComfyUI instance is worker i of n: it runs only its share of the "
                                     "generations (whole candidates where possible, balanced by steps). Run the "
                                     "same workflow on n instances (one per GPU) into the same output folder, "
                                     "each with its own worker number."),
                io.Int.Input("workers", default=1, min=1, max=1024, optional=True, advanced=True,
                             tooltip="How many ComfyUI instances share this collection (1 = this one does it all)."),
            ],
            outputs=[
                io.Model.Output("model", display_name="MODEL", tooltip="Model of each generation.", **out),
                io.Clip.Output("clip", display_name="CLIP", tooltip="CLIP of each generation.", **out),
                io.Vae.Output("vae", display_name="VAE", tooltip="VAE of each generation.", **out),
                io.String.Output("prompt", tooltip="Prompt of each generation.", **out),
                io.Int.Output("seed", tooltip="Seed of each generation.", **out),
                io.Int.Output("steps", tooltip="Steps of each generation.", **out),
                io.Float.Output("cfg", tooltip="CFG of each generation.", **out),
                SamplerName.Output("sampler_name", tooltip="Sampler.", **out),
                SchedulerName.Output("scheduler", tooltip="Scheduler.", **out),
                Job.Output("job", tooltip="Label, settings and cost of each generation, for the save node.", **out),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, output_folder="", prompts_file="", **_):
        """Re-run when the output folder or the prompts file changed (ComfyUI otherwise serves the cache)."""
        stamp = []
        try:
            if output_folder and output_folder.strip():
                jsonl = child_dir(folder_paths.get_output_directory(), output_folder, create=False) / JSONL_NAME
                stamp.append(jsonl.stat().st_mtime_ns if jsonl.exists() else 0)
            if prompts_file and prompts_file.strip():
                stamp.append(resolve_under(prompts_file, [folder_paths.get_input_directory()]).stat().st_mtime_ns)
        except (RouterError, OSError):
            stamp.append("unreadable")  # execute() reports the problem
        return tuple(stamp)

    @classmethod
    def execute(cls, pool, prompts, prompts_file, seeds, seed_start, output_folder, worker=1,
                workers=1) -> io.NodeOutput:
        worker, workers = int(worker), int(workers)
        if not 1 <= worker <= workers:
            raise RouterError(f"Candidate Sweep: worker {worker} of {workers}: the worker number must be between 1 "
                              "and the number of workers")
        done = existing(output_folder)
        jobs = sweep_jobs(sweep_prompts(prompts, prompts_file), seeds, seed_start, pool.candidates, done,
                          rank=worker - 1, world_size=workers)
        share = f" (worker {worker} of {workers})" if workers > 1 else ""
        if not jobs:
            raise RouterError(f"Candidate Sweep: nothing to do{share}, every generation is already in "
                              f"'{output_folder}'")
        if workers > 1:
            me = {"rank": worker - 1, "world_size": workers, "host": socket.gethostname()}
            jobs = [{**j, "worker": me} for j in jobs]
        cols: dict[str, list] = {k: [] for k in ("model", "clip", "vae")}
        for j in jobs:
            model, clip, vae = pool.load(j["label"])
            cols["model"].append(model)
            cols["clip"].append(clip)
            cols["vae"].append(vae)
        text = (f"{len(jobs)} generation(s) to run{share}"
                + (f", {len(done)} already in '{output_folder}'" if done else ""))
        return io.NodeOutput(cols["model"], cols["clip"], cols["vae"], [j["prompt"] for j in jobs],
                             [j["seed"] for j in jobs], [j["steps"] for j in jobs], [j["cfg"] for j in jobs],
                             [j["sampler"] for j in jobs], [j["scheduler"] for j in jobs], jobs,
                             ui=ui.PreviewText(text))
