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
# Splitting merged cells (seeded watershed on the distance transform of the cores), chosen
# on real DSB2018 nuclei (20 held-out bottom halves with the starter; 6 with 2-minute
# models from scratch and fine-tuned): a seed per distance maximum standing at least
# SPLIT_H_PER_DIAMETER x the typical cell diameter above its surroundings, the distance
# smoothed by max(1, diameter / SPLIT_SMOOTH_DIAMETERS) px. AP@0.5 0.68 -> 0.76, AP@0.75
# 0.43 -> 0.49, touching pairs separated 23 -> 45 of 88 with the starter; h of 0.03 to
# 0.08 diameters measure alike, no smoothing splits cells (AP@0.5 0.60).
SPLIT_H_PER_DIAMETER = 0.05
SPLIT_SMOOTH_DIAMETERS = 20.0


def to_instances(
    probabilities: np.ndarray,
    threshold: float = THRESHOLD,
    min_size: int = MIN_SIZE_PX,
    low_threshold: float = LOW_THRESHOLD,
    gap_px: int = GAP_PX,
    split_merged: bool = True,
    diameter_px: float | None = None,
) -> np.ndarray:
    """Instance labels (0 = background, 1..n) from a (n_classes, Y, X) softmax or a (Y, X) map.

    Steps: cores = connected components (4-connectivity) of ``foreground > threshold``
    (class 1; with 3 classes the cell interiors, which then grow over the border class);
    each core grows by a watershed on the probability, but only into pixels that are
    above ``low_threshold`` or lie in a gap no wider than ``gap_px`` between two
    different cores (so a cell's free outline never grows); objects below ``min_size``
    pixels are removed. ``split_merged`` (default) splits cores that are several cells
    fused: one seed per maximum of their smoothed distance transform that stands out by
    a twentieth of the typical cell diameter (``diameter_px``; None: measured on the
    unsplit result), then a watershed of the distance grows the seeds. Returns the
    smallest unsigned dtype that holds the labels.
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
    split = bool(split_merged and n)
    diameter, labels = (diameter_px if split else None), None
    if split and not diameter:  # measured on the unsplit cells
        from napari_unet.core.size import typical_diameter

        labels = _grow(cores, foreground, grow_into)
        diameter = typical_diameter(_remove_small(labels, min_size))
    if split and diameter:
        labels = _split_merged(cores, grow_into, diameter)
    elif labels is None:
        labels = _grow(cores, foreground, grow_into)
    return _remove_small(labels, min_size)


def cell_diameter(metadata: dict) -> float | None:
    """The typical cell diameter (pixels) of the cells a model was trained on, which sizes
    the splitting (None: unknown, measured on each image). For the generalist starter the
    median of its training nuclei measured as well as each image's own (AP@0.5 0.742 vs
    0.749 on 20 held-out DSB halves), and it is the same for every chunk of a big image."""
    value = metadata.get("normalisation", {}).get("diameter_px")
    return float(value) if value else None


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


def h_maxima_by_part(image: np.ndarray, h: float) -> np.ndarray:
    """`skimage.morphology.h_maxima` of a non-negative image, computed on each connected
    part of ``image > 0`` alone.

    The same maxima as over the whole image: parts are separated by zeros, across which
    the reconstruction carries nothing above 0. A part with one regional maximum keeps
    it when the part stands at least ``h`` high and holds none otherwise, so only parts
    with several maxima (fused cells) need the reconstruction, which sorts every pixel
    it is given (4,761 dense synthetic cells, 2048x2048: 0.3 s instead of 5.7 s).
    """
    from skimage.morphology import h_maxima, local_maxima

    full = np.ones((3, 3), dtype=bool)
    parts, n = ndi.label(image > 0, structure=full)
    peaks, m = ndi.label(local_maxima(image, connectivity=2) & (parts > 0), structure=full)
    if not m:
        return np.zeros(image.shape, dtype=np.uint8)
    at = np.flatnonzero(peaks)  # a part's single maximum is its highest value
    part_of_peak = np.zeros(m + 1, dtype=np.intp)
    height = np.zeros(n + 1, dtype=image.dtype)
    part_of_peak[peaks.flat[at]] = parts.flat[at]
    height[parts.flat[at]] = image.flat[at]
    n_peaks = np.bincount(part_of_peak[1:], minlength=n + 1)
    out = ((peaks > 0) & ((n_peaks == 1) & (height >= h))[parts]).astype(np.uint8)
    boxes = ndi.find_objects(parts)
    for part in np.flatnonzero(n_peaks > 1):
        box = boxes[part - 1]
        inside = parts[box] == part
        crop = np.pad(np.where(inside, image[box], 0), 1)
        out[box] |= h_maxima(crop, h)[1:-1, 1:-1] & inside
    return out


def _split_merged(cores: np.ndarray, grow_into: np.ndarray, diameter: float) -> np.ndarray:
    """Labels grown from one seed per distance-transform maximum of the cores.

    A core too thin for its maximum to stand out keeps its own label when it has at least
    `MIN_SIZE_PX` pixels; smaller ones are dropped before they grow: on real nuclei these
    are slivers, not cells (growing them lowered AP@0.5 by 0.01-0.02). The rule does not
    depend on ``min_size``, so a chunk (labelled with ``min_size`` 1, small objects
    removed after stitching) gets what the whole image gets. Maxima are sought in each
    core alone (the smoothed distance is cut to the cores): where the smoothing bridged
    the gaps, touching cores made one large part whose reconstruction sorted every
    pixel of it (the same scores on 20 real nuclei halves and 4 phase-contrast images).
    """
    from skimage.segmentation import watershed

    distance = ndi.distance_transform_edt(cores > 0)
    distance = ndi.gaussian_filter(distance, max(1.0, diameter / SPLIT_SMOOTH_DIAMETERS))
    h = max(0.3, SPLIT_H_PER_DIAMETER * diameter)
    seeds, n = ndi.label(h_maxima_by_part(np.where(cores > 0, distance, 0.0), h))
    unseeded = (cores > 0) & ~np.isin(cores, np.unique(cores[seeds > 0]))
    if unseeded.any():
        big = np.flatnonzero(np.bincount(cores[unseeded]) >= MIN_SIZE_PX)
        seeds = np.where(unseeded & np.isin(cores, big), cores + n, seeds)
    return watershed(-distance, markers=seeds, mask=grow_into | (cores > 0))


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
