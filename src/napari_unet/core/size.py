"""Typical cell diameter from annotations, and the scale at which the network sees cells.

The light CPU model sees about 90 px of context around each output pixel (depth 4,
valid convs); cells much larger than that (phase-contrast cells of 100-200 px) cannot be
told apart from their surroundings. Images whose annotated cells are wider than
`MAX_DIAMETER_PX` are therefore shrunk so that the typical cell is `TARGET_DIAMETER_PX`
wide, for training and, with the factor stored in the model, for prediction (the
probabilities are resized back before post-processing). Smaller cells are left alone:
enlarging them costs time and the model already sees them whole.
"""

from __future__ import annotations

import numpy as np

MAX_DIAMETER_PX = 64.0  # wider typical cells are shrunk ...
TARGET_DIAMETER_PX = 32.0  # ... to this diameter
MIN_OBJECTS_OFF_BORDER = 5  # fewer whole objects: count the cut ones too


def typical_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent diameter (``2 sqrt(area / pi)``) of the labelled objects, in
    pixels; per 2D slice for a stack. Objects cut by the image border are left out when
    enough whole ones remain. None when nothing is labelled.
    """
    labels = np.asarray(labels)
    planes = labels.reshape(-1, *labels.shape[-2:]) if labels.ndim > 2 else labels[None]
    whole, every = [], []
    for plane in planes:
        areas = np.bincount(plane.ravel())
        areas[0] = 0
        ids = np.flatnonzero(areas)
        if not ids.size:
            continue
        edge = np.unique(np.concatenate([plane[0], plane[-1], plane[:, 0], plane[:, -1]]))
        every.append(areas[ids])
        whole.append(areas[np.setdiff1d(ids, edge)])
    if not every:
        return None
    areas = np.concatenate(whole)
    if areas.size < MIN_OBJECTS_OFF_BORDER:
        areas = np.concatenate(every)
    return float(np.median(2.0 * np.sqrt(areas / np.pi)))


def scale_for(diameter_px: float | None) -> float:
    """The factor images are resized by before the network: 1 unless cells are large."""
    if diameter_px is None or diameter_px <= MAX_DIAMETER_PX:
        return 1.0
    return TARGET_DIAMETER_PX / float(diameter_px)


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """The last two axes of ``shape`` times ``factor`` (rounded, at least 1)."""
    return (*shape[:-2], *(max(1, round(s * factor)) for s in shape[-2:]))


def resize(array: np.ndarray, shape: tuple[int, ...], labels: bool = False) -> np.ndarray:
    """Resize the last two axes to ``shape[-2:]``: linear for images and probabilities
    (anti-aliased when shrinking), nearest for labels (ids are kept, never blended)."""
    from skimage.transform import resize as sk_resize

    target = (*array.shape[:-2], *shape[-2:])
    if tuple(array.shape) == target:
        return array
    if labels:
        out = sk_resize(array, target, order=0, preserve_range=True, anti_aliasing=False)
        return out.astype(array.dtype)
    shrinking = any(t < s for t, s in zip(target[-2:], array.shape[-2:], strict=True))
    out = sk_resize(
        array.astype(np.float32, copy=False),
        target,
        order=1,
        preserve_range=True,
        anti_aliasing=shrinking,
    )
    return out.astype(np.float32)
