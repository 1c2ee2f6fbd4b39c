"""Headless collection of scored generations with diffusers (for a GPU box without ComfyUI).

    cost-aware-router collect --prompts FILE --candidates CANDIDATES.toml --out DIR
                              [--scorer MODEL_DIR] [--scorer-kind clipscore|pickscore] [--seeds N] [--size PX]

CANDIDATES.toml lists ``[[candidate]]`` tables with ``name``, ``pipeline`` (a local diffusers
folder), ``steps``, ``cfg`` and optional ``cost`` (seconds per image; measured when absent).
Every candidate runs on every prompt and seed; each image is timed (after one warm-up run per
candidate), scored with the same scorer code as the ComfyUI node, and written to DIR with the
store's atomic step. A rerun skips what is already there.

Several processes (GPUs, machines sharing the output folder) with Hugging Face accelerate:

    accelerate launch [--multi_gpu] --num_processes N [--num_machines M --machine_rank R
                      --main_process_ip IP --main_process_port PORT] -m cost_aware_router collect ...

Each process takes its deterministic share of the full (candidate, prompt, seed) list, runs it on
``PartialState().device``, writes through the shared store (which never writes a triple twice) and
records ``worker`` ({rank, world_size, host}) in each row; the main process shows the progress of
the whole job. See docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .errors import RouterError
from .pool import split_jobs
from .scored import GenerationStore, generation_record, png_bytes, record_text_chunk
from .scored.record import MAX_NAME_CHARS
from .scoring import get_scorer
from .storage.files import open_regular
from .validate import finite

MAX_TOML_BYTES = 1 << 20  # a candidates file


def read_candidates(path: str | Path) -> list[dict]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise RouterError("reading TOML on Python 3.10 needs the package tomli") from None

    path = Path(path)
    with open_regular(path, "candidates file") as fh:  # a FIFO or a device is refused before it is opened
        raw = fh.read(MAX_TOML_BYTES + 1)
    if len(raw) > MAX_TOML_BYTES:
        raise RouterError(f"candidates file {path} is over {MAX_TOML_BYTES >> 20} MiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RouterError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise RouterError(f"{path}: not valid TOML (nested too deeply)") from None
    cands = data.get("candidate")
    if not isinstance(cands, list) or not cands:
        raise RouterError(f"{path}: no [[candidate]] tables")
    out, names = [], set()
    for i, c in enumerate(cands, 1):
        where = f"{path}: candidate {i}"
        for key in ("name", "pipeline", "steps", "cfg"):
            if key not in c:
                raise RouterError(f"{where}: missing '{key}'")
        if not isinstance(c["name"], str) or len(c["name"]) > MAX_NAME_CHARS:
            raise RouterError(f"{where}: 'name' must be a text of at most {MAX_NAME_CHARS} characters")
        name = c["name"].strip()
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


def _progress(total: int, initial: int = 0):
    try:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        return None


@dataclass
class Worker:
    """This process's place in the collection: ``rank`` of ``world_size``, its device, and accelerate's
    state when it was launched distributed."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None
    state: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "host": socket.gethostname()}

    def wait_for_everyone(self) -> None:
        if self.state is not None and self.world_size > 1:
            self.state.wait_for_everyone()


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "") or 0)
    except ValueError:
        return 0


def worker_from_environment() -> Worker:
    """The accelerate process state when launched with ``accelerate launch`` (or torchrun): rank,
    world size and ``PartialState().device``; one process of one otherwise."""
    launched = _env_int("WORLD_SIZE") > 1 or any(k.startswith("ACCELERATE_") for k in os.environ)
    if not launched:
        return Worker()
    try:
        from accelerate import PartialState
    except ImportError:
        if _env_int("WORLD_SIZE") > 1:
            raise RouterError("launched as one of several processes (WORLD_SIZE > 1) but accelerate is not "
                              "installed: pip install accelerate") from None
        return Worker()
    import torch

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    # the processes only meet at the end (one barrier); one whose share was already done waits there
    state = PartialState(cpu=cpu, timeout=timedelta(days=7))
    return Worker(state.process_index, state.num_processes, str(state.device), state)


