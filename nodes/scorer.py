"""Quality scorer node: IMAGE + prompt -> FLOAT (CLIPScore or PickScore from a local CLIP folder)."""

from __future__ import annotations

from comfy_api.latest import io

from ..cost_aware_router.errors import RouterError
from ..cost_aware_router.scoring import SCORERS, get_scorer
from .schema import CATEGORY, NODE_PREFIX, scorer_folder, scorer_models, scorer_path

# the one choice when models/clip_scorers holds no CLIP model: it says where to put one
NO_SCORER = "(none: put a CLIP model folder in models/clip_scorers)"


def missing_scorer() -> str:
    return (f"no CLIP model for the Quality Scorer: put a transformers CLIP model folder (config.json, weights, "
            f"tokenizer files, preprocessor_config.json; e.g. openai/clip-vit-large-patch14, or PickScore_v1) in "
            f"{scorer_folder()}, e.g. {scorer_folder()}/clip-vit-large-patch14, then press R in ComfyUI to refresh "
            f"the node lists")


class QualityScorerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=f"{NODE_PREFIX}.QualityScorer",
            display_name="Quality Scorer (CLIPScore / PickScore)",
            category=CATEGORY,
            description="Scores how well an image matches its prompt with a CLIP model from models/clip_scorers "
                        "(a transformers CLIPModel folder; PickScore is a CLIP model with other weights). Scores "
                        "from other packs (ImageReward, HPS, aesthetic) can go straight into the save node instead.",
            inputs=[
                io.Image.Input("image", tooltip="Generated image(s); a batch gives the mean score."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The prompt the image was made from."),
                io.Combo.Input("scorer_model", options=scorer_models() or [NO_SCORER],
                               tooltip="A folder in models/clip_scorers holding a CLIP model (config.json, weights, "
                                       "tokenizer, preprocessor_config.json)" + ("." if scorer_models() else
                                                                                 f"; none found: {missing_scorer()}.")),
                io.Combo.Input("kind", options=list(SCORERS), default="clipscore",
                               tooltip="clipscore: 100 x max(cosine, 0); pickscore: the model's logit scale x cosine."),
            ],
            outputs=[io.Float.Output("score", tooltip="Quality score of the image.")],
        )

    @classmethod
    def execute(cls, image, prompt, scorer_model, kind) -> io.NodeOutput:
        if scorer_model == NO_SCORER or not scorer_models():
            raise RouterError(missing_scorer())
        scorer = get_scorer(scorer_path(scorer_model), kind)
        arr = image.detach().cpu().float().numpy()
        scores = scorer.score(list(arr), [prompt] * len(arr))
        return io.NodeOutput(float(sum(scores) / len(scores)))
