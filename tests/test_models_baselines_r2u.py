"""R2U-Net baseline (``r2unet``): builds, runs on non-square inputs, and has the paper's Table 1 complexity."""

import pytest
import torch

from nni_bixnas import create_model
from nni_bixnas.models import list_models, paper_figures
from nni_bixnas.models.r2unet import R2UNet
from nni_bixnas.profile import count_complexity

R2UNET_PARAMS = 9_778_785          # base 32, t=3, 4 levels, 3 -> 1 channels
R2UNET_MACS = 197_157_191_680      # at 1x3x512x512, ptflops conventions


def test_registered_with_table1_figures():
    assert "r2unet" in list_models()
    assert paper_figures("r2unet") == {"params": 9.78e6, "macs": 197.16e9}


@pytest.mark.parametrize("in_channels, num_classes", [(3, 1), (3, 3), (1, 1), (1, 3)])
def test_forward_non_square_gives_logits(in_channels, num_classes):
    model = create_model("r2unet", in_channels=in_channels, num_classes=num_classes).eval()
    head = []
    model.head.register_forward_hook(lambda m, i, o: head.append(o))
    with torch.no_grad():
        y = model(torch.randn(1, in_channels, 64, 96))
    assert y.shape == (1, num_classes, 64, 96)
    assert torch.isfinite(y).all()
    assert y is head[0]  # logits: the 1x1 head's output, no final activation


def test_tiny_variant_trains_every_parameter():
    model = create_model("r2unet", in_channels=1, num_classes=3, base=4, t=1)
    model(torch.randn(2, 1, 64, 32)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_params_exact():
    assert count_complexity(create_model("r2unet"), (32, 32)).params == R2UNET_PARAMS
    # first 1x1 projection loses 2 x 32 weights, the 1x1 head gains 2 x (32 + 1)
    assert count_complexity(create_model("r2unet", in_channels=1, num_classes=3), (32, 32), 1).params == (
        R2UNET_PARAMS - 2 * 32 + 2 * 33
    )
    assert abs(R2UNET_PARAMS / 9.78e6 - 1) < 0.02


def test_macs_at_512_match_table1():
    cx = count_complexity(create_model("r2unet"), input_size=(512, 512))
    assert (cx.params, cx.macs) == (R2UNET_PARAMS, R2UNET_MACS)
    assert abs(cx.macs / 197.16e9 - 1) < 0.02
    assert abs(cx.params / 9.78e6 - 1) < 0.02


def test_recurrence_adds_macs_not_params():
    """Each RCL runs its unit t + 1 times; one step fewer (t=2, the common default) costs 43.742 GMACs less."""
    model = R2UNet(t=3).eval()
    calls = []
    model.encoders[0].rcnn[0].unit.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.zeros(1, 3, 16, 16))
    assert len(calls) == 4
    t2 = count_complexity(R2UNet(t=2), (64, 64))
    t3 = count_complexity(R2UNet(t=3), (64, 64))
    assert t2.params == t3.params == R2UNET_PARAMS
    assert t3.macs * 64 == R2UNET_MACS  # MACs scale with the pixel count: 512^2 = 64 x 64^2
    assert t2.macs * 64 == 153_414_795_264


def test_published_pytorch_configuration_size():
    # LeeJunHyun/Image_Segmentation R2U_Net defaults: base 64, t=2
    assert count_complexity(R2UNet(base=64, t=2), (16, 16)).params == 39_091_393


def test_bad_arguments_and_sizes():
    with pytest.raises(ValueError, match="not divisible by 16"):
        create_model("r2unet")(torch.zeros(1, 3, 40, 64))
    for kwargs in (dict(levels=0), dict(base=0), dict(t=-1)):
        with pytest.raises(ValueError, match="need levels >= 1"):
            R2UNet(**kwargs)
