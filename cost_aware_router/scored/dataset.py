"""Reading a scored-generations folder: rows of ``generations.jsonl`` and self-describing PNGs,
validated and averaged per (prompt, candidate) into a prompts x candidates table.

Reading is bounded whatever the folder holds: only regular files are opened (a FIFO, a device or a
socket is refused before it is opened), a file link may not lead out of the folder, subfolders are
searched at most ``MAX_DEPTH`` levels deep without following folder links, a row may be at most
``MAX_ROW_BYTES`` long, and the table at most ``MAX_CELLS`` prompts x candidates.

A candidate's cost is the **median** of its rows' costs, so one stray row cannot move it; rows more
than ``COST_SPREAD`` times above or below that median are reported in ``Dataset.warnings``. One
candidate label has one generation config: rows that give it different ``checkpoint``, ``steps``,
``cfg``, ``sampler`` or ``scheduler`` values are refused (a missing field is not a conflict).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..storage.files import is_inside, open_regular
from ..storage.lines import bounded_lines
from .png import png_text_chunks
from .record import CONFIG_FIELDS, DEFAULT_METRIC, JSONL_NAME, MAX_CANDIDATES, PNG_KEY, Record, parse_record

MAX_ROW_BYTES = 1 << 20  # one line of generations.jsonl (a PNG record is bounded by png.MAX_TEXT_CHUNK)
MAX_DEPTH = 32  # subfolder levels below the data folder searched for PNGs
MAX_CELLS = 20_000_000  # prompts x candidates of the table (about 0.5 GB of arrays)
COST_SPREAD = 2.0  # rows over this many times their candidate's median cost, or under 1/this, are reported


@dataclass
class Images:
    """One entry per scored image (a row): which prompt and candidate (indices into the table), its value
    of the table's metric and of a second, verifying metric (NaN where the row lacks it; equal to the
    metric when none was asked for). What ``cascade.py`` fits from: several seeds of one cell stay apart."""

    prompt: np.ndarray  # [M] int
    candidate: np.ndarray  # [M] int
    value: np.ndarray  # [M] the table's metric
    verify: np.ndarray  # [M] the verifying metric
    verify_metric: str = DEFAULT_METRIC

    def take(self, rows: np.ndarray, prompt_map: np.ndarray | None = None, cand_map: np.ndarray | None = None
             ) -> Images:
        p, c = self.prompt[rows], self.candidate[rows]
        return Images(p if prompt_map is None else prompt_map[p], c if cand_map is None else cand_map[c],
                      self.value[rows], self.verify[rows], self.verify_metric)


def _no_images() -> Images:
    e = np.zeros(0)
    return Images(e.astype(int), e.astype(int), e, e)


@dataclass
class Dataset:
    """Per-prompt, per-candidate expected quality and per-candidate cost."""

    prompts: list[str]
    candidates: list[str]
    quality: np.ndarray  # [P, C], NaN where a candidate has no score for a prompt
    counts: np.ndarray  # [P, C] number of rows averaged
    cost: np.ndarray  # [C] median seconds per image of the candidate's rows
    configs: dict[str, dict]
    metric: str = DEFAULT_METRIC
    skipped: int = 0
    source: str = ""
    warnings: list[str] = field(default_factory=list)  # one line each; the CLI prints them on stderr
    images: Images = field(default_factory=_no_images)  # the rows behind ``quality``, one per image
    # which named metric each candidate's 'score' repeats in its rows' 'scores' ({metric: [candidates]});
    # two names that never meet mean two scales mixed under 'score' (train.check_trainable refuses)
    score_sources: dict = field(default_factory=dict)
    cost_rows: list = field(default_factory=list)  # per row whose cost was timed: its host ('?' unknown), else ''

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of prompts that have a score for every candidate."""
        return ~np.isnan(self.quality).any(axis=1)

    def subset(self, prompt_idx) -> Dataset:
        idx = np.asarray(prompt_idx, dtype=int).reshape(-1)
        where = np.full(len(self.prompts), -1)
        where[idx] = np.arange(len(idx))
        rows = np.nonzero(where[self.images.prompt] >= 0)[0] if len(self.images.prompt) else np.zeros(0, int)
        return Dataset(
            [self.prompts[i] for i in idx], list(self.candidates), self.quality[idx],
            self.counts[idx], self.cost.copy(), dict(self.configs), self.metric, 0, self.source, list(self.warnings),
            self.images.take(rows, prompt_map=where), dict(self.score_sources), list(self.cost_rows),
        )

    def restrict(self, candidates: list[str]) -> Dataset:
        """The same prompts with only ``candidates`` (in that order)."""
        missing = [c for c in candidates if c not in self.candidates]
        if missing:
            raise DataError(
                f"{self.source or 'data'} has no rows for candidate(s) {missing}; it has {self.candidates}"
            )
        cols = [self.candidates.index(c) for c in candidates]
        where = np.full(len(self.candidates), -1)
        where[cols] = np.arange(len(cols))
        rows = np.nonzero(where[self.images.candidate] >= 0)[0] if len(self.images.candidate) else np.zeros(0, int)
        return Dataset(
            list(self.prompts), list(candidates), self.quality[:, cols], self.counts[:, cols],
            self.cost[cols], {c: self.configs.get(c, {}) for c in candidates}, self.metric, self.skipped,
            self.source, list(self.warnings), self.images.take(rows, cand_map=where),
            {k: [c for c in v if c in candidates] for k, v in self.score_sources.items()}, list(self.cost_rows),
        )

    def summary(self) -> dict:
        measured = [r for r in self.cost_rows if r]
        return {
            "measured_cost_rows": len(measured), "cost_hosts": sorted({h for h in measured if h != "?"})[:5],
            "prompts": len(self.prompts),
            "complete_prompts": int(self.complete.sum()),
            "candidates": len(self.candidates),
            "rows": int(self.counts.sum()),
            "metric": self.metric,
            "skipped_rows": int(self.skipped),
        }


