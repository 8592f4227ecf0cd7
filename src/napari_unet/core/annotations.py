"""What the user has annotated so far: cells, annotated slices, next free label id.

Cheap summaries the Annotate dock shows after every brush stroke. Training decides what
to use from the same rule: a slice is annotated when it holds any label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnnotationSummary:
    n_cells: int
    annotated_slices: tuple[int, ...]  # indices along the first axis of a stack; (0,) for 2D
    n_slices: int  # 1 for a 2D image

    def describe(self) -> str:
        if self.n_slices == 1:
            return f"{self.n_cells} cells annotated" if self.n_cells else "no cells annotated yet"
        slices = ", ".join(str(i) for i in self.annotated_slices) or "none"
        return (
            f"{self.n_cells} cells on {len(self.annotated_slices)} of {self.n_slices} slices "
            f"(annotated: {slices})"
        )


def annotated_slices(labels: np.ndarray) -> tuple[int, ...]:
    """Indices of the slices of a (Z, Y, X) stack holding any label; (0,) or () for 2D."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return (0,) if labels.any() else ()
    flat = labels.reshape(labels.shape[0], -1)
    return tuple(int(i) for i in np.flatnonzero(flat.any(axis=1)))


def summarize(labels: np.ndarray) -> AnnotationSummary:
    """Cells are distinct non-zero ids; for a stack, one id on several slices counts once."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    return AnnotationSummary(
        n_cells=int(np.count_nonzero(ids)),
        annotated_slices=annotated_slices(labels),
        n_slices=1 if labels.ndim == 2 else int(labels.shape[0]),
    )


def count_strokes(mask: np.ndarray) -> int:
    """Connected pieces of a background strokes layer (per slice for a stack)."""
    from scipy import ndimage as ndi

    mask = np.asarray(mask) != 0
    planes = mask if mask.ndim == 3 else mask[None]
    return int(sum(ndi.label(p)[1] for p in planes if p.any()))


def next_label(labels: np.ndarray) -> int:
    """A label id not used yet (one above the largest), so a new cell never merges."""
    labels = np.asarray(labels)
    return int(labels.max()) + 1 if labels.size else 1


def neighbour_slice(annotated: tuple[int, ...], current: int, step: int) -> int | None:
    """The next (step=+1) or previous (step=-1) annotated slice from ``current``, or None."""
    if step > 0:
        later = [i for i in annotated if i > current]
        return min(later) if later else None
    earlier = [i for i in annotated if i < current]
    return max(earlier) if earlier else None


@dataclass(frozen=True)
class Box:
    """A training region: rows y0:y1, columns x0:x1 (pixels), on one slice or all (None)."""

    slice_index: int | None
    y0: int
    x0: int
    y1: int
    x1: int


def boxes_from_rectangles(rectangles: list[np.ndarray], shape: tuple[int, ...]) -> list[Box]:
    """napari rectangle vertices (4, ndim) -> integer boxes clipped to ``shape``.

    In a stack a rectangle belongs to the slice it was drawn on; a 2D rectangle drawn
    over a stack (ndim 2) applies to every slice.
    """
    boxes = []
    height, width = shape[-2:]
    for vertices in rectangles:
        vertices = np.asarray(vertices, dtype=float)
        slice_index = None
        if len(shape) == 3 and vertices.shape[1] == 3:
            slice_index = int(round(vertices[0, 0]))
            if not 0 <= slice_index < shape[0]:
                continue
        ys, xs = vertices[:, -2], vertices[:, -1]
        y0, y1 = (
            int(np.clip(np.floor(ys.min()), 0, height)),
            int(np.clip(np.ceil(ys.max()), 0, height)),
        )
        x0, x1 = (
            int(np.clip(np.floor(xs.min()), 0, width)),
            int(np.clip(np.ceil(xs.max()), 0, width)),
        )
        if y1 > y0 and x1 > x0:
            boxes.append(Box(slice_index, y0, x0, y1, x1))
    return boxes


def region_mask(shape: tuple[int, ...], boxes: list[Box] | None) -> np.ndarray:
    """Boolean mask of the pixels inside any box; everything when there are no boxes."""
    if not boxes:
        return np.ones(shape, dtype=bool)
    mask = np.zeros(shape, dtype=bool)
    for b in boxes:
        if len(shape) == 2:
            mask[b.y0 : b.y1, b.x0 : b.x1] = True
        elif b.slice_index is None:
            mask[:, b.y0 : b.y1, b.x0 : b.x1] = True
        else:
            mask[b.slice_index, b.y0 : b.y1, b.x0 : b.x1] = True
    return mask
