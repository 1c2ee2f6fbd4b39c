"""One training run, from a scored folder to a saved router, in the order that never leaves a bad file.

``train_and_save`` is what the Train node runs: refuse the output (and the data, ``train.check_trainable``)
before any long work, fit, compute the out-of-fold curve, write the report and draw the curve in memory,
and only then save the router (atomically: ``router_file.save_router``) and, if asked, the plot. Whatever
fails before the save (a refused folder, an interrupt, a curve or a plot that cannot be drawn) leaves an
existing router file byte for byte as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .evaluate import training_curve
from .plots import plot_deferral, save_plot
from .router import Router
from .router_file import save_router
from .scored import Dataset
from .storage.files import check_writable
from .train import DEFAULT_PREDICTOR, Progress, check_trainable, train_router


@dataclass
class TrainedRouter:
    router: Router
    path: Path
    curve: dict
    report: str
    image: object  # the curve as a PIL image
    plot_path: Path | None = None


def training_report(router: Router, ds: Dataset, curve: dict, name: str, skipped: int = 0) -> str:
    """What was trained and how well, in the words the Train node shows (``ds``: the checked dataset, its
    warnings included; ``skipped``: bad rows skipped when the folder was read)."""
    s = curve["summary"]
    return (f"saved {name} ({len(router.names)} candidates, {len(ds.prompts)} prompts, metric {ds.metric}"
            + (f", {skipped} bad rows skipped" if skipped else "") + ")\n"
            + "".join(f"warning: {w}\n" for w in ds.warnings)
            + f"predictor {router.predictor.kind} {router.predictor.state()[1]}\n"
            f"out-of-fold gap closed {s['gap_closed']:.1%}; default budget {router.default_budget:.3g} s/image\n"
            + "\n".join(f"  {n}: cost {v['cost']:.3g} s, mean {ds.metric} {v['mean_quality']:.4g}"
                        for n, v in curve["candidates"].items()))


def train_and_save(ds: Dataset, embedder, out: str | Path, *, predictor=DEFAULT_PREDICTOR, folds: int = 5,
                   seed: int = 0, overwrite: bool = False, progress: Progress = None,
                   check: Callable[[], None] | None = None, plot_path: str | Path | None = None,
                   title: str | None = None) -> TrainedRouter:
    """Fit a router on ``ds`` and save it to ``out``, the file last. ``check`` is called between the steps
    (ComfyUI's interrupt check raises there); ``plot_path``: also save the curve as a PNG, after the router."""
    out = check_writable(out, overwrite)
    if plot_path is not None:
        plot_path = check_writable(plot_path, overwrite)
    skipped = ds.skipped
    ds = check_trainable(ds)  # refused data is refused before anything is fitted or written
    router = train_router(ds, embedder, predictor, folds=folds, seed=seed, progress=progress)
    if check:
        check()
    curve = training_curve(router, ds)
    report = training_report(router, ds, curve, out.name, skipped)
    image = plot_deferral(curve, title or f"{out.name}: out-of-fold deferral curve")
    if check:
        check()
    save_router(router, out, overwrite=overwrite)
    if plot_path is not None:
        save_plot(image, plot_path, overwrite=overwrite)
    return TrainedRouter(router, out, curve, report, image, plot_path)
