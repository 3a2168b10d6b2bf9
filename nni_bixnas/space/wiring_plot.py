"""Draw the wiring of a searched BiO-Net++ (:mod:`nni_bixnas.space.wiring`) as PNG (Pillow) or SVG (text).

Both drawings come from one pixel layout (:class:`Layout`): boxes on the grid of
:func:`~nni_bixnas.space.wiring.wiring`, arrows clipped to the box borders. Live encoders are blue, live
decoders orange, blocks that do not reach the head grey; sequential inputs (index 0) are black arrows,
skips (index ``k``: level ``k - 1`` of the previous column) blue ones.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

from nni_bixnas.utils import PathLike, atomic_write

from .gene import Gene
from .wiring import Arrow, Node, Wiring, wiring

__all__ = ["Layout", "architecture_png", "architecture_svg", "write_architecture"]

Point = Tuple[float, float]

_FILL = {"enc": "#d6e6f5", "dec": "#fde3c8", "stem": "#d9f0d3", "head": "#d9f0d3", "bridge": "#e8dcf2"}
_EDGE = {"enc": "#1f77b4", "dec": "#d95f02", "stem": "#2c7a2c", "head": "#2c7a2c", "bridge": "#7b4ea3"}
_DEAD_FILL, _DEAD_EDGE, _DEAD_TEXT = "#eeeeee", "#b0b0b0", "#9a9a9a"
_SEQUENTIAL, _SKIP = "#222222", "#1f5fbf"
_FONT, _SMALL, _TITLE = 15, 13, 18


@dataclasses.dataclass(frozen=True)
class Layout:
    """Pixel geometry of a :class:`~nni_bixnas.space.wiring.Wiring` drawing.

    Attributes
    ----------
    wiring
        What is drawn.
    column_width, row_height
        Pixels between neighbouring columns and rows.
    box
        ``(width, height)`` of a block's box.
    left, top
        Pixel position of column 0, row 0's centre.
    """

    wiring: Wiring
    column_width: int = 165
    row_height: int = 96
    box: Tuple[int, int] = (104, 50)
    left: int = 130
    top: int = 160

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)`` of the figure: the grid, row labels on the left, the legend below."""
        width = self.left + (self.wiring.n_columns - 1) * self.column_width + self.box[0] // 2 + 30
        height = self.top + (self.wiring.n_rows - 1) * self.row_height + self.box[1] // 2 + 110
        return max(width, 900), height

    def centre(self, node: Node) -> Point:
        return self.to_px((node.column, node.row))

    def to_px(self, point: Point) -> Point:
        return self.left + point[0] * self.column_width, self.top + point[1] * self.row_height

    def half_box(self, node: Node) -> Tuple[float, float]:
        """Half width and height of ``node``'s box (the bridges' are smaller)."""
        w, h = self.box
        return (w * 0.35, h * 0.4) if node.kind == "bridge" else (w / 2, h / 2)

    def rectangle(self, node: Node) -> Tuple[float, float, float, float]:
        (x, y), (hw, hh) = self.centre(node), self.half_box(node)
        return x - hw, y - hh, x + hw, y + hh

    def polyline(self, arrow: Arrow) -> List[Point]:
        """The arrow's pixel polyline, starting and ending on the borders of its two boxes."""
        nodes = self.wiring.nodes
        points = [self.to_px(p) for p in self.wiring.path(arrow)]
        source, target = nodes[arrow.source], nodes[arrow.target]
        points[0] = _on_border(points[0], points[1], self.half_box(source))
        points[-1] = _on_border(points[-1], points[-2], self.half_box(target))
        return points


def _on_border(centre: Point, toward: Point, half: Tuple[float, float]) -> Point:
    """Where the segment from a box's ``centre`` to ``toward`` leaves the box (half sizes ``half``)."""
    dx, dy = toward[0] - centre[0], toward[1] - centre[1]
    scale = min(half[0] / abs(dx) if dx else math.inf, half[1] / abs(dy) if dy else math.inf)
    if not math.isfinite(scale):
        return centre
    return centre[0] + dx * scale, centre[1] + dy * scale


def _column_titles(w: Wiring) -> Dict[int, str]:
    titles = {0: "stem", w.n_columns - 1: "head"}
    for it in range(w.gene.iterations):
        titles[2 * it + 1], titles[2 * it + 2] = f"iter {it} enc", f"iter {it} dec"
    return titles