def _job_cost(candidates: list[dict]) -> dict[str, float]:
    """Estimated cost per job, the same on every process: the declared costs when every candidate has
    one, else the step counts."""
    if all(c.get("cost") for c in candidates):
        return {c["name"]: float(c["cost"]) for c in candidates}
    return {c["name"]: float(c["steps"]) for c in candidates}


class _Follower:
    """The main process's progress bar over the whole job: polls the store for rows of any process."""

    def __init__(self, store: GenerationStore, keys: list[tuple], bar):
        self.store, self.keys, self.bar = store, keys, bar
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="collect-progress")

    def update(self) -> None:
        n = self.store.count(self.keys)
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(RouterError, OSError):
                self.update()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        with contextlib.suppress(RouterError, OSError):
            self.update()


def check_jobs(prompts: list[str], candidates: list[dict], out: str | Path, scorer_kind: str, seeds: int,
               size: int) -> None:
    """Refuse, before anything is loaded or generated, what would fail later: a prompt or candidate whose
    row the store would refuse (checked with the very record the run writes, placeholder numbers in),
    and a candidate whose settings differ from the rows already in ``out`` under its name (training
    would refuse the mixed folder; a changed candidate needs a new name)."""
    from .errors import DataError
    from .scored import parse_record
    from .scored.dataset import MAX_ROW_BYTES, read_jsonl
    from .scored.record import JSONL_NAME

    for i, prompt in enumerate(prompts, 1):
        for c in candidates:
            rec = generation_record(prompt, c["name"], 0.0, 0.0, scorer_kind, seeds - 1, str(c["pipeline"].name),
                                    c["steps"], c["cfg"], sampler="x" * 64, scheduler="default",
                                    measured_seconds=0.0, size=f"{size}x{size}", worker={"rank": 0, "host": "x" * 64})
            try:
                parse_record(rec, f"prompt {i}")
            except DataError as exc:
                raise RouterError(f"{exc}; nothing was generated") from None
            if len(json.dumps(rec, ensure_ascii=False).encode("utf-8")) > MAX_ROW_BYTES - 4096:
                raise RouterError(f"prompt {i}: its row would be over {MAX_ROW_BYTES >> 20} MiB; nothing was generated")
    jsonl = Path(out) / JSONL_NAME
    if not jsonl.is_file():
        return
    rows, _ = read_jsonl(jsonl, skip_bad=True)
    want = {c["name"]: {"checkpoint": str(c["pipeline"].name), "steps": c["steps"], "cfg": float(c["cfg"])}
            for c in candidates}
    for r in rows:
        settings = want.get(r.candidate.strip())
        for k, v in (settings or {}).items():
            if k in r.extra and r.extra[k] != v:
                raise RouterError(f"candidate '{r.candidate}' in {out} was made with {k} {r.extra[k]!r} ({r.where}); "
                                  f"the candidates file now says {v!r}. Give the changed candidate a new name (or use "
                                  "another folder): one name must keep one setting, or training refuses the folder")


@dataclass
class _Session:
    """What every candidate's generations share in one process's collection."""

    store: GenerationStore
    scorer: object
    scorer_kind: str
    size: int
    device: str
    worker: Worker
    bar: object
    on_image: Callable[[dict], None] | None
    counts: dict


