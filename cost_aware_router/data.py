"""The scored-generations folder: reading, validation and aggregation.

A folder holds ``generations.jsonl`` (one JSON object per line) and/or PNG images whose
``cost_aware_router`` text chunk carries the same record. Required fields: ``prompt`` (str),
``candidate`` (str), ``score`` (float) and ``cost`` (float, seconds per image, >= 0).
Optional: ``scores`` ({metric: float}), ``image``, ``seed``, ``checkpoint``, ``steps``,
``cfg``, ``sampler``, ``scheduler``. Rows for the same (prompt, candidate) are averaged.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

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


@dataclass
class Dataset:
    """Per-prompt, per-candidate expected quality and per-candidate cost."""

    prompts: list[str]
    candidates: list[str]
    quality: np.ndarray  # [P, C], NaN where a candidate has no score for a prompt
    counts: np.ndarray  # [P, C] number of rows averaged
    cost: np.ndarray  # [C] mean seconds per image
    configs: dict[str, dict]
    metric: str = DEFAULT_METRIC
    skipped: int = 0
    source: str = ""

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of prompts that have a score for every candidate."""
        return ~np.isnan(self.quality).any(axis=1)

    def subset(self, prompt_idx) -> Dataset:
        idx = np.asarray(prompt_idx)
        return Dataset(
            [self.prompts[i] for i in idx], list(self.candidates), self.quality[idx],
            self.counts[idx], self.cost.copy(), dict(self.configs), self.metric, 0, self.source,
        )

    def restrict(self, candidates: list[str]) -> Dataset:
        """The same prompts with only ``candidates`` (in that order)."""
        missing = [c for c in candidates if c not in self.candidates]
        if missing:
            raise DataError(
                f"{self.source or 'data'} has no rows for candidate(s) {missing}; it has {self.candidates}"
            )
        cols = [self.candidates.index(c) for c in candidates]
        return Dataset(
            list(self.prompts), list(candidates), self.quality[:, cols], self.counts[:, cols],
            self.cost[cols], {c: self.configs.get(c, {}) for c in candidates}, self.metric, self.skipped,
            self.source,
        )

    def summary(self) -> dict:
        return {
            "prompts": len(self.prompts),
            "complete_prompts": int(self.complete.sum()),
            "candidates": len(self.candidates),
            "rows": int(self.counts.sum()),
            "metric": self.metric,
            "skipped_rows": int(self.skipped),
        }


