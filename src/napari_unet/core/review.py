"""Review actions on one predicted object: what to write into the *annotation* labels.

Each action returns an `Edit` (pixel indices and their new values in the annotations,
plus the reviewed area as a training box); applying it is the caller's job (the Review
dock writes it with napari's undo history). The prediction is only read. 2D planes;
the dock adds the slice index for stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.annotations import Box
from napari_unet.core.io import InputError

MARGIN_PX = 2  # the reviewed area reaches this far past the object (its separation gap)
NEIGHBOUR_GAP_PX = 3  # objects closer than this are neighbours (merge candidates)


@dataclass(frozen=True)
class Edit:
    """New ``values`` at ``indices`` (row and column arrays) of the annotation plane."""

    indices: tuple[np.ndarray, np.ndarray]
    values: np.ndarray
    box: Box  # the reviewed area: a training region where unlabelled pixels are background
    label: int  # the annotation id the object now has (0 after a delete)


def _footprint(prediction: np.ndarray, obj_id: int) -> np.ndarray:
    mask = np.asarray(prediction) == obj_id
    if not mask.any():
        raise InputError(f"Object {obj_id} is not in the prediction (was it re-run?).")
    return mask


def reviewed_box(mask: np.ndarray, margin_px: int = MARGIN_PX) -> Box:
    """The bounding box of ``mask`` grown by ``margin_px``, inside the plane."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return Box(
        None,
        max(int(rows.min()) - margin_px, 0),
        max(int(cols.min()) - margin_px, 0),
        min(int(rows.max()) + 1 + margin_px, height),
        min(int(cols.max()) + 1 + margin_px, width),
    )


def _edit(annotations: np.ndarray, mask: np.ndarray, values: np.ndarray | int, label: int) -> Edit:
    """Write ``values`` on ``mask``; only pixels whose value changes are listed."""
    rows, cols = np.nonzero(mask)
    values = np.broadcast_to(np.asarray(values), mask.shape)[rows, cols]
    changed = annotations[rows, cols] != values
    return Edit((rows[changed], cols[changed]), values[changed], reviewed_box(mask), label)


def _own_label(annotations: np.ndarray, mask: np.ndarray, next_id: int) -> int:
    """The object's id in the annotations if it was accepted before, else ``next_id``."""
    present = np.unique(annotations[mask])
    return int(present[0]) if len(present) == 1 and present[0] != 0 else int(next_id)


def accept(prediction: np.ndarray, annotations: np.ndarray, obj_id: int, next_id: int) -> Edit:
    """The object, as predicted, becomes one annotated cell (its pixels get one id)."""
    mask = _footprint(prediction, obj_id)
    label = _own_label(annotations, mask, next_id)
    return _edit(annotations, mask, label, label)


def delete(prediction: np.ndarray, annotations: np.ndarray, obj_id: int) -> Edit:
    """Not a cell: its pixels become (reviewed) background in the annotations."""
    mask = _footprint(prediction, obj_id)
    return _edit(annotations, mask, 0, 0)


def neighbour(prediction: np.ndarray, obj_id: int, gap_px: int = NEIGHBOUR_GAP_PX) -> int | None:
    """The predicted object sharing the longest stretch of outline with ``obj_id`` (within
    ``gap_px``), or None."""
    mask = _footprint(prediction, obj_id)
    ring = ndi.binary_dilation(mask, iterations=gap_px) & ~mask
    around = np.asarray(prediction)[ring]
    around = around[(around != 0) & (around != obj_id)]
    if not len(around):
        return None
    ids, counts = np.unique(around, return_counts=True)
    return int(ids[np.argmax(counts)])


def merge(
    prediction: np.ndarray,
    annotations: np.ndarray,
    obj_id: int,
    next_id: int,
    other_id: int | None = None,
) -> Edit:
    """The object and its neighbour (``other_id``, default `neighbour`) become one cell,
    the background gap between them included."""
    other = neighbour(prediction, obj_id) if other_id is None else other_id
    if other is None:
        raise InputError(f"Object {obj_id} has no neighbour to merge with.")
    union = _footprint(prediction, obj_id) | _footprint(prediction, other)
    gap = ndi.binary_closing(union, structure=np.ones((3, 3)), iterations=NEIGHBOUR_GAP_PX)
    mask = union | (gap & (np.asarray(prediction) == 0))
    return _edit(annotations, mask, next_id, next_id)


def split(
    prediction: np.ndarray,
    annotations: np.ndarray,
    obj_id: int,
    line: np.ndarray,
    next_id: int,
) -> Edit:
    """Cut the object along a polyline ``line`` ((N, 2) row, column points, pixels) into
    two or more cells (ids from ``next_id``); the cut pixels join the nearest part."""
    from skimage.draw import line as draw_line
    from skimage.segmentation import expand_labels

    mask = _footprint(prediction, obj_id)
    points = np.round(np.asarray(line, dtype=float)).astype(int)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise InputError("Draw a line (two or more points) across the object to split it.")
    cut = np.zeros_like(mask)
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=True):
        rr, cc = draw_line(r0, c0, r1, c1)
        inside = (rr >= 0) & (rr < mask.shape[0]) & (cc >= 0) & (cc < mask.shape[1])
        cut[rr[inside], cc[inside]] = True
    cut = ndi.binary_dilation(cut, structure=ndi.generate_binary_structure(2, 1)) & mask
    parts, n = ndi.label(mask & ~cut)
    if n < 2:
        raise InputError(
            f"The line does not cut object {obj_id} in two: draw it across the whole object."
        )
    parts = np.where(mask, expand_labels(parts, 2), 0)
    values = np.where(parts > 0, parts + next_id - 1, 0)
    return _edit(annotations, mask, values, next_id)
