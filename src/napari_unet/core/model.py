"""The U-Net of Ronneberger, Fischer & Brox (2015), with its tile-size arithmetic.

Paper architecture by default (valid 3x3 convs, 2x2 max-pool, 2x2 up-convolution,
center-crop + concatenation, dropout at the end of the contracting path, He init,
1x1 head); width, depth, padding, input channels and classes are configurable.
Training and tiling live elsewhere (`train.py`, `tiling.py`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from napari_unet.core.io import InputError
from napari_unet.core.presets import (
    LIGHT,
    MODEL_PRESETS,
    PAPER_BASE_CHANNELS,
    PAPER_DEPTH,
    PAPER_DROPOUT,
)

PADDINGS = ("valid", "same")
CONVS_PER_LEVEL = 2
CONV_SHRINK_PX = CONVS_PER_LEVEL * 2  # two unpadded 3x3 convs remove 2 px each side


def _check_depth(depth: int) -> None:
    if depth < 1:
        raise InputError(f"U-Net depth must be >= 1 (number of resolution levels); got {depth}")


def _output_from_bottom(bottom: int, depth: int) -> int:
    """Output size for a given size at the bottom level (after its convolutions)."""
    n = bottom
    for _ in range(depth - 1):
        n = 2 * n - CONV_SHRINK_PX
    return n


def _input_from_bottom(bottom: int, depth: int) -> int:
    n = bottom + CONV_SHRINK_PX
    for _ in range(depth - 1):
        n = 2 * n + CONV_SHRINK_PX
    return n


def _smallest_bottom(depth: int) -> int:
    bottom = 1
    while _output_from_bottom(bottom, depth) < 1:
        bottom += 1
    return bottom


def valid_output_size(n_in: int, depth: int) -> int:
    """Output size of a valid-padding U-Net for an input of ``n_in`` pixels along one axis.

    Raises `InputError` when a 2x2 max-pool would see an odd size or the tile vanishes.
    """
    _check_depth(depth)
    smallest = _input_from_bottom(_smallest_bottom(depth), depth)
    if n_in < smallest:
        raise InputError(
            f"Tile size {n_in} px is too small for a depth-{depth} U-Net; the smallest valid "
            f"input is {smallest} px."
        )
    n = int(n_in)
    for level in range(depth - 1):
        n -= CONV_SHRINK_PX
        if n % 2:
            raise InputError(
                f"Tile size {n_in} px does not fit a depth-{depth} U-Net: level {level + 1} "
                f"would max-pool an odd size ({n} px). Nearest valid input size: "
                f"{nearest_valid_input_size(n_in, depth)} px."
            )
        n //= 2
    return _output_from_bottom(n - CONV_SHRINK_PX, depth)


def valid_input_size(n_out: int, depth: int) -> int:
    """Input size that gives exactly ``n_out`` output pixels (inverse of `valid_output_size`).

    Raises `InputError` when no input gives that output (not every size is reachable).
    """
    _check_depth(depth)
    step = 2 ** (depth - 1)
    smallest = _smallest_bottom(depth)
    bottom, remainder = divmod(n_out - _output_from_bottom(smallest, depth), step)
    if n_out < 1 or remainder:
        below = smallest + max(0, bottom)
        raise InputError(
            f"No input tile gives a {n_out} px output for a depth-{depth} U-Net; valid output "
            f"sizes near it are {_output_from_bottom(below, depth)} and "
            f"{_output_from_bottom(below + 1, depth)} (steps of {step} px)."
        )
    return _input_from_bottom(smallest + bottom, depth)


def nearest_valid_input_size(n: int, depth: int) -> int:
    """The valid input size closest to ``n`` (ties go up; at least the smallest valid size)."""
    _check_depth(depth)
    step = 2 ** (depth - 1)
    smallest = _input_from_bottom(_smallest_bottom(depth), depth)
    k = max(0, math.floor((n - smallest) / step + 0.5))
    return smallest + k * step


def context_margin_px(depth: int, padding: str = "valid") -> int:
    """Context pixels an output pixel needs on each side (the valid-padding shrink / 2).

    A same-padding pixel can see up to ``pool - 1`` px further (its 2x2 pooling partners),
    and tiles must stay on the pooling grid: margin + pool - 1, rounded up to a multiple
    of ``pool = 2 ** (depth - 1)``.
    """
    smallest_in = nearest_valid_input_size(1, depth)
    margin = (smallest_in - valid_output_size(smallest_in, depth)) // 2
    if padding == "valid":
        return margin
    step = 2 ** (depth - 1)
    return step * math.ceil((margin + step - 1) / step)


def _he_normal_(weight: torch.Tensor, fan_in: int) -> None:
    """He et al. 2015 init, N(0, sqrt(2 / fan_in)): the paper's choice (section 3)."""
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / fan_in))


