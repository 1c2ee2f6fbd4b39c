"""Plots drawn with Pillow (the pack adds no plotting dependency): deferral curves, line charts and the
decision log's report.

Every function returns a PIL image; ``save_plot`` writes one atomically and, like every writer of
the pack, replaces an existing file only when asked. Fonts scale with the image, ticks are round numbers
(``_nice_ticks``: 1, 2, 2.5 or 5 times a power of ten) that cover the data, both axes are labelled, and
a value that is not a finite number (NaN, infinity, None) is left out instead of reaching Pillow.
"""

from __future__ import annotations

import math
import numbers

from .errors import RouterError
from .storage.files import atomic_write
from .storage.text import printable


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi].

    The span is at least a millionth of the values' magnitude (and of 1), so a tiny or subnormal
    span cannot give a zero step, and the loop is bounded whatever the floats."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > 1e300:
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    hi = max(hi, lo + 1e-6 * max(1.0, abs(lo), abs(hi)))
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    for i in range(4 * count + 4):
        v = start + i * step
        ticks.append(round(v, 10))
        if v >= hi - step * 0.001:
            break
    return ticks


def _tick_label(v: float, ticks: list[float]) -> str:
    """``v`` with as many decimals as the tick step needs (0.25 -> 2, 5 -> 0); ``:g`` past 10^9 or
    below a step of 10^-6."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    if abs(v) >= 1e9 or 0 < step < 1e-6:  # significant digits enough to tell neighbouring ticks apart
        digits = math.floor(math.log10(max(abs(v), step))) - math.floor(math.log10(step)) + 2 if step > 0 else 4
        return f"{v:.{min(max(digits, 1), 17)}g}"
    decimals = next((d for d in range(8) if abs(step * 10 ** d - round(step * 10 ** d)) < 1e-6), 8)
    return f"{v:.{decimals}f}"


def _fit(text: str, limit: float, measure) -> str:
    """``text`` cut (with an ellipsis) to at most ``limit`` pixels: at most log2 + 2 measurements of at
    most ``limit`` characters (no glyph is narrower than a pixel), so a name of any length costs the same."""
    if len(text) <= limit and measure(text) <= limit:
        return text
    text = text[:int(limit) + 1]
    lo, hi = 0, len(text)  # the longest prefix that fits with the ellipsis: binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid] + "…") <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(x)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, AttributeError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _dashed(draw, x0, y, x1, colour, width=2, dash=8, gap=5):
    x = x0
    while x < x1:
        draw.line([(x, y), (min(x + dash, x1), y)], fill=colour, width=width)
        x += dash + gap


_LINE = (31, 119, 180)
_WINDOW = (170, 170, 170)
_TARGET = (214, 39, 40)
_TARGETS = (_TARGET, (255, 127, 14), (148, 103, 189), (140, 86, 75))
_BAR = (44, 160, 44)
_AXIS = (60, 60, 60)
_GRID = (230, 230, 230)


class _Canvas:
    """A white Pillow image with the report's fonts (sized to the image) and a text-width measure."""

    def __init__(self, width: int, height: int, base: int = 13):
        from PIL import Image, ImageDraw

        self.width, self.height = width, height
        self.img = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.img)
        self.scale = min(width / 720, height / 480)
        self.fs = fs = max(10, round(base * self.scale))
        self.font, self.small, self.big = _font(fs), _font(max(9, fs - 2)), _font(fs + 3)

    def text_w(self, s: str, font=None) -> float:
        return self.draw.textlength(s, font=font or self.font)


def save_plot(img, path, overwrite: bool = False):
    """Write a plot as PNG, atomically; an existing file is replaced only with ``overwrite``."""
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite=overwrite)


def _finite_xy(xs, ys) -> list[tuple[float, float]]:
    """The (x, y) pairs whose coordinates are both finite numbers."""
    return [(float(x), float(y)) for x, y in zip(xs, ys) if _finite(x) and _finite(y)]


def _vertical_text(cv, xy: tuple[float, float], text: str, font, fill=(0, 0, 0)) -> None:
    """``text`` turned a quarter left (read bottom to top), its top-left corner at ``xy``."""
    from PIL import Image, ImageDraw

    w = max(1, math.ceil(cv.text_w(text, font)))
    h = max(1, math.ceil(getattr(font, "size", cv.fs) * 1.3))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    mask = mask.rotate(90, expand=True)
    cv.img.paste(Image.new("RGB", mask.size, fill), (round(xy[0]), round(xy[1])), mask)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """``lo``..``hi`` widened around a single value (every candidate equally good, say), so its ticks are
    round numbers about it instead of millionths apart."""
    if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):
        half = max(abs(hi) * 0.05, 0.5)
        return lo - half, hi + half
    return lo, hi


