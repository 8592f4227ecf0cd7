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
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(N, C, Y, X) -> (float32 ``slices`` of it (None: all), each channel's range): every
    channel by its percentiles over the whole stack, so the slices keep their brightness
    relative to each other."""
    ranges = [intensity_range(stack[:, c], percentiles) for c in range(stack.shape[1])]
    chosen = slice(None) if slices is None else list(slices)
    images = np.stack(
        [normalize(stack[chosen, c], value_range=r) for c, r in enumerate(ranges)], axis=1
    )
    return images, ranges
