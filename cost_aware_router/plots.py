"""Plots drawn with Pillow (the pack adds no plotting dependency): deferral curves and line charts.

Every function returns a PIL image; ``save_plot`` writes one atomically and, like every writer of
the pack, replaces an existing file only when asked.
"""

from __future__ import annotations

from .fileutil import atomic_write

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
        d.text((px + 6, py - 6), name, fill=color)
    _legend(d, size[0] - margins[1] + 12, margins[2] + 6, [(ln[0], ln[3]) for ln in lines])
    return img


def save_plot(img, path, overwrite: bool = False):
    """Write a plot as PNG, atomically; an existing file is replaced only with ``overwrite``."""
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite=overwrite)
