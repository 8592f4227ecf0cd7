"""Loss weights of the U-Net paper: separation gaps, class balance and the border term.

Ronneberger et al. 2015, eq. 2: ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``
with d1, d2 the distances to the nearest and second-nearest cell. Pure numpy/scipy, no
GUI; 2D images, stacks (Z, Y, X) slice by slice. Not the loss itself (see training).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.events import Done, run_to_end
from napari_unet.core.io import InputError, as_labels

# Paper constants (Ronneberger et al. 2015, section 3, eq. 2): w0 = 10, sigma ~ 5 pixels.
W0 = 10.0
SIGMA_PX = 5.0
# Border-term values below this (absolute) are 0: it fixes how far a cell's distances are
# computed (`reach_px`), and bounds the difference from the exact term.
NEGLIGIBLE = 1e-6
# Alternative class weighting 1 / ln(c + p_class) of ENet (Paszke et al. 2016).
LOG_OFFSET = 1.02
# Cap on a class weight w_c: with few painted cells "balance" would weight cell pixels by
# 50-80, which (with the border term) made single tiles dominate the loss (spikes of 1000x
# the median on real images). A capped rare class still pulls, at most 5x a common pixel.
MAX_CLASS_WEIGHT = 5.0


# Progress of a stack: ``done`` of ``total`` slices finished.
SliceDone = Done


@dataclass(frozen=True)
class WeightMaps:
    """Everything the weight map is made of, for display and training.

    ``d1``/``d2`` are computed up to ``reach_px`` only (beyond it the border term is
    negligible) and are capped at ``reach_px`` so that they display without infinities
    (with w0 = 0 nothing is computed and they are 0). Use `distances` for uncapped values.
    """

    target: np.ndarray  # instance labels with separation gaps (same dtype as the input)
    d1: np.ndarray  # float32 distance (pixels) to the nearest cell of ``target``
    d2: np.ndarray  # float32 distance (pixels) to the second-nearest cell of ``target``
    weights: np.ndarray  # float32 w_c + border term; 0 on ignored pixels
    reach_px: float


def reach_px(w0: float = W0, sigma: float = SIGMA_PX) -> float:
    """Distance sum d1 + d2 (pixels) beyond which the border term is below ``NEGLIGIBLE``.

    A cell can only matter where its own distance is below this (d1 <= d2), so it is the
    radius by which each cell's bounding box is grown.
    """
    _check_params(w0, sigma)
    if w0 <= NEGLIGIBLE:
        return 0.0
    return float(sigma * math.sqrt(2.0 * math.log(w0 / NEGLIGIBLE)))


def separate_touching(labels: np.ndarray) -> np.ndarray:
    """A copy where every cell pixel with a different cell in its 3x3 neighbourhood is 0.

    Touching cells are thus split by a background gap in the training target (the
    separation borders of the paper). Stacks are handled slice by slice (3x3 in Y, X).
    """
    labels = as_labels(labels)
    cell = labels > 0
    other_cell = np.zeros(labels.shape, dtype=bool)
    h, w = labels.shape[-2:]
    # Each 8-neighbour direction once (right, down, two diagonals), marking both ends.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = (..., slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
        b = (..., slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
        differ = (labels[a] != labels[b]) & cell[a] & cell[b]
        other_cell[a] |= differ
        other_cell[b] |= differ
    out = labels.copy()
    out[other_cell] = 0
    return out


def distances(
    labels: np.ndarray, max_distance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (pixels) of every pixel to the nearest and second-nearest cell.

    Returns float32 ``(d1, d2)``; on a cell pixel d1 = 0 and d2 is the distance to the
    closest other cell. Values above ``max_distance`` are ``inf`` (not computed), as are
    distances to cells that do not exist. Each cell's distance transform is computed
    only in its bounding box grown by ``max_distance``, which is exact there: all of the
    cell lies in the box, and no pixel outside it is closer than ``max_distance``.
    ``None`` means no limit (one full-image transform per cell: slow).
    """
    labels = as_labels(labels)
    if max_distance is not None and not max_distance >= 0:
        raise InputError(f"max_distance must be >= 0 pixels; got {max_distance}")
    if labels.ndim == 3:
        pairs = [_distances_2d(plane, max_distance) for plane in labels]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    return _distances_2d(labels, max_distance)


def border_weights(labels: np.ndarray, w0: float = W0, sigma: float = SIGMA_PX) -> np.ndarray:
    """The border term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` (sigma in pixels), float32.

    Non-zero only on background pixels with at least two cells around; 0 on cells.
    Equal to the brute force (one full distance transform per cell) within
    ``NEGLIGIBLE``, but each cell is only looked at within ``reach_px(w0, sigma)``.
    """
    labels = as_labels(labels)
    reach = reach_px(w0, sigma)
    if reach == 0.0:
        return np.zeros(labels.shape, dtype=np.float32)
    d1, d2 = distances(labels, reach)
    return _border_term(labels, d1, d2, w0, sigma)