class _Axes:
    """A plot box with round ticks covering the data on both axes, grid lines, tick labels, both axis labels
    and a title, sized to the canvas' fonts; ``P`` maps data to pixels (clamped just outside the image)."""

    def __init__(self, cv, xs, ys, title: str, xlabel: str, ylabel: str, right: float = 0.0,
                 x_from_zero: bool = True, yfmt: str | None = None):
        xs = [x for x in xs if _finite(x)] or [0.0, 1.0]
        ys = [y for y in ys if _finite(y)] or [0.0, 1.0]
        x_lo = 0.0 if x_from_zero and min(xs) >= 0 else min(xs)
        self.xt = _nice_ticks(*_span(x_lo, max(xs)), 6)
        self.yt = _nice_ticks(*_span(min(ys), max(ys)), 6)
        ylabels = [format(t, yfmt) if yfmt else _tick_label(t, self.yt) for t in self.yt]
        xlabels = [_tick_label(t, self.xt) for t in self.xt]
        d, fs, W, H = cv.draw, cv.fs, cv.width, cv.height
        pad = round(8 * cv.scale)
        heading = _fit(printable(title), W - 2 * pad, lambda t: cv.text_w(t, cv.big)) if title else ""
        top = pad + (fs + 3 + 2 * pad if heading else pad)
        ylab_w = max(cv.text_w(lab, cv.small) for lab in ylabels)
        left = pad + (fs + pad if ylabel else 0) + ylab_w + pad
        bottom = H - pad - (fs + pad if xlabel else 0) - fs - pad
        right_px = W - max(right, 2 * pad)
        self.cv, self.box = cv, (left, top, right_px, bottom)
        self.x0, self.x1, self.y0, self.y1 = self.xt[0], self.xt[-1], self.yt[0], self.yt[-1]
        for t, lab in zip(self.yt, ylabels):
            y = self.P(self.x0, t)[1]
            d.line([(left, y), (right_px, y)], fill=_GRID)
            d.text((left - pad / 2 - cv.text_w(lab, cv.small), y - fs / 2), lab, fill=_AXIS, font=cv.small)
        for t, lab in zip(self.xt, xlabels):
            x = self.P(t, self.y0)[0]
            d.line([(x, top), (x, bottom)], fill=_GRID)
            d.line([(x, bottom), (x, bottom + 4)], fill=_AXIS)
            d.text((x - cv.text_w(lab, cv.small) / 2, bottom + 6), lab, fill=_AXIS, font=cv.small)
        d.rectangle([left, top, right_px, bottom], outline=_AXIS)
        if heading:
            d.text((pad, pad), heading, fill="black", font=cv.big)
        if xlabel:
            lab = _fit(printable(xlabel), right_px - left, cv.text_w)
            d.text(((left + right_px) / 2 - cv.text_w(lab) / 2, H - pad - fs - 2), lab, fill="black", font=cv.font)
        if ylabel:
            lab = _fit(printable(ylabel), bottom - top, cv.text_w)
            _vertical_text(cv, (pad, (top + bottom) / 2 - cv.text_w(lab) / 2), lab, cv.font)

    def P(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        px = left + (x - self.x0) / ((self.x1 - self.x0) or 1.0) * (right - left)
        py = bottom - (y - self.y0) / ((self.y1 - self.y0) or 1.0) * (bottom - top)
        lim = 10.0 + max(self.cv.width, self.cv.height)
        return min(max(px, -lim), 2 * lim), min(max(py, -lim), 2 * lim)

    def line(self, pts, colour, width: int = 2) -> None:
        """A polyline through the finite points (a dot for a single one)."""
        px = [self.P(x, y) for x, y in pts]
        if len(px) == 1:
            x, y = px[0]
            self.cv.draw.ellipse([x - width, y - width, x + width, y + width], fill=colour)
        elif px:
            self.cv.draw.line(px, fill=colour, width=width, joint="curve")

    def dot(self, x: float, y: float, colour, radius: float, name: str = "", name_colour=None) -> None:
        """A dot, with its name right of it, or left where the name would leave the plot box."""
        cv, (px, py) = self.cv, self.P(x, y)
        cv.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)
        if name:
            name = _fit(printable(name), (self.box[2] - self.box[0]) / 2, lambda t: cv.text_w(t, cv.small))
            w = cv.text_w(name, cv.small)
            nx = px + radius + 3 if px + radius + 3 + w <= self.box[2] else px - radius - 3 - w
            cv.draw.text((nx, py - cv.fs / 2), name, fill=name_colour or colour, font=cv.small)


