"""Train Cost-Aware Router: fits a router from a folder of scored generations, inside ComfyUI."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io, ui

from ..cost_aware_router.embed import get_embedder
from ..cost_aware_router.evaluate import training_curve
from ..cost_aware_router.plots import plot_deferral
from ..cost_aware_router.predictors import PREDICTORS
from ..cost_aware_router.router_file import save_router
from ..cost_aware_router.scored import load_dataset
from ..cost_aware_router.train import DEFAULT_PREDICTOR, PROGRESS_TOTAL, train_router
from .common import CATEGORY, DATA_FOLDER_TOOLTIP, NODE_PREFIX, find_data_folder, router_output

FIRST = ("First collect one: run the collect_scored_generations workflow (it saves into output/scored_generations), "
         "or write a public rating table there with 'cost-aware-router export-table tifa_160 "
         "<ComfyUI>/output/scored_generations'.")


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
                io.String.Input("output_name", default="my_router",
                                tooltip="File name to save in models/router_weights ('.safetensors' is added)."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing router file of the same name."),
                io.Boolean.Input("skip_bad_rows", default=False,
                                 tooltip="Skip malformed rows (the report counts them) instead of stopping."),
            ],
            outputs=[
                io.String.Output("router_name",
                                 tooltip="Name of the saved router file, for the Cost-Aware Router node."),
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

        # ComfyUI runs nodes under inference_mode; fitting needs autograd back.
        with torch.inference_mode(False), torch.enable_grad():
            router = train_router(ds, get_embedder(), predictor, progress=progress)
        comfy.model_management.throw_exception_if_processing_interrupted()
        save_router(router, out, overwrite=overwrite)
        curve = training_curve(router, ds)
        s = curve["summary"]
        report = (f"saved {out.name} ({len(router.names)} candidates, {len(ds.prompts)} prompts, metric {ds.metric}"
                  + (f", {ds.skipped} bad rows skipped" if ds.skipped else "") + ")\n"
                  + "".join(f"warning: {w}\n" for w in ds.warnings)
                  + f"predictor {router.predictor.kind} {router.predictor.state()[1]}\n"
                  f"out-of-fold gap closed {s['gap_closed']:.1%}; default budget {router.default_budget:.3g} s/image\n"
                  + "\n".join(f"  {n}: cost {v['cost']:.3g} s, mean {ds.metric} {v['mean_quality']:.4g}"
                              for n, v in curve["candidates"].items()))
        img = plot_deferral(curve, f"{out.name}: out-of-fold deferral curve")
        image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
        return io.NodeOutput(out.name, report, image, ui=ui.PreviewText(report))
