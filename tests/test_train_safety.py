"""A training run never leaves a bad or half-written router (issue 19, part 1): the router file is written
last, after the report and the curve; a refused folder, an interrupt or a curve that cannot be drawn leave an
existing file byte for byte as it was. And the public tables are exported without a shell step (part 2)."""

import json
import os

import numpy as np
import pytest
from conftest import DATA, write_rows

from cost_aware_router import train_run
from cost_aware_router.errors import DataError, RouterError
from cost_aware_router.evaluate import training_curve
from cost_aware_router.plots import plot_deferral
from cost_aware_router.scored import JSONL_NAME, load_dataset
from cost_aware_router.tables import PATH_METRIC, PATH_TABLE, TABLES, export_command, export_table, table_rows

OLD = b"an earlier router file, which a failed run must not touch"


@pytest.fixture
def small(tmp_path):
    """40 prompts of the TIFA table, exported as the Export Rating Table node does, on the scorer's scale."""
    export_table(PATH_TABLE, tmp_path / "tifa")
    ds = load_dataset(tmp_path / "tifa", metric=PATH_METRIC)
    return ds.subset(np.arange(40))


def _old(tmp_path):
    out = tmp_path / "my_router.safetensors"
    out.write_bytes(OLD)
    return out


def _left(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "tifa")


def test_a_run_saves_the_router_and_reports_it(small, embedder, tmp_path):
    done = train_run.train_and_save(small, embedder, tmp_path / "r.safetensors", plot_path=tmp_path / "r.png")
    assert done.report.startswith(f"saved r.safetensors (3 candidates, 40 prompts, metric {PATH_METRIC})")
    assert (tmp_path / "r.safetensors").stat().st_size > 1000 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_a_plot_that_fails_leaves_the_old_router_byte_identical(small, embedder, tmp_path, monkeypatch):
    out = _old(tmp_path)

    def broken(*a, **k):
        raise ValueError("cannot convert float NaN to integer")  # what the issue's run died of

    monkeypatch.setattr(train_run, "plot_deferral", broken)
    with pytest.raises(ValueError, match="NaN"):
        train_run.train_and_save(small, embedder, out, overwrite=True)
    assert out.read_bytes() == OLD and _left(tmp_path) == ["my_router.safetensors"]  # no temporary file either


def test_a_curve_that_cannot_be_computed_leaves_the_old_router(small, embedder, tmp_path, monkeypatch):
    """The issue's curve: means over no complete prompt (NaN), which crashed the plot after the save. The curve
    now refuses such data; whatever the curve step raises, it is before the save."""
    out = _old(tmp_path)
    holed = small.subset(np.arange(len(small.prompts)))
    real = train_run.training_curve

    def no_complete_prompt(router, ds):
        holed.quality[:, 0] = np.nan
        return real(router, holed)

    monkeypatch.setattr(train_run, "training_curve", no_complete_prompt)
    with pytest.raises(DataError, match="no prompt has a score for every router candidate"):
        train_run.train_and_save(small, embedder, out, overwrite=True)
    assert out.read_bytes() == OLD


def test_an_interrupt_after_fitting_leaves_the_old_router(small, embedder, tmp_path):
    out = _old(tmp_path)

    class Interrupted(Exception):
        pass

    def check():
        raise Interrupted

    with pytest.raises(Interrupted):
        train_run.train_and_save(small, embedder, out, overwrite=True, check=check)
    assert out.read_bytes() == OLD and _left(tmp_path) == ["my_router.safetensors"]


def test_an_existing_router_is_refused_before_any_work_without_overwrite(small, tmp_path):
    out = _old(tmp_path)
    with pytest.raises(RouterError, match="already exists"):
        train_run.train_and_save(small, None, out)  # no embedder needed: refused first
    assert out.read_bytes() == OLD


def test_the_issues_mixed_folder_is_refused_before_anything_is_written(tmp_path, embedder):
    """The train_router note's table exported into the collection's folder, then a collection into it: six
    candidates, two scales under 'score', no prompt in common. Refused; the old router stays."""
    folder = tmp_path / "scored_generations"
    export_table(PATH_TABLE, folder)
    rows = [json.loads(line) for line in (folder / JSONL_NAME).read_text().splitlines()]
    collected = [{"prompt": f"my prompt {i}", "candidate": c, "score": 30.0 + (i * 7 + j) % 5, "cost": 0.5 + j,
                  "scores": {"clipscore": 30.0 + (i * 7 + j) % 5}}
                 for i in range(8) for j, c in enumerate(["sd15-25", "sd15-8", "sdxl-turbo-1"])]
    write_rows(folder, rows + collected)
    out = _old(tmp_path)
    with pytest.raises(DataError, match="'score' mixes two scales"):
        train_run.train_and_save(load_dataset(folder), embedder, out, overwrite=True)
    assert out.read_bytes() == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["my_router.safetensors",
                                                                                      "scored_generations"]


def test_the_training_curve_is_finite_and_draws(small, embedder):
    """A calibration point without a finite quality is left out of the curve instead of reaching the plot."""
    from cost_aware_router.train import train_router

    router = train_router(small, embedder, "knn")
    router.calibration["mean_quality"][1] = float("nan")
    router.calibration["mean_quality"][2] = None
    curve = training_curve(router, small)
    values = [p["mean_quality"] for p in curve["points"]] + [v["mean_quality"] for v in curve["candidates"].values()]
    assert values and np.isfinite(values).all()
    assert len(curve["points"]) == len(router.calibration["mean_quality"]) - 2
    assert plot_deferral(curve).size == (720, 480)


def test_a_curve_over_no_complete_prompt_is_a_data_error(small, embedder):
    from cost_aware_router.train import train_router

    router = train_router(small, embedder, "knn")
    holed = small.subset(np.arange(len(small.prompts)))
    holed.quality[:, 0] = np.nan
    with pytest.raises(DataError, match="no prompt has a score for every router candidate"):
        training_curve(router, holed)


def test_export_writes_once_and_refuses_other_rows_unless_asked(tmp_path):
    folder = tmp_path / "rating_tables" / PATH_TABLE
    out, rows, written = export_table(PATH_TABLE, folder)
    assert out == folder / JSONL_NAME and written and rows == len(table_rows(PATH_TABLE, DATA.parent.parent / "data"))
    data = out.read_bytes()
    assert export_table(PATH_TABLE, folder)[2] is False and out.read_bytes() == data  # a template re-run
    (out).write_text('{"other": 1}\n')
    with pytest.raises(RouterError, match="already exists and holds other rows"):
        export_table(PATH_TABLE, folder)
    assert export_table(PATH_TABLE, folder, overwrite=True)[2] and out.read_bytes() == data
    with pytest.raises(RouterError, match="unknown table 'nope'"):
        export_table("nope", tmp_path / "x")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RouterError, match="is a file, not a folder"):
        export_table(PATH_TABLE, tmp_path / "afile")
    fifo_folder = tmp_path / "fifo"
    fifo_folder.mkdir()
    os.mkfifo(fifo_folder / JSONL_NAME)  # never opened (it would block): refused as something already there
    with pytest.raises(RouterError, match="already exists"):
        export_table(PATH_TABLE, fifo_folder)


def test_the_path_table_has_the_scorers_metric_and_the_command_runs_without_a_console_script():
    assert PATH_METRIC in TABLES[PATH_TABLE]["metrics"]
    assert export_command("tifa_160", "out") == "python -m cost_aware_router export-table tifa_160 out"
