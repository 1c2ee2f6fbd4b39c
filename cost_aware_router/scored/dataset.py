"""Reading a scored-generations folder: rows of ``generations.jsonl`` and self-describing PNGs,
validated and averaged per (prompt, candidate) into a prompts x candidates table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .png import png_text_chunks
from .record import CONFIG_FIELDS, DEFAULT_METRIC, JSONL_NAME, PNG_KEY, Record, parse_record


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
