"""Measure candidate costs: seconds per image on this machine, by actually sampling."""

from __future__ import annotations

import statistics
import time

import comfy.model_management
import comfy.utils
from comfy_api.latest import io, ui

import nodes as comfy_nodes

from .schema import CATEGORY, KEEP_REPORT, NODE_PREFIX, Pool


def sample_once(model, clip, vae, cand: dict, width: int, height: int, seed: int = 0) -> None:
    cond = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = comfy_nodes.EmptyLatentImage().generate(width, height, 1)[0]
    out = comfy_nodes.common_ksampler(model, seed, cand["steps"], cand["cfg"], cand["sampler"], cand["scheduler"],
                                      cond, cond, latent)[0]
    vae.decode(out["samples"])


class MeasureCostsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.MeasureCosts",
            display_name="Measure Candidate Costs",
            category=CATEGORY,
            description="Times every candidate of the pool on this machine at this resolution (a warm-up, then "
                        "timed text-encode + sample + decode runs) and returns the pool with those costs, so the "
                        "router and the save node use real seconds per image.",
            **KEEP_REPORT,
            inputs=[
                Pool.Input("pool", tooltip="Candidate Pool to measure."),
                io.Int.Input("width", default=512, min=64, max=8192, step=8, tooltip="Image width to time at."),
                io.Int.Input("height", default=512, min=64, max=8192, step=8, tooltip="Image height to time at."),
                io.Int.Input("timed_runs", default=2, min=1, max=20, advanced=True,
                             tooltip="Timed runs per candidate after one warm-up; the median is kept."),
            ],
            outputs=[
                Pool.Output("pool", tooltip="The same pool with measured costs."),
                io.String.Output("report", tooltip="Seconds per image of each candidate."),
            ],
        )

    @classmethod
    def execute(cls, pool, width, height, timed_runs) -> io.NodeOutput:
        bar = comfy.utils.ProgressBar(len(pool.candidates) * (timed_runs + 1))
        measured, lines, done = {}, [], 0
        for label, cand in pool.candidates.items():
            model, clip, vae = pool.load(label)
            times = []
            for run in range(timed_runs + 1):
                comfy.model_management.throw_exception_if_processing_interrupted()
                t = time.perf_counter()
                sample_once(model, clip, vae, cand, width, height, seed=run)
                if run:  # the first run warms up
                    times.append(time.perf_counter() - t)
                done += 1
                bar.update_absolute(done)
            cost = statistics.median(times)
            measured[label] = round(cost, 4)
            lines.append(f"{label}: {cost:.3g} s ({cand['steps']} steps)")
        text = "\n".join([f"s/image on this machine, {width}x{height}, median of {timed_runs} run(s):", *lines,
                          "used instead of the router file's costs"])
        return io.NodeOutput(pool.with_costs(measured), text, ui=ui.PreviewText(text))