def _legend(cv, x: float, y: float, items, width: float) -> float:
    """A line sample and a label per (label, colour), labels cut to ``width``; returns the y below the last."""
    sample = round(26 * cv.scale)
    for label, colour in items:
        cv.draw.line([(x, y + cv.fs / 2 + 1), (x + sample, y + cv.fs / 2 + 1)], fill=colour, width=3)
        label = _fit(printable(label), width - sample - 6, lambda t: cv.text_w(t, cv.small))
        cv.draw.text((x + sample + 6, y), label, fill="black", font=cv.small)
        y += cv.fs + 6
    return y


_ROUTER, _MIX, _ORACLE, _CANDIDATE = (30, 80, 220), (150, 150, 150), (40, 160, 40), (200, 60, 40)


def plot_deferral(result: dict, title: str = "", size=(720, 480)):
    """Draw a deferral-curve plot from an evaluate/cross_validate result; returns a PIL image. The y axis is
    the metric's mean quality; points that are not finite are left out."""
    cv = _Canvas(*size, base=15)
    s = result["summary"]
    metric = s.get("metric") or "quality"
    cands = {n: v for n, v in result["candidates"].items() if _finite(v.get("cost")) and _finite(v.get("mean_quality"))}
    curves = [(label, _finite_xy(s[key]["cost"], s[key]["quality"]), colour, width)
              for label, key, colour, width in (("oracle", "oracle", _ORACLE, 2),
                                                ("best fixed mix", "best_fixed_mix", _MIX, 2),
                                                ("router", "router_envelope", _ROUTER, 3)) if key in s]
    points = _finite_xy([p.get("mean_cost") for p in result["points"]],
                        [p.get("mean_quality") for p in result["points"]])
    xs = [v["cost"] for v in cands.values()] + [x for c in curves for x, _ in c[1]] + [x for x, _ in points]
    ys = [v["mean_quality"] for v in cands.values()] + [y for c in curves for _, y in c[1]] + [y for _, y in points]
    ax = _Axes(cv, xs or [1.0], ys, title or f"deferral curve ({metric})",
               "mean cost per image (s)", f"mean {metric}")
    for _, pts, colour, width in curves:
        ax.line(pts, colour, width)
    for x, y in points:
        ax.dot(x, y, _ROUTER, 2)
    for name, v in cands.items():
        ax.dot(v["cost"], v["mean_quality"], _CANDIDATE, 4, name, (120, 30, 20))
    left, top, right, _ = ax.box
    legend_w = min(round(170 * cv.scale), (right - left) / 2)
    rows = len(curves) + (1 if _finite(s.get("gap_closed")) else 0)
    cv.draw.rectangle([right - legend_w - 6, top + 2, right - 2, top + 10 + rows * (cv.fs + 6)], fill="white",
                      outline=_GRID)
    y = _legend(cv, right - legend_w, top + 6, [(c[0], c[2]) for c in reversed(curves)], legend_w - 6)
    if _finite(s.get("gap_closed")):
        cv.draw.text((right - legend_w, y), f"gap closed {s['gap_closed']:.1%}", fill="black", font=cv.small)
    return cv.img


def plot_curves(lines, dots=(), title: str = "", xlabel: str = "mean cost per image (s)", size=(720, 480),
                x_from_zero: bool = True, yfmt: str | None = None, hline: float | None = None, ylabel: str = ""):
    """Several curves on one set of axes, with the legend in a right margin; returns a PIL image.

    ``lines``: (label, xs, ys, (r, g, b), width) per curve; ``dots``: (label, x, y, (r, g, b)) per
    labelled point (single candidates, say); ``hline``: a thin reference line at that y; ``yfmt``: a
    format for the y tick labels (default: as many decimals as the round ticks need)."""
    cv = _Canvas(*size, base=15)
    curves = [(label, _finite_xy(lx, ly), colour, width) for label, lx, ly, colour, width in lines]
    marks = [(name, x, y, colour) for name, x, y, colour in dots if _finite(x) and _finite(y)]
    xs = [x for c in curves for x, _ in c[1]] + [m[1] for m in marks]
    ys = [y for c in curves for _, y in c[1]] + [m[2] for m in marks] + ([hline] if _finite(hline) else [])
    legend_w = min(max((cv.text_w(printable(c[0]), cv.small) for c in curves), default=0) + 50 * cv.scale,
                   size[0] * 0.3)
    ax = _Axes(cv, xs, ys, title, xlabel, ylabel,
               right=legend_w + 12 * cv.scale, x_from_zero=x_from_zero, yfmt=yfmt)
    if _finite(hline):
        ax.line([(ax.x0, hline), (ax.x1, hline)], (200, 200, 200), 1)
    for _, pts, colour, width in curves:
        ax.line(pts, colour, width)
    for name, x, y, colour in marks:
        ax.dot(x, y, colour, 4, name)
    _legend(cv, ax.box[2] + 10 * cv.scale, ax.box[1] + 6, [(c[0], c[2]) for c in curves], legend_w - 4)
    return cv.img



