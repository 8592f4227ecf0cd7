"""Foreground probabilities -> instance labels, undoing the training target's separation gaps.

The U-Net is trained on targets where touching cells are split by thin background gaps
(`weights.separate_touching`). Connected components of the predicted foreground are
therefore the cells; this module gives the gap pixels back to their cells without
growing any cell past its outline. Not a general-purpose segmentation toolbox.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.io import InputError

# Defaults chosen by `benchmarks/bench_predict.py --postprocess` (AP@0.5 / AP@0.75 on
# synthetic ground truth pushed through the training target and back, and on blurred
# "network-like" probability maps); see README "Predict".
THRESHOLD = 0.5  # cell core: foreground probability above this
LOW_THRESHOLD = 0.4  # cells may grow back into pixels above this (0.4 and 0.5 measure alike; 0.3 grows outlines)
GAP_PX = 2  # separation gaps are up to 2 px wide (one removed pixel from each cell)
MIN_SIZE_PX = 12  # objects smaller than this (pixels) are noise


def to_instances(
    probabilities: np.ndarray,
    threshold: float = THRESHOLD,
    min_size: int = MIN_SIZE_PX,
    low_threshold: float = LOW_THRESHOLD,
    gap_px: int = GAP_PX,
    split_merged: bool = False,
    min_distance_px: int = 6,
) -> np.ndarray:
    """Instance labels (0 = background, 1..n) from a (n_classes, Y, X) softmax or a (Y, X) map.

    Steps: cores = connected components (4-connectivity) of ``foreground > threshold``
    (class 1; with 3 classes the cell interiors, which then grow over the border class);
    each core grows by a watershed on the probability, but only into pixels that are
    above ``low_threshold`` or lie in a gap no wider than ``gap_px`` between two
    different cores (so a cell's free outline never grows); objects below ``min_size``
    pixels are removed. ``split_merged`` additionally splits blobs whose distance
    transform has several peaks at least ``min_distance_px`` apart. Returns the smallest
    unsigned dtype that holds the labels.
    """
    foreground = _foreground(probabilities)
    if not 0.0 <= low_threshold <= threshold:
        raise InputError(
            f"low_threshold ({low_threshold}) must lie between 0 and threshold ({threshold})"
        )
    cores, n = ndi.label(foreground > threshold)
    if np.ndim(probabilities) == 3 and np.shape(probabilities)[0] == 3:
        # 3 classes: cores are the interiors; they grow over the predicted outlines
        # (border class), i.e. wherever a cell is likelier than background.
        cell = 1.0 - np.asarray(probabilities[0], dtype=np.float32)
        grow_into = (cores > 0) | (cell > 0.5)
        foreground = cell
    else:
        grow_into = (cores > 0) | (foreground > low_threshold) | _gaps(cores, gap_px)
    # Split before growing: each core's own distance transform, and no gap is invented
    # between the parts of a split core.
    markers = _split_merged(cores, min_distance_px) if split_merged and n else cores
    labels = _grow(markers, foreground, grow_into)
    return _remove_small(labels, min_size)


def _grow(markers: np.ndarray, foreground: np.ndarray, grow_into: np.ndarray) -> np.ndarray:
    """Watershed of the markers on the probability, into ``grow_into`` only.

    Only the thin band to fill and the marker pixels bordering it enter the watershed (the
    same result as flooding the whole mask, several times faster on large images).
    """
    from skimage.segmentation import watershed

    band = grow_into & (markers == 0)
    if not band.any():
        return markers
    edge = (markers > 0) & ndi.binary_dilation(band)
    grown = watershed(-foreground, markers=np.where(edge, markers, 0), mask=band | edge)
    return np.where(markers > 0, markers, grown)


def _foreground(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim == 3:
        if probabilities.shape[0] < 2:
            raise InputError(
                f"expected (n_classes, Y, X) probabilities with class 1 = cell; "
                f"got shape {probabilities.shape}"
            )
        return probabilities[1]
    if probabilities.ndim != 2:
        raise InputError(
            f"expected (n_classes, Y, X) probabilities or a (Y, X) foreground map; "
            f"got shape {probabilities.shape}"
        )
    return probabilities


def _gaps(cores: np.ndarray, gap_px: int) -> np.ndarray:
    """Background pixels lying *between* two different cores at most ``gap_px`` apart.

    Along each of the 4 line directions, a pixel is in a gap when one core lies k1 px
    behind it and a different core k2 px ahead with k1 + k2 <= gap_px + 1. Pixels beside
    the end of a contact (next to both cells but not between them) are not gaps.
    """
    gaps = np.zeros(cores.shape, dtype=bool)
    if gap_px <= 0 or not cores.any():
        return gaps
    padded = np.pad(cores, gap_px + 1)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for behind in range(1, gap_px + 1):
            back = _shifted(padded, -behind * dy, -behind * dx, gap_px + 1)
            for ahead in range(1, gap_px + 2 - behind):
                front = _shifted(padded, ahead * dy, ahead * dx, gap_px + 1)
                gaps |= (back > 0) & (front > 0) & (back != front)
    return gaps & (cores == 0)


def _shifted(padded: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """``out[y, x] = image[y + dy, x + dx]`` (0 outside) from an image padded by ``pad``."""
    h, w = padded.shape[0] - 2 * pad, padded.shape[1] - 2 * pad
    return padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def _split_merged(labels: np.ndarray, min_distance_px: int) -> np.ndarray:
    """Split objects that look like several cells: one marker per distance-transform peak."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndi.distance_transform_edt(labels > 0)
    peaks = peak_local_max(
        distance, min_distance=min_distance_px, labels=labels, exclude_border=False
    )
    markers = np.zeros(labels.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = watershed(-distance, markers=markers, mask=labels > 0)
    # An object without a peak (too small for min_distance) keeps its own label.
    missing = (split == 0) & (labels > 0)
    if missing.any():
        extra, _ = ndi.label(missing)
        split = np.where(missing, extra + split.max(), split)
    return split


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects below ``min_size`` pixels and number the rest 1..n, in the smallest
    unsigned dtype (one lookup-table pass over the image)."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    n = int(keep.sum())
    lut = np.zeros(len(sizes), dtype=np.min_scalar_type(max(n, 1)))
    lut[keep] = np.arange(1, n + 1)
    return lut[labels]
