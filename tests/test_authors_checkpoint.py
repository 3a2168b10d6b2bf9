"""The authors' checkpoints load into ``create_model("bixnet", legacy_shared=True)`` and compute their function.

``AuthorsPhase2`` below is a transcription of the authors' ``Phase2`` model as of ``tiangexiang/BiX-NAS@52f19c1``
(``CORE/pytorch_version/Phase2model.py``, 2021, the code their released ``bixnet_monuseg.pt`` was trained
with): the same module names, so its ``state_dict()`` has their key layout (every block under
``iteration{t}_layer{l}_{encoder|decoder}_blocks`` and again under ``encoders.{i}`` / ``decoders.{i}``), the
same conv-sharing loop (iterations >= 1 reuse the ``conv1``/``conv2`` left over from iteration 0's last
decoder level) and the same one-pass forward (``onepass_forward``), at a reduced width.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_bixnas import create_model
from nni_bixnas.models.authors import detect_legacy_shared, load_authors_checkpoint, load_authors_state_dict
from nni_bixnas.space import published_gene

LEVELS, ITERATIONS, WIDTH, STEM = 4, 3, 12, 8


def _cbr(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class AuthorsBlock(nn.Module):
    def __init__(self, width, conv, skip_pre, skipped):
        super().__init__()
        self.conv = conv
        self.operator1 = nn.Sequential(conv[0], nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.operator2 = nn.Sequential(conv[1], nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.skip_pre, self.skipped, self.interpolate = skip_pre, skipped, None

    def forward(self, x, skip):
        if (self.conv[0] is None and self.conv[1] is None) or self.skipped:
            return x
        if self.interpolate is None:
            self.interpolate = nn.Upsample(size=tuple(x.shape[-2:]), mode="bilinear", align_corners=True)
        aligned = [x] + skip
        use = torch.cat([self.interpolate(aligned[i]).unsqueeze(-1) for i in self.skip_pre], dim=-1)
        return self.operator2(self.operator1(torch.sum(use, dim=-1) / len(self.skip_pre)))


class AuthorsPhase2(nn.Module):
    """Their 2021 ``Phase2`` (no attention), blocks skipped as their BFS marks them (here: our live blocks,
    which agree on the published gene)."""

    def __init__(self, gene, legacy=True):
        super().__init__()
        live = gene.live_blocks()
        self.pre_transform_conv_block = nn.Sequential(*_cbr(3, STEM), *_cbr(STEM, STEM), *_cbr(STEM, WIDTH),
                                                      nn.MaxPool2d(2))
        self.encoders, self.decoders = nn.ModuleList(), nn.ModuleList()
        own = {}
        for it in range(ITERATIONS):
            for kind, blocks, name in (("enc", self.encoders, "encoder"), ("dec", self.decoders, "decoder")):
                for level in range(LEVELS):
                    if it == 0:
                        used = any(f"{kind}_{t}_{level}" in live for t in range(ITERATIONS))
                        conv1, conv2 = (nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False) for _ in range(2)) \
                            if used else (None, None)
                        own[kind, level] = (conv1, conv2)
                    conv = (conv1, conv2) if legacy else own[kind, level]  # 52f19c1 vs 36490ad
                    label = f"{kind}_{it}_{level}"
                    skip_pre = gene.choices.get(label, [0]) if it or kind == "dec" else [0]
                    block = AuthorsBlock(WIDTH, conv, list(skip_pre), label not in live)
                    self.add_module(f"iteration{it}_layer{level}_{name}_blocks", block)
                    blocks.append(block)
        self.middles = nn.Sequential(*_cbr(WIDTH, WIDTH), *_cbr(WIDTH, WIDTH))
        self.post_transform_conv_block = nn.Sequential(*_cbr(WIDTH, STEM), *_cbr(STEM, STEM))
        self.post2 = nn.Sequential(nn.Conv2d(STEM, 1, 1, bias=False), nn.Sigmoid())

    def forward(self, x):  # their onepass_forward
        enc, dec = [x] + [None] * LEVELS, [None] * LEVELS
        x = self.pre_transform_conv_block(x)
        e_i = d_i = 0
        for iteration in range(ITERATIONS * 2):
            for layer in range(LEVELS):
                if iteration % 2 == 0 and layer == 0:
                    x_in = x
                if iteration % 2 == 0:
                    x_in = self.encoders[e_i](x_in, dec if iteration != 0 else [])
                    enc[layer + 1] = x_in
                    x_in = F.max_pool2d(x_in, 2)
                    e_i += 1
                else:
                    x_in = self.decoders[d_i](x_in, enc[1:])
                    dec[layer] = x_in
                    x_in = F.interpolate(x_in, size=enc[-1 - layer - 1].size()[-2:], mode="bilinear",
                                         align_corners=True)
                    d_i += 1
            if iteration % 2 == 0:
                x_in = F.interpolate(self.middles(x_in), size=enc[-1].size()[-2:], mode="bilinear",
                                     align_corners=True)
        return self.post2(self.post_transform_conv_block(x_in))


def authors_checkpoint(path, legacy=True, wrap=True):
    """An ``AuthorsPhase2`` with random weights and BatchNorm statistics, saved as their training saved it."""
    torch.manual_seed(0)
    theirs = AuthorsPhase2(published_gene(), legacy=legacy)
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 1.5)
    state = theirs.state_dict()
    torch.save({"state_dict": state} if wrap else state, path)
    return theirs.eval(), state


def test_the_authors_legacy_checkpoint_loads_and_computes_their_outputs_exactly(tmp_path):
    theirs, state = authors_checkpoint(tmp_path / "bixnet_monuseg.pt")
    assert "encoders.4.operator1.0.weight" in state and "iteration1_layer3_encoder_blocks.operator1.0.weight" in state
    assert "iteration0_layer3_encoder_blocks.operator1.0.weight" not in state  # never built: dead everywhere
    ours = load_authors_checkpoint(tmp_path / "bixnet_monuseg.pt")
    assert ours.legacy_shared is True and not ours.training
    assert (ours.width, ours.stem_width, ours.in_channels, ours.num_classes) == (WIDTH, STEM, 3, 1)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(x), torch.sigmoid(ours(x))
    assert torch.equal(got, expected)
    # the per-level wiring, with the same weights, is another function
    per_level = create_model("bixnet", width=WIDTH, stem_width=STEM).eval()
    per_level.load_state_dict(ours.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(torch.sigmoid(per_level(x)), expected)


def test_the_authors_per_level_checkpoint_loads_without_legacy_sharing(tmp_path):
    theirs, state = authors_checkpoint(tmp_path / "head.pt", legacy=False, wrap=False)
    assert detect_legacy_shared(state, ITERATIONS, LEVELS) is False
    ours = load_authors_checkpoint(tmp_path / "head.pt")
    assert ours.legacy_shared is False
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(torch.sigmoid(ours(x)), theirs(x))


def test_a_wiring_the_checkpoint_does_not_have_is_refused(tmp_path):
    _, state = authors_checkpoint(tmp_path / "legacy.pt")
    with pytest.raises(ValueError, match="differs from .* load it with legacy_shared=True"):
        load_authors_checkpoint(tmp_path / "legacy.pt", legacy_shared=False)
    model = create_model("bixnet", width=WIDTH, stem_width=STEM + 8, legacy_shared=True)
    with pytest.raises(ValueError, match="has shape .* expected"):
        load_authors_state_dict(model, state)
    torch.save({"att2.conv.1.weight": torch.zeros(1), **state}, tmp_path / "att.pt")
    with pytest.raises(ValueError, match="att2"):
        load_authors_checkpoint(tmp_path / "att.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a state_dict of the authors' Phase2 model"):
        load_authors_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="model argument legacy_shared of .bixnet. must be true or false, got .yes."):
        create_model("bixnet", legacy_shared="yes")


def test_legacy_sharing_runs_the_last_decoder_levels_convolutions_from_iteration_1():
    net = create_model("bixnet", width=8, stem_width=8, legacy_shared=True)
    assert net.level_convs("enc", 1, 0) is net.convs["dec_3"] is net.level_convs("dec", 2, 1)
    assert net.level_convs("enc", 0, 1) is net.convs["enc_1"]
    assert "enc_3" not in net.convs  # its only user, enc_0_3, is never reached
    net(torch.rand(1, 3, 64, 64))
