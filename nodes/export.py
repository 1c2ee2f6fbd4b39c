"""Export Rating Table: writes a public human-rating table shipped with the pack as a scored-generations folder,
so a router can be trained in ComfyUI without collecting first (no shell step)."""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..cost_aware_router.storage.files import child_dir
from ..cost_aware_router.tables import PATH_METRIC, PATH_TABLE, TABLES, export_table
from .schema import CATEGORY, NODE_PREFIX

DEFAULT_FOLDER = "rating_tables"


def describe_export(table: str, shown: str, rows: int, written: bool) -> str:
    spec = TABLES[table]
    metrics = list(spec["metrics"])
    head = (f"wrote {rows} rows of {table} to {shown}" if written
            else f"{shown} already holds {table} ({rows} rows); left as it is")
    cands = ", ".join(f"{c['name']} {c['cost']:g} s" for c in spec["candidates"].values())
    return (f"{head}\n"
            f"candidates: {cands}\n"
            f"metrics: {metrics[0]} ('score'){''.join(', ' + m for m in metrics[1:])}\n"
            + (f"{PATH_METRIC}: the Quality Scorer's scale with a CLIP ViT-B/32 model\n" if PATH_METRIC in metrics
               else "human ratings only: no scorer gives them, so Learn from Scores cannot add to them\n")
            + f"source: {spec['source']}")


class ExportTableNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.ExportTable",
            display_name="Export Rating Table",
            category=CATEGORY,
            description="Writes one of the public rating tables shipped with the pack (prompts, each rated for "
                        "several models, mapped onto candidates you can run, with costs in seconds per image) as a "
                        "folder of scored generations under ComfyUI's output, ready for Train Cost-Aware Router.",
            search_aliases=["rating table", "public table", "export table", "training data", "tifa"],
            is_output_node=True,
            inputs=[
                io.Combo.Input("table", options=sorted(TABLES), default=PATH_TABLE,
                               tooltip="tifa_160: TIFA v1.0, 160 prompts x SD 1.1, 1.5 and 2.1, human ratings, "
                                       "CLIPScore (ViT-B/32) and TIFA scores; genai_bench_527: GenAI-Bench, 527 "
                                       "prompts x SDXL, SDXL-Turbo and SD 2.1, human ratings; agiqa_3k: AGIQA-3K, "
                                       "SD 1.5 settings and SDXL, human ratings (the default router's data)."),
                io.String.Input("folder", default=DEFAULT_FOLDER,
                                tooltip="Folder under ComfyUI's output; the table goes into <folder>/<table>, "
                                        "apart from what the collection workflow saves (a folder holds one source)."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace a generations.jsonl already there that holds other rows (one that "
                                         "holds this very table is left as it is either way)."),
            ],
            outputs=[
                io.String.Output("data_folder",
                                 tooltip="The folder written, for Train Cost-Aware Router's data_folder."),
                io.String.Output("report", tooltip="What was written where: the table's candidates and metrics."),
            ],
        )

    @classmethod
    def execute(cls, table, folder, overwrite) -> io.NodeOutput:
        root = Path(folder_paths.get_output_directory()).resolve()
        folder = folder.strip().strip("/")
        target = child_dir(root, f"{folder}/{table}" if folder else table, create=False)
        out, rows, written = export_table(table, target, overwrite=overwrite)
        shown = "output/" + out.relative_to(root).as_posix()
        report = describe_export(table, shown, rows, written)
        return io.NodeOutput(str(target), report, ui=ui.PreviewText(report))
