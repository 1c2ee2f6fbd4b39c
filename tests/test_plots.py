"""Curve images (issue 19): round ticks that cover the data, fonts that grow with the image, both axes
labelled, and data with NaN (the training node's curve once failed with "cannot convert float NaN to
integer") drawn without it instead of crashing."""

import math

import pytest

from cost_aware_router.plots import _Canvas, _nice_ticks, _span, _tick_label, plot_curves, plot_deferral

NAN = float("nan")


def _nice(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m, rel_tol=1e-9) for m in (1, 2, 2.5, 5, 10))


@pytest.mark.parametrize("lo, hi", [(4.367, 4.551), (2.76, 3.30), (0.0, 5.93), (0.318, 5.93), (-0.2, 0.7),
                                    (30.1, 31.9), (0.0012, 0.0049), (1e4, 3.7e4), _span(7.0, 7.0),
                                    _span(0.0, 0.0)])
def test_ticks_are_round_numbers_that_cover_the_range(lo, hi):
    ticks = _nice_ticks(lo, hi, 6)
    steps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
    assert all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps) and _nice(steps[0])
    labels = [_tick_label(t, ticks) for t in ticks]
    assert len(set(labels)) == len(labels)
    assert all(len(lab.replace("-", "").replace(".", "")) <= 6 for lab in labels), labels  # no 4.551, 4.367


def test_the_issues_odd_ticks_are_round_now():
    ticks = _nice_ticks(4.367, 4.551, 6)
    assert [_tick_label(t, ticks) for t in ticks] == ["4.35", "4.40", "4.45", "4.50", "4.55", "4.60"]


def _result(nan_everywhere=False):
    q = [NAN] * 3 if nan_everywhere else [2.76, NAN, 3.30]
    return {"candidates": {"fast": {"cost": 0.318, "mean_quality": q[0]}, "odd": {"cost": NAN, "mean_quality": 3.0},
                           "slow": {"cost": 5.93, "mean_quality": q[2]}},
            "points": [{"mean_cost": 0.318, "mean_quality": q[0]}, {"mean_cost": 3.0, "mean_quality": q[1]},
                       {"mean_cost": NAN, "mean_quality": 3.1}, {"mean_cost": 5.93, "mean_quality": q[2]}],
            "summary": {"metric": "mos_quality", "gap_closed": NAN,
                        "oracle": {"cost": [0.318, NAN, 5.93], "quality": [3.0, 3.5, NAN]},
                        "best_fixed_mix": {"cost": [0.318, 5.93], "quality": q[::2]},
                        "router_envelope": {"cost": [0.318, 3.0, 5.93], "quality": q}}}


@pytest.mark.parametrize("everywhere", [False, True])
def test_a_curve_with_nan_draws_without_it(everywhere):
    img = plot_deferral(_result(everywhere), "my_router.safetensors: out-of-fold deferral curve")
    assert img.size == (720, 480)
    assert plot_curves([("a", [0, NAN, 2], [1.0, 2.0, NAN], (0, 0, 255), 2)], [("d", NAN, 1.0, (255, 0, 0))],
                       "t", ylabel="gap closed").size == (720, 480)
    assert plot_curves([("empty", [], [], (0, 0, 255), 2)]).size == (720, 480)


def _dark_rows(img, x0, x1):
    px = img.convert("L").load()
    return [y for y in range(img.size[1]) if any(px[x, y] < 128 for x in range(x0, x1))]


def test_fonts_grow_with_the_image_and_both_axes_are_labelled():
    assert _Canvas(1440, 960, base=15).fs == 2 * _Canvas(720, 480, base=15).fs >= 30
    img = plot_deferral(_result(), "curve")
    fs = _Canvas(720, 480, base=15).fs
    # the y label, written bottom to top in the left margin: a tall run of dark rows left of the tick labels
    rows = _dark_rows(img, 0, 8 + fs)
    assert rows and max(rows) - min(rows) > 80
    # the x label: dark pixels in the bottom band, under the tick labels
    assert _dark_rows(img.crop((0, img.size[1] - fs - 10, img.size[0], img.size[1])), 0, img.size[0])
