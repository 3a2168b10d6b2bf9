"""Pillow helpers shared by the figures (no plotting library is a dependency): fonts, text size, arrowheads,
and the "nice" tick values of an axis."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

from PIL import ImageFont

__all__ = ["arrowhead", "nice_ticks", "readable_font", "text_size", "tick_labels"]


def readable_font(size: int = 14):
    """Pillow's bundled scalable font at ``size`` pixels (Pillow >= 10.1 with FreeType), else its small
    bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # an older Pillow, or one without FreeType
        return ImageFont.load_default()


def text_size(font, text: str) -> Tuple[int, int]:
    """``(width, height)`` in pixels of ``text`` drawn with ``font``."""
    left, top, right, bottom = font.getbbox(text)
    return int(math.ceil(right - left)), int(math.ceil(bottom - top))


def arrowhead(tip: Tuple[float, float], tail: Tuple[float, float], length: float = 10.0,
              half_width: float = 4.5) -> List[Tuple[float, float]]:
    """The triangle of an arrowhead at ``tip`` for a line coming from ``tail``."""
    dx, dy = tip[0] - tail[0], tip[1] - tail[1]
    norm = math.hypot(dx, dy) or 1.0
    ux, uy = dx / norm, dy / norm
    bx, by = tip[0] - length * ux, tip[1] - length * uy
    return [tip, (bx - half_width * uy, by + half_width * ux), (bx + half_width * uy, by - half_width * ux)]


def nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) inside ``[lo, hi]``."""
    if not hi > lo:
        return [lo]
    power = 10 ** math.floor(math.log10((hi - lo) / max(1, count - 1)))
    steps = [m * power for m in (1, 2, 5, 10)]
    step = min(steps, key=lambda s: (abs(_n_ticks(lo, hi, s) - count), -s))
    ticks = []
    value = math.ceil(lo / step - 1e-9) * step
    while value <= hi + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _n_ticks(lo: float, hi: float, step: float) -> int:
    return math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1


def tick_labels(ticks: Sequence[float]) -> List[str]:
    """Labels of ``ticks`` with just enough decimals to tell them apart."""
    if len(ticks) < 2:
        return [f"{t:g}" for t in ticks]
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:])) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]
