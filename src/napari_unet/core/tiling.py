"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2): any image size, seamless.

The image border is extended by mirroring (``np.pad(mode="reflect")``: the edge pixel
is the mirror axis and is not repeated), input tiles are cut so that their exact outputs
abut, tiles run in batches, and the outputs are stitched and cropped. Every tile starts
on a multiple of the network's pooling factor, so a tiled prediction of a valid-padding
model equals one pass over the whole mirror-padded image; a same-padding model gets
overlapping tiles whose margins (where zero padding leaks in) are discarded.
Normalisation and instance labels live elsewhere (`predict.py`, `postprocess.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.events import Done, run_to_end
from napari_unet.core.io import InputError

MIRROR_MODE = "reflect"
# Input tile edges tried by the automatic choice, largest first (572: the paper's tile).
AUTO_TILE_SIZES_PX = (1024, 768, 572, 444, 316, 188, 124)
MAX_AUTO_BATCH = 16
# Bytes of activations per input pixel per base channel during a no-grad fp32 forward pass
# (skip features of all levels + working tensors at full resolution): peak RSS growth
# measured 22-41 on CPU (base 8/16/32, depth 4/5, 572-1020 px tiles), rounded up.
ACTIVATION_BYTES_PER_PX_PER_CHANNEL = 48
# Share of the free memory the automatic tile/batch choice may plan to use.
MEMORY_SHARE = {"cuda": 0.6, "cpu": 0.25, "mps": 0.4}


Region = tuple[int, int, int, int]  # (y0, x0, y1, x1), pixels

# ``done`` of ``total`` tiles predicted (``total`` may grow after an out-of-memory retry).
TileProgress = Done


@dataclass(frozen=True)
class AxisLayout:
    """How one image axis is cut into tiles, in pixels."""

    tile_in: int  # input tile edge
    stride: int  # output pixels each tile contributes (a multiple of the pooling factor)
    drop: int  # network-output pixels discarded at the tile start (same padding only)
    count: int  # number of tiles
    pad_before: int  # mirrored pixels before the image
    pad_after: int  # mirrored pixels after the image


def margin_px(net: Any) -> int:
    """Context pixels an output pixel needs on each side (see `model.context_margin_px`)."""
    from napari_unet.core.model import context_margin_px

    return context_margin_px(int(net.config["depth"]), net.config["padding"])


def pool_factor(net: Any) -> int:
    """Tiles must start on multiples of this to see the same pooling grid as the whole image."""
    return 2 ** (int(net.config["depth"]) - 1)


def _usable_out(net: Any, tile_in: int, margin: int) -> int:
    """Exact output pixels one input tile gives."""
    if net.config["padding"] == "valid":
        return net.output_size(tile_in)
    return tile_in - 2 * margin


def smallest_tile_px(net: Any) -> int:
    """The smallest input tile that gives at least one pooling step of exact output."""
    step, margin = pool_factor(net), margin_px(net)
    smallest = net.nearest_input_size(2 * margin + step if net.config["padding"] == "same" else 1)
    while _usable_out(net, smallest, margin) < step:
        smallest += step
    return smallest


def axis_layout(net: Any, size: int, max_tile_in: int) -> AxisLayout:
    """Fewest tiles of at most ``max_tile_in`` input pixels covering ``size``, then the
    smallest tile that keeps that count (less wasted padding for small images)."""
    step, margin = pool_factor(net), margin_px(net)
    smallest = smallest_tile_px(net)
    largest = max(net.nearest_input_size(max_tile_in), smallest)
    while largest > smallest and largest > max_tile_in:
        largest -= step

    def count_for(tile_in: int) -> int:
        usable = _usable_out(net, tile_in, margin)
        stride = usable // step * step
        return 1 if usable >= size else 1 + math.ceil((size - usable) / stride)

    count = count_for(largest)
    tile_in = smallest
    while count_for(tile_in) > count:
        tile_in += step
    usable = _usable_out(net, tile_in, margin)
    stride = usable // step * step if count > 1 else usable
    drop = 0 if net.config["padding"] == "valid" else margin
    padded = (count - 1) * stride + tile_in
    return AxisLayout(tile_in, stride, drop, count, margin, padded - margin - size)


def tile_memory_bytes(net: Any, tile_in: int) -> int:
    """Estimated activation memory of one square input tile (the automatic sizing's model)."""
    base = int(net.config.get("base_channels", 64))
    return ACTIVATION_BYTES_PER_PX_PER_CHANNEL * base * tile_in * tile_in


def auto_tile_and_batch(net: Any, device: Any) -> tuple[int, int]:
    """Largest tile of `AUTO_TILE_SIZES_PX` that fits the device's free memory, then the
    batch that fills the rest (at most `MAX_AUTO_BATCH`; 2 on a CPU)."""
    from napari_unet.core.device import free_memory_bytes

    budget = free_memory_bytes(device) * MEMORY_SHARE.get(device.type, 0.25)
    tile_in = AUTO_TILE_SIZES_PX[-1]
    for candidate in AUTO_TILE_SIZES_PX:
        if tile_memory_bytes(net, candidate) <= budget:
            tile_in = candidate
            break
    batch = int(budget // tile_memory_bytes(net, tile_in))
    if device.type == "cpu":
        batch = min(batch, 2)  # CPU throughput does not grow with the batch
    batch = max(1, min(batch, MAX_AUTO_BATCH))
    return tile_in, batch


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom_type) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _as_chw(image: np.ndarray, in_channels: int) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise InputError(
            f"predict_tiled expects a (Y, X) or (C, Y, X) image; got shape {image.shape}"
        )
    if image.shape[0] != in_channels:
        raise InputError(
            f"The model expects {in_channels} input channel(s); the image has "
            f"{image.shape[0]} (shape {image.shape})."
        )
    return image


def _dihedral(batch: Any, k: int, flip: bool, inverse: bool = False) -> Any:
    """One of the 8 flips/rotations of a (B, C, Y, X) tensor, or its inverse."""
    import torch

    if not inverse:
        batch = torch.flip(batch, dims=(-1,)) if flip else batch
        return torch.rot90(batch, k, dims=(-2, -1))
    batch = torch.rot90(batch, -k, dims=(-2, -1))
    return torch.flip(batch, dims=(-1,)) if flip else batch


TTA_TRANSFORMS = [(k, flip) for flip in (False, True) for k in range(4)]


def _forward_probabilities(net: Any, batch: Any, device: Any, tta: bool) -> Any:
    """Softmax probabilities (float32) of one batch, averaged over flips/rotations with TTA."""
    import torch

    from napari_unet.core.device import autocast, memory_format

    transforms = TTA_TRANSFORMS if tta else TTA_TRANSFORMS[:1]
    total = None
    with torch.inference_mode(), autocast(device):
        for k, flip in transforms:
            x = _dihedral(batch, k, flip).contiguous(memory_format=memory_format(device))
            probs = torch.softmax(net(x).float(), dim=1)
            probs = _dihedral(probs, k, flip, inverse=True)
            total = probs if total is None else total + probs
    return total / len(transforms)


def predict_tiled_iter(
    net: Any,
    image: np.ndarray,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: Any = None,
    tta: bool = False,
    region: Region | None = None,
) -> Generator[TileProgress, None, np.ndarray]:
    """Overlap-tile prediction as a generator: yields `TileProgress` after every batch and
    returns float32 (n_classes, Y, X) softmax probabilities. Closing it stops between batches.

    ``image``: normalised float32 (Y, X) or (C, Y, X). ``tile_size``: input tile edge in
    pixels (rounded to a valid size; default from free memory). A CUDA out-of-memory
    halves the batch, then the tile, and retries. ``tta`` averages the 8 flips/rotations.
    ``region`` (y0, x0, y1, x1): predict only those pixels, seeing the image's own pixels
    around them (mirrored only beyond the image border); the result is (n_classes, y1 - y0,
    x1 - x0). The model is put in eval mode on ``device`` (default: where its weights are).
    """
    import torch

    from napari_unet.core.device import memory_format, resolve_device

    device = resolve_device(device) if device is not None else next(net.parameters()).device
    image = _as_chw(image, int(net.config["in_channels"]))
    region = _check_region(region, image.shape[-2:])
    was_training = net.training
    net.to(device=device, memory_format=memory_format(device)).eval()
    auto_tile, auto_batch = auto_tile_and_batch(net, device)
    tile_in = int(tile_size) if tile_size else auto_tile
    batch = int(batch_size) if batch_size else auto_batch
    if batch < 1 or tile_in < 1:
        raise InputError(f"tile size and batch size must be >= 1; got {tile_in}, {batch}")
    try:
        while True:
            try:
                return (yield from _run(net, image, region, tile_in, batch, device, tta))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch //= 2
                elif _used_tile_px(net, region, tile_in) // 2 >= smallest_tile_px(net):
                    tile_in = _used_tile_px(net, region, tile_in) // 2
                else:
                    raise InputError(
                        f"Out of memory on {device} even with one {tile_in} px tile; "
                        "free memory or use a smaller model or --device cpu."
                    ) from exc
    finally:
        net.train(was_training)


def _check_region(region: Region | None, shape: tuple[int, ...]) -> Region:
    """``region`` as ints, the whole image when None; `InputError` when it is empty or outside."""
    height, width = int(shape[0]), int(shape[1])
    y0, x0, y1, x1 = (0, 0, height, width) if region is None else (int(v) for v in region)
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise InputError(f"region {region} is empty or outside the {height}x{width} image")
    return y0, x0, y1, x1


def _used_tile_px(net: Any, region: Region, tile_in: int) -> int:
    """The largest tile edge actually cut for this region (small ones use smaller tiles)."""
    y0, x0, y1, x1 = region
    return max(axis_layout(net, n, tile_in).tile_in for n in (y1 - y0, x1 - x0))


def _with_context(image: np.ndarray, region: Region, ly: AxisLayout, lx: AxisLayout) -> np.ndarray:
    """The region plus each layout's padding: the image's own pixels where there are any,
    mirrored beyond its border."""
    y0, x0, y1, x1 = region
    _, height, width = image.shape
    top, left = y0 - ly.pad_before, x0 - lx.pad_before
    bottom, right = y1 + ly.pad_after, x1 + lx.pad_after
    dy, dx = max(-top, 0), max(-left, 0)
    pads = ((0, 0), (dy, max(bottom - height, 0)), (dx, max(right - width, 0)))
    return np.pad(image, pads, MIRROR_MODE)[:, top + dy : bottom + dy, left + dx : right + dx]


def _run(
    net: Any,
    image: np.ndarray,
    region: Region,
    tile_in: int,
    batch_size: int,
    device: Any,
    tta: bool,
) -> Generator[TileProgress, None, np.ndarray]:
    """One attempt at a fixed tile and batch size (an out-of-memory error propagates)."""
    import torch

    height, width = region[2] - region[0], region[3] - region[1]
    ly = axis_layout(net, height, tile_in)
    lx = axis_layout(net, width, tile_in)
    padded = _with_context(image, region, ly, lx)
    out = np.empty((int(net.config["n_classes"]), height, width), dtype=np.float32)
    tiles = [(iy, ix) for iy in range(ly.count) for ix in range(lx.count)]
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start : start + batch_size]
        inputs = np.stack(
            [
                padded[
                    :,
                    iy * ly.stride : iy * ly.stride + ly.tile_in,
                    ix * lx.stride : ix * lx.stride + lx.tile_in,
                ]
                for iy, ix in chunk
            ]
        )
        probs = _forward_probabilities(net, torch.from_numpy(inputs).to(device), device, tta)
        probs = probs.cpu().numpy()
        for (iy, ix), tile in zip(chunk, probs, strict=True):
            y0, x0 = iy * ly.stride, ix * lx.stride
            h = ly.stride if iy < ly.count - 1 else height - y0
            w = lx.stride if ix < lx.count - 1 else width - x0
            out[:, y0 : y0 + h, x0 : x0 + w] = tile[
                :, ly.drop : ly.drop + h, lx.drop : lx.drop + w
            ]
        yield TileProgress(min(start + batch_size, len(tiles)), len(tiles))
    return out


def count_tiles(net: Any, shape: tuple[int, int], tile_size: int) -> int:
    """Tiles one (Y, X) image needs at input tile edge ``tile_size`` (for progress totals)."""
    return (
        axis_layout(net, shape[0], tile_size).count * axis_layout(net, shape[1], tile_size).count
    )


def predict_tiled(
    net: Any,
    image: np.ndarray,
    *args: Any,
    progress: Callable[[TileProgress], None] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """`predict_tiled_iter` (same arguments) run to the end; ``progress(event)`` is called
    after every batch."""
    return run_to_end(predict_tiled_iter(net, image, *args, **kwargs), progress)
