"""The public human-rating tables shipped in ``data/`` as scored-generations records.

Each table maps the models it rated onto candidates a ComfyUI user can run, with a cost in
seconds per image. Costs come from one source and one GPU where possible: the fal-ai
stable-diffusion-benchmarks figures on an A100-80GB, fp16, diffusers with SDPA (SD 1.5, 50
steps, 512 px: 1.59 s; SDXL, 50 steps, 1024 px: 5.93 s). Candidates without a row of their own
are derived as time per step x steps x (pixels / reference pixels); ``COSTS`` says which.
Models that a ComfyUI user cannot run locally or that have no comparable row (DALL-E,
Midjourney, DeepFloyd IF, GLIDE, AttnGAN, VQ-Diffusion, minDALL-E) are left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import RouterError
from .scored import JSONL_NAME, Record, parse_record
from .scored.store import jsonl_bytes
from .storage.files import atomic_write, open_regular

# The table the example workflows export and train on: its CLIPScore column (ViT-B/32, 100 x max(cos, 0))
# is the scale the Quality Scorer gives with a CLIP ViT-B/32 model, so a router trained on it learns from
# the scorer's feedback on the same scale.
PATH_TABLE, PATH_METRIC = "tifa_160", "clipscore_vitb32"

SD15_STEP_512 = 1.59 / 50  # s per step, SD 1.5 at 512 px (fal-ai, A100-80GB fp16 SDPA)
SDXL_STEP_1024 = 5.93 / 50  # s per step, SDXL at 1024 px (same source and GPU)

COSTS = {
    "sdxl_base": (5.93, "measured: SDXL 50 steps 1024 px"),
    "sdxl_turbo": (round(SDXL_STEP_1024 * 1 * 0.25, 4), "derived: SDXL time per step x 1 step x (512/1024)^2"),
    "sd21": (round(SD15_STEP_512 * 50 * (768 / 512) ** 2, 3),
             "derived: SD 1.5 time per step x 50 steps x (768/512)^2 (SD 2.1's UNet is SD 1.5-sized)"),
    "sd15": (1.59, "measured: SD 1.5 50 steps 512 px"),
    "sd15_lowstep": (round(SD15_STEP_512 * 10, 4), "derived: SD 1.5 time per step x 10 steps (assumed low step count)"),
    "sdxl_beta": (5.93, "assumed equal to SDXL 50 steps 1024 px"),
}


def _cand(name: str, cost_key: str, **config) -> dict:
    return {"name": name, "cost": COSTS[cost_key][0], "cost_note": COSTS[cost_key][1], "config": config}


SDXL = dict(checkpoint="sd_xl_base_1.0.safetensors", steps=50, cfg=7.0, sampler="euler", scheduler="normal", size=1024)
SDXL_TURBO = dict(checkpoint="sd_xl_turbo_1.0_fp16.safetensors", steps=1, cfg=1.0, sampler="euler_ancestral",
                  scheduler="sgm_uniform", size=512)
SD21 = dict(checkpoint="v2-1_768-ema-pruned.safetensors", steps=50, cfg=7.0, sampler="euler", scheduler="normal",
            size=768)
SD15 = dict(checkpoint="v1-5-pruned-emaonly.safetensors", steps=50, cfg=7.5, sampler="euler", scheduler="normal",
            size=512)

TABLES = {
    "genai_bench_527": {
        "file": "genai_bench_527/genai_bench_527_long.csv", "model_col": "model",
        "metrics": {"human_mean_1to5": "human_mean_1to5"},
        "source": "GenAI-Bench 527 (linzhiqiu/t2v_metrics @ 60ce07b, genai_image.json), Apache-2.0",
        "candidates": {
            "SDXL_Base": _cand("sdxl-base-50", "sdxl_base", **SDXL),
            "SDXL_Turbo": _cand("sdxl-turbo-1", "sdxl_turbo", **SDXL_TURBO),
            "SDXL_2_1": _cand("sd21-50", "sd21", **SD21),
        },
    },
    "agiqa_3k": {
        "file": "agiqa_3k/agiqa_3k_long.csv", "model_col": "model_config",
        "metrics": {"mos_quality": "mos_quality", "mos_align": "mos_align"},
        "source": "AGIQA-3K (lcysyzxdxc/AGIQA-3k-Database @ 30ded2b, data.csv), MIT",
        "candidates": {
            "sd1.5_normal": _cand("sd15-50", "sd15", **SD15),
            "sd1.5_lowstep": _cand("sd15-10", "sd15_lowstep", **{**SD15, "steps": 10}),
            "sd1.5_lowcorr": _cand("sd15-50-lowcfg", "sd15", **{**SD15, "cfg": 3.0}),
            "sd1.5_highcorr": _cand("sd15-50-highcfg", "sd15", **{**SD15, "cfg": 12.0}),
            "xl2.2_normal": _cand("sdxl-50", "sdxl_beta", **SDXL),
        },
    },
    "tifa_160": {
        "file": "tifa_160/tifa_human_long.csv", "model_col": "model",
        "metrics": {"human_avg_1to5": "human_avg_1to5", "clipscore_vitb32": "clipscore_vitb32",
                    "tifa_mplug_large": "tifa_mplug_large"},
        "source": "TIFA v1.0 human judgments (Yushi-Hu/tifa @ 8e37050), Apache-2.0",
        "candidates": {
            "stable_diffusion_v1_1": _cand("sd11-50", "sd15", **{**SD15, "checkpoint": "sd-v1-1.ckpt"}),
            "stable_diffusion_v1_5": _cand("sd15-50", "sd15", **SD15),
            "stable_diffusion_v2_1": _cand("sd21-50", "sd21", **SD21),
        },
    },
}


def table_rows(name: str, data_dir: str | Path) -> list[dict]:
    """The table as generations.jsonl rows (``score`` = its first metric, ``scores`` = all)."""
    spec = TABLES[name]
    metrics = spec["metrics"]
    first = next(iter(metrics))
    rows = []
    with open(Path(data_dir) / spec["file"], newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            cand = spec["candidates"].get(r[spec["model_col"]])
            if cand is None:
                continue
            scores = {m: float(r[col]) for m, col in metrics.items() if r.get(col) not in (None, "")}
            if first not in scores:
                continue
            cfg = {k: v for k, v in cand["config"].items() if k != "size"}
            rows.append({"prompt": r["prompt"], "candidate": cand["name"], "score": scores[first], "cost": cand["cost"],
                         "scores": scores, **cfg})
    return rows


def table_records(name: str, data_dir: str | Path) -> list[Record]:
    return [parse_record(r, f"{name}:{i + 1}") for i, r in enumerate(table_rows(name, data_dir))]


def default_data_dir() -> Path:
    """The tables shipped with the pack (``data/`` in the repository; see its README)."""
    return Path(__file__).resolve().parent.parent / "data"


def export_command(table: str = "<table>", folder: str = "<folder>") -> str:
    """The exact shell line that exports a table (a console script may not exist where the pack was installed
    with ``pip install -r requirements.txt``; ``python -m`` always works from the pack's folder)."""
    return f"python -m cost_aware_router export-table {table} {folder}"


def export_table(name: str, folder: str | Path, overwrite: bool = False, data_dir: str | Path | None = None
                 ) -> tuple[Path, int, bool]:
    """Write table ``name`` as ``folder/generations.jsonl`` (the folder is created). An existing file is
    replaced only with ``overwrite``; one that already holds exactly this table is left as it is (a template
    re-run). Returns (the file, rows, whether it was written)."""
    if name not in TABLES:
        raise RouterError(f"unknown table '{name}'; choose one of {sorted(TABLES)}")
    data = Path(data_dir) if data_dir else default_data_dir()
    source = data / TABLES[name]["file"]
    if not source.is_file():
        raise RouterError(f"table file {source} does not exist (is the data folder laid out like the pack's data/?)")
    rows = table_rows(name, data)
    text = jsonl_bytes(rows)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RouterError(f"{folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RouterError(f"cannot create {folder}: {exc.strerror or exc}") from None
    out = folder / JSONL_NAME
    if _holds(out, text):
        return out, len(rows), False
    if out.exists() and not overwrite:
        raise RouterError(f"{out} already exists and holds other rows; switch on overwrite to replace it, or "
                          "export into another folder (a folder holds one source: mixed sources are refused "
                          "by training)")
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(text), overwrite=overwrite)
    return out, len(rows), True


def _holds(path: Path, text: bytes) -> bool:
    """Whether ``path`` is a regular file (not a link) holding exactly ``text``: sizes first, so a large
    collected file is never read whole, and through the file gate, so a FIFO is never opened."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != len(text):
            return False
        with open_regular(path, "rating table file") as fh:
            return fh.read(len(text) + 1) == text
    except (OSError, RouterError):
        return False
