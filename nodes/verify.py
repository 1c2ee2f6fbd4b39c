"""Verify and escalate (router + cascade): after the routed image is scored, either keep it or generate once
more with a dearer candidate, and deliver the better image.

Two nodes, because the dear generation sits between them. **Escalation Plan** reads the Route node's
decision (its ``route`` output) and the first image's score, asks the router's verify-and-escalate policy
(``cost_aware_router/cascade.py``) whether a dearer candidate is worth its cost, and outputs that
candidate's MODEL, CLIP, VAE and KSampler settings for a second KSampler, plus the decision.
**Verify and Escalate** takes the first image and, as *lazy* inputs, the dear image and its score:
``check_lazy_status`` asks ComfyUI for them only when the plan escalates, so the second KSampler, its
decode and its scorer never run for a kept image. One node could not do both: its own outputs (the dear
model) would feed its own inputs (the dear image), a cycle ComfyUI refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io, ui

from ..cost_aware_router.errors import RouterError
from .schema import CATEGORY, KEEP_REPORT, NODE_PREFIX, Escalation, Routed, Scored, generation_outputs, settings
from .state import RoutedPrompt, log_decision, route_held

FIRST_SEED, DEAR_SEED = 0, 1  # how the policy tells a prompt's images apart: the routed one, then the escalation's


@dataclass
class EscalationDecision:
    """What Escalation Plan decided for one prompt (its ``escalation`` output)."""

    routed: RoutedPrompt
    first: str  # the routed candidate's label
    first_score: float
    escalate: bool
    target: str  # the escalation's candidate (the routed one when the image is kept)
    words: str  # the policy's sentence: why kept or escalated
    warnings: list[str]


@dataclass
class ScoredImages:
    """Every scored image of one prompt (Verify and Escalate's ``scored`` output, for Learn from Scores)."""

    prompt: str
    labels: list[str]
    scores: list[float]


def scale_warning(routed: RoutedPrompt, score: float) -> str:
    """The core's warning (``Cascade.scale_warning``) for a score far from the scores the router verifies with."""
    cas = routed.router.cascade
    text = cas.scale_warning([score]) if cas is not None else ""
    return f"warning: {text}" if text else ""


def observe(routed: RoutedPrompt, scored: list[tuple[str, int, float]], holder: bool = False):
    """The router's decision for the prompt given its scored images ((label, seed, score) each); with
    ``holder`` an escalation's cost goes into the held budget's state."""
    r = routed.router
    observed = {routed.prompt: [(r.names.index(label), seed, float(score)) for label, seed, score in scored]}
    if holder:
        return route_held(r, routed.router_name, routed.prompt, routed.budget, False, observed=observed)
    return r.route([routed.prompt], routed.budget, observed=observed)[0]


class EscalationPlanNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.EscalationPlan",
            display_name="Escalation Plan (verify and escalate)",
            category=CATEGORY,
            description="Reads the first image's score and decides, with the router's verify-and-escalate policy, "
                        "whether a dearer candidate is expected to add more than its cost. Outputs that candidate's "
                        "model and sampler settings for a second KSampler, which Verify and Escalate runs only when "
                        "this node escalates.",
            **KEEP_REPORT,
            inputs=[
                Routed.Input("route", tooltip="The Cost-Aware Router node's route output (switch on its "
                                              "verify_and_escalate so its budget counts escalations)."),
                io.Float.Input("first_score", force_input=True,
                               tooltip="The routed image's score on the router's metric and scale (the Quality "
                                       "Scorer's or any scorer pack's FLOAT)."),
            ],
            outputs=[
                # when kept: the routed candidate's (already loaded), which nothing runs with
                *generation_outputs("The escalation's", "the second KSampler"),
                io.String.Output("label", tooltip="The escalation's candidate (when kept: the routed one)."),
                io.Boolean.Output("escalate", tooltip="True when a second image is to be generated."),
                Escalation.Output("escalation", tooltip="This decision, for Verify and Escalate."),
                io.String.Output("report", tooltip="Kept or escalated, and why."),
            ],
        )

    @classmethod
    def execute(cls, route: RoutedPrompt, first_score: float) -> io.NodeOutput:
        routed, score = route, float(first_score)
        first = routed.decision.candidate
        warnings = [w for w in [scale_warning(routed, score)] if w]
        d = observe(routed, [(first, FIRST_SEED, score)], holder=routed.held)
        nxt = d.extra.get("next")
        target = nxt["candidate"] if nxt else first
        if nxt and routed.log:
            log_decision(d, routed.router_name, routed.router, routed.budget, candidate=target, escalation=True,
                         escalated_from=first, first_score=score)
        cand = routed.pool.candidates[target]
        model, clip, vae = routed.pool.load(target)
        words = d.extra.get("verify", "")
        lines = [*warnings, words]
        if nxt:
            lines.append(f"next: the second KSampler generates with '{target}' ({cand['steps']} steps, cfg "
                         f"{cand['cfg']:g}, {cand['sampler']}/{cand['scheduler']})")
        else:
            lines.append("next: the first image is delivered; the second KSampler does not run")
        if nxt and not (routed.escalating or routed.held) and routed.router.plan(routed.budget).target is not None:
            lines.append("note: the Cost-Aware Router node read its budget without escalations; switch on its "
                         "verify_and_escalate so the average cost including escalations meets the target")
        if "held" in d.extra:
            h = d.extra["held"]
            lines.append(f"holding {h['target']:g} s/image on average: {h['realised_mean_cost']:.3g} s/image so far "
                         f"over {h['count']} prompt(s), escalations included")
        text = "\n".join(lines)
        decision = EscalationDecision(routed, first, score, nxt is not None, target, words, warnings)
        return io.NodeOutput(model, clip, vae, *settings(cand), target, nxt is not None, decision, text,
                             ui=ui.PreviewText(text))


class VerifyEscalateNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.VerifyEscalate",
            display_name="Verify and Escalate",
            category=CATEGORY,
            description="Delivers the routed image when Escalation Plan keeps it, without running the dear branch "
                        "(its inputs are lazy); when it escalates, runs the dear branch (a second KSampler, decode "
                        "and scorer) and delivers the better image by the router's policy.",
            **KEEP_REPORT,
            inputs=[
                Escalation.Input("escalation", tooltip="Escalation Plan's escalation output."),
                io.Image.Input("first_image", tooltip="The routed image (the first VAE Decode)."),
                io.Image.Input("dear_image", lazy=True,
                               tooltip="The escalation's image (the second KSampler's VAE Decode); evaluated only "
                                       "when Escalation Plan escalates."),
                io.Float.Input("dear_score", lazy=True, force_input=True,
                               tooltip="The escalation's image scored like the first one; evaluated only when "
                                       "Escalation Plan escalates."),
            ],
            outputs=[
                io.Image.Output("image", tooltip="The delivered image."),
                io.String.Output("label", tooltip="The delivered image's candidate."),
                io.Float.Output("score", tooltip="The delivered image's score."),
                Scored.Output("scored", tooltip="Every scored image of this prompt (one, or two when escalated), "
                                                "for Learn from Scores to learn from all of them."),
                io.String.Output("report", tooltip="Which image is delivered, and why."),
            ],
        )

    @classmethod
    def check_lazy_status(cls, escalation: EscalationDecision, first_image=None, dear_image=None, dear_score=None):
        """Ask for the dear branch only when Escalation Plan escalates (None: not evaluated yet)."""
        if not escalation.escalate:
            return []
        return [name for name, value in (("dear_image", dear_image), ("dear_score", dear_score)) if value is None]

    @classmethod
    def execute(cls, escalation: EscalationDecision, first_image, dear_image=None, dear_score=None) -> io.NodeOutput:
        e = escalation
        if not e.escalate:
            text = "\n".join([*e.warnings, f"delivered '{e.first}' (the first image, score {e.first_score:.4g}): not "
                                            "escalated", e.words])
            scored = ScoredImages(e.routed.prompt, [e.first], [e.first_score])
            return io.NodeOutput(first_image, e.first, e.first_score, scored, text, ui=ui.PreviewText(text))
        if dear_image is None or dear_score is None:
            raise RouterError("Verify and Escalate: Escalation Plan escalated, but dear_image or dear_score gave "
                              "nothing; link the second KSampler's decoded image and its score")
        dear = float(dear_score)
        d = observe(e.routed, [(e.first, FIRST_SEED, e.first_score), (e.target, DEAR_SEED, dear)])
        chosen = d.extra.get("deliver")
        if chosen is not None:
            first, why = chosen["seed"] == FIRST_SEED, d.extra.get("verify", "")
        else:  # the policy would generate a third image: this pair escalates once, so the better score goes
            first, why = e.first_score >= dear, "a third image is beyond one escalation: the better scored of the two"
        label, score, other = (e.first, e.first_score, (e.target, dear)) if first else (e.target, dear,
                                                                                     (e.first, e.first_score))
        which = "the first image" if first else "the escalation's image"
        text = "\n".join([*e.warnings, *[w for w in [scale_warning(e.routed, dear)] if w],
                          f"delivered '{label}' ({which}, score {score:.4g}; '{other[0]}' scored {other[1]:.4g})",
                          e.words, f"of the two: {why}"])
        scored = ScoredImages(e.routed.prompt, [e.first, e.target], [e.first_score, dear])
        return io.NodeOutput(first_image if first else dear_image, label, score, scored, text, ui=ui.PreviewText(text))
