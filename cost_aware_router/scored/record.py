"""One scored generation: the row layout, its validation and the one record both writers build.

Required fields: ``prompt`` (str), ``candidate`` (str), ``score`` (float) and ``cost`` (float,
seconds per image, >= 0). Optional: ``scores`` ({metric: float}), ``image`` (str), ``seed`` (integer or
str), ``checkpoint``, ``sampler``, ``scheduler`` (str), ``steps`` (integer >= 1), ``cfg`` (float).

Limits (a row over one is a bad row, named by file and line): a prompt of at most ``MAX_PROMPT_CHARS``
characters, a candidate name of at most ``MAX_NAME_CHARS``, other text fields of at most
``MAX_FIELD_CHARS``, at most ``MAX_METRICS`` entries in ``scores``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError
from ..validate import finite

JSONL_NAME = "generations.jsonl"
PNG_KEY = "cost_aware_router"
CONFIG_FIELDS = ("checkpoint", "steps", "cfg", "sampler", "scheduler")
DEFAULT_METRIC = "score"

MAX_PROMPT_CHARS = 10_000  # characters of one prompt in a row (the embedder reads the first embed.MAX_EMBED_CHARS)
MAX_NAME_CHARS = 200  # a candidate or metric name
MAX_FIELD_CHARS = 1_000  # checkpoint, sampler, scheduler, image, a seed given as text
MAX_METRICS = 64  # entries of one row's 'scores'
MAX_CANDIDATES = 256  # candidates in one folder or router file


@dataclass
class Record:
    prompt: str
    candidate: str
    score: float
    cost: float
    scores: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    where: str = ""  # file:line (or the PNG) the row came from, for messages

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


def _text(obj: dict, key: str, where: str, limit: int, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string, got {_type(value)}")
    if not _is_unicode(value):
        raise DataError(f"{where}: '{key}' is not valid Unicode (it holds a lone surrogate)")
    if len(value) > limit:
        raise DataError(f"{where}: '{key}' is {len(value):,} characters long; at most {limit:,} are allowed")
    return value


def _type(value) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", bool: "a boolean"}.get(
        type(value), type(value).__name__)


def _seed(value, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: 'seed' must be an integer or a string, got {_type(value)}")
    if isinstance(value, str) and (len(value) > MAX_FIELD_CHARS or not _is_unicode(value)):
        raise DataError(f"{where}: 'seed' must be at most {MAX_FIELD_CHARS:,} characters of valid Unicode")
    if isinstance(value, int) and value.bit_length() > 64:
        raise DataError(f"{where}: 'seed' must fit in 64 bits, got an integer of {value.bit_length()} bits")
    return value


def _steps(value, where: str) -> int:
    number = finite(value, "'steps'", 1.0, DataError, where)
    if not number.is_integer():
        raise DataError(f"{where}: 'steps' must be a whole number >= 1, got {number:g}")
    return int(number)


def parse_record(obj, where: str) -> Record:
    """Validate one decoded JSON object; ``where`` (file:line) prefixes every error."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("prompt", "candidate", "score", "cost"):
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'")
    if not isinstance(obj["prompt"], str):
        raise DataError(f"{where}: 'prompt' must be a string")
    prompt = _text(obj, "prompt", where, MAX_PROMPT_CHARS, required=True)
    if not isinstance(obj["candidate"], str) or not obj["candidate"].strip():
        raise DataError(f"{where}: 'candidate' must be a non-empty string")
    candidate = _text(obj, "candidate", where, MAX_NAME_CHARS, required=True)
    score = finite(obj["score"], "'score'", error=DataError, where=where)
    cost = finite(obj["cost"], "'cost'", minimum=0.0, error=DataError, where=where)
    scores = obj.get("scores") or {}
    if not isinstance(scores, dict):
        raise DataError(f"{where}: 'scores' must be an object of metric: number")
    if len(scores) > MAX_METRICS:
        raise DataError(f"{where}: 'scores' has {len(scores):,} metrics; at most {MAX_METRICS} are allowed")
    for k in scores:
        if len(k) > MAX_NAME_CHARS or not _is_unicode(k):
            raise DataError(f"{where}: metric names in 'scores' must be at most {MAX_NAME_CHARS} characters of "
                            "valid Unicode")
    scores = {str(k): finite(v, f"'scores.{k}'", error=DataError, where=where) for k, v in scores.items()}
    extra = {}
    for key in ("image", "checkpoint", "sampler", "scheduler"):
        value = _text(obj, key, where, MAX_FIELD_CHARS)
        if value is not None:
            extra[key] = value
    if obj.get("seed") is not None:
        extra["seed"] = _seed(obj["seed"], where)
    if obj.get("steps") is not None:
        extra["steps"] = _steps(obj["steps"], where)
    if obj.get("cfg") is not None:
        extra["cfg"] = finite(obj["cfg"], "'cfg'", error=DataError, where=where)
    return Record(prompt, candidate.strip(), score, cost, scores, extra, where)


def generation_record(prompt: str, candidate: str, score: float, cost: float, metric: str, seed, checkpoint: str,
                      steps: int, cfg: float, sampler: str | None = None, scheduler: str | None = None,
                      **extra) -> dict:
    """The one record layout both writers use (the ComfyUI save node and the headless collector)."""
    return {"prompt": prompt, "candidate": candidate, "score": float(score), "cost": float(cost),
            "scores": {metric or "score": float(score)}, "seed": seed, "checkpoint": checkpoint, "steps": int(steps),
            "cfg": float(cfg), "sampler": sampler, "scheduler": scheduler, **extra}


RECORD_KEYS = frozenset(generation_record("p", "c", 0.0, 0.0, "m", 0, "ckpt", 1, 1.0, "s", "s", measured_seconds=0.0,
                                          size="0x0")) | {"image"}
