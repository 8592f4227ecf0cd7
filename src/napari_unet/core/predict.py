"""A trained model + a raw image or stack -> instance labels (and foreground probability).

Slice by slice, normalised the way the model file says, as a generator of progress
events shared by the Predict dock and the CLI. Lazy stacks (dask, zarr, memory maps)
are read one slice at a time and each slice's result is written as soon as it is done.
Tiling and labelling themselves live in `tiling.py` and `postprocess.py`.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core import postprocess, size
from napari_unet.core.io import InputError, as_image
from napari_unet.core.normalize import PERCENTILES, normalize
from napari_unet.core.presets import AUTO

# Slices read (evenly spaced) to measure a stack's intensity range without loading it all.
RANGE_SAMPLE_SLICES = 8


@dataclass(frozen=True)
class PredictConfig:
    """What the dock and the CLI let people choose; None = automatic."""

    tile_size: int | None = None  # input tile edge, pixels
    batch_size: int | None = None
    device: str = AUTO
    # Average over the 8 flips/rotations: on by default since it raised AP@0.5 on the real
    # sets measured with the same models both ways (docs/accuracy.md, TTA by default: stained RGB
    # fine-tuned 0.737 -> 0.768 over 5 runs, phase contrast fine-tuned 0.827 -> 0.865,
    # the nuclei starter 0.779 -> 0.807; fine-tuned fluorescence +0.018 over 3 runs but
    # fewer touching pairs separated), at about 4-6x the prediction time on a CPU.
    # Off: `--no-tta`, or the dock's box.
    tta: bool = True
    threshold: float = postprocess.THRESHOLD
    min_size_px: int = postprocess.MIN_SIZE_PX
    split_merged: bool = True  # seeded watershed (`postprocess.to_instances`)
    # Z stacks: link each slice's objects to the previous slice's (IoU >= this) into 3D
    # objects (`stitch.py`); 0 = off, every slice keeps its own ids (time-lapses).
    stitch_threshold: float = 0.0
    # "tta" or "dropout": also an uncertainty map and per-object confidence
    # (`core.confidence`; labels then come from the samples' mean probability).
    confidence: str | None = None


@dataclass(frozen=True)
class Progress:
    """Tiles done over the whole job; ``slice_index`` is the stack index being predicted."""

    slice_index: int
    slices_done: int
    n_slices: int
    tiles_done: int
    tiles_total: int


@dataclass(frozen=True)
class SliceResult:
    """One finished slice: its labels and (when asked for) its foreground probability."""

    slice_index: int
    labels: np.ndarray
    foreground: np.ndarray | None
    uncertainty: np.ndarray | None = None  # with `PredictConfig.confidence`
    objects: tuple = ()  # `confidence.ObjectScore` per object, with `PredictConfig.confidence`


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # (Y, X) or (Z, Y, X), unsigned int
    foreground: np.ndarray | None  # float32, same shape, when asked for
    uncertainty: np.ndarray | None = None  # float32, same shape, with `PredictConfig.confidence`
    objects: tuple = ()  # `confidence.ObjectScore` of every object (all slices)


@dataclass(frozen=True)
class StackLayout:
    """Where the slices and channels are in an image array of a given shape."""

    n_slices: int
    spatial_shape: tuple[int, int]
    channel_axis: int | None  # axis of a slice's array (after taking the slice), or None
    is_stack: bool


COLOUR_HINT = (
    "for stained nuclei the shipped 'Stained RGB starter', `predict stained` on the command line"
)


def stack_layout(shape: Sequence[int], channels: int, name: str = "image") -> StackLayout:
    """(Y, X) / (N, Y, X) for one channel; (Y, X, C) / (C, Y, X) / (N, C, Y, X) / (N, Y, X, C)
    for ``channels`` > 1. Checks the shape only, so lazy arrays stay unread."""
    shape = tuple(int(s) for s in shape)
    if channels == 1:
        if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
            raise InputError(
                f"{name}: the model takes 1 channel but the image has {shape[-1]} "
                f"(shape {shape} looks like RGB): use a model trained on colour images "
                f"({COLOUR_HINT}), or pick one channel"
            )
        if len(shape) == 2:
            return StackLayout(1, shape, None, False)
        if len(shape) == 3:
            return StackLayout(shape[0], shape[1:], None, True)
        raise InputError(
            f"{name}: expected a 2D image (Y, X) or a stack (Z, Y, X); got shape {shape}"
        )
    is_stack = len(shape) == 4
    plane = shape[1:] if is_stack else shape
    if len(shape) not in (3, 4):
        raise InputError(
            f"{name}: the model wants {channels} channels: (Y, X, C), (C, Y, X) or a stack "
            f"(N, C, Y, X); got shape {shape}"
        )
    if plane[0] == channels:
        return StackLayout(shape[0] if is_stack else 1, plane[1:], 0, is_stack)
    if plane[-1] == channels:
        return StackLayout(shape[0] if is_stack else 1, plane[:2], 2, is_stack)
    raise InputError(
        f"{name}: the model takes {channels} channels but shape {shape} has no axis of "
        "that size: pick an image with as many channels (or say its axes)"
    )


def read_slice(image: Any, layout: StackLayout, index: int, name: str = "image") -> np.ndarray:
    """One slice as float32 (C, Y, X); only that slice of a lazy array is read."""
    plane = np.asarray(image[index] if layout.is_stack else image)
    if layout.channel_axis is None:
        plane = plane[None]
    elif layout.channel_axis == 2:
        plane = np.moveaxis(plane, -1, 0)
    channels = plane.shape[0]
    return as_image(plane if channels == 1 else plane[None], name, channels=channels)[0]


def value_ranges(
    image: Any,
    layout: StackLayout,
    percentiles: Sequence[float],
    name: str = "image",
    within: range | None = None,
) -> list[tuple[float, float]]:
    """Per-channel intensity range at the model's percentiles, from up to
    `RANGE_SAMPLE_SLICES` evenly spaced slices ``within`` these (None: the whole stack,
    normalised as a whole as in training)."""
    within = range(layout.n_slices) if within is None else within
    count = min(len(within), RANGE_SAMPLE_SLICES)
    picks = np.unique(np.linspace(within.start, within.stop - 1, count).round().astype(int))
    sample = np.stack([read_slice(image, layout, int(i), name) for i in picks])  # (S, C, Y, X)
    ranges = []
    for c in range(sample.shape[1]):
        lo, hi = np.percentile(sample[:, c], list(percentiles))
        ranges.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return ranges


def predict_stack(
    net: Any,
    metadata: dict,
    image: Any,
    config: PredictConfig = PredictConfig(),
    slices: Sequence[int] | None = None,
    labels_out: Any = None,
    foreground_out: Any = None,
    keep_foreground: bool = False,
    name: str = "image",
    reference: Any = None,
    frames: int = 1,
) -> Generator[Progress | SliceResult, None, Prediction]:
    """Predict ``slices`` (default: all) of a (Y, X) image or a stack, one slice at a time.

    The stack is normalised as a whole (a Z stack), or with ``frames`` > 1 as that many
    time points of equal length, each on its own (as `normalize.normalize_stack`).

    Yields `Progress` after every tile batch and a `SliceResult` per finished slice,
    written at once into ``labels_out`` / ``foreground_out`` when given (any array that
    takes ``out[i] = ...``: numpy, zarr, a memory map); otherwise they are allocated.
    In a stack every slice's labels are numbered on from the previous slice's, or, with
    ``config.stitch_threshold`` > 0, linked to the previous slice's objects (3D objects;
    only between consecutive slices predicted in this call).
    Returns the `Prediction`. Closing the generator stops between tile batches.
    With ``config.confidence`` every slice also gets an uncertainty map and a score per
    object (``reference``: a `confidence.Reference` of the annotated cells, optional).
    """
    import torch

    from napari_unet.core import stitch, tiling
    from napari_unet.core.device import resolve_device

    channels = int(net.config["in_channels"])
    layout = stack_layout(np.shape(image), channels, name)
    stitching = bool(config.stitch_threshold) and layout.is_stack
    if stitching:
        stitch.check_threshold(config.stitch_threshold)
    slices = list(range(layout.n_slices)) if slices is None else [int(i) for i in slices]
    if any(not 0 <= i < layout.n_slices for i in slices):
        raise InputError(f"{name}: slice index out of range 0..{layout.n_slices - 1}: {slices}")
    device = resolve_device(config.device)
    if next(net.parameters()).device != device:
        net = copy.deepcopy(net)  # leave the caller's (e.g. the session's CPU) model alone
    net.to(device)
    auto_tile, auto_batch = tiling.auto_tile_and_batch(net, device)
    tile_size = config.tile_size or auto_tile
    batch_size = config.batch_size or auto_batch
    scale = float(metadata.get("normalisation", {}).get("scale") or 1.0)
    net_shape = size.scaled_shape(tuple(layout.spatial_shape), scale)
    per_slice = tiling.count_tiles(net, net_shape, tile_size)
    stack_shape = (layout.n_slices, *layout.spatial_shape)
    if labels_out is None:
        labels_out = np.zeros(stack_shape, dtype=np.uint32)
    if foreground_out is None and keep_foreground:
        foreground_out = np.zeros(stack_shape, dtype=np.float32)
    percentiles = metadata.get("normalisation", {}).get("percentiles", PERCENTILES)
    if frames < 1 or layout.n_slices % frames:
        raise InputError(f"{name}: {layout.n_slices} slices do not split into {frames} frames")
    per_frame = layout.n_slices // frames
    frame_ranges: dict[int, list[tuple[float, float]]] = {}

    def ranges_of(index: int) -> list[tuple[float, float]]:
        frame = index // per_frame
        if frame not in frame_ranges:
            within = range(frame * per_frame, (frame + 1) * per_frame)
            frame_ranges[frame] = value_ranges(image, layout, percentiles, name, within)
        return frame_ranges[frame]

    total, done, next_id = per_slice * len(slices), 0, 0
    previous: tuple[int, np.ndarray] | None = None  # (index, labels) of the last slice
    uncertainty_all, objects_all = None, []
    if config.confidence:
        from napari_unet.core import confidence

        uncertainty_all = np.zeros(stack_shape, dtype=np.float32)

    def to_labels(probabilities: np.ndarray) -> np.ndarray:
        """Probabilities at the image's size -> instance labels (the config's settings)."""
        return postprocess.to_instances(
            probabilities,
            threshold=config.threshold,
            min_size=round(config.min_size_px / scale**2),
            split_merged=config.split_merged,
            diameter_px=postprocess.cell_diameter(metadata),
        )

    for position, index in enumerate(slices):
        raw = read_slice(image, layout, index, name)
        x = np.stack([normalize(raw[c], value_range=r) for c, r in enumerate(ranges_of(index))])
        x = size.resize(x, net_shape)  # the model's cell size (see core/size.py)
        if config.confidence:
            events = confidence.sample_iter(
                net, x, config.confidence, None, tile_size, batch_size, device,
                to_labels=lambda p, shape=raw.shape: to_labels(size.resize(p, shape)),
            )  # fmt: skip
        else:
            events = tiling.predict_tiled_iter(net, x, tile_size, batch_size, device, config.tta)
        start = done
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                probabilities, uncertainty, sample_labels = stop.value, None, ()
                if config.confidence:
                    probabilities, uncertainty = stop.value.probabilities, stop.value.uncertainty
                    sample_labels = stop.value.labels
                break
            done = start + event.done * per_slice // max(event.total, 1)
            yield Progress(index, position, len(slices), done, total)
        probabilities = size.resize(probabilities, raw.shape)
        labels = to_labels(probabilities)
        if stitching and previous is not None and previous[0] == index - 1:
            labels, next_id = stitch.link_slice(
                previous[1], labels, config.stitch_threshold, next_id
            )
        elif layout.is_stack and labels.any():
            labels = np.where(labels > 0, labels.astype(np.uint32) + next_id, 0)
            next_id = int(labels.max())
        previous = (index, labels)
        labels_out[index] = labels
        foreground = probabilities[1] if foreground_out is not None else None
        if foreground_out is not None:
            foreground_out[index] = foreground
        objects: tuple = ()
        if uncertainty is not None:
            uncertainty_all[index] = uncertainty
            objects = tuple(
                confidence.score_objects(
                    labels,
                    uncertainty,
                    reference,
                    index if layout.is_stack else None,
                    sample_labels=sample_labels,
                )
            )
            objects_all = [o for o in objects_all if o.slice != index] + list(objects)
        yield SliceResult(index, labels, foreground, uncertainty, objects)
        del probabilities
        if device.type == "cuda":
            torch.cuda.empty_cache()
    labels_all, foreground_all = labels_out, foreground_out
    if isinstance(labels_all, np.ndarray):
        labels_all = labels_all.astype(np.min_scalar_type(max(int(labels_all.max()), 1)))
    if not layout.is_stack:
        labels_all = labels_all[0]
        foreground_all = None if foreground_all is None else foreground_all[0]
        uncertainty_all = None if uncertainty_all is None else uncertainty_all[0]
    return Prediction(labels_all, foreground_all, uncertainty_all, tuple(objects_all))


def prediction_job(
    model: str | Path | tuple[Any, dict],
    image: Any,
    config: PredictConfig = PredictConfig(),
    axes: str | None = None,
    channels: Sequence[int] | None = None,
    **options: Any,
) -> Generator[Progress | SliceResult, None, Prediction]:
    """The one prediction entry point of the docks and the CLI: load ``model`` (a model
    file, or a (net, metadata) pair), then `predict_stack` (``options`` are its keywords).

    With ``axes`` (letters of TZCYX, e.g. "TZCYX", "YXC") and/or ``channels`` (indices
    into C, in the model's order) any layout of `core.axes` is accepted; labels come back
    in the image's order without C. Stitching (``config.stitch_threshold``) applies to Z
    only: time-lapse frames keep their own ids.
    """
    from napari_unet.core import checkpoint

    if isinstance(model, tuple):
        net, metadata = model
    elif not str(model):
        raise InputError("Choose a model file (.safetensors) first.")
    else:
        net, metadata = checkpoint.load(model)
    if axes is None and channels is None:
        return (yield from predict_stack(net, metadata, image, config, **options))
    return (yield from _predict_axes(net, metadata, image, config, axes, channels, **options))


def check_channels(model_channels: int, image_channels: int, name: str, detail: str = "") -> None:
    """One message naming both counts when a model meets an image of another channel count
    (and the shipped starter for colour when a gray model meets RGB)."""
    if model_channels != image_channels:
        hint = f" ({COLOUR_HINT})" if model_channels == 1 and image_channels in (3, 4) else ""
        raise InputError(
            f"{name}: the model takes {model_channels} channel(s) but the image has "
            f"{image_channels}{detail}; pick {model_channels} channel(s) (CLI --channels) "
            f"or use a model trained on such images{hint}"
        )


def _predict_axes(
    net: Any,
    metadata: dict,
    image: Any,
    config: PredictConfig,
    axes: str | None,
    channels: Sequence[int] | None,
    name: str = "image",
    keep_foreground: bool = False,
    reference: Any = None,
) -> Generator[Progress | SliceResult, None, Prediction]:
    """Any (T, Z, C, Y, X) layout: one `predict_stack` per time point of a T + Z stack."""
    from dataclasses import replace

    from napari_unet.core import axes as axes_

    in_channels = int(net.config["in_channels"])
    found = axes_.parse(axes, np.shape(image), in_channels, name)
    remembered = metadata.get("input", {}).get("channel_indices")
    if channels is None and remembered and found.channels != in_channels:
        channels = remembered  # the channels the model was trained on
    x = axes_.pick_channels(axes_.to_tzcyx(image, found), channels, name)
    check_channels(in_channels, x.shape[2], name, f" (axes {found.order}, shape {found.shape})")
    if not found.is_z_stack:
        config = replace(config, stitch_threshold=0.0)
    n_t, n_z = x.shape[:2]
    # A Z-less time-lapse is one stack of frames, each normalised on its own (as training
    # does); a T + Z stack one Z stack per time point.
    blocks = [x[:, 0]] if n_z == 1 else [x[t] for t in range(n_t)]
    labels = np.zeros((n_t, n_z, *x.shape[-2:]), np.uint32)  # (T, Z, Y, X)
    foreground = np.zeros(labels.shape, np.float32) if keep_foreground else None
    uncertainty = np.zeros(labels.shape, np.float32) if config.confidence else None
    objects: list = []
    for b, block in enumerate(blocks):
        block = block[:, 0] if in_channels == 1 else block  # (N, Y, X) or (N, C, Y, X)
        job = predict_stack(
            net,
            metadata,
            block,
            config,
            keep_foreground=keep_foreground,
            name=name,
            reference=reference if len(blocks) == 1 else None,
            frames=n_t if n_z == 1 else 1,
        )
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                result = stop.value
                break
            if isinstance(event, Progress) and len(blocks) > 1:
                per = event.tiles_total
                event = Progress(
                    b * n_z + event.slice_index,
                    b * n_z + event.slices_done,
                    n_t * n_z,
                    b * per + event.tiles_done,
                    len(blocks) * per,
                )
            yield event
        where = (slice(None), 0) if n_z == 1 else (b,)
        labels[where] = result.labels
        if foreground is not None:
            foreground[where] = result.foreground
        if uncertainty is not None:
            uncertainty[where] = result.uncertainty
            objects.extend(result.objects)
    out = axes_.tzyx_to_labels(labels, found)
    out = out.astype(np.min_scalar_type(max(int(out.max()), 1)))
    fg = None if foreground is None else axes_.tzyx_to_labels(foreground, found)
    unc = None if uncertainty is None else axes_.tzyx_to_labels(uncertainty, found)
    return Prediction(out, fg, unc, tuple(objects))