def _decode(text: str | bytes, where: str, inside: str = ""):
    """One JSON value, with the reader's errors (malformed, an integer over Python's digit limit, too deep)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: malformed JSON{inside} ({exc.msg})") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise DataError(f"{where}: malformed JSON{inside} ({str(exc).split(';')[0]})") from None
    except RecursionError:
        raise DataError(f"{where}: malformed JSON{inside} (nested too deeply)") from None


def _parse(obj, where: str) -> Record:
    try:
        return parse_record(obj, where)
    except RecursionError:  # a deeply nested value where a number or text belongs
        raise DataError(f"{where}: a field is nested too deeply") from None


def _check_inside(path: Path, folder: Path) -> None:
    """A file reached through a link must still be in the data folder."""
    if path.is_symlink() and not is_inside(path, folder):
        raise DataError(f"{path} is a link to a file outside the data folder {folder}; links may not leave it")


def read_jsonl(path: Path, skip_bad: bool = False, folder: Path | None = None) -> tuple[list[Record], int]:
    records, bad = [], 0
    _check_inside(path, folder if folder is not None else path.parent)
    with open_regular(path, "", DataError) as fh:
        for lineno, raw in bounded_lines(fh, MAX_ROW_BYTES):
            where = f"{path}:{lineno}"
            try:
                if raw is None:
                    raise DataError(f"{where}: row is longer than {MAX_ROW_BYTES >> 20} MiB (the limit for one row)")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not line.strip():
                    continue
                records.append(_parse(_decode(line, where), where))
            except DataError:
                if not skip_bad:
                    raise
                bad += 1
    return records, bad


def png_files(folder: Path) -> list[Path]:
    """The ``*.png`` entries under ``folder`` in path order: at most MAX_DEPTH levels deep, folder links not
    followed (a folder named ``x.png`` is searched like any folder, not read as an image)."""
    found, stack = [], [(folder, 0)]
    while stack:
        here, depth = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError as exc:
            raise DataError(f"cannot list folder {here} ({exc.strerror or exc})") from None
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if depth + 1 > MAX_DEPTH:
                    raise DataError(f"{e.path}: folders nested more than {MAX_DEPTH} levels below the data folder "
                                    f"{folder} (the limit searched for PNGs)")
                stack.append((Path(e.path), depth + 1))
            elif e.name.endswith(".png"):
                found.append(Path(e.path))
    return sorted(found)


def read_png_records(folder: Path, seen_images: set[str], skip_bad: bool = False) -> tuple[list[Record], int]:
    records, bad = [], 0
    for png in png_files(folder):
        rel = png.relative_to(folder).as_posix()
        if rel in seen_images:
            continue
        try:
            _check_inside(png, folder)
            text = png_text_chunks(png, keys={PNG_KEY}).get(PNG_KEY)
            if text is None:
                continue
            rec = _parse(_decode(text, str(png), f" in '{PNG_KEY}' text chunk"), str(png))
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
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except OSError as exc:
        raise DataError(f"data folder {folder} cannot be read ({exc.strerror or exc})") from None
    if not exists:
        raise DataError(f"data folder {folder} does not exist")
    if not is_dir:
        raise DataError(f"{folder} is a file; give the folder that holds {JSONL_NAME}")
    jsonl = folder / JSONL_NAME
    records, bad = [], 0
    if os.path.lexists(jsonl):
        records, bad = read_jsonl(jsonl, skip_bad, folder)
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


def _configs(records: list[Record], names: dict[str, int], source: str) -> dict[str, dict]:
    """Each candidate's generation settings; two rows that give one candidate different values are refused."""
    configs: dict[str, dict] = {c: {} for c in names}
    first: dict[tuple[str, str], Record] = {}
    for r in records:
        for k in CONFIG_FIELDS:
            if k not in r.extra:
                continue
            seen = first.setdefault((r.candidate, k), r)
            if seen is not r and seen.extra[k] != r.extra[k]:
                raise DataError(
                    f"{r.where or source}: candidate '{r.candidate}' has {k} {r.extra[k]!r} here but {seen.extra[k]!r} "
                    f"at {seen.where or source}; one candidate name must have one generation config (give the "
                    "other config its own name)")
            configs[r.candidate].setdefault(k, r.extra[k])
    return configs


