"""Train Cost-Aware Router: fits a router from a folder of scored generations, inside ComfyUI."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io, ui

from ..cost_aware_router.embed import get_embedder
from ..cost_aware_router.predictors import PREDICTORS
from ..cost_aware_router.scored import load_dataset
from ..cost_aware_router.train import DEFAULT_PREDICTOR, PROGRESS_TOTAL
from ..cost_aware_router.train_run import train_and_save
from .schema import (
    CATEGORY,
    DATA_FOLDER_TOOLTIP,
    NODE_PREFIX,
    find_data_folder,
    router_name_output,
    router_output,
    router_save_inputs,
)

FIRST = ("First make one: run the 2_collect_scored_generations workflow (it saves into output/scored_generations), "
         "or write a public rating table with the Export Rating Table node (the 3_train_router workflow links it "
         "into this node).")


def refresh_hint(name: str) -> str:
    """ComfyUI lists router files when it loads the node definitions: a new file shows after a refresh."""
    return f"press R (refresh node definitions) to see {name} in the router lists"


class TrainRouterNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.Train",
            display_name="Train Cost-Aware Router",
            category=CATEGORY,
            description="Fits a router from a folder of scored generations (generations.jsonl and/or PNGs with "
                        "a cost_aware_router record) and saves it into models/router_weights.",
            is_output_node=True,
            inputs=[
                io.String.Input("data_folder", default="scored_generations", tooltip=DATA_FOLDER_TOOLTIP),
                io.Combo.Input("predictor", options=sorted(PREDICTORS), default=DEFAULT_PREDICTOR,
                               tooltip="knn: cosine nearest neighbours; ridge: ridge regression; mlp: small "
                                       "neural network; knn_or_ridge: whichever of kNN and ridge routes better. "
                                       "Hyper-parameters are chosen by cross-validation."),
                io.String.Input("metric", default="score",
                                tooltip="'score', or the name of one of the rows' 'scores' metrics."),
                *router_save_inputs("my_router"),
                io.Boolean.Input("skip_bad_rows", default=False,
                                 tooltip="Skip malformed rows (the report counts them) instead of stopping."),
            ],
            outputs=[
                router_name_output(),
                io.String.Output("report", tooltip="What was trained and how well."),
                io.Image.Output("deferral_curve",
                                tooltip="Cost vs quality of the router (out-of-fold), each candidate and the oracle."),
            ],
        )

    @classmethod
    def execute(cls, data_folder, predictor, metric, output_name, overwrite, skip_bad_rows) -> io.NodeOutput:
        folder = find_data_folder(data_folder, FIRST)
        out = router_output(output_name, overwrite)
        ds = load_dataset(folder, metric=metric.strip() or "score", skip_bad=skip_bad_rows)
        bar = comfy.utils.ProgressBar(PROGRESS_TOTAL)

        def progress(done, total):
            bar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        # ComfyUI runs nodes under inference_mode; fitting needs autograd back. The router file is written
        # last, after the report and the curve: a run that fails leaves an existing file as it was.
        with torch.inference_mode(False), torch.enable_grad():
            done = train_and_save(ds, get_embedder(), out, predictor=predictor, overwrite=overwrite, progress=progress,
                                  check=comfy.model_management.throw_exception_if_processing_interrupted)
        report = f"{done.report}\n{refresh_hint(out.name)}"
        image = torch.from_numpy(np.asarray(done.image, dtype=np.float32) / 255.0)[None]
        return io.NodeOutput(out.name, report, image, ui=ui.PreviewText(report))
