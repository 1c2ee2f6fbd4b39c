"""Save scored generation: the PNG (ComfyUI's workflow metadata + our record) and its row, atomically."""

from __future__ import annotations

import json
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.scored import generation_record, png_bytes, record_text_chunk
from ..cost_aware_router.scored.store import open_store, store_folder
from .schema import CATEGORY, NODE_PREFIX, Job


class SaveScoredGenerationNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.SaveScoredGeneration",
            display_name="Save Scored Generation",
            category=CATEGORY,
            description="Writes the image (with ComfyUI's workflow metadata and a cost_aware_router record) and "
                        "appends its row to generations.jsonl in one atomic step; a (prompt, candidate, seed) "
                        "already in the folder is skipped. The folder is what Train Cost-Aware Router reads.",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="The generated image (the first of a batch is saved)."),
                Job.Input("job", tooltip="From Candidate Sweep: prompt, label, seed, settings and cost."),
                io.Float.Input("score", force_input=True,
                               tooltip="Quality score: the Quality Scorer's or any other pack's FLOAT."),
                io.String.Input("folder", default="scored_generations",
                                tooltip="A dedicated folder inside ComfyUI's output folder (not the output folder "
                                        "itself). Several ComfyUI instances may save into the same folder at once."),
                io.String.Input("metric", default="clipscore",
                                tooltip="Name the score is also stored under in the row's 'scores'."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, images, job, score, folder, metric) -> io.NodeOutput:
        if job.get("cost") is None:
            raise RouterError(f"candidate '{job['label']}' has no cost: run Measure Candidate Costs on the pool or "
                              "set its cost on the Candidate Setup node")
        root = Path(folder_paths.get_output_directory()).resolve()
        store = open_store(store_folder(root, folder))
        image = images[0].detach().cpu().float().numpy()
        record = generation_record(job["prompt"], job["label"], score, job["cost"], metric.strip(), job["seed"],
                                   job["checkpoint"], job["steps"], job["cfg"], job["sampler"], job["scheduler"],
                                   measured_seconds=job.get("measured_seconds"),
                                   size=f"{image.shape[1]}x{image.shape[0]}", worker=job.get("worker"))
        meta = {}
        if cls.hidden is not None and cls.hidden.prompt is not None:
            meta["prompt"] = json.dumps(cls.hidden.prompt)
        if cls.hidden is not None and cls.hidden.extra_pnginfo:
            meta.update({k: json.dumps(v) for k, v in cls.hidden.extra_pnginfo.items()})
        written = store.add(record, lambda rec: png_bytes(image, {**meta, **record_text_chunk(rec)}))
        rel = store.folder.relative_to(root).as_posix()
        if written is None:
            text = (f"skipped (already in output/{rel}): {job['label']} seed {job['seed']} of\n"
                    f"{quoted(job['prompt'])}")
            return io.NodeOutput(ui=ui.PreviewText(text))
        text = (f"saved {job['label']} seed {job['seed']}: {metric.strip() or 'score'} {score:.4g}, "
                f"{job['cost']:.3g} s/image\nprompt: {quoted(job['prompt'])}\ninto output/{rel}/{written['image']}")
        return io.NodeOutput(ui={"images": [{"filename": written["image"], "subfolder": rel, "type": "output"}],
                                 "text": [text]})


def quoted(prompt: str, limit: int = 160) -> str:
    """The prompt as the report names it: quoted, on one line, cut with an ellipsis past ``limit`` characters."""
    one_line = " ".join(str(prompt).split())
    return repr(one_line if len(one_line) <= limit else one_line[:limit - 1] + "…")