def _row_titles(w: Wiring) -> List[str]:
    return [f"1/{2 ** (r + 1)} res." for r in range(w.gene.levels)] + ["bridge"]


def _box_text(node: Node) -> Tuple[str, Optional[str]]:
    if node.kind in ("stem", "head"):
        return node.name, None
    if node.kind == "bridge":
        return "bridge", None if node.live else "unread"
    return node.name, "in " + ",".join(str(i) for i in node.inputs) if node.live else "skipped"


def _legend(layout: Layout) -> Tuple[float, List[Tuple[str, str, str]]]:
    """``(y, [(kind, colour, text), ...])`` of the legend below the grid."""
    y = layout.size[1] - 45
    return y, [("line", _SEQUENTIAL, "sequential input (index 0)"),
               ("line", _SKIP, "skip: index k reads level k-1 of the previous column"),
               ("box", _DEAD_FILL, "does not reach the head (skipped)")]


def _summary_line(w: Wiring) -> str:
    blocks = [n for n in w.nodes.values() if n.kind in ("enc", "dec")]
    skips = sum(1 for a in w.arrows if not a.sequential)
    return (f"{sum(n.live for n in blocks)} of {len(blocks)} blocks reach the head; {skips} skips kept; "
            "rows: resolution (encoder level l on row l, decoder level l on row L-1-l)")


# ----- PNG ---------------------------------------------------------------------------------------------
def architecture_png(w: Wiring, handle: IO[bytes], title: str = "", subtitle: str = "") -> None:
    """Draw ``w`` into ``handle`` as a PNG."""
    from PIL import Image, ImageDraw

    from nni_bixnas._drawing import arrowhead, readable_font, text_size

    layout = Layout(w)
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    font, small, big = readable_font(_FONT), readable_font(_SMALL), readable_font(_TITLE)
    draw.text((20, 14), title or "BiO-Net++ wiring", fill="black", font=big)
    draw.text((20, 40), subtitle or _summary_line(w), fill="#444444", font=small)
    for column, text in _column_titles(w).items():
        x, _ = layout.to_px((column, 0))
        draw.text((x - text_size(font, text)[0] / 2, 72), text, fill="black", font=font)
    for row, text in enumerate(_row_titles(w)):
        _, y = layout.to_px((0, row))
        draw.text((10, y - 8), text, fill="#444444", font=small)
    for arrow in w.arrows:
        colour = _SEQUENTIAL if arrow.sequential else _SKIP
        points = layout.polyline(arrow)
        draw.line(points, fill=colour, width=2)
        draw.polygon(arrowhead(points[-1], points[-2]), fill=colour)
    for node in w.nodes.values():
        _png_box(draw, layout, node, font, small, text_size)
    y, entries = _legend(layout)
    x = 20
    for kind, colour, text in entries:
        if kind == "line":
            draw.line([(x, y + 8), (x + 36, y + 8)], fill=colour, width=2)
            draw.polygon(arrowhead((x + 40, y + 8), (x, y + 8)), fill=colour)
        else:
            draw.rectangle([x, y, x + 40, y + 16], fill=colour, outline=_DEAD_EDGE)
        draw.text((x + 48, y), text, fill="black", font=small)
        x += 48 + text_size(small, text)[0] + 30
    image.save(handle, format="PNG")


def _png_box(draw, layout: Layout, node: Node, font, small, text_size) -> None:
    fill = _FILL[node.kind] if node.live else _DEAD_FILL
    edge = _EDGE[node.kind] if node.live else _DEAD_EDGE
    colour = "black" if node.live else _DEAD_TEXT
    draw.rounded_rectangle(layout.rectangle(node), radius=7, fill=fill, outline=edge, width=2)
    (x, y), (name, detail) = layout.centre(node), _box_text(node)
    offset = 9 if detail else 0
    draw.text((x - text_size(font, name)[0] / 2, y - offset - 9), name, fill=colour, font=font)
    if detail:
        draw.text((x - text_size(small, detail)[0] / 2, y + 3), detail, fill=colour, font=small)