def _load_pipeline(cand: dict, device: str):
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(str(cand["pipeline"]), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RouterError(f"cannot load pipeline {cand['pipeline']}: {str(exc).splitlines()[0]}") from None
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(cand: dict, jobs: list[tuple[str, int]], run: _Session) -> None:
    """Generate, time, score and store ``cand``'s (prompt, seed) jobs, after one untimed warm-up."""
    import torch

    pipe = _load_pipeline(cand, run.device)
    cuda = torch.device(run.device).type == "cuda"

    def image_for(prompt, seed, pipe=pipe):
        gen = torch.Generator(device=run.device).manual_seed(seed)
        return pipe(prompt, num_inference_steps=cand["steps"], guidance_scale=cand["cfg"], height=run.size,
                    width=run.size, generator=gen).images[0]

    image_for(jobs[0][0], 0)  # warm-up, not timed
    whoami = run.worker.record()
    for prompt, seed in jobs:
        if cuda:
            torch.cuda.synchronize(run.device)
        t = time.perf_counter()
        image = image_for(prompt, seed)
        if cuda:
            torch.cuda.synchronize(run.device)
        seconds = time.perf_counter() - t
        score = run.scorer.score([image], [prompt])[0]
        record = generation_record(
            prompt, cand["name"], score, cand["cost"] if cand["cost"] is not None else round(seconds, 6),
            run.scorer_kind, seed, str(cand["pipeline"].name), cand["steps"], cand["cfg"],
            sampler=type(pipe.scheduler).__name__, scheduler="default", measured_seconds=round(seconds, 6),
            size=f"{run.size}x{run.size}", worker=whoami)
        written = run.store.add(record, lambda rec, image=image: png_bytes(image, record_text_chunk(rec)))
        run.counts["written" if written else "skipped"] += 1
        if run.on_image:
            run.on_image(record)
        if run.worker.world_size == 1 and run.bar is not None:
            run.bar.update(1)
    del pipe, image_for
    if cuda:
        torch.cuda.empty_cache()


def _progress_of(jobs: list[tuple], skipped: int, worker: Worker, out: str | Path, store: GenerationStore):
    """(progress bar or None, the context that keeps it up): one process counts its own images; with several,
    the main process follows every process's rows through the store."""
    if worker.world_size == 1:
        return _progress(len(jobs), skipped), contextlib.nullcontext()
    keys = [(p, c["name"], s) for c, p, s in jobs]
    bar = _progress(len(jobs), store.count(keys)) if worker.is_main else None
    return bar, (_Follower(GenerationStore(out), keys, bar) if bar is not None else contextlib.nullcontext())


def collect(prompts: list[str], candidates: list[dict], out: str | Path, scorer_dir: str | Path,
            scorer_kind: str = "clipscore", seeds: int = 1, size: int = 512, device: str | None = None,
            on_image: Callable[[dict], None] | None = None, worker: Worker | None = None) -> dict:
    """Run every candidate on every prompt and seed; returns this process's counts {written, skipped}.

    Launched with ``accelerate launch`` (several processes, GPUs or machines), each process takes its
    share of the full job list (``pool.split_jobs``: grouped by candidate, balanced by estimated
    cost), runs it on its own device and writes through the shared store; the main process shows one
    progress bar for the whole job. ``worker`` overrides what the environment says."""
    import torch

    if seeds < 1:
        raise RouterError("--seeds must be >= 1")
    if size < 8 or size % 8:
        raise RouterError("--size must be a positive multiple of 8")
    check_jobs(prompts, candidates, out, scorer_kind, seeds, size)
    worker = worker or worker_from_environment()
    store = GenerationStore(out)
    scorer = get_scorer(scorer_dir, scorer_kind)
    device = device or worker.device or ("cuda" if torch.cuda.is_available() else "cpu")
    jobs = [(c, p, s) for c in candidates for p in prompts for s in range(seeds)]
    est = _job_cost(candidates)
    mine = split_jobs(jobs, worker.rank, worker.world_size, group=lambda j: j[0]["name"],
                      cost=lambda j: est[j[0]["name"]])
    done = store.keys()
    todo = [j for j in mine if (j[1], j[0]["name"], j[2]) not in done]
    counts = {"written": 0, "skipped": len(mine) - len(todo)}
    bar, follower = _progress_of(jobs, counts["skipped"], worker, out, store)
    run = _Session(store, scorer, scorer_kind, size, device, worker, bar, on_image, counts)
    with follower:
        for cand in candidates:
            mine_c = [(p, s) for c, p, s in todo if c is cand]
            if mine_c:
                _generate(cand, mine_c, run)
        worker.wait_for_everyone()
    if bar is not None:
        bar.close()
    return counts
