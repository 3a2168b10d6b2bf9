"""``pareto.png``: IoU vs MACs (or measured latency), one panel per Phase 2 stage, drawn with Pillow only.

Shared-weight IoUs of different stages come from different SuperNets and are not comparable, so every
stage gets its own axes: its members as dots, its Pareto front joined and ringed, its kept parents marked
with a square and their rank (``#1`` is the best). A stage searched with ``objective='latency'`` (its members
report ``latency_ms``) is drawn against latency, the cost its front and parents were chosen by
(:func:`cost_axis`). Retraining runs (validation IoU of the fixed net) and other plain trials get panels of
their own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import IO, Any, List, Sequence, Tuple

from PIL import Image, ImageDraw

from nni_bixnas._drawing import nice_ticks, readable_font, text_size, tick_labels

__all__ = ["Panel", "panels_png", "cost_axis"]

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (23, 190, 207)]
_KEPT = (200, 0, 0)
_PANEL = (470, 350)  # one panel, axes and labels included
_MARGIN = (72, 22, 48, 58)  # left, right, top, bottom of the axes inside a panel
_PER_ROW = 3
_HEADER, _FOOTER = 56, 44
#: x axis of a panel: ``(label, divisor)`` of each cost attribute of a point.
_AXES = {"macs": ("GMACs", 1e9), "latency_ms": ("latency (ms)", 1.0)}


def cost_axis(points: Sequence[Any]) -> str:
    """``'latency_ms'`` when a point reports a latency (a stage searched with ``objective='latency'``), else
    ``'macs'``: the cost the points' front was chosen by."""
    return "latency_ms" if any(getattr(p, "latency_ms", None) is not None for p in points) else "macs"


@dataclasses.dataclass
class Panel:
    """One set of axes: ``points`` (with ``.iou`` and the ``x`` cost, ``.macs`` or ``.latency_ms``), and indices
    into them of the front and the kept parents (best first)."""

    title: str
    points: Sequence[Any]
    front: Sequence[int] = ()
    kept: Sequence[int] = ()
    y_label: str = "IoU (shared weights)"
    x: str = "macs"

    def usable(self) -> List[int]:
        return [i for i, p in enumerate(self.points) if p.iou is not None and getattr(p, self.x) is not None]

    def x_of(self, i: int) -> float:
        """The x coordinate of point ``i`` (GMACs, or ms)."""
        return getattr(self.points[i], self.x) / _AXES[self.x][1]


