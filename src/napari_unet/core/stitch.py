"""Link the slice-wise instances of a Z stack into 3D objects by overlap between neighbours.

The U-Net segments a stack slice by slice; a cell spanning several Z slices then has one
id per slice. Here each object of slice z takes the id of the object of slice z - 1 it
overlaps best (one-to-one, best pairs first, overlap >= a threshold), like cellpose's
``stitch_threshold``. The overlap is intersection / area of the *smaller* object, not
cellpose's IoU: with Z steps coarser than pixels a cell's cross-section shrinks fast
towards its poles, so IoU splits most cells there (README: linking figures).
Time-lapses are not stitched (frames keep their own ids): that would be tracking.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.io import InputError
from napari_unet.core.metrics import match

# Overlap (intersection / smaller area) from which two objects of neighbouring slices are
# one 3D object. A cell's own slices overlap almost fully; cells stacked along Z meet
# partly, so 0.7 merges fewer of them than 0.5 (benchmarks/bench_channels.py linking).
STITCH_THRESHOLD = 0.7
SMALLER, IOU = "smaller", "iou"  # overlap measures; IOU is cellpose's (for comparison)


def check_threshold(threshold: float) -> float:
    """A linking threshold is an overlap fraction in (0, 1]."""
    if not 0.0 < float(threshold) <= 1.0:
        raise InputError(
            f"stitch threshold is an overlap fraction between 0 and 1 (0 = off); got {threshold}"
        )
    return float(threshold)


def link_slice(
    previous: np.ndarray,
    current: np.ndarray,
    threshold: float,
    next_id: int,
    measure: str = SMALLER,
) -> tuple[np.ndarray, int]:
    """Relabel ``current`` (2D instances, any ids) against the already linked ``previous``.

    Pairs are taken best overlap first, each object at most once; a matched object takes
    its partner's id, every other one a new id after ``next_id``. Returns (labels as
    uint32, largest id used so far).
    """
    threshold = check_threshold(threshold)
    current = np.asarray(current)
    m = match(previous, current)
    if len(m.pred_ids) == 0:
        return np.zeros(current.shape, np.uint32), next_id
    smaller = np.minimum(m.gt_areas[m.pair_gt], m.pred_areas[m.pair_pred])
    overlap = m.iou if measure == IOU else m.intersection / smaller
    new_ids = np.zeros(len(m.pred_ids), np.int64)
    taken_prev = np.zeros(len(m.gt_ids), bool)
    taken = np.zeros(len(m.pred_ids), bool)
    for k in np.argsort(-overlap, kind="stable"):
        if overlap[k] < threshold:
            break
        g, p = m.pair_gt[k], m.pair_pred[k]
        if not (taken_prev[g] or taken[p]):
            taken_prev[g] = taken[p] = True
            new_ids[p] = m.gt_ids[g]
    new_ids[~taken] = np.arange(next_id + 1, next_id + 1 + int((~taken).sum()))
    lookup = np.zeros(int(m.pred_ids.max()) + 1, np.uint32)
    lookup[m.pred_ids] = new_ids
    return lookup[current], max(next_id, int(new_ids.max()))


def stitch(
    labels: np.ndarray, threshold: float = STITCH_THRESHOLD, measure: str = SMALLER
) -> np.ndarray:
    """(Z, Y, X) slice-wise instance labels -> 3D instance labels (uint32), slice by slice."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"stitching links a (Z, Y, X) stack; got shape {labels.shape}")
    out = np.zeros(labels.shape, np.uint32)
    next_id = 0
    previous = np.zeros(labels.shape[1:], np.uint32)
    for z, plane in enumerate(labels):
        out[z], next_id = link_slice(previous, plane, threshold, next_id, measure)
        previous = out[z]
    return out
