"""A tiny U-Net whose weights make it a known function: foreground = normalised intensity > 0.5.

Used by the prediction, dock and CLI tests (and the README picture) so their expected
labels can be worked out by hand: no training, nothing random.
"""

from __future__ import annotations

import torch

from napari_unet.core.model import UNet

STEEPNESS = 40.0  # logit slope: probability = sigmoid(STEEPNESS * (intensity - 0.5))


def threshold_unet(depth: int = 2, in_channels: int = 1) -> UNet:
    """Identity path through the top level (conv -> ReLU -> skip -> conv) into the head."""
    net = UNet(in_channels=in_channels, base_channels=2, depth=depth, dropout=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for conv in (net.down[0][0], net.down[0][2], net.up[-1][0], net.up[-1][2]):
            conv.weight[0, 0, 1, 1] = 1.0  # channel 0 carries the first input channel
        net.head.weight[1, 0, 0, 0] = STEEPNESS
        net.head.bias[1] = -0.5 * STEEPNESS
    return net.eval()