def panels_png(panels: Sequence[Panel], handle: IO[bytes], title: str = "") -> Tuple[int, int]:
    """Draw ``panels`` (those with at least one point with IoU and a cost) into ``handle``; return the size.

    Without a drawable panel the figure says so.
    """
    drawable = [p for p in panels if p.usable()]
    columns = max(1, min(_PER_ROW, len(drawable)))
    rows = max(1, math.ceil(len(drawable) / columns))
    size = (max(columns * _PANEL[0], 640), _HEADER + rows * _PANEL[1] + _FOOTER)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    fonts = readable_font(14), readable_font(12), readable_font(18)
    draw.text((16, 14), title, fill="black", font=fonts[2])
    if not drawable:
        draw.text((16, _HEADER + 20), "no candidate reported IoU and MACs", fill="black", font=fonts[0])
    for n, panel in enumerate(drawable):
        origin = ((n % columns) * _PANEL[0], _HEADER + (n // columns) * _PANEL[1])
        _draw_panel(draw, panel, origin, _PALETTE[n % len(_PALETTE)], fonts)
    costs = {p.x for p in drawable} or {"macs"}
    cost = {frozenset({"macs"}): "fewer MACs", frozenset({"latency_ms"}): "lower latency"}.get(
        frozenset(costs), "fewer MACs / lower latency")
    _draw_legend(draw, (16, size[1] - _FOOTER + 12), fonts[1], cost)
    image.save(handle, format="PNG")
    return size


def _axes(origin: Tuple[int, int]) -> Tuple[int, int, int, int]:
    left, right, top, bottom = _MARGIN
    return origin[0] + left, origin[1] + top, origin[0] + _PANEL[0] - right, origin[1] + _PANEL[1] - bottom


def _range(values: Sequence[float]) -> Tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 if hi - lo > 1e-12 else (abs(lo) * 0.05 or 0.05)
    return lo - pad, hi + pad


def _draw_panel(draw, panel: Panel, origin, colour, fonts) -> None:
    font, small, _ = fonts
    x0, y0, x1, y1 = _axes(origin)
    usable = panel.usable()
    xs = [panel.x_of(i) for i in usable]
    ys = [panel.points[i].iou for i in usable]
    (lo_x, hi_x), (lo_y, hi_y) = _range(xs), _range(ys)

    def to_px(cost: float, iou: float) -> Tuple[float, float]:
        return (x0 + (cost - lo_x) / (hi_x - lo_x) * (x1 - x0), y1 - (iou - lo_y) / (hi_y - lo_y) * (y1 - y0))

    draw.text((origin[0] + 12, origin[1] + 8), panel.title, fill="black", font=font)
    draw.text((origin[0] + 12, origin[1] + 28), panel.y_label, fill="#444444", font=small)
    _draw_ticks(draw, (x0, y0, x1, y1), (lo_x, hi_x), (lo_y, hi_y), to_px, small)
    draw.rectangle([x0, y0, x1, y1], outline="black")
    label = _AXES[panel.x][0]
    draw.text(((x0 + x1 - text_size(small, label)[0]) / 2, y1 + 30), label, fill="black", font=small)
    front = sorted((i for i in panel.front if i in usable), key=lambda i: (panel.x_of(i), -panel.points[i].iou))
    line = [to_px(panel.x_of(i), panel.points[i].iou) for i in front]
    if len(line) > 1:
        draw.line(line, fill="black", width=2)
    for i in usable:
        px, py = to_px(panel.x_of(i), panel.points[i].iou)
        draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colour, outline=colour)
    for px, py in line:
        draw.ellipse([px - 8, py - 8, px + 8, py + 8], outline="black", width=2)
    for rank, i in enumerate((i for i in panel.kept if i in usable), start=1):
        px, py = to_px(panel.x_of(i), panel.points[i].iou)
        draw.rectangle([px - 11, py - 11, px + 11, py + 11], outline=_KEPT, width=2)
        _kept_label(draw, (px, py), f"#{rank}", (x0, y0, x1, y1), font)


def _kept_label(draw, at: Tuple[float, float], text: str, box, font) -> None:
    """``text`` beside the point ``at``, on the side where it stays inside the axes ``box``."""
    (w, h), (px, py) = text_size(font, text), at
    x = px + 15 if px + 15 + w < box[2] else px - 15 - w
    y = min(max(py - h / 2 - 2, box[1] + 2), box[3] - h - 4)
    draw.rectangle([x - 2, y, x + w + 2, y + h + 4], fill="white")
    draw.text((x, y), text, fill=_KEPT, font=font)


def _draw_ticks(draw, box, x_range, y_range, to_px, font) -> None:
    x0, y0, x1, y1 = box
    x_ticks = nice_ticks(*x_range, count=5)
    for value, text in zip(x_ticks, tick_labels(x_ticks)):
        px, _ = to_px(value, y_range[0])
        draw.line([px, y0, px, y1], fill=(232, 232, 232))
        draw.line([px, y1, px, y1 + 5], fill="black")
        draw.text((px - text_size(font, text)[0] / 2, y1 + 8), text, fill="black", font=font)
    y_ticks = nice_ticks(*y_range, count=5)
    for value, text in zip(y_ticks, tick_labels(y_ticks)):
        _, py = to_px(x_range[0], value)
        draw.line([x0, py, x1, py], fill=(232, 232, 232))
        draw.line([x0 - 5, py, x0, py], fill="black")
        draw.text((x0 - 9 - text_size(font, text)[0], py - 7), text, fill="black", font=font)


def _draw_legend(draw, at: Tuple[int, int], font, cost: str = "fewer MACs") -> None:
    x, y = at
    draw.ellipse([x, y + 3, x + 10, y + 13], fill=_PALETTE[0])
    x = _legend_text(draw, x + 16, y, "member (colour: panel)", font)
    draw.line([x, y + 8, x + 30, y + 8], fill="black", width=2)
    draw.ellipse([x + 7, y, x + 23, y + 16], outline="black", width=2)
    x = _legend_text(draw, x + 36, y, f"Pareto front (higher IoU, {cost})", font)
    draw.rectangle([x, y - 3, x + 22, y + 19], outline=_KEPT, width=2)
    _legend_text(draw, x + 28, y, "#k: kept parent, rank k (stage panels)", font)


def _legend_text(draw, x: float, y: float, text: str, font, gap: int = 28) -> float:
    draw.text((x, y), text, fill="black", font=font)
    return x + text_size(font, text)[0] + gap
