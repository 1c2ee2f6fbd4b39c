"""Headless collection of scored generations with diffusers (for a GPU box without ComfyUI).

    cost-aware-router collect --prompts FILE --candidates CANDIDATES.toml --out DIR
                              [--scorer MODEL_DIR] [--scorer-kind clipscore|pickscore] [--seeds N] [--size PX]

CANDIDATES.toml lists ``[[candidate]]`` tables with ``name``, ``pipeline`` (a local diffusers
folder), ``steps``, ``cfg`` and optional ``cost`` (seconds per image; measured when absent).
Every candidate runs on every prompt and seed; each image is timed (after one warm-up run per
candidate), scored with the same scorer code as the ComfyUI node, and written to DIR with the
store's atomic step. A rerun skips what is already there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import RouterError
from .scored import GenerationStore, generation_record, png_bytes, record_text_chunk
from .scoring import get_scorer
from .validate import finite


def read_candidates(path: str | Path) -> list[dict]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise RouterError("reading TOML on Python 3.10 needs the package tomli") from None

    path = Path(path)
    if not path.is_file():
        raise RouterError(f"candidates file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RouterError(f"{path}: not valid TOML ({exc})") from None
    cands = data.get("candidate")
    if not isinstance(cands, list) or not cands:
        raise RouterError(f"{path}: no [[candidate]] tables")
    out, names = [], set()
    for i, c in enumerate(cands, 1):
        where = f"{path}: candidate {i}"
        for key in ("name", "pipeline", "steps", "cfg"):
            if key not in c:
                raise RouterError(f"{where}: missing '{key}'")
        name = str(c["name"]).strip()
        if not name or name in names:
            raise RouterError(f"{where}: name '{name}' is empty or used twice")
        names.add(name)
        pipe = Path(c["pipeline"]).expanduser()
        if not pipe.is_absolute():
            pipe = path.parent / pipe
        if not (pipe / "model_index.json").is_file():
            raise RouterError(f"{where}: {pipe} is not a local diffusers pipeline folder (no model_index.json)")
        steps, cfg = c["steps"], c["cfg"]
        if not isinstance(steps, int) or steps < 1:
            raise RouterError(f"{where}: 'steps' must be a positive integer")
        cost = c.get("cost")
        out.append({"name": name, "pipeline": pipe, "steps": steps, "cfg": finite(cfg, "'cfg'", 0.0, where=where),
                    "cost": None if cost is None else finite(cost, "'cost'", 0.0, where=where)})
    return out


def _progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="img", file=sys.stderr, disable=None)
    except ImportError:  # pragma: no cover
        return None


def collect(prompts: list[str], candidates: list[dict], out: str | Path, scorer_dir: str | Path,
            scorer_kind: str = "clipscore", seeds: int = 1, size: int = 512, device: str | None = None,
            on_image: Callable[[dict], None] | None = None) -> dict:
    """Run every candidate on every prompt and seed; returns counts {written, skipped}."""
    import torch
    from diffusers import DiffusionPipeline

    if seeds < 1:
        raise RouterError("--seeds must be >= 1")
    if size < 8 or size % 8:
        raise RouterError("--size must be a positive multiple of 8")
    store = GenerationStore(out)
    scorer = get_scorer(scorer_dir, scorer_kind)
    done = store.keys()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    jobs = [(c, p, s) for c in candidates for p in prompts for s in range(seeds)]
    bar = _progress(len(jobs))
    counts = {"written": 0, "skipped": 0}
    for cand in candidates:
        todo = [(p, s) for p in prompts for s in range(seeds) if (p, cand["name"], s) not in done]
        counts["skipped"] += len(prompts) * seeds - len(todo)
        if bar is not None:
            bar.update(len(prompts) * seeds - len(todo))
        if not todo:
            continue
        try:
            pipe = DiffusionPipeline.from_pretrained(str(cand["pipeline"]), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise RouterError(f"cannot load pipeline {cand['pipeline']}: {str(exc).splitlines()[0]}") from None
        pipe = pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)

        def run(prompt, seed, pipe=pipe, cand=cand):
            gen = torch.Generator(device=device).manual_seed(seed)
            return pipe(prompt, num_inference_steps=cand["steps"], guidance_scale=cand["cfg"], height=size,
                        width=size, generator=gen).images[0]

        run(todo[0][0], 0)  # warm-up, not timed
        for prompt, seed in todo:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            image = run(prompt, seed)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t
            score = scorer.score([image], [prompt])[0]
            record = generation_record(
                prompt, cand["name"], score, cand["cost"] if cand["cost"] is not None else round(seconds, 6),
                scorer_kind, seed, str(cand["pipeline"].name), cand["steps"], cand["cfg"],
                sampler=type(pipe.scheduler).__name__, scheduler="default", measured_seconds=round(seconds, 6),
                size=f"{size}x{size}")
            written = store.add(record, lambda rec, image=image: png_bytes(image, record_text_chunk(rec)))
            counts["written" if written else "skipped"] += 1
            if on_image:
                on_image(record)
            if bar is not None:
                bar.update(1)
        del pipe
    if bar is not None:
        bar.close()
    return counts