# ----- SVG ---------------------------------------------------------------------------------------------
def architecture_svg(w: Wiring, title: str = "", subtitle: str = "") -> str:
    """``w`` as a standalone SVG document (text)."""
    layout = Layout(w)
    width, height = layout.size
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Verdana, Arial, sans-serif">',
           f"<title>{escape(title or 'BiO-Net++ wiring')}</title>",
           "<defs>" + "".join(_svg_marker(name, colour) for name, colour in (("seq", _SEQUENTIAL), ("skip", _SKIP)))
           + "</defs>",
           f'<rect width="{width}" height="{height}" fill="white"/>',
           _svg_text(20, 32, title or "BiO-Net++ wiring", _TITLE, weight="bold"),
           _svg_text(20, 56, subtitle or _summary_line(w), _SMALL, fill="#444444")]
    for column, text in _column_titles(w).items():
        out.append(_svg_text(layout.to_px((column, 0))[0], 88, text, _FONT, anchor="middle"))
    for row, text in enumerate(_row_titles(w)):
        out.append(_svg_text(10, layout.to_px((0, row))[1] + 5, text, _SMALL, fill="#444444"))
    for arrow in w.arrows:
        out.append(_svg_arrow(layout.polyline(arrow), arrow.sequential))
    for node in w.nodes.values():
        out.append(_svg_box(layout, node))
    out += _svg_legend(layout)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_marker(name: str, colour: str) -> str:
    return (f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')


def _svg_text(x: float, y: float, text: str, size: int, fill: str = "black", anchor: str = "start",
              weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}" '
            f'font-weight="{weight}">{escape(text)}</text>')


def _svg_arrow(points: Sequence[Point], sequential: bool) -> str:
    colour, marker = (_SEQUENTIAL, "seq") if sequential else (_SKIP, "skip")
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (f'<polyline class="{"sequential" if sequential else "skip"}" points="{coords}" fill="none" '
            f'stroke="{colour}" stroke-width="2" marker-end="url(#{marker})"/>')


def _svg_box(layout: Layout, node: Node) -> str:
    x0, y0, x1, y1 = layout.rectangle(node)
    fill = _FILL[node.kind] if node.live else _DEAD_FILL
    edge = _EDGE[node.kind] if node.live else _DEAD_EDGE
    colour = "black" if node.live else _DEAD_TEXT
    dash = "" if node.live else ' stroke-dasharray="5,3"'
    (x, y), (name, detail) = layout.centre(node), _box_text(node)
    parts = [f'<g class="{node.kind} {"live" if node.live else "dead"}" id="{escape(node.name)}">',
             f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="7" fill="{fill}" '
             f'stroke="{edge}" stroke-width="2"{dash}/>',
             _svg_text(x, y + (-3 if detail else 5), name, _FONT, fill=colour, anchor="middle")]
    if detail:
        parts.append(_svg_text(x, y + 15, detail, _SMALL, fill=colour, anchor="middle"))
    return "".join(parts) + "</g>"


def _svg_legend(layout: Layout) -> List[str]:
    y, entries = _legend(layout)
    out, x = [], 20.0
    for kind, colour, text in entries:
        if kind == "line":
            out.append(_svg_arrow([(x, y + 8), (x + 40, y + 8)], colour == _SEQUENTIAL))
        else:
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="40" height="16" fill="{colour}" stroke="{_DEAD_EDGE}" '
                       'stroke-dasharray="5,3"/>')
        out.append(_svg_text(x + 48, y + 13, text, _SMALL))
        x += 48 + 7.2 * len(text) + 30  # about the width of DejaVu Sans at 13 px
    return out


# ----- files -------------------------------------------------------------------------------------------
def write_architecture(gene: Gene, path: PathLike, title: str = "", subtitle: str = "") -> Path:
    """Write the wiring diagram of ``gene`` to ``path`` (atomically): PNG or SVG by its suffix.

    Raises
    ------
    ValueError
        If ``path`` ends neither in ``.png`` nor in ``.svg``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"cannot draw the architecture as {path.name!r}; expected a .png or .svg file name")
    diagram = wiring(gene)
    if suffix == ".svg":
        with atomic_write(path) as handle:
            handle.write(architecture_svg(diagram, title, subtitle))
    else:
        with atomic_write(path, "wb") as handle:
            architecture_png(diagram, handle, title, subtitle)
    return path
