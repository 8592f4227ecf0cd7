"""Axis orders of people's arrays (letters T, Z, C, Y, X) and the stacks the core works on.

An image with axes such as "YXC" (RGB), "CYX", "ZYX", "TYX" or "TZCYX" becomes a
(T, Z, C, Y, X) array; training and prediction then see (N, C, Y, X) slices and labels
come back in the image's own order without its channel axis. Guessing is limited to
unambiguous shapes; anything else asks for the axes. No resampling, no normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_unet.core.io import InputError

CANONICAL = "TZCYX"
RGB_SIZES = (3, 4)  # a last axis of this size after a large one is colour (RGB / RGBA)


@dataclass(frozen=True)
class Axes:
    """Validated axes of one array: ``order`` like "TZCYX"; sizes of the five axes."""

    order: str
    shape: tuple[int, ...]

    def size(self, axis: str) -> int:
        return self.shape[self.order.index(axis)] if axis in self.order else 1

    @property
    def channels(self) -> int:
        return self.size("C")

    @property
    def is_z_stack(self) -> bool:
        """Slices along Z (their objects are 3D objects), not only frames in time."""
        return "Z" in self.order and self.size("Z") > 1

    @property
    def labels_order(self) -> str:
        return self.order.replace("C", "")

    @property
    def labels_shape(self) -> tuple[int, ...]:
        return tuple(s for a, s in zip(self.order, self.shape, strict=True) if a != "C")


def _ambiguous(shape: tuple[int, ...], name: str) -> InputError:
    return InputError(
        f"{name}: shape {shape} has {len(shape)} axes and their order is ambiguous; say which "
        "with axes (CLI --axes), e.g. TZYX, ZCYX, TZCYX or YXC"
    )


def guess(shape: Sequence[int], channels: int | None = None, name: str = "image") -> str:
    """Axes of an array of ``shape`` when nobody said: YX; YXC (RGB) or CYX/YXC when the
    model's ``channels`` fit; ZYX for other 3D arrays; 4D only with a channel axis."""
    shape = tuple(int(s) for s in shape)
    multi = channels is not None and channels > 1
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        if multi and shape[-1] == channels:
            return "YXC"
        if multi and shape[0] == channels:
            return "CYX"
        if shape[-1] in RGB_SIZES and shape[0] > max(RGB_SIZES):
            return "YXC"
        return "ZYX"
    if len(shape) == 4:
        if multi and shape[1] == channels:
            return "ZCYX"
        if (multi and shape[-1] == channels) or (
            shape[-1] in RGB_SIZES and shape[-2] > max(RGB_SIZES)
        ):
            return "ZYXC"
    raise _ambiguous(shape, name)


def parse(
    axes: str | None, shape: Sequence[int], channels: int | None = None, name: str = "image"
) -> Axes:
    """Check ``axes`` against ``shape`` (or `guess` them): letters from TZCYX, each once,
    ending in YX or YXC, one per dimension."""
    shape = tuple(int(s) for s in shape)
    order = guess(shape, channels, name) if not axes else axes.upper().strip()
    if set(order) - set(CANONICAL) or len(set(order)) != len(order):
        raise InputError(f"{name}: axes {axes!r}: use each of the letters T, Z, C, Y, X once")
    if not (order.endswith("YX") or order.endswith("YXC")):
        raise InputError(f"{name}: axes {axes!r} must end with YX (or YXC for colour)")
    if len(order) != len(shape):
        raise InputError(
            f"{name}: axes {order!r} name {len(order)} dimensions but the shape {shape} "
            f"has {len(shape)}"
        )
    return Axes(order, shape)


def to_tzcyx(data: np.ndarray, axes: Axes) -> np.ndarray:
    """The array as (T, Z, C, Y, X), absent axes of size 1 (a view where numpy allows)."""
    data = np.asarray(data)
    missing = [a for a in CANONICAL if a not in axes.order]
    full = data.reshape(data.shape + (1,) * len(missing))
    return np.transpose(full, [(axes.order + "".join(missing)).index(a) for a in CANONICAL])


def labels_to_tzyx(labels: np.ndarray, axes: Axes) -> np.ndarray:
    """Labels in the image's order without C (e.g. TZYX, ZYX, YX) as (T, Z, Y, X)."""
    order = axes.labels_order
    labels = np.asarray(labels)
    if labels.shape != axes.labels_shape:
        raise InputError(
            f"labels: shape {labels.shape} does not fit the image's {axes.order} "
            f"{axes.shape}; expected {axes.labels_shape} ({order})"
        )
    missing = [a for a in "TZYX" if a not in order]
    full = labels.reshape(labels.shape + (1,) * len(missing))
    return np.transpose(full, [(order + "".join(missing)).index(a) for a in "TZYX"])


def tzyx_to_labels(labels: np.ndarray, axes: Axes) -> np.ndarray:
    """Inverse of `labels_to_tzyx`: (T, Z, Y, X) back to the image's order without C."""
    order = axes.labels_order
    missing = "".join(a for a in "TZYX" if a not in order)
    moved = np.transpose(labels, ["TZYX".index(a) for a in order + missing])
    return moved.reshape(axes.labels_shape)


def pick_channels(
    x: np.ndarray, channels: Sequence[int] | None, name: str = "image"
) -> np.ndarray:
    """Keep channels ``channels`` (in that order) of a (T, Z, C, Y, X) array."""
    if channels is None:
        return x
    bad = [c for c in channels if not 0 <= c < x.shape[2]]
    if bad or not channels:
        raise InputError(
            f"{name}: channels {list(channels)} do not exist; it has {x.shape[2]} "
            f"(0..{x.shape[2] - 1})"
        )
    return x[:, :, list(channels)]


def parse_channels(text: str | None) -> list[int] | None:
    """'0,1' -> [0, 1] (CLI ``--channels``); None or '' -> None (all channels)."""
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise InputError(f"channels {text!r}: give channel numbers like 0,1") from None