def _finite(value, name: str, where: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: '{name}' must be a number, got {json.dumps(value)[:40]}")
    try:
        value = float(value)
    except OverflowError:
        raise DataError(f"{where}: '{name}' is too large for a float") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: '{name}' is not finite ({value})")
    if minimum is not None and value < minimum:
        raise DataError(f"{where}: '{name}' must be >= {minimum:g}, got {value:g}")
    return value


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
    score = _finite(obj["score"], "score", where)
    cost = _finite(obj["cost"], "cost", where, minimum=0.0)
    scores = obj.get("scores") or {}
    if not isinstance(scores, dict):
        raise DataError(f"{where}: 'scores' must be an object of metric: number")
    scores = {str(k): _finite(v, f"scores.{k}", where) for k, v in scores.items()}
    extra = {k: obj[k] for k in ("image", "seed", *CONFIG_FIELDS) if obj.get(k) is not None}
    return Record(prompt, candidate.strip(), score, cost, scores, extra)


def read_jsonl(path: Path, skip_bad: bool = False) -> tuple[list[Record], int]:
    records, bad = [], 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: malformed JSON ({exc.msg})") from None
                except ValueError as exc:  # e.g. an integer literal over Python's digit limit
                    raise DataError(f"{where}: malformed JSON ({str(exc).split(';')[0]})") from None
                records.append(parse_record(obj, where))
            except DataError:
                if not skip_bad:
                    raise
                bad += 1
    return records, bad


def png_text_chunks(path: Path) -> dict[str, str]:
    """Text chunks (tEXt, zTXt, iTXt) of a PNG file, without decoding the image."""
    out: dict[str, str] = {}
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            raise DataError(f"{path}: not a PNG file")
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"IDAT" or ctype == b"IEND":
                if ctype == b"IEND":
                    break
                fh.seek(length + 4, 1)
                continue
            data = fh.read(length)
            fh.read(4)
            if len(data) < length:
                raise DataError(f"{path}: truncated PNG chunk")
            try:
                if ctype == b"tEXt":
                    k, _, v = data.partition(b"\x00")
                    out[k.decode("latin-1")] = v.decode("latin-1")
                elif ctype == b"zTXt":
                    k, _, v = data.partition(b"\x00")
                    out[k.decode("latin-1")] = zlib.decompress(v[1:]).decode("latin-1")
                elif ctype == b"iTXt":
                    k, _, rest = data.partition(b"\x00")
                    compressed, rest = rest[0], rest[2:]
                    _lang, _, rest = rest.partition(b"\x00")
                    _tr, _, text = rest.partition(b"\x00")
                    out[k.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
            except (zlib.error, UnicodeDecodeError, IndexError) as exc:
                raise DataError(f"{path}: unreadable {ctype.decode()} chunk ({exc})") from None
    return out


def read_png_records(folder: Path, seen_images: set[str], skip_bad: bool = False) -> tuple[list[Record], int]:
    records, bad = [], 0
    for png in sorted(folder.rglob("*.png")):
        rel = png.relative_to(folder).as_posix()
        if rel in seen_images:
            continue
        try:
            text = png_text_chunks(png).get(PNG_KEY)
            if text is None:
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(";")[0]
                raise DataError(f"{png}: malformed JSON in '{PNG_KEY}' text chunk ({msg})") from None
            rec = parse_record(obj, str(png))
            rec.extra["image"] = rel
            records.append(rec)
        except DataError:
            if not skip_bad:
                raise
            bad += 1
    return records, bad


def read_records(folder: str | Path, skip_bad: bool = False) -> tuple[list[Record], int]:
    """All records of a scored-generations folder and the number of bad rows skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file; give the folder that holds {JSONL_NAME}")
    jsonl = folder / JSONL_NAME
    records, bad = [], 0
    if jsonl.is_file():
        records, bad = read_jsonl(jsonl, skip_bad)
    seen = {str(r.extra["image"]) for r in records if "image" in r.extra}
    png_records, png_bad = read_png_records(folder, seen, skip_bad)
    records += png_records
    bad += png_bad
    if not records:
        raise DataError(
            f"{folder} holds no scored generations (no rows in {JSONL_NAME} and no PNG with a "
            f"'{PNG_KEY}' record)" + (f"; {bad} bad row(s) skipped" if bad else "")
        )
    return records, bad


def aggregate(records: list[Record], metric: str = DEFAULT_METRIC, source: str = "") -> Dataset:
    """Average rows per (prompt, candidate) into a prompts x candidates table."""
    prompts: dict[str, int] = {}
    candidates: dict[str, int] = {}
    for r in records:
        prompts.setdefault(r.prompt, len(prompts))
        candidates.setdefault(r.candidate, len(candidates))
    total = np.zeros((len(prompts), len(candidates)))
    counts = np.zeros((len(prompts), len(candidates)))
    cost_sum = np.zeros(len(candidates))
    cost_n = np.zeros(len(candidates))
    configs: dict[str, dict] = {c: {} for c in candidates}
    available: set[str] = set()
    for r in records:
        c = candidates[r.candidate]
        cost_sum[c] += r.cost
        cost_n[c] += 1
        for k in CONFIG_FIELDS:
            if k in r.extra:
                configs[r.candidate].setdefault(k, r.extra[k])
        available.update(r.scores)
        value = r.metric(metric)
        if value is None:
            continue
        p = prompts[r.prompt]
        total[p, c] += value
        counts[p, c] += 1
    if counts.sum() == 0:
        known = sorted(available | {DEFAULT_METRIC})
        raise DataError(f"{source or 'data'}: no row has metric '{metric}'; metrics present: {known}")
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
    cost = np.round(cost_sum / cost_n, 9)  # a mean of equal costs stays that cost
    return Dataset(list(prompts), list(candidates), quality, counts, cost, configs, metric, 0, source)


def load_dataset(folder: str | Path, metric: str = DEFAULT_METRIC, skip_bad: bool = False) -> Dataset:
    records, bad = read_records(folder, skip_bad)
    ds = aggregate(records, metric, str(folder))
    ds.skipped = bad
    return ds


def write_jsonl_rows(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON Lines (used by the table converters and tests)."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
