"""The Cost-Aware Router node: embeds the prompt, picks a candidate, outputs what the KSampler needs."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..cost_aware_router.budget import BUDGET_MODES, DEFAULT, HOLD, Budget
from ..cost_aware_router.subset import restrict
from .common import CATEGORY, KEEP_REPORT, NODE_PREFIX, Pool, Routed, generation_outputs, router_input, settings
from .shared import RoutedPrompt, get_router, log_decision, route_held, router_stamp


def show_on_node(text: str) -> ui.PreviewText:
    """The decision as the node's ui text. web/cost_aware_router.js draws it in a fixed-size box on the
    node (so the node is as large before a run as after) and keeps it in the node's properties for
    later page sessions; ``has_intermediate_output`` makes ComfyUI re-send it on a cached re-run."""
    return ui.PreviewText(text)


class CostAwareRouterNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.Route",
            display_name="Cost-Aware Router",
            category=CATEGORY,
            description="Predicts every candidate's quality for this prompt and picks the one with the best "
                        "predicted quality minus cost weight x cost; outputs its model and sampler settings.",
            hidden=[io.Hidden.unique_id],
            **KEEP_REPORT,
            inputs=[
                Pool.Input("pool", tooltip="Candidate Pool whose labels match the router file's candidates."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The text prompt to route (type it or link a STRING)."),
                router_input(),
                io.Combo.Input("budget_mode", options=list(BUDGET_MODES), default=DEFAULT,
                               tooltip="How to trade quality for cost: the router's default budget; a target "
                                       "average seconds per image (calibrated on the router's training prompts); "
                                       "the same target held on your own prompts (the router follows the realised "
                                       "average of its decisions, kept across restarts, so a prompt may route "
                                       "differently later); a cost weight (lambda); or best quality."),
                io.Float.Input("budget_value", default=1.0, min=0.0, max=100000.0, step=0.01,
                               tooltip="Seconds per image (the target modes) or lambda (cost weight); "
                                       "unused by the other modes."),
                io.Float.Input("max_cost", default=0.0, min=0.0, max=100000.0, step=0.01, advanced=True,
                               tooltip="Never choose a candidate costing more seconds per image. 0 = no cap."),
                io.String.Input("force_candidate", default="", optional=True, advanced=True,
                                tooltip="Always choose this candidate label (empty = let the router decide)."),
                io.Boolean.Input("log_decisions", default=True, optional=True,
                                 tooltip="Append each decision as one JSON line to "
                                         "output/cost_aware_router/decisions.jsonl (read it with "
                                         "'cost-aware-router report')."),
                io.Float.Input("explore", default=0.0, min=0.0, max=1.0, step=0.01, optional=True, advanced=True,
                               tooltip="Share of prompts (chosen by a stable hash) sent to the candidate with the "
                                       "fewest scored examples nearby, so Router Feedback can correct it. 0 = never; "
                                       "counted in a held budget and marked in the decision log."),
                io.Boolean.Input("reset_budget_state", default=False, optional=True, advanced=True,
                                 tooltip="'hold target average cost' mode: forget the realised average kept for "
                                         "this router and target (in ComfyUI's user folder) and start afresh."),
                io.Boolean.Input("verify_and_escalate", default=False, optional=True, advanced=True,
                                 tooltip="Switch on when Escalation Plan and Verify and Escalate follow this node "
                                         "(its route output): a target budget is then read off the router's curve "
                                         "that counts escalations, so the average cost including them meets the "
                                         "target. Changes nothing for a router that cannot escalate."),
            ],
            outputs=[
                *generation_outputs("The chosen candidate's"),
                io.String.Output("label", tooltip="The chosen candidate's label."),
                io.String.Output("explanation",
                                 tooltip="Predicted quality and cost of every candidate, and why this one."),
                Routed.Output("route", tooltip="This decision, for Escalation Plan: after the image is scored it "
                                               "decides whether to escalate to a dearer candidate."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, router="", **_):
        """Decide again when the router file changes (a learnt router is rewritten by Router Feedback after
        every run): ComfyUI otherwise serves the decision the older file made for the same inputs."""
        return router_stamp(router)

    @classmethod
    def execute(cls, pool, prompt, router, budget_mode, budget_value, max_cost, force_candidate="",
                log_decisions=True, explore=0.0, reset_budget_state=False, verify_and_escalate=False
                ) -> io.NodeOutput:
        r = get_router(router)
        if any(label not in r.names for label in pool.labels):
            r.check_candidates(pool.labels)  # names what the pool has that the router does not
        r = restrict(r, pool.labels)  # a pool may hold any of the router's candidates: budgets recalibrated
        if pool.costs():
            r = r.with_costs(pool.costs())
        budget = Budget.from_mode(budget_mode, budget_value, max_cost, force_candidate or "")
        observed = {} if verify_and_escalate else None  # no image yet: the budget counts escalations
        if budget_mode == HOLD:
            decision = route_held(r, router, prompt, budget, reset_budget_state, explore, observed)
        else:
            decision = r.route([prompt], budget, explore=explore, observed=observed)[0]
        if log_decisions:
            log_decision(decision, router, r, budget)
        model, clip, vae = pool.load(decision.candidate)
        text = decision.explanation + "\n" + pool.report()
        routed = RoutedPrompt(router, r, pool, prompt, budget, decision, budget_mode == HOLD,
                              bool(verify_and_escalate), bool(log_decisions))
        return io.NodeOutput(model, clip, vae, *settings(pool.candidates[decision.candidate]), decision.candidate,
                             text, routed, ui=show_on_node(text))
