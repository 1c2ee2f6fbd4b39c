"""Adding a candidate to a router without retraining: its anchor prompts, then the addition."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.extend import add_candidate_from_dataset, anchor_prompts, describe_addition
from ..cost_aware_router.router_file import save_router
from ..cost_aware_router.scored import load_dataset
from .schema import (
    CATEGORY,
    DATA_FOLDER_TOOLTIP,
    NODE_PREFIX,
    find_data_folder,
    router_input,
    router_name_output,
    router_output,
    router_save_inputs,
)
from .state import get_router

FIRST = ("First generate and score the new candidate on the anchor prompts: in the collect_scored_generations "
         "workflow, link Anchor Prompts' prompts into Candidate Sweep, keep only the new candidate in the pool, "
         "score in the router's metric and save into a folder of this name.")


class AnchorPromptsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.AnchorPrompts",
            display_name="Anchor Prompts (to add a candidate)",
            search_aliases=["router anchor prompts"],  # its name before; see SEARCH_ALIASES in route.py
            category=CATEGORY,
            description="The representative prompts a router keeps for adding a candidate without retraining. "
                        "Generate and score the new candidate on them (Candidate Sweep -> ... -> Save Scored "
                        "Generation), then use Add Candidate to Router.",
            is_output_node=True,
            inputs=[router_input()],
            outputs=[
                io.String.Output("prompts",
                                 tooltip="The anchor prompts, one per line (for Candidate Sweep's prompts)."),
                io.Int.Output("count", tooltip="How many anchor prompts there are."),
            ],
        )

    @classmethod
    def execute(cls, router) -> io.NodeOutput:
        prompts = anchor_prompts(get_router(router))
        text = "\n".join(prompts)
        return io.NodeOutput(text, len(prompts), ui=ui.PreviewText(f"{len(prompts)} anchor prompts\n{text}"))


class AddCandidateNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.AddCandidate",
            display_name="Add Candidate to Router",
            category=CATEGORY,
            description="Adds a candidate scored on the router's anchor prompts, without retraining: its quality "
                        "on a new prompt is predicted from the nearest anchors, and budgets are recalibrated. "
                        "Saves a new router file into models/router_weights.",
            is_output_node=True,
            inputs=[
                router_input(),
                io.String.Input("data_folder", default="new_candidate",
                                tooltip="Scored generations of the new candidate on the anchor prompts. "
                                        + DATA_FOLDER_TOOLTIP),
                io.String.Input("candidate", default="",
                                tooltip="The new candidate's label in that folder (also its label in the router and "
                                        "the pool)."),
                io.String.Input("metric", default="score",
                                tooltip="'score' or one of the rows' 'scores': the same metric the router was "
                                        "trained on."),
                io.Float.Input("cost", default=-1.0, min=-1.0, max=100000.0, step=0.01,
                               tooltip="Seconds per image; -1 = the mean measured cost in the folder."),
                *router_save_inputs("my_router_plus"),
            ],
            outputs=[
                router_name_output(),
                io.String.Output("report", tooltip="How the candidate was added."),
            ],
        )

    @classmethod
    def execute(cls, router, data_folder, candidate, metric, cost, output_name, overwrite) -> io.NodeOutput:
        if not candidate.strip():
            raise RouterError("Add Candidate to Router: name the new candidate's label")
        folder = find_data_folder(data_folder, FIRST)
        out = router_output(output_name, overwrite)
        ds = load_dataset(folder, metric=metric.strip() or "score")
        new, report = add_candidate_from_dataset(get_router(router), ds, candidate, None if cost < 0 else cost)
        save_router(new, out, overwrite=overwrite)
        text = (describe_addition(candidate.strip(), report)
                + f"\nsaved {out.name}: {len(new.names)} candidates, default budget {new.default_budget:.3g} s/image")
        return io.NodeOutput(out.name, text, ui=ui.PreviewText(text))