def class_weights(
    target: np.ndarray,
    ignore: np.ndarray | None = None,
    mode: str = "balance",
    max_weight: float | None = MAX_CLASS_WEIGHT,
) -> np.ndarray:
    """Per-pixel class weight ``w_c`` (float32) from the frequencies of cell and background.

    ``"balance"``: each class gets total weight N/2 (N = counted pixels), so the mean
    weight is 1 and both classes pull equally. ``"log"``: ``1 / ln(1.02 + p_class)``
    (ENet), gentler for rare classes. A class that is absent does not count; ignored
    pixels are not counted and get weight 0. No class weighs more than ``max_weight``
    (``None``: no cap), so a rare class cannot make a few pixels dominate the loss.
    """
    target = as_labels(target)
    counted = _ignore_mask(ignore, target.shape)
    counted = ~counted if counted is not None else np.ones(target.shape, dtype=bool)
    foreground = target > 0
    n_cell = int(np.count_nonzero(foreground & counted))
    n_total = int(np.count_nonzero(counted))
    counts = {False: n_total - n_cell, True: n_cell}
    out = np.zeros(target.shape, dtype=np.float32)
    present = [cls for cls, n in counts.items() if n > 0]
    for cls in present:
        if mode == "balance":
            weight = n_total / (len(present) * counts[cls])
        elif mode == "log":
            weight = 1.0 / math.log(LOG_OFFSET + counts[cls] / n_total)
        else:
            raise InputError(f"class weight mode must be 'balance' or 'log'; got {mode!r}")
        if max_weight is not None:
            weight = min(weight, max_weight)
        out[(foreground == cls) & counted] = weight
    return out


def weight_map(labels: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    """The paper's loss weight map for instance ``labels`` (2D or a stack), float32: the
    ``weights`` of `weight_maps_iter` (same arguments) run to the end.

    ``w_c + border term``, both on the separated target (``separate_touching``), so the
    gaps between touching cells get the highest weights. ``balance=False`` uses w_c = 1;
    a balanced w_c is at most ``max_class_weight``. Pixels where ``ignore`` is True get
    weight 0 (unannotated areas).
    """
    return run_to_end(weight_maps_iter(labels, *args, **kwargs)).weights


def weight_maps_iter(
    labels: np.ndarray,
    w0: float = W0,
    sigma: float = SIGMA_PX,
    balance: bool = True,
    ignore: np.ndarray | None = None,
    max_class_weight: float | None = MAX_CLASS_WEIGHT,
) -> Generator[SliceDone, None, WeightMaps]:
    """Compute `WeightMaps` slice by slice, yielding `SliceDone` after each slice.

    The dock and the CLI drive this; stopping the generator (``close()``) stops the work
    between slices. Class frequencies are counted over the whole input.
    """
    labels = as_labels(labels)
    _check_params(w0, sigma)
    ignored = _ignore_mask(ignore, labels.shape)
    reach = reach_px(w0, sigma)
    target = separate_touching(labels)
    planes = target.reshape(-1, *target.shape[-2:])
    d1 = np.empty(planes.shape, dtype=np.float32)
    d2 = np.empty(planes.shape, dtype=np.float32)
    border = np.zeros(planes.shape, dtype=np.float32)
    for i, plane in enumerate(planes):
        if reach > 0:
            d1[i], d2[i] = _distances_2d(plane, reach)
            border[i] = _border_term(plane, d1[i], d2[i], w0, sigma)
        else:
            d1[i], d2[i] = np.inf, np.inf
        yield SliceDone(i + 1, len(planes))
    weights = border.reshape(target.shape)
    if balance:
        weights += class_weights(target, ignored, max_weight=max_class_weight)
    else:
        weights += 1.0
    if ignored is not None:
        weights[ignored] = 0.0
    np.minimum(d1, reach, out=d1)
    np.minimum(d2, reach, out=d2)
    return WeightMaps(
        target=target,
        d1=d1.reshape(target.shape),
        d2=d2.reshape(target.shape),
        weights=weights,
        reach_px=reach,
    )


# --- internals -----------------------------------------------------------------------


def _check_params(w0: float, sigma: float) -> None:
    if not (math.isfinite(w0) and w0 >= 0):
        raise InputError(f"w0 must be a finite number >= 0; got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive number of pixels; got {sigma}")


def _ignore_mask(ignore: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if ignore is None:
        return None
    ignore = np.asarray(ignore)
    if ignore.shape != tuple(shape):
        raise InputError(
            f"ignore mask has shape {ignore.shape} but the labels have {tuple(shape)}"
        )
    return ignore.astype(bool, copy=False)


def _border_term(
    labels: np.ndarray, d1: np.ndarray, d2: np.ndarray, w0: float, sigma: float
) -> np.ndarray:
    # Whole-array float32 arithmetic (faster than masking); inf distances give exp(-inf) = 0.
    term = d1 + d2
    np.multiply(term, term, out=term)
    term *= np.float32(-1.0 / (2.0 * sigma * sigma))
    np.exp(term, out=term)
    term *= np.float32(w0)
    term[labels != 0] = 0.0
    return term


def _compact(labels: np.ndarray) -> np.ndarray:
    """Ids 1..n when the ids are so sparse that one slot per id would waste memory."""
    if labels.size and int(labels.max()) > 4 * labels.size:
        ids, inverse = np.unique(labels, return_inverse=True)
        offset = 0 if ids[0] == 0 else 1
        return (inverse.reshape(labels.shape) + offset).astype(np.int64)
    return labels


def _distances_2d(labels: np.ndarray, max_distance: float | None) -> tuple[np.ndarray, np.ndarray]:
    labels = _compact(labels)
    nearest = np.full(labels.shape, np.inf, dtype=np.float32)
    second = np.full(labels.shape, np.inf, dtype=np.float32)
    grow = labels.shape if max_distance is None else (int(math.ceil(max_distance)),) * 2
    for cell, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(
            slice(max(s.start - g, 0), min(s.stop + g, n))
            for s, g, n in zip(box, grow, labels.shape, strict=True)
        )
        d = ndi.distance_transform_edt(labels[box] != cell)
        near, sec = nearest[box], second[box]
        # Keep the two smallest per pixel: the old nearest may become the second.
        np.minimum(sec, np.maximum(near, d), out=sec, casting="unsafe")
        np.minimum(near, d, out=near, casting="unsafe")
    if max_distance is not None:
        nearest[nearest > max_distance] = np.inf
        second[second > max_distance] = np.inf
    return nearest, second
