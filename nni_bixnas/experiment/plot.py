"""The Pareto-front plot (IoU vs MACs) as a PNG, drawn with Pillow only."""

from __future__ import annotations

from typing import IO, Any, Dict, List, Sequence

from PIL import Image, ImageDraw, ImageFont

# colour per stage (cycled); trials without a stage are grey
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (188, 189, 34), (23, 190, 207)]
_GREY = (127, 127, 127)


def pareto_png(points: Sequence[Any], front: Sequence[Any], handle: IO[bytes], title: str = "",
               size: tuple = (800, 560)) -> None:
    """Scatter every candidate (``.iou``, ``.macs``, ``.stage``) coloured by stage; join the front.

    Candidates without IoU or MACs are left out. An empty plot says so.
    """
    width, height = size
    left, right, top, bottom = 80, 170, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((left, 12), title, fill="black", font=font)
    usable = [p for p in points if p.iou is not None and p.macs is not None]
    x0, y0, x1, y1 = left, top, width - right, height - bottom
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text(((x0 + x1) // 2 - 20, height - 25), "GMACs", fill="black", font=font)
    draw.text((8, (y0 + y1) // 2), "IoU", fill="black", font=font)
    if not usable:
        draw.text((x0 + 20, y0 + 20), "no candidate reported IoU and MACs", fill="black", font=font)
        image.save(handle, format="PNG")
        return
    gmacs = [p.macs / 1e9 for p in usable]
    ious = [p.iou for p in usable]
    lo_x, hi_x = _padded(min(gmacs), max(gmacs))
    lo_y, hi_y = _padded(min(ious), max(ious))

    def to_px(macs: float, iou: float):
        return (x0 + (macs / 1e9 - lo_x) / (hi_x - lo_x) * (x1 - x0), y1 - (iou - lo_y) / (hi_y - lo_y) * (y1 - y0))

    for i in range(5):  # ticks
        fx, fy = lo_x + (hi_x - lo_x) * i / 4, lo_y + (hi_y - lo_y) * i / 4
        px, py = to_px(fx * 1e9, fy)
        draw.line([px, y1, px, y1 + 4], fill="black")
        draw.text((px - 15, y1 + 8), f"{fx:.3g}", fill="black", font=font)
        draw.line([x0 - 4, py, x0, py], fill="black")
        draw.text((x0 - 45, py - 6), f"{fy:.3f}", fill="black", font=font)
    stages: List[Any] = sorted({p.stage for p in usable if p.stage is not None}, key=str)
    colours: Dict[Any, tuple] = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(stages)}
    for p in usable:
        px, py = to_px(p.macs, p.iou)
        colour = colours.get(p.stage, _GREY)
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour, outline=colour)
    line = [to_px(p.macs, p.iou) for p in front if p.iou is not None and p.macs is not None]
    if len(line) > 1:
        draw.line(line, fill="black", width=2)
    for px, py in line:
        draw.ellipse([px - 6, py - 6, px + 6, py + 6], outline="black", width=2)
    legend = [(f"stage {s}", colours[s]) for s in stages] or [("trials", _GREY)]
    legend.append(("Pareto front", (0, 0, 0)))
    for i, (label, colour) in enumerate(legend):
        ly = y0 + 10 + 18 * i
        draw.ellipse([x1 + 15, ly, x1 + 25, ly + 10], fill=colour)
        draw.text((x1 + 32, ly - 1), label, fill="black", font=font)
    image.save(handle, format="PNG")


def _padded(lo: float, hi: float) -> tuple:
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 0.05
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad
