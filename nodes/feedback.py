"""Learn from Scores: learn from a scored routed generation (bandit feedback) into a router file."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.online import update_router
from ..cost_aware_router.router_file import load_router, save_router
from ..cost_aware_router.storage.lines import exclusive
from .schema import CATEGORY, NODE_PREFIX, Scored, router_input, router_output
from .state import get_router


def learn(base_name: str, output_name: str, prompt: str, labels: list[str], scores: list[float]) -> tuple[str, str]:
    """Add the scored images of one prompt (one, or the routed and the escalated one) to ``output_name``
    (started from the router ``base_name`` the first time) in one update, so they fill one memory row;
    returns (saved file name, report). Two queue items (or two ComfyUI workers) finishing together
    take turns on the file."""
    if not str(prompt).strip():
        raise RouterError("Learn from Scores: the prompt is empty")
    labels, scores = [str(lb).strip() for lb in labels], [float(s) for s in scores]
    out = router_output(output_name, overwrite=True)
    with exclusive(out.with_name(f".{out.name}.lock")):
        if out.exists():
            current = load_router(out)
            if "online_observations" not in current.training:
                raise RouterError(f"Learn from Scores: {out.name} is not a router learnt by this node (it holds no "
                                  "feedback); choose another output_name, so a trained router is never changed")
            base = get_router(base_name)
            if current.names != base.names:
                raise RouterError(f"Learn from Scores: {out.name} has candidates {current.names}, the router that "
                                  f"decided ('{base_name}') has {base.names}; use another output_name")
            current.use_embedder(base.embedder)
        else:
            current = get_router(base_name)
        new, report = update_router(current, [prompt] * len(labels), labels, scores)
        save_router(new, out, overwrite=True)
    t = new.training
    what = " and ".join(f"'{lb}' scored {s:.4g}" for lb, s in zip(labels, scores))
    text = (f"learnt: {what} on this prompt; {out.name} now holds "
            f"{t['online_observations']} scored generation(s)"
            + (f" (k {t['online_k']}, shrinkage {t['online_alpha']:g})" if "online_k" in t else "")
            + (f"\n{report['note']}" if report.get("note") else "")
            + f"\nroute with '{out.name}' to use what it learnt")
    return out.name, text


class RouterFeedbackNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.Feedback",
            display_name="Learn from Scores (router feedback)",
            search_aliases=["router feedback", "online learning"],  # its name before; see route.py's SEARCH_ALIASES
            category=CATEGORY,
            description="Teaches a router from what it routed: the chosen candidate's label, the prompt and the "
                        "image's score go into a learnt copy of the router in models/router_weights, without "
                        "retraining. Only the chosen candidate's score is ever needed.",
            is_output_node=True,
            inputs=[
                router_input(),
                io.String.Input("prompt", multiline=True, default="", force_input=True,
                                tooltip="The prompt that was routed (link the same STRING as the router's prompt)."),
                io.String.Input("label", force_input=True, optional=True,
                                tooltip="The chosen candidate (the Cost-Aware Router's label output); or link "
                                        "scored instead."),
                io.Float.Input("score", force_input=True, optional=True,
                               tooltip="The image's quality score on the router's metric and scale (the Quality "
                                       "Scorer's or any scorer pack's FLOAT); or link scored instead."),
                Scored.Input("scored", optional=True,
                             tooltip="Instead of label and score: Verify and Escalate's scored output, every "
                                     "scored image of the prompt (the routed one and, when escalated, the dear "
                                     "one), learnt together."),
                io.String.Input("output_name", default="learned_router",
                                tooltip="Router file (in models/router_weights) that accumulates the feedback; "
                                        "created from the router above the first time. An existing router that "
                                        "was not made by this node is never changed."),
            ],
            outputs=[io.String.Output("router_name", tooltip="The learnt router's file name."),
                     io.String.Output("report", tooltip="What was learnt.")],
        )

    @classmethod
    def execute(cls, router, prompt, output_name, label=None, score=None, scored=None) -> io.NodeOutput:
        if scored is not None:
            if label is not None or score is not None:
                raise RouterError("Learn from Scores: link either label and score, or scored, not both")
            if scored.prompt != prompt:
                raise RouterError("Learn from Scores: the scored images are of another prompt than the one linked "
                                  "here; link the same prompt as the router's")
            labels, scores = scored.labels, scored.scores
        elif label is None or score is None:
            raise RouterError("Learn from Scores: link label and score (the router's label and the image's score), "
                              "or Verify and Escalate's scored")
        else:
            labels, scores = [label], [score]
        name, text = learn(router, output_name, prompt, labels, scores)
        return io.NodeOutput(name, text, ui=ui.PreviewText(text))
