"""Spec strings: ``SCHEME:PATH?key=value&...`` options, validated per scheme."""

from __future__ import annotations

import pytest

from nni_bixnas.data import parse_data_spec

# spec -> (scheme, path, options as written, masks with its default)
TEST_CASES_PARSE = [
    ["monuseg:/a/b", "monuseg", "/a/b", {}, "auto"],
    ["monuseg:/a/b?masks=xml", "monuseg", "/a/b", {"masks": "xml"}, "xml"],
    ["monuseg:/a/b?masks=PNG", "monuseg", "/a/b", {"masks": "png"}, "png"],
    ["MoNuSeg:/a b/c ? masks = auto ", "monuseg", "/a b/c", {"masks": "auto"}, "auto"],
    ["monuseg:/a/b?", "monuseg", "/a/b", {}, "auto"],
]


@pytest.mark.parametrize("spec, scheme, path, options, masks", TEST_CASES_PARSE)
def test_path_scheme_options(spec, scheme, path, options, masks):
    parsed = parse_data_spec(spec)
    assert (parsed.scheme, parsed.path.as_posix(), parsed.options, parsed.option("masks")) == (
        scheme, path, options, masks
    )


def test_folder_pair_and_default_keep_their_syntax():
    folder = parse_data_spec("folder:/imgs,/masks")
    assert (folder.path.as_posix(), folder.mask_path.as_posix(), folder.options) == ("/imgs", "/masks", {})
    assert parse_data_spec("default:n=4,size=32").options == {"n": 4, "size": 32}


TEST_CASES_ERRORS = [
    ["monuseg:/a?masks=tiff", r"bad value 'tiff' for option masks in data spec .*; valid values: auto, png, xml$"],
    ["monuseg:/a?mask=xml", r"unknown option 'mask' for monuseg in data spec .*; valid options: masks$"],
    ["tnbc:/a?masks=xml", r"unknown option 'masks' for tnbc in data spec .*; tnbc takes no options$"],
    ["folder:/i,/m?masks=png", r"unknown option 'masks' for folder .*; folder takes no options$"],
    ["monuseg:/a?masks", r"bad option 'masks' in data spec .*; expected \?key=value, e.g. \?masks=png$"],
    ["monuseg:/a?masks=", r"bad option 'masks=' in data spec"],
    ["monuseg:/a?masks=xml&masks=png", r"option masks is given twice in data spec"],
    ["monuseg:?masks=xml", r"has no path; write monuseg:PATH"],
]


@pytest.mark.parametrize("spec, match", TEST_CASES_ERRORS)
def test_bad_options_name_the_option_and_valid_values(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_data_spec(spec)
