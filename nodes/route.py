"""The Cost-Aware Router node: embeds the prompt, picks a candidate, outputs what the KSampler needs."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..cost_aware_router.decision.budget import BUDGET_MODES, DEFAULT, HOLD, Budget
from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.subset import restrict
from .schema import CATEGORY, KEEP_REPORT, NODE_PREFIX, Pool, Routed, generation_outputs, router_input, settings
from .state import RoutedPrompt, all_router_labels, get_router, log_decision, route_held, router_stamp

NO_FORCE = "(none)"
# What the main node is found by in the node search. The frontend (1.49.6, FuseSearch.calcAuxScores) matches
# these besides the node id and display name, but ranks only by the id and display name: a display name that
# is the query, then one that starts with it, then one with it as a word (earlier and shorter first). So no other
# node's display name starts with "Router" (they say what they are first), and "Cost-Aware Router" comes first
# for "router", "cost", "route" and "routing" (tests/comfyui/test_browser.py types them).
SEARCH_ALIASES = ["router", "route", "cost router", "model router", "prompt router", "cost-aware routing",
                  "choose checkpoint", "pick model per prompt"]


def force_options() -> list[str]:
    """force_candidate's choices: none, then the labels of every router file in router_weights (read when the
    node definitions load; press R in the frontend after a new router is written). Which of them the chosen
    router and pool hold is checked when the node runs."""
    return [NO_FORCE, *all_router_labels()]


class CostAwareRouterNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.Route",
            display_name="Cost-Aware Router",
            category=CATEGORY,
            search_aliases=SEARCH_ALIASES,
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
                io.Combo.Input("force_candidate", options=force_options(), default=NO_FORCE, optional=True,
                               advanced=True,
                               tooltip="Always choose this candidate ((none) = let the router decide). Lists the "
                                       "labels of every router file in router_weights; the label must be one of "
                                       "the chosen router's candidates and in the pool."),
                io.Boolean.Input("log_decisions", default=True, optional=True,
                                 tooltip="Append each decision as one JSON line to "
                                         "output/cost_aware_router/decisions.jsonl (read it with "
                                         "'cost-aware-router report')."),
                io.Float.Input("explore", default=0.0, min=0.0, max=1.0, step=0.01, optional=True, advanced=True,
                               tooltip="Share of prompts (chosen by a stable hash) sent to the candidate with the "
                                       "fewest scored examples nearby, so Learn from Scores can correct it. 0 = never; "
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
        """Decide again when the router file changes (a learnt router is rewritten by Learn from Scores after
        every run): ComfyUI otherwise serves the decision the older file made for the same inputs."""
        return router_stamp(router)

    @classmethod
    def validate_inputs(cls, force_candidate=NO_FORCE):
        """force_candidate: none ('' in workflows saved before it was a list) or a label some router file has
        (a router written after the list was read counts too); the chosen router and pool are checked at run
        time, when both are known."""
        if force_candidate in (None, "", NO_FORCE) or force_candidate in all_router_labels():  # None: linked
            return True
        return (f"'{force_candidate}' is not a candidate of any router file in router_weights; choose {NO_FORCE} "
                f"or one of: {', '.join(all_router_labels()) or 'no router file found'}")

    @classmethod
    def execute(cls, pool, prompt, router, budget_mode, budget_value, max_cost, force_candidate=NO_FORCE,
                log_decisions=True, explore=0.0, reset_budget_state=False, verify_and_escalate=False
                ) -> io.NodeOutput:
        r = get_router(router)
        if any(label not in r.names for label in pool.labels):
            r.check_candidates(pool.labels)  # names what the pool has that the router does not
        force = "" if force_candidate in (None, NO_FORCE) else str(force_candidate).strip()
        check_forced(force, router, r.names, pool.labels)
        r = restrict(r, pool.labels)  # a pool may hold any of the router's candidates: budgets recalibrated
        if pool.costs():
            r = r.with_costs(pool.costs())
        budget = Budget.from_mode(budget_mode, budget_value, max_cost, force)
        observed = {} if verify_and_escalate else None  # no image yet: the budget counts escalations
        if budget_mode == HOLD:
            decision = route_held(r, router, prompt, budget, reset_budget_state, explore, observed)
        else:
            decision = r.route([prompt], budget, explore=explore, observed=observed)[0]
        if log_decisions:
            log_decision(decision, router, r, budget)
        model, clip, vae = pool.load(decision.candidate)
        text = decision.explanation + "\npool: " + pool.report("after this decision")
        routed = RoutedPrompt(router, r, pool, prompt, budget, decision, budget_mode == HOLD,
                              bool(verify_and_escalate), bool(log_decisions))
        return io.NodeOutput(model, clip, vae, *settings(pool.candidates[decision.candidate]), decision.candidate,
                             text, routed, ui=ui.PreviewText(text))


def check_forced(force: str, router_name: str, router_labels: list[str], pool_labels: list[str]) -> None:
    """A forced label must be one of the router's candidates and in the pool; the error lists the ones that are."""
    if not force:
        return
    usable = [label for label in router_labels if label in pool_labels]
    if force not in router_labels:
        raise RouterError(f"force_candidate '{force}' is not a candidate of {router_name}; choose {NO_FORCE} or one "
                          f"of: {', '.join(usable or router_labels)}")
    if force not in pool_labels:
        raise RouterError(f"force_candidate '{force}' is not in the Candidate Pool; choose {NO_FORCE} or one of the "
                          f"candidates the pool holds: {', '.join(usable)}")
