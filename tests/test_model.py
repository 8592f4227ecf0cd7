"""The U-Net matches the paper's numbers; size arithmetic agrees with real forward passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.core.io import InputError
from napari_unet.core.model import (
    UNet,
    build,
    nearest_valid_input_size,
    valid_input_size,
    valid_output_size,
)
from napari_unet.core.presets import MODEL_PRESETS, default_preset


def _convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_paper_configuration_has_the_papers_numbers():
    net = UNet()  # defaults = paper: 1 input channel, 2 classes, 64 channels, 5 levels
    convs = _convs(net)
    assert len(convs) == 23
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in convs) == 4
    assert sum(m.kernel_size == (3, 3) for m in convs) == 18
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    assert net.output_size(572) == 388
    assert net.input_size(388) == 572
    assert max(m.out_channels for m in convs) == 1024


def test_paper_size_arithmetic_matches_a_forward_pass_without_running_the_paper_model():
    # Same valid-conv geometry, 4 channels wide instead of 64, so CI stays fast.
    net = UNet(base_channels=2, depth=5).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_he_init_std_is_sqrt_two_over_fan_in():
    torch.manual_seed(0)
    net = UNet(base_channels=32, depth=3)
    for module in _convs(net):
        weight = module.weight.detach().numpy().ravel()
        if isinstance(module, nn.ConvTranspose2d):
            fan_in = module.in_channels  # 2x2 stride 2: one input pixel per output pixel
        else:
            fan_in = module.in_channels * 9 if module.kernel_size == (3, 3) else module.in_channels
        expected = math.sqrt(2.0 / fan_in)
        assert abs(weight.mean()) < 4 * expected / math.sqrt(weight.size)
        assert weight.std() == pytest.approx(expected, rel=0.1 if weight.size > 500 else 0.35)
        assert np.all(module.bias.detach().numpy() == 0)


def test_same_padding_keeps_the_size():
    net = UNet(base_channels=4, depth=3, padding="same").eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 48, 64))
    assert out.shape == (2, 2, 48, 64)
    assert net.input_size(48) == net.output_size(48) == 48
    with pytest.raises(InputError, match="multiple of 4"):
        net(torch.rand(1, 1, 50, 48))


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_input_and_output_size_are_inverse_and_every_pool_sees_even_sizes(depth):
    valid_inputs = []
    for n_in in range(1, 400):
        # brute force: walk the contracting path, accept only even sizes at each pool
        n, ok = n_in, True
        for _ in range(depth - 1):
            n -= 4
            ok = ok and n > 0 and n % 2 == 0
            n //= 2
        bottom = n - 4
        out = bottom
        for _ in range(depth - 1):
            out = 2 * out - 4
        if ok and bottom > 0 and out > 0:
            valid_inputs.append(n_in)
            assert valid_output_size(n_in, depth) == out
            assert valid_input_size(out, depth) == n_in
        else:
            with pytest.raises(InputError):
                valid_output_size(n_in, depth)
    assert np.all(np.diff(valid_inputs) == 2 ** (depth - 1))
    for n in range(1, 300):
        nearest = nearest_valid_input_size(n, depth)
        assert nearest in valid_inputs
        assert abs(nearest - n) == min(abs(v - n) for v in valid_inputs)


def test_real_forward_shapes_follow_the_helpers():
    net = UNet(base_channels=2, depth=3).eval()
    for n_in in (44, 60, 92):
        with torch.no_grad():
            out = net(torch.zeros(1, 1, n_in, n_in + 8))
        assert out.shape[-2:] == (net.output_size(n_in), net.output_size(n_in + 8))


def test_invalid_sizes_give_a_clear_error():
    net = UNet(base_channels=2, depth=3)
    with pytest.raises(InputError, match=r"odd size.*Nearest valid input size: 6\d px"):
        net(torch.zeros(1, 1, 62, 62))
    with pytest.raises(InputError, match="too small.*smallest valid input is 44 px"):
        net.output_size(20)
    with pytest.raises(InputError, match="No input tile gives a 5 px output"):
        net.input_size(5)
    with pytest.raises(InputError, match="padding"):
        UNet(padding="reflect")


def test_config_rebuilds_the_same_architecture_and_presets_exist():
    net = UNet(in_channels=2, n_classes=3, base_channels=4, depth=3, dropout=0.2)
    clone = UNet(**net.config)
    assert clone.config == net.config
    assert [p.shape for p in clone.parameters()] == [p.shape for p in net.parameters()]
    assert set(MODEL_PRESETS) >= {"paper", "light"}
    assert build("paper").config["base_channels"] == 64
    assert default_preset("cpu") == "light"
    assert default_preset("cuda") == "paper"
    with pytest.raises(InputError, match="Unknown model preset"):
        build("huge")


def test_dropout_only_at_the_bottom_and_only_in_training():
    net = UNet(base_channels=2, depth=3, dropout=0.5)
    x = torch.rand(1, 1, 44, 44)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 1


def test_a_gray_model_spread_over_channels_sees_their_weighted_sum():
    """Spreading a one-channel model: three channels with shares (-0.5, -0.2, 0.3) give
    exactly what the gray model gives on 0.5 (1 - r) + 0.2 (1 - g) + 0.3 b."""
    from napari_unet.core.model import spread_input_channels

    torch.manual_seed(0)
    gray = UNet(1, 3, base_channels=4, depth=3).eval()
    x = torch.rand(2, 3, 92, 92)
    wide = spread_input_channels(gray, [-0.5, -0.2, 0.3]).eval()
    mixed = 0.5 * (1 - x[:, 0]) + 0.2 * (1 - x[:, 1]) + 0.3 * x[:, 2]
    assert wide.in_channels == 3 and wide.config["in_channels"] == 3
    assert torch.allclose(wide(x), gray(mixed[:, None]), atol=1e-5)
    assert gray.in_channels == 1  # the original is untouched
    with pytest.raises(InputError, match="one-channel"):
        spread_input_channels(wide, [1.0])
