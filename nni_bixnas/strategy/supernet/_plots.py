"""Small PNG figures written with Pillow only (no plotting library is a dependency)."""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from nni_bixnas.utils import PathLike, atomic_write

__all__ = ["heatmap_colour", "write_heatmaps"]

# Anchors of a perceptually ordered ramp (viridis at 0, 1/4, 1/2, 3/4, 1), linearly interpolated.
_RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]

_CELL = 14  # pixels per matrix entry
_GAP = 10  # pixels between panels
_TEXT = 12  # height reserved for one line of the default bitmap font
_PER_ROW = 4  # panels per row of the figure
_LEGEND = 100  # length of the colour ramp in the legend


def format_matrix(rows: Sequence[Sequence[float]]) -> str:
    """Rows of probabilities as aligned text, one line per input (index first)."""
    return "\n".join(f"  {i}: " + " ".join(f"{v:.3f}" for v in row) for i, row in enumerate(rows))


def heatmap_colour(value: float) -> tuple:
    """RGB colour of ``value`` in [0, 1] (clipped; NaN is drawn grey)."""
    if value != value:  # NaN
        return (128, 128, 128)
    value = min(1.0, max(0.0, float(value)))
    position = value * (len(_RAMP) - 1)
    low = min(int(position), len(_RAMP) - 2)
    frac = position - low
    a, b = _RAMP[low], _RAMP[low + 1]
    return tuple(int(round(x + (y - x) * frac)) for x, y in zip(a, b))


def write_heatmaps(path: PathLike, matrices: Mapping[str, Sequence[Sequence[float]]],
                   title: Optional[str] = None) -> None:
    """Write one small heat-map panel per matrix into a PNG (atomically).

    Parameters
    ----------
    path
        Output ``.png`` file.
    matrices
        ``{panel title: rows}``, each a rectangular list of rows of values in [0, 1] (e.g. a selection
        matrix's softmax probabilities, rows = incoming streams, columns = selections). Panels keep the
        mapping's order, :data:`_PER_ROW` to a row of the figure; each row of a panel is labelled with
        its index.
    title
        A line of text above the panels.

    Raises
    ------
    ValueError
        If there is no matrix, or one is empty or ragged.
    """
    if not matrices:
        raise ValueError("write_heatmaps needs at least one matrix")
    shapes = {}
    for label, rows in matrices.items():
        widths = {len(r) for r in rows}
        if not rows or len(widths) != 1 or 0 in widths:
            raise ValueError(f"matrix {label!r} must be a non-empty rectangular list of rows, "
                             f"got row lengths {sorted(widths)}")
        shapes[label] = (len(rows), widths.pop())
    font = ImageFont.load_default()
    max_rows = max(r for r, _ in shapes.values())
    max_cols = max(c for _, c in shapes.values())
    label_width = max(_text_width(font, label) for label in matrices)
    panel_w = max(_CELL * (max_cols + 1), label_width)  # one extra column holds the row indices
    panel_h = _TEXT + _CELL * max_rows
    n = len(matrices)
    grid_cols = min(n, _PER_ROW)
    grid_rows = math.ceil(n / _PER_ROW)
    top = _GAP + (_TEXT + _GAP if title else 0)
    width = _GAP + grid_cols * (panel_w + _GAP)
    width = max(width, 2 * _GAP + (_text_width(font, title) if title else 0))
    width = max(width, 2 * _GAP + _text_width(font, "0") + _text_width(font, "1") + 8 + _LEGEND)
    height = top + grid_rows * (panel_h + _GAP) + _TEXT + _GAP  # last line: the colour legend
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((_GAP, _GAP), title, fill="black", font=font)
    for index, (label, rows) in enumerate(matrices.items()):
        x0 = _GAP + (index % _PER_ROW) * (panel_w + _GAP)
        y0 = top + (index // _PER_ROW) * (panel_h + _GAP)
        draw.text((x0, y0), label, fill="black", font=font)
        for r, row in enumerate(rows):
            y = y0 + _TEXT + r * _CELL
            draw.text((x0 + 3, y + 1), str(r), fill="black", font=font)
            for c, value in enumerate(row):
                x = x0 + _CELL * (c + 1)
                draw.rectangle([x, y, x + _CELL - 2, y + _CELL - 2], fill=heatmap_colour(value))
    _draw_legend(draw, font, _GAP, height - _GAP - _TEXT)
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")


def _draw_legend(draw, font, x: int, y: int, length: int = _LEGEND) -> None:
    """``0 [ramp] 1`` at ``(x, y)``."""
    draw.text((x, y), "0", fill="black", font=font)
    start = x + _text_width(font, "0") + 4
    for i in range(length):
        draw.line([start + i, y + 2, start + i, y + _TEXT - 2], fill=heatmap_colour(i / (length - 1)))
    draw.text((start + length + 4, y), "1", fill="black", font=font)


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)
