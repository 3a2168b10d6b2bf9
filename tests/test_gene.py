"""The one gene format: text <-> Gene <-> NNI sample, reachability, bad input."""

import pytest

from nni_bixnas.space.gene import Gene, block_label, published_gene

PUBLISHED = published_gene()

# The authors' BFS on their own gene (official-code.md §4): True = skipped, levels 0..3, per stage.
OFFICIAL_SKIPPED = [
    [False, False, True, True],
    [False, True, False, True],
    [False, False, True, True],
    [True, True, False, False],
    [True, False, False, True],
    [False, False, False, False],
]


def test_published_gene_reachability_matches_official_bfs():
    live = PUBLISHED.live_blocks()
    assert [[block_label(s, l) not in live for l in range(4)] for s in range(6)] == OFFICIAL_SKIPPED


def test_text_sample_text_identity():
    text = PUBLISHED.to_text()
    again = Gene.from_sample(Gene.parse(text).to_sample())
    assert again == PUBLISHED
    assert again.to_text() == text
    assert len(PUBLISHED.to_sample()) == 20


def test_parse_reads_the_authors_file_verbatim():
    assert PUBLISHED.choices["dec_0_3"] == (0, 1)  # written '1_0' by the authors; order does not matter
    assert PUBLISHED.choices["enc_2_0"] == (2, 3, 4)
    assert PUBLISHED.iterations == 3 and PUBLISHED.levels == 4


def _lines():
    return PUBLISHED.to_text().splitlines()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ls: ls + ["mid_1_0_1"], r"line 25: 'mid_1_0_1' is not a gene line"),
        (lambda ls: [l if not l.startswith("dec_1_2") else "dec_1_2_1_7" for l in ls],
         r"line 15: block dec_1_2: index 7 is out of range"),
        (lambda ls: [l if not l.startswith("dec_1_2") else "dec_1_2" for l in ls], r"line 15: .*chooses no input"),
        (lambda ls: [l for l in ls if not l.startswith("enc_2_1")], r"missing block\(s\) enc_2_1"),
        (lambda ls: ls + ["dec_2_3_1"], r"line 25: block dec_2_3 appears twice \(first on line 24\)"),
        (lambda ls: ls + ["dec_3_0_1"], r"unknown block\(s\) dec_3_0"),
    ],
)
def test_bad_gene_lines_name_the_line(mutate, message):
    with pytest.raises(ValueError, match=message):
        Gene.parse("\n".join(mutate(_lines())), iterations=3, levels=4)


def test_header_and_comments_are_ignored():
    text = "0.183_17234509824.000000\n# a comment\n" + PUBLISHED.to_text()
    assert Gene.parse(text) == PUBLISHED


def test_missing_gene_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Gene.load(tmp_path / "nope.txt")


def test_sample_missing_a_block():
    sample = PUBLISHED.to_sample()
    del sample["dec_1_1"]
    with pytest.raises(ValueError, match="no value for block dec_1_1"):
        Gene.from_sample(sample)


def test_dense_gene_keeps_every_block():
    dense = Gene.dense()
    assert len(dense.live_blocks()) == 24
    assert dense.choices["enc_1_0"] == (0, 1, 2, 3, 4)


def test_head_reachability_drops_a_decoder_the_head_never_reads():
    choices = dict(PUBLISHED.choices)
    choices["dec_2_3"] = (1,)  # the last decoder reads enc_2_0 only: dec_2_0..2 are not reached
    live = Gene(choices).live_blocks()
    assert {"dec_2_0", "dec_2_1", "dec_2_2"}.isdisjoint(live) and "dec_2_3" in live and "enc_2_0" in live


def test_live_choices_are_the_choices_of_the_live_blocks_only():
    from nni_bixnas.space.gene import published_gene

    gene = published_gene("bixnet")
    live = gene.live_choices()
    assert set(live) == gene.live_blocks() and len(live) < len(gene.choices)
    assert all(live[label] == list(gene.choices[label]) for label in live)