def _cost_series(summary: dict) -> dict:
    """What the top panel draws: the finite running means, window means and targets, and the ticks."""
    running = [p for p in summary.get("running") or [] if _finite(p["mean_cost"])]
    wins = [w for w in summary.get("windows") or [] if _finite(w["mean_cost"])]
    targets = [t["target"] for t in summary.get("targets", []) if _finite(t["target"])][:len(_TARGETS)]
    out = {"running": running, "wins": wins, "targets": targets, "yt": [], "xt": [], "xmax": 1}
    if running:
        vals = [p["mean_cost"] for p in running] + [w["mean_cost"] for w in wins] + targets
        lo, hi = min(0.0, min(vals)), max(vals)
        out["yt"] = _nice_ticks(lo, hi * 1.05 if hi > 0 else hi + 1)
        xmax = out["xmax"] = max(running[-1]["n"], 1)
        out["xt"] = [t for t in _nice_ticks(0, xmax, 6) if t <= xmax * 1.0001 and float(t).is_integer()]
    return out


def _cost_legend(cv: _Canvas, series: dict, left: float, y: float) -> float:
    """The legend row and the axis unit above the top panel; returns the panel's top."""
    d, fs, lx = cv.draw, cv.fs, left
    items = [("cumulative mean cost", _LINE, "line")]
    if series["wins"]:
        items.append(("mean per window", _WINDOW, "line"))
    for t, colour in zip(series["targets"], _TARGETS):
        items.append((f"target {t:g} s", colour, "dash"))
    for label, colour, kind in items:
        if kind == "dash":
            _dashed(d, lx, y + fs / 2 + 1, lx + 22, colour, dash=6, gap=3)
        else:
            d.line([(lx, y + fs / 2 + 1), (lx + 22, y + fs / 2 + 1)], fill=colour, width=3)
        d.text((lx + 27, y), label, fill="black", font=cv.small)
        lx += 27 + cv.text_w(label, cv.small) + 18
    y += fs + 6
    d.text((max(4, left - cv.text_w("s / image", cv.small) / 2), y), "s / image", fill="black", font=cv.small)
    return y + fs + 6


def _cost_panel(cv: _Canvas, series: dict, ylabels: list[str], box: tuple[float, float, float, float]) -> None:
    """The top panel in ``box`` (left, top, right, bottom): the cumulative mean cost over the decisions,
    the per-window mean as a step line and a dashed line per target."""
    d, fs, (left, top, right, bottom) = cv.draw, cv.fs, box
    running, yt = series["running"], series["yt"]
    if not running:
        d.text((left, (top + bottom) / 2), "no costs recorded", fill=_AXIS, font=cv.font)
        return
    ylo, yhi, xmax = yt[0], yt[-1], series["xmax"]

    def px(v):  # clamped to just outside the image: Pillow needs coordinates it can convert
        return min(max(left + (right - left) * v / xmax, -10.0), cv.width + 10.0)

    def py(v):
        return min(max(bottom - (bottom - top) * (v - ylo) / (yhi - ylo), -10.0), cv.height + 10.0)

    for t, lab in zip(yt, ylabels):
        d.line([(left, py(t)), (right, py(t))], fill=_GRID)
        d.text((left - 6 - cv.text_w(lab, cv.small), py(t) - fs / 2), lab, fill=_AXIS, font=cv.small)
    for t in series["xt"]:
        d.line([(px(t), bottom), (px(t), bottom + 4)], fill=_AXIS)
        lab = f"{t:.0f}"
        d.text((px(t) - cv.text_w(lab, cv.small) / 2, bottom + 6), lab, fill=_AXIS, font=cv.small)
    d.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS, width=1)
    d.text(((left + right) / 2 - cv.text_w("decisions") / 2, bottom + fs + 8), "decisions", fill="black",
           font=cv.font)
    for w in series["wins"]:  # per-window mean as a step line
        d.line([(px(w["start"]), py(w["mean_cost"])), (px(w["end"]), py(w["mean_cost"]))], fill=_WINDOW, width=2)
    for t, colour in zip(series["targets"], _TARGETS):
        _dashed(d, left, py(t), right, colour)
    pts = [(px(p["n"]), py(p["mean_cost"])) for p in running]
    if len(pts) == 1:
        d.ellipse([pts[0][0] - 3, pts[0][1] - 3, pts[0][0] + 3, pts[0][1] + 3], fill=_LINE)
    else:
        d.line(pts, fill=_LINE, width=3, joint="curve")