def _costs(records: list[Record], names: dict[str, int], source: str) -> tuple[np.ndarray, list[str]]:
    """Each candidate's median row cost, and a warning per candidate whose rows stray from it."""
    costs: list[list[float]] = [[] for _ in names]
    for r in records:
        costs[names[r.candidate]].append(r.cost)
    median = np.array([float(np.median(c)) for c in costs])
    warnings = []
    for name, j in names.items():
        c = np.asarray(costs[j])
        med = median[j]
        odd = (c > COST_SPREAD * med) | (c < med / COST_SPREAD)
        if odd.any():
            extreme = int(np.argmax(np.abs(np.log((c + 1e-12) / (med + 1e-12)))))
            where = [r.where for r in records if r.candidate == name][extreme] or source
            warnings.append(
                f"{source or 'data'}: candidate '{name}': {int(odd.sum())} of {len(c)} row(s) cost more than "
                f"{COST_SPREAD:g}x or under 1/{COST_SPREAD:g} of its median {med:g} s (from {c.min():g} to "
                f"{c.max():g} s; the farthest at {where}); its cost is the median, {med:g} s/image")
    return np.round(median, 9), warnings


def _host(r: Record) -> str:
    w = r.extra.get("worker")
    host = w.get("host") if isinstance(w, dict) else None
    return str(host)[:100] if isinstance(host, str) and host else "?"


def _score_sources(records: list[Record], metric: str) -> dict[str, list[str]]:
    """For rows scored under ``score``: the metric name(s) each row repeats its score under in ``scores``
    (a ComfyUI Save node row: its scorer's name; an exported table: the table's metric), gathered per
    name with the candidates that use it. Rows that name none are left out."""
    out: dict[str, set[str]] = {}
    for r in records:
        if r.metric(metric) is None:
            continue
        for name, v in r.scores.items():
            if v == r.score:
                out.setdefault(name, set()).add(r.candidate)
    return {k: sorted(v) for k, v in out.items()}


def aggregate(records: list[Record], metric: str = DEFAULT_METRIC, source: str = "",
              verify_metric: str | None = None) -> Dataset:
    """Average rows per (prompt, candidate) into a prompts x candidates table; a candidate's cost is the
    median of its rows' costs. Every scored row is also kept as one image (``Dataset.images``), with its
    value of ``verify_metric`` beside it (default: the metric itself)."""
    prompts: dict[str, int] = {}
    candidates: dict[str, int] = {}
    for r in records:
        prompts.setdefault(r.prompt, len(prompts))
        candidates.setdefault(r.candidate, len(candidates))
    if len(candidates) > MAX_CANDIDATES:
        raise DataError(f"{source or 'data'}: {len(candidates):,} candidates; at most {MAX_CANDIDATES} are allowed "
                        "(is 'candidate' holding something else, such as a seed or a file name?)")
    if len(prompts) * len(candidates) > MAX_CELLS:
        raise DataError(f"{source or 'data'}: {len(prompts):,} prompts x {len(candidates)} candidates is over the "
                        f"limit of {MAX_CELLS:,} cells; split the folder")
    configs = _configs(records, candidates, source)
    cost, warnings = _costs(records, candidates, source)
    total = np.zeros((len(prompts), len(candidates)))
    counts = np.zeros((len(prompts), len(candidates)))
    available: set[str] = set()
    verify_metric = verify_metric or metric
    img: list[tuple[int, int, float, float]] = []
    for r in records:
        available.update(r.scores)
        value = r.metric(metric)
        if value is None:
            continue
        p, c = prompts[r.prompt], candidates[r.candidate]
        total[p, c] += value
        counts[p, c] += 1
        check = r.metric(verify_metric)
        img.append((p, c, value, np.nan if check is None else check))
    if counts.sum() == 0:
        known = sorted(available | {DEFAULT_METRIC})
        raise DataError(f"{source or 'data'}: no row has metric '{metric}'; metrics present: {known}")
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
    sources = _score_sources(records, metric) if metric == DEFAULT_METRIC else {}
    timed = [_host(r) if "measured_seconds" in r.extra else "" for r in records]
    arr = np.array(img, dtype=np.float64).reshape(-1, 4)
    images = Images(arr[:, 0].astype(int), arr[:, 1].astype(int), arr[:, 2], arr[:, 3], verify_metric)
    return Dataset(list(prompts), list(candidates), quality, counts, cost, configs, metric, 0, source, warnings, images,
                   sources, timed)


def load_dataset(folder: str | Path, metric: str = DEFAULT_METRIC, skip_bad: bool = False,
                 verify_metric: str | None = None) -> Dataset:
    records, bad = read_records(folder, skip_bad)
    ds = aggregate(records, metric, str(folder), verify_metric)
    ds.skipped = bad
    return ds
