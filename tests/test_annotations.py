"""Annotation bookkeeping: annotated slices, next free id, training-region boxes."""

from __future__ import annotations

import numpy as np

from napari_unet.core import annotations as ann


def test_summary_of_a_sparse_stack():
    labels = np.zeros((5, 8, 8), np.uint16)
    labels[1, :2, :2] = 4
    labels[3, 5:, 5:] = 4  # same id on another slice counts once
    labels[3, :2, :2] = 9
    s = ann.summarize(labels)
    assert (s.n_cells, s.annotated_slices, s.n_slices) == (2, (1, 3), 5)
    assert s.describe() == "2 cells on 2 of 5 slices (annotated: 1, 3)"
    assert ann.next_label(labels) == 10
    assert ann.neighbour_slice(s.annotated_slices, 1, +1) == 3
    assert ann.neighbour_slice(s.annotated_slices, 1, -1) is None
    assert ann.neighbour_slice(s.annotated_slices, 4, -1) == 3


def test_boxes_from_napari_rectangles_and_mask():
    rect_3d = np.array([[2, 1.4, 2.2], [2, 1.4, 6.0], [2, 4.6, 6.0], [2, 4.6, 2.2]])
    rect_2d = np.array([[-3, -3], [-3, 2], [2, 2], [2, -3]])  # partly outside: clipped
    boxes = ann.boxes_from_rectangles([rect_3d, rect_2d], (4, 8, 8))
    assert boxes == [ann.Box(2, 1, 2, 5, 6), ann.Box(None, 0, 0, 2, 2)]
    mask = ann.region_mask((4, 8, 8), boxes)
    expected = np.zeros((4, 8, 8), bool)
    expected[2, 1:5, 2:6] = True
    expected[:, 0:2, 0:2] = True
    np.testing.assert_array_equal(mask, expected)
    assert ann.region_mask((8, 8), []).all()
