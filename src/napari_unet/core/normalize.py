"""Percentile intensity normalisation, the same at training and at prediction time.

The percentiles are stored in the model file so a model sees images scaled the way it
was trained. Not a background correction.
"""

from __future__ import annotations

import numpy as np

# Low/high percentiles mapped to 0 and 1 (robust to hot pixels and empty background).
PERCENTILES = (1.0, 99.8)


def intensity_range(
    image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
) -> tuple[float, float]:
    """The intensities at the two percentiles; a flat image gets a unit range."""
    lo, hi = np.percentile(np.asarray(image, dtype=np.float32), percentiles)
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize(
    image: np.ndarray,
    percentiles: tuple[float, float] = PERCENTILES,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """float32 image with the low percentile at 0 and the high one at 1 (not clipped).

    Pass ``value_range`` to reuse a range measured elsewhere (e.g. on a whole stack).
    """
    lo, hi = value_range if value_range is not None else intensity_range(image, percentiles)
    return ((np.asarray(image, dtype=np.float32) - lo) / (hi - lo)).astype(np.float32)


def normalize_stack(
    stack: np.ndarray,
    slices: list[int] | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    frames: int = 1,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(N, C, Y, X) -> (float32 ``slices`` of it (None: all), each channel's range): every
    channel by its percentiles over the whole stack, so the slices keep their brightness
    relative to each other (a Z stack).

    ``frames`` > 1: the stack is that many time points of N / frames slices each, and
    each time point is normalised on its own, as a lone image would be (a time-lapse
    dims as it bleaches). The ranges returned are then the first chosen slice's frame's.
    """
    n = stack.shape[0]
    if frames < 1 or n % frames:
        raise ValueError(f"{n} slices do not split into {frames} time points")
    per_frame = n // frames
    chosen = list(range(n)) if slices is None else [int(i) for i in slices]
    ranges: dict[int, list[tuple[float, float]]] = {}

    def frame_ranges(frame: int) -> list[tuple[float, float]]:
        if frame not in ranges:
            block = stack[frame * per_frame : (frame + 1) * per_frame]
            ranges[frame] = [
                intensity_range(block[:, c], percentiles) for c in range(block.shape[1])
            ]
        return ranges[frame]

    images = np.empty((len(chosen), *stack.shape[1:]), np.float32)
    for row, i in enumerate(chosen):
        for c, r in enumerate(frame_ranges(i // per_frame)):
            images[row, c] = normalize(stack[i, c], value_range=r)
    return images, frame_ranges(chosen[0] // per_frame if chosen else 0)
