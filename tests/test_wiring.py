"""The wiring diagram of a gene: its geometry (nodes, arrows, routes) and its PNG / SVG drawings."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from nni_bixnas.space.gene import Gene, block_labels, published_gene
from nni_bixnas.space.wiring import STEM_BUS_ROW, Arrow, wiring
from nni_bixnas.space.wiring_plot import Layout, write_architecture

# The published BiX-Net gene (nni_bixnas/space/genes/bixnet.txt), read by hand: walking back from dec_2_3
# (the head's input), index 0 = the sequential input, index k = level k-1 of the previous column.
BIXNET_ARROWS = [
    ("stem", "enc_0_0", 0), ("enc_0_0", "enc_0_1", 0),
    ("enc_0_1", "dec_0_0", 2), ("enc_0_0", "dec_0_2", 1),
    ("dec_0_0", "enc_1_0", 1), ("dec_0_2", "enc_1_0", 3), ("enc_1_0", "enc_1_1", 0), ("dec_0_0", "enc_1_1", 1),
    ("enc_1_0", "dec_1_2", 1), ("enc_1_1", "dec_1_2", 2), ("dec_1_2", "dec_1_3", 0),
    ("dec_1_3", "enc_2_1", 4), ("enc_2_1", "enc_2_2", 0),
    ("enc_2_2", "dec_2_0", 3), ("dec_2_0", "dec_2_1", 0), ("enc_2_1", "dec_2_1", 2), ("dec_2_1", "dec_2_2", 0),
    ("enc_2_1", "dec_2_2", 2), ("dec_2_2", "dec_2_3", 0),
    ("dec_2_3", "head", None),
]
BIXNET_DEAD = {"enc_0_2", "enc_0_3", "dec_0_1", "dec_0_3", "enc_1_2", "enc_1_3", "dec_1_0", "dec_1_1", "enc_2_0",
               "enc_2_3", "bridge_0", "bridge_1", "bridge_2"}


def test_the_published_gene_has_exactly_its_arrows_and_dead_blocks():
    w = wiring(published_gene("bixnet"))
    assert [(a.source, a.target, a.index) for a in w.arrows] == BIXNET_ARROWS
    assert {name for name, node in w.nodes.items() if not node.live} == BIXNET_DEAD
    assert len(w.nodes) == 24 + 3 + 2 and (w.n_columns, w.n_rows) == (8, 5)


def test_blocks_sit_by_iteration_and_resolution():
    nodes = wiring(published_gene("bixnet")).nodes
    # columns: stem, then encoder and decoder of each iteration, then the head
    assert [nodes[n].column for n in ("stem", "enc_0_0", "dec_0_0", "enc_1_2", "dec_2_3", "head")] == [0, 1, 2, 3, 6, 7]
    # rows: encoder level l on row l; decoder level l (level 0 is the deepest) on row L-1-l
    assert [nodes[f"enc_1_{lvl}"].row for lvl in range(4)] == [0, 1, 2, 3]
    assert [nodes[f"dec_1_{lvl}"].row for lvl in range(4)] == [3, 2, 1, 0]
    assert (nodes["bridge_1"].column, nodes["bridge_1"].row) == (3.5, 4)
    assert nodes["enc_1_0"].inputs == (1, 3) and nodes["enc_0_2"].inputs == (0,)


def test_the_dense_supernet_reads_every_stream_and_routes_the_stem_above_the_top_row():
    w = wiring(Gene.dense(3, 4))
    assert all(node.live for node in w.nodes.values())
    # 4 stage-0 encoders (sequential only), 20 searching blocks x 5 inputs, 3 bridges fed, the head
    assert len(w.arrows) == 4 + 20 * 5 + 3 + 1
    assert Arrow("enc_0_3", "bridge_0", None) in w.arrows and Arrow("bridge_2", "dec_2_0", 0) in w.arrows
    assert w.path(Arrow("stem", "enc_2_0", 0)) == [(0, 0), (0, STEM_BUS_ROW), (5, STEM_BUS_ROW), (5, 0)]
    assert w.path(Arrow("stem", "enc_0_0", 0)) == [(0, 0), (1, 0)]
    assert w.path(Arrow("dec_0_0", "enc_1_0", 1)) == [(2, 3), (3, 0)]


def test_arrows_start_and_end_on_the_box_borders():
    layout = Layout(wiring(published_gene("bixnet")))
    x0, y0, x1, y1 = layout.rectangle(layout.wiring.nodes["enc_0_0"])
    start, end = layout.polyline(Arrow("enc_0_0", "enc_0_1", 0))
    assert start == ((x0 + x1) / 2, y1)  # leaves enc_0_0 through its bottom edge
    assert end[1] == layout.rectangle(layout.wiring.nodes["enc_0_1"])[1]  # enters enc_0_1 through its top edge


def test_png_opens_and_svg_parses(tmp_path):
    gene = published_gene("bixnet")
    png = write_architecture(gene, tmp_path / "a.png", "BiX-Net")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == Layout(wiring(gene)).size
    svg = ET.parse(write_architecture(gene, tmp_path / "a.svg", "BiX-Net & co")).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    arrows = [p for p in svg.iter("{http://www.w3.org/2000/svg}polyline") if p.get("stroke-width") == "2"]
    assert len(arrows) == len(BIXNET_ARROWS) + 2  # and the two arrows of the legend
    dead = {g.get("id") for g in svg.findall("s:g", ns) if "dead" in g.get("class")}
    assert dead == BIXNET_DEAD
    assert svg.find("s:title", ns).text == "BiX-Net & co"
    assert {g.get("id") for g in svg.findall("s:g", ns)} >= set(block_labels(3, 4))


def test_only_png_and_svg(tmp_path):
    with pytest.raises(ValueError, match="expected a .png or .svg file name"):
        write_architecture(published_gene("bixnet"), tmp_path / "a.jpg")
