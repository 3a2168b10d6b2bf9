"""The BiO-Net++ space, its skip mutables and NNI round-trips."""

import pytest
import torch
from nni.nas.space import model_context
from numpy.random import RandomState

from nni_bixnas import create_model
from nni_bixnas.space import BiONetPlusPlus, Gene, SkipChoice, SkipFusion, SkipSubset, fuse, published_gene
from nni_bixnas.space.gene import block_label, searching_labels

TINY = dict(width=4, stem_width=4)


def tiny_space(**kw):
    return BiONetPlusPlus(**{**TINY, **kw})


# ----- SkipSubset --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, n_values",
    [
        (dict(n_inputs=5), 5 + 10 + 10),  # k in 1..3 of 5: the paper's 25 per block
        (dict(n_inputs=5, max_k=5), 31),
        (dict(n_inputs=5, candidates=[0, 2, 4]), 7),  # narrowed: max_k clipped to 3 candidates
        (dict(n_inputs=4, max_k=1), 4),
    ],
)
def test_skip_subset_grid_counts(kwargs, n_values):
    values = list(SkipSubset(label="x", **kwargs).grid())
    assert len(values) == n_values
    assert len({tuple(v) for v in values}) == n_values
    assert all(v and v == sorted(v) for v in values)


@pytest.mark.parametrize(
    "value, ok",
    [
        ([0], True), ([1, 3], True), ([0, 1, 2], True), ([], False),
        ([0, 1, 2, 3], False), ([1, 1], False), ([5], False), (3, False),
    ],
)
def test_skip_subset_contains(value, ok):
    s = SkipSubset(5, label="b")
    assert s.contains({"b": value}) is ok


def test_skip_subset_random_and_default_are_members():
    s = SkipSubset(5, candidates=[1, 2, 4], label="b")
    rs = RandomState(0)
    for _ in range(50):
        assert s.contains({"b": s.random(random_state=rs)})
    assert s.default() == [1, 2, 4]
    assert s.as_legacy_dict()["_type"] == "choice" and len(s.as_legacy_dict()["_value"]) == 7


def test_skip_subset_bad_arguments():
    with pytest.raises(ValueError, match="candidate set is empty"):
        SkipSubset(5, candidates=[], label="b")
    with pytest.raises(ValueError, match="out of range"):
        SkipSubset(5, candidates=[7], label="b")


def test_fuse_resizes_and_averages_exactly():
    a = torch.full((1, 1, 2, 2), 1.0)
    b = torch.full((1, 1, 4, 4), 3.0)  # constant maps stay constant under bilinear resizing
    c = torch.full((1, 1, 1, 1), 8.0)
    out = fuse([a, b, c], [0, 1, 2])
    assert out.shape == (1, 1, 2, 2)
    assert torch.equal(out, torch.full((1, 1, 2, 2), 4.0))
    assert torch.equal(fuse([a, b, c], [1]), torch.full((1, 1, 2, 2), 3.0))


# ----- the space through NNI -----------------------------------------------------------------------------
def test_space_has_20_stage_tagged_choices():
    space = tiny_space()
    mutables = space.simplify()
    assert sorted(mutables) == sorted(searching_labels(3, 4))
    for label, m in mutables.items():
        assert isinstance(m, SkipSubset)
        assert block_label(m.stage, m.level) == label
        assert m.n_inputs == 5 and m.max_k == 3


def test_random_freeze_contains_roundtrip():
    space = tiny_space()
    sample = {}
    frozen = space.random(memo=sample, random_state=RandomState(0))
    assert space.contains(sample)
    assert isinstance(frozen, BiONetPlusPlus) and frozen.is_fixed
    assert Gene.from_sample(sample).to_sample() == sample
    again = space.freeze(sample)
    assert again.gene == frozen.gene
    assert not space.contains({**sample, "dec_0_0": []})
    assert frozen(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)


def test_same_seed_same_architecture():
    a, b = {}, {}
    tiny_space().random(memo=a, random_state=RandomState(7))
    tiny_space().random(memo=b, random_state=RandomState(7))
    assert a == b


