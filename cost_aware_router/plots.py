"""Plots drawn with Pillow (the pack adds no plotting dependency): deferral curves and line charts.

Every function returns a PIL image; ``save_plot`` writes one atomically and, like every writer of
the pack, replaces an existing file only when asked.
"""

from __future__ import annotations

import math

from .errors import RouterError
from .fileutil import atomic_write, printable

MARGINS = (70, 20, 40, 50)  # left, right, top, bottom, in pixels


def _frame(d, size, xlim, ylim, title: str, xlabel: str, margins=MARGINS, yfmt: str = ".3f"):
    """Draw the plot box, ticks, axis label and title; returns the data -> pixel mapping."""
    W, H = size
    L, R, T, B = margins
    (x0, x1), (y0, y1) = xlim, ylim

    def P(x, y):
        return (L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (y - y0) / (y1 - y0) * (H - T - B))

    d.rectangle([L, T, W - R, H - B], outline="black")
    for i in range(6):
        gx = x0 + (x1 - x0) * i / 5
        gy = y0 + (y1 - y0) * i / 5
        px, _ = P(gx, y0)
        _, py = P(x0, gy)
        d.line([px, H - B, px, H - B + 4], fill="black")
        d.text((px - 12, H - B + 6), f"{gx:.2f}", fill="black")
        d.line([L - 4, py, L, py], fill="black")
        d.text((4, py - 6), f"{gy:{yfmt}}", fill="black")
    d.text((W // 2 - 80, H - 18), xlabel, fill="black")
    d.text((L, 8), title, fill="black")
    return P


def _legend(d, x: int, y: int, items) -> int:
    """A line sample and a label per (label, colour); returns the y below the last entry."""
    for label, color in items:
        d.line([x, y + 6, x + 30, y + 6], fill=color, width=3)
        d.text((x + 36, y), label, fill="black")
        y += 16
    return y


def _padded(lo: float, hi: float, share: float = 0.08, floor: float = 0.1) -> tuple[float, float]:
    pad = (hi - lo) * share or floor
    return lo - pad, hi + pad


def plot_deferral(result: dict, title: str = "", size=(720, 480)):
    """Draw a deferral-curve plot from an evaluate/cross_validate result; returns a PIL image."""
    from PIL import Image, ImageDraw

    W, H = size
    R, T = MARGINS[1], MARGINS[2]
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    s = result["summary"]
    cands = result["candidates"]
    xs = [v["cost"] for v in cands.values()] + s["oracle"]["cost"]
    ys = [v["mean_quality"] for v in cands.values()] + s["oracle"]["quality"] + s["router_envelope"]["quality"]
    ys += [p["mean_quality"] for p in result["points"] if "mean_quality" in p]
    x0, x1 = 0.0, max(xs) * 1.05 or 1.0
    P = _frame(d, size, (x0, x1), _padded(min(ys), max(ys)), title or f"deferral curve ({s.get('metric', '')})",
               "mean cost per image (s)")

    def line(xy, color, width=2):
        pts = [P(x, y) for x, y in zip(xy["cost"], xy["quality"])]
        if len(pts) == 1:
            pts = pts * 2
        d.line(pts, fill=color, width=width)

    line(s["oracle"], (40, 160, 40))
    line(s["best_fixed_mix"], (150, 150, 150))
    line(s["router_envelope"], (30, 80, 220), 3)
    for p in result["points"]:
        if "mean_quality" in p:
            x, y = P(p["mean_cost"], p["mean_quality"])
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(30, 80, 220))
    for name, v in cands.items():
        x, y = P(v["cost"], v["mean_quality"])
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(200, 60, 40))
        d.text((x + 6, y - 6), name, fill=(120, 30, 20))
    ly = _legend(d, W - R - 150, T + 6,
                 (("router", (30, 80, 220)), ("best fixed mix", (150, 150, 150)), ("oracle", (40, 160, 40))))
    d.text((W - R - 150, ly), f"gap closed {s['gap_closed']:.1%}", fill="black")
    return img


def plot_curves(lines, dots=(), title: str = "", xlabel: str = "mean cost per image (s)", size=(720, 480),
                x_from_zero: bool = True, yfmt: str = ".3f", hline: float | None = None):
    """Several curves on one set of axes, with the legend in a right margin; returns a PIL image.

    ``lines``: (label, xs, ys, (r, g, b), width) per curve; ``dots``: (label, x, y, (r, g, b)) per
    labelled point (single candidates, say); ``hline``: a thin reference line at that y."""
    from PIL import Image, ImageDraw

    margins = (MARGINS[0], 170, MARGINS[2], MARGINS[3])
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [x for ln in lines for x in ln[1]] + [dt[1] for dt in dots]
    ys = [y for ln in lines for y in ln[2]] + [dt[2] for dt in dots] + ([hline] if hline is not None else [])
    x0 = 0.0 if x_from_zero else min(xs)
    x1 = max(xs) * 1.05 if x_from_zero else max(xs)
    P = _frame(d, size, (x0, x1 if x1 > x0 else x0 + 1.0), _padded(min(ys), max(ys)), title, xlabel, margins, yfmt)
    if hline is not None:
        d.line([P(x0, hline), P(x1, hline)], fill=(200, 200, 200), width=1)
    for _, lx, ly, color, width in lines:
        pts = [P(x, y) for x, y in zip(lx, ly)]
        d.line(pts * 2 if len(pts) == 1 else pts, fill=color, width=width)
    for name, x, y, color in dots:
        px, py = P(x, y)
        d.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
        right = px + 6 + d.textlength(name) <= size[0] - margins[1]  # else left of the dot, clear of the legend
        d.text((px + 6 if right else px - 6 - d.textlength(name), py - 6), name, fill=color)
    _legend(d, size[0] - margins[1] + 12, margins[2] + 6, [(ln[0], ln[3]) for ln in lines])
    return img


def save_plot(img, path, overwrite: bool = False):
    """Write a plot as PNG, atomically; an existing file is replaced only with ``overwrite``."""
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite=overwrite)


# -- the decision log report (decision_log.summarise) ------------------------------------------
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
    return isinstance(x, (int, float)) and math.isfinite(x)


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

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.width, self.height = width, height
        self.img = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.img)
        self.scale = min(width / 720, height / 480)
        self.fs = fs = max(10, round(13 * self.scale))
        self.font, self.small, self.big = _font(fs), _font(max(9, fs - 2)), _font(fs + 3)

    def text_w(self, s: str, font=None) -> float:
        return self.draw.textlength(s, font=font or self.font)


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
    """A Pillow image of :func:`log_report.summarise`'s result: top, the cumulative mean cost per image
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
