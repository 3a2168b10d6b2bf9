"""The ``# model:`` header line of a gene file: written by ``bixnas export``, ignored by the gene parser."""

import pytest

from nni_bixnas.space.gene import Gene, published_gene
from nni_bixnas.space.gene_header import model_header, read_model_header, with_model_header


def test_header_round_trip_and_the_parser_ignores_it():
    args = {"num_classes": 2, "width": 4, "bn_momentum": 0.1, "stem_width": 4, "iterations": 3, "levels": 4,
            "in_channels": 1}
    line = model_header(args)
    assert line == ("# model: bixnet width=4 stem_width=4 iterations=3 levels=4 in_channels=1 num_classes=2 "
                    "bn_momentum=0.1")
    text = with_model_header(published_gene("bixnet").to_text(), args)
    assert read_model_header(text) == ("bixnet", args)
    assert Gene.parse(text) == published_gene("bixnet")
    assert with_model_header("enc_0_0_0\n", None) == "enc_0_0_0\n"
    assert read_model_header("enc_0_0_0\n") == (None, {})


def test_bad_headers_are_clear_errors():
    with pytest.raises(ValueError, match="names no model"):
        read_model_header("# model: width=4\n")
    with pytest.raises(ValueError, match="'width' is not key=value"):
        read_model_header("# model: bixnet width\n")
    with pytest.raises(ValueError, match="white space"):
        model_header({"name": "a b"})