def _share_panel(cv: _Canvas, candidates: list[dict], left: float, right: float, y0: float) -> None:
    """The bottom panel from ``y0`` down: each candidate's share of the decisions as a horizontal bar,
    names escaped and cut to fit (rows past the room left are summed in one "N others" row)."""
    d, fs, small = cv.draw, cv.fs, cv.small
    cands = list(candidates)
    d.text((left, y0), "share of decisions per candidate", fill="black", font=cv.font)
    y0 += fs + 8
    avail = cv.height - y0 - 8
    max_rows = max(1, int(avail // max(fs + 4, 1)))
    if len(cands) > max_rows:
        rest = cands[max_rows - 1:]
        cands = cands[:max_rows - 1] + [{"candidate": f"{len(rest)} others",
                                         "share": sum(c["share"] or 0.0 for c in rest)}]
    row = min(avail / max(len(cands), 1), fs * 2.2)
    names = [_fit(printable(c["candidate"]), cv.width * 0.35, lambda t: cv.text_w(t, small)) for c in cands]
    label_w = max(cv.text_w(name, small) for name in names)
    bx0 = max(left, 8 + label_w + 8)
    bx1 = right - cv.text_w("100.0%", small) - 8
    for i, (c, name) in enumerate(zip(cands, names)):
        yc = y0 + i * row
        d.text((bx0 - 8 - cv.text_w(name, small), yc + row / 2 - fs / 2), name, fill="black", font=small)
        bar_h = max(3, row * 0.7)
        share = min(max(float(c["share"] or 0.0), 0.0), 1.0)
        x_end = bx0 + (bx1 - bx0) * share
        d.rectangle([bx0, yc + (row - bar_h) / 2, max(bx0 + 1, x_end), yc + (row + bar_h) / 2], fill=_BAR)
        d.text((x_end + 5, yc + row / 2 - fs / 2), f"{100 * share:.1f}%", fill=_AXIS, font=small)


def plot_log_summary(summary: dict, title: str = "", width: int = 720, height: int = 480):
    """A Pillow image of :func:`report.summarise_log`'s result: top, the cumulative mean cost per image
    over the decisions (with the per-window mean and a dashed line per target); bottom, each
    candidate's share of the decisions as horizontal bars. White background, legend. Any numbers
    (non-finite ones are left out) and any names (escaped, cut in time linear in their length)."""
    width, height = int(width), int(height)
    if width < 200 or height < 160:
        raise RouterError(f"plot size {width}x{height} is too small; at least 200x160")
    cv = _Canvas(width, height)
    fs = cv.fs
    heading = _fit(printable(title or "Routing decisions"), width - 12, lambda t: cv.text_w(t, cv.big))
    cv.draw.text((width / 2 - cv.text_w(heading, cv.big) / 2, 6), heading, fill="black", font=cv.big)
    if not summary.get("total", 0):
        cv.draw.text((width / 2 - cv.text_w("no decisions") / 2, height / 2), "no decisions", fill=_AXIS,
                     font=cv.font)
        return cv.img
    series = _cost_series(summary)
    ylabels = [_tick_label(t, series["yt"]) for t in series["yt"]]
    left = max(round(70 * cv.scale), 12 + max((cv.text_w(lab, cv.small) for lab in ylabels), default=0))
    right = width - round(20 * cv.scale)
    top = _cost_legend(cv, series, left, 6 + fs + 10)
    split = top + round((height - top) * 0.55)
    _cost_panel(cv, series, ylabels, (left, top, right, split - 2 * fs - 10))
    _share_panel(cv, summary.get("candidates") or [], left, right, split + 6)
    return cv.img
