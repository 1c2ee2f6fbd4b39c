"""One scored generation: the row layout, its validation and the one record both writers build.

Required fields: ``prompt`` (str), ``candidate`` (str), ``score`` (float) and ``cost`` (float,
seconds per image, >= 0). Optional: ``scores`` ({metric: float}), ``image``, ``seed``,
``checkpoint``, ``steps``, ``cfg``, ``sampler``, ``scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError
from ..validate import finite

JSONL_NAME = "generations.jsonl"
PNG_KEY = "cost_aware_router"
CONFIG_FIELDS = ("checkpoint", "steps", "cfg", "sampler", "scheduler")
DEFAULT_METRIC = "score"


@dataclass
class Record:
    prompt: str
    candidate: str
    score: float
    cost: float
    scores: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        if name == DEFAULT_METRIC:
            return self.score
        return self.scores.get(name)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_record(obj, where: str) -> Record:
    """Validate one decoded JSON object; ``where`` (file:line) prefixes every error."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("prompt", "candidate", "score", "cost"):
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'")
    prompt, candidate = obj["prompt"], obj["candidate"]
    if not isinstance(prompt, str):
        raise DataError(f"{where}: 'prompt' must be a string")
    for key, text in (("prompt", prompt), ("candidate", candidate)):
        if isinstance(text, str) and not _is_unicode(text):
            raise DataError(f"{where}: '{key}' is not valid Unicode (it holds a lone surrogate)")
    if not isinstance(candidate, str) or not candidate.strip():
        raise DataError(f"{where}: 'candidate' must be a non-empty string")
    score = finite(obj["score"], "'score'", error=DataError, where=where)
    cost = finite(obj["cost"], "'cost'", minimum=0.0, error=DataError, where=where)
    scores = obj.get("scores") or {}
    if not isinstance(scores, dict):
        raise DataError(f"{where}: 'scores' must be an object of metric: number")
    scores = {str(k): finite(v, f"'scores.{k}'", error=DataError, where=where) for k, v in scores.items()}
    extra = {k: obj[k] for k in ("image", "seed", *CONFIG_FIELDS) if obj.get(k) is not None}
    return Record(prompt, candidate.strip(), score, cost, scores, extra)


def generation_record(prompt: str, candidate: str, score: float, cost: float, metric: str, seed, checkpoint: str,
                      steps: int, cfg: float, sampler: str | None = None, scheduler: str | None = None,
                      **extra) -> dict:
    """The one record layout both writers use (the ComfyUI save node and the headless collector)."""
    return {"prompt": prompt, "candidate": candidate, "score": float(score), "cost": float(cost),
            "scores": {metric or "score": float(score)}, "seed": seed, "checkpoint": checkpoint, "steps": int(steps),
            "cfg": float(cfg), "sampler": sampler, "scheduler": scheduler, **extra}


RECORD_KEYS = frozenset(generation_record("p", "c", 0.0, 0.0, "m", 0, "ckpt", 1, 1.0, "s", "s", measured_seconds=0.0,
                                          size="0x0")) | {"image"}