def test_narrowed_candidates_keep_labels():
    space = tiny_space(candidates={"dec_2_3": [0, 2]})
    m = space.simplify()["dec_2_3"]
    assert m.label == "dec_2_3" and m.candidates == [0, 2] and m.max_k == 2
    with pytest.raises(ValueError, match="unknown searching block"):
        tiny_space(candidates={"enc_0_0": [0]})


def test_freeze_published_gene_equals_bixnet_model():
    space = BiONetPlusPlus()
    frozen = space.freeze(published_gene().to_sample())
    bixnet = create_model("bixnet")
    assert frozen.gene == bixnet.gene
    assert [k for k, _ in frozen.state_dict().items()] == [k for k, _ in bixnet.state_dict().items()]
    assert sum(p.numel() for p in frozen.parameters()) == sum(p.numel() for p in bixnet.parameters())
    # the level-3 encoder is never reached: its shared conv pair is not built
    assert "enc_3" not in frozen.convs and "enc_3" in space.convs
    pair = sum(p.numel() for p in space.convs["enc_3"].parameters())
    assert pair == 2 * 48 * 48 * 9
    dense = create_model("bionet_pp")
    dead_bn = sum(p.numel() for label, b in dense.blocks.items() if label not in frozen.blocks
                  for n, p in b.named_parameters())
    assert sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in frozen.parameters()) == pair + dead_bn


def test_freeze_keeps_supernet_weights():
    space = tiny_space()
    with torch.no_grad():
        for p in space.parameters():
            p.uniform_()
    frozen = space.freeze(published_gene().to_sample())
    own = space.state_dict()
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, own[k]), k


def test_model_context_reinstantiation_is_the_frozen_net():
    sample = published_gene().to_sample()
    with model_context(sample):
        net = BiONetPlusPlus(**TINY)
    assert net.is_fixed and net.gene == published_gene()
    assert isinstance(net.blocks["dec_2_0"].fusion, SkipFusion)


def test_skip_choice_create_fixed_module():
    with model_context({"b": [0, 3]}):
        m = SkipChoice(5, label="b")
    assert isinstance(m, SkipFusion) and m.chosen == [0, 3]


# ----- forward -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "in_channels, num_classes, size",
    [(3, 1, (32, 32)), (1, 1, (64, 32)), (3, 4, (32, 96)), (1, 2, (96, 64))],
)
def test_forward_shapes(in_channels, num_classes, size):
    net = tiny_space(in_channels=in_channels, num_classes=num_classes)
    y = net(torch.randn(2, in_channels, *size))
    assert y.shape == (2, num_classes, *size)
    fixed = create_model("bixnet", in_channels=in_channels, num_classes=num_classes, **TINY)
    assert fixed(torch.randn(2, in_channels, *size)).shape == (2, num_classes, *size)


@pytest.mark.parametrize("size", [(48, 64), (64, 40), (30, 32)])
def test_bad_input_size_fails_before_compute(size):
    net = tiny_space()
    with pytest.raises(ValueError, match="not divisible by 32"):
        net(torch.randn(1, 3, *size))


def test_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 3 input channel"):
        tiny_space()(torch.randn(1, 1, 32, 32))


def test_head_tail_split_equals_full_forward():
    torch.manual_seed(0)
    net = tiny_space().eval()
    net.set_active(published_gene().to_sample())
    x = torch.randn(2, 3, 32, 32)
    full = net(x)
    for stage in range(7):
        feats = net.forward_head(x, stage)
        assert torch.allclose(net.forward_tail(feats), full, atol=1e-6), stage


def test_unreached_blocks_are_not_computed():
    net = tiny_space().eval()
    net.set_active(published_gene().to_sample())
    called = []
    for label, block in net.blocks.items():
        block.register_forward_hook(lambda m, i, o, label=label: called.append(label))
    net(torch.randn(1, 3, 32, 32))
    assert set(called) == published_gene().live_blocks()