def _double_conv(c_in: int, c_out: int, pad: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=pad),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=pad),
        nn.ReLU(inplace=True),
    )


def _center_crop(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dy = (features.shape[-2] - height) // 2
    dx = (features.shape[-1] - width) // 2
    return features[..., dy : dy + height, dx : dx + width]


class UNet(nn.Module):
    """U-Net for 2D images: (B, in_channels, H, W) -> logits (B, n_classes, H', W').

    With ``padding="valid"`` (the paper) the output is smaller than the input; see
    `output_size` / `input_size`. ``padding="same"`` keeps the size (H, W divisible by
    ``2 ** (depth - 1)``). ``n_classes=2``: background / cell interior; 3 adds "border".
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        base_channels: int = PAPER_BASE_CHANNELS,
        depth: int = PAPER_DEPTH,
        padding: str = "valid",
        dropout: float = PAPER_DROPOUT,
    ) -> None:
        super().__init__()
        _check_depth(depth)
        if padding not in PADDINGS:
            raise InputError(f"padding must be one of {PADDINGS}; got {padding!r}")
        if in_channels < 1 or n_classes < 2 or base_channels < 1:
            raise InputError(
                "UNet needs in_channels >= 1, n_classes >= 2 and base_channels >= 1; got "
                f"{in_channels}, {n_classes}, {base_channels}"
            )
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1); got {dropout}")
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "n_classes": int(n_classes),
            "base_channels": int(base_channels),
            "depth": int(depth),
            "padding": padding,
            "dropout": float(dropout),
        }
        pad = 0 if padding == "valid" else 1
        widths = [base_channels * 2**level for level in range(depth)]
        self.down = nn.ModuleList()
        c_in = in_channels
        for width in widths:
            self.down.append(_double_conv(c_in, width, pad))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upconv.append(nn.ConvTranspose2d(2 * width, width, 2, stride=2))
            self.up.append(_double_conv(2 * width, width, pad))
        self.head = nn.Conv2d(widths[0], n_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for every convolution (fan-in = incoming connections of one output
        neuron: in_channels * 3 * 3 for a 3x3 conv, in_channels for the 2x2 stride-2
        up-convolution whose kernels do not overlap), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                _he_normal_(module.weight, module.in_channels)
            elif isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                _he_normal_(module.weight, module.in_channels * kh * kw)
            else:
                continue
            nn.init.zeros_(module.bias)

    @property
    def depth(self) -> int:
        return self.config["depth"]

    @property
    def n_classes(self) -> int:
        return self.config["n_classes"]

    @property
    def in_channels(self) -> int:
        return self.config["in_channels"]

    def _same_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def output_size(self, n: int) -> int:
        """Output pixels along one axis for an input of ``n`` pixels (`InputError` if invalid)."""
        if self.config["padding"] == "valid":
            return valid_output_size(n, self.depth)
        if n < 1 or n % self._same_multiple():
            raise InputError(
                f"Tile size {n} px: a same-padding depth-{self.depth} U-Net needs a multiple "
                f"of {self._same_multiple()} px."
            )
        return int(n)

    def input_size(self, n: int) -> int:
        """Input pixels along one axis that give ``n`` output pixels (`InputError` if none)."""
        if self.config["padding"] == "valid":
            return valid_input_size(n, self.depth)
        return self.output_size(n)

    def nearest_input_size(self, n: int) -> int:
        """The valid input tile size closest to ``n`` pixels."""
        if self.config["padding"] == "valid":
            return nearest_valid_input_size(n, self.depth)
        step = self._same_multiple()
        return max(step, step * round(n / step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.output_size(x.shape[-2])
        self.output_size(x.shape[-1])
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        x = self.dropout(skips.pop())  # end of the contracting path (paper section 3)
        for upconv, block in zip(self.upconv, self.up, strict=True):
            x = upconv(x)
            skip = _center_crop(skips.pop(), x.shape[-2], x.shape[-1])
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


class HaloGeometry(NamedTuple):
    """How `MirroredUNet` pads and crops, and the halo tiling consumers crop (pixels)."""

    halo: int
    pad_before: int
    pad_after: int
    crop_before: int
    crop_after: int


def halo_geometry(depth: int, padding: str = "valid") -> HaloGeometry:
    """Padding, cropping and halo that make a halo-tiled prediction equal napari-unet's.

    A halo-tiling consumer (bioimage.io) pads the image by ``halo``, cuts tiles of a
    multiple of the pooling factor overlapping by 2 * halo, and crops ``halo`` from each
    output. `MirroredUNet` mirror-pads each tile so its output has the tile's size. The
    numbers are chosen so that every tile sees the pooling grid of napari-unet's own
    tiling (strides and total shift are multiples of the pooling factor) and no kept
    pixel sees the tile's mirrored border: the result is seam-free and identical.
    """
    step = 2 ** (depth - 1)
    margin = context_margin_px(depth, padding)
    if padding == "same":
        return HaloGeometry(margin, margin, margin, margin, margin)
    extra = (nearest_valid_input_size(1, depth) - 2 * margin) % step  # tiles: multiples of step
    total = 2 * margin + extra
    for halo in range(margin, margin + 2 * step + 1):
        if (2 * halo) % step:
            continue
        for before in range(total + 1):
            if (halo + before - margin) % step:
                continue
            for crop in range(extra + 1):
                shift = before - crop  # input pixels left of an output pixel's context
                if halo >= shift and halo >= 2 * margin - shift:
                    return HaloGeometry(halo, before, total - before, crop, extra - crop)
    raise AssertionError(f"no halo geometry for a depth-{depth} U-Net")  # pragma: no cover


class MirroredUNet(UNet):
    """`UNet` whose output has the input's size (a multiple of the pooling factor): the
    input is mirror-padded and the output cropped as `halo_geometry` says. Same weights
    and keyword arguments as `UNet`; this is what the bioimage.io export runs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = halo_geometry(self.depth, self.config["padding"])
        x = nn.functional.pad(x, (g.pad_before, g.pad_after, g.pad_before, g.pad_after), "reflect")
        y = super().forward(x)
        h, w = y.shape[-2] - g.crop_after, y.shape[-1] - g.crop_after
        return y[..., g.crop_before : h, g.crop_before : w]


def spread_input_channels(net: UNet, shares: Sequence[float]) -> UNet:
    """A copy of a one-channel ``net`` that takes ``len(shares)`` channels and sees, at
    the start, ``sum(share_c * x_c)`` with a negative share meaning the channel inverted
    (``1 - x_c`` on the normalised 0-1 range): how a gray model (the nuclei starter)
    starts on colour or multi-channel images, e.g. stained brightfield where nuclei are
    dark in all three channels. Only the first convolution changes; the inversion's
    constant goes into its bias.
    """
    if net.in_channels != 1:
        raise InputError(
            f"only a one-channel model can be spread; this one takes {net.in_channels}"
        )
    shares = [float(a) for a in shares]
    wide = copy.deepcopy(net)
    wide.config["in_channels"] = len(shares)
    first: nn.Conv2d = net.down[0][0]
    conv = nn.Conv2d(len(shares), first.out_channels, first.kernel_size, padding=first.padding)
    with torch.no_grad():
        weight = first.weight  # (out, 1, k, k)
        conv.weight.copy_(torch.cat([weight * a for a in shares], dim=1))
        inverted = sum(-a for a in shares if a < 0)
        conv.bias.copy_(first.bias + inverted * weight.sum(dim=(1, 2, 3)))
    wide.down[0][0] = conv.to(weight.device)
    return wide


def build(preset: str = LIGHT, **overrides: Any) -> UNet:
    """A fresh UNet from a named preset (see `presets.MODEL_PRESETS`), with keyword overrides."""
    check_preset(preset)
    return UNet(**{**MODEL_PRESETS[preset], **overrides})


def check_preset(preset: str | None) -> None:
    if preset not in MODEL_PRESETS:
        raise InputError(
            f"Unknown model preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}"
        )
