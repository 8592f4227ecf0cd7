"""Sparse annotations become targets, loss weights (0 = ignored), a hold-out and tiles."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.data import TileSampler, TrainingData
from napari_unet.core.io import InputError


def _two_touching_squares(shape=(64, 64)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    labels[10:20, 10:20] = 1
    labels[10:20, 20:30] = 2  # shares the column boundary 19|20 with cell 1
    labels[40:50, 40:50] = 3
    return labels


def test_single_slice_targets_weights_and_band_hold_out():
    labels = _two_touching_squares()
    image = labels.astype(np.float32) + 0.1
    data = TrainingData.from_arrays(image, labels)
    assert data.slice_indices == (0,)
    target = data.targets[0]
    # the separated foreground: the two touching columns become background, the rest are cells
    expected = labels > 0
    expected[10:20, 19:21] = False
    assert np.array_equal(target == 1, expected)
    # hold-out: ~20% of the rows, never weighted for training; the bottom band holds no
    # cell here (they sit in rows 10-20), so the top band is held out
    region = data.validation
    assert (region.slice_index, region.y0, region.y1, region.x0, region.x1) == (0, 0, 13, 0, 64)
    assert region.mask.all()
    assert np.all(data.weights[0, :13] == 0)
    assert np.all(data.weights[0, 13:] > 0)  # unlabelled pixels of an annotated slice count
    assert data.validation_weights.shape == (13, 64)
    assert np.all(data.validation_weights > 0)
    # gap between the touching cells weighs more than lone background (border term)
    assert data.weights[0, 15, 19] > 3 * data.weights[0, 2, 2]
    assert data.normalisation["percentiles"] == [1.0, 99.8]
    assert data.images.shape == (1, 1, 64, 64) and data.images.dtype == np.float32


def test_unannotated_slices_are_ignored_and_one_slice_is_held_out():
    labels = np.zeros((6, 48, 48), dtype=np.uint8)
    labels[1, 5:15, 5:15] = 1
    labels[3, 20:30, 20:30] = 4
    labels[4, 30:40, 5:15] = 2
    image = np.random.default_rng(0).random((6, 48, 48)).astype(np.float32)
    data = TrainingData.from_arrays(image, labels, unpainted="background")
    assert data.slice_indices == (1, 3, 4)
    assert data.images.shape == (3, 1, 48, 48)
    assert data.validation.slice_index == 4
    assert data.validation.mask.shape == (48, 48)
    assert np.all(data.weights[2] == 0)  # the held-out slice is not trained on
    assert np.all(data.weights[:2] > 0)


def test_two_annotated_slices_hold_out_a_band_not_half_the_data():
    labels = np.zeros((5, 48, 48), dtype=np.uint8)
    labels[1, 5:15, 5:15] = 1
    labels[3, 20:45, 20:30] = 4
    image = np.random.default_rng(0).random((5, 48, 48)).astype(np.float32)
    data = TrainingData.from_arrays(image, labels, unpainted="background")
    assert data.slice_indices == (1, 3)
    region = data.validation
    assert region.slice_index == 3
    assert (region.y0, region.y1) == (38, 48)  # bottom 20 % of the rows
    assert np.all(data.weights[0] > 0)
    assert np.all(data.weights[1, :38] > 0) and np.all(data.weights[1, 38:] == 0)


def test_training_boxes_restrict_use_and_unlabelled_pixels_inside_are_background():
    labels = _two_touching_squares((80, 80))
    labels[60:70, 60:70] = 9  # painted but outside the box: must not be used
    data = TrainingData.from_arrays(
        labels.astype(np.float32), labels, regions=[(None, 0, 0, 40, 40)], validation_fraction=0
    )
    inside = np.zeros((80, 80), dtype=bool)
    inside[:40, :40] = True
    assert np.all(data.weights[0][inside] > 0)
    assert np.all(data.weights[0][~inside] == 0)
    assert data.targets[0, 30, 30] == 0  # unlabelled, inside the box: background
    assert data.validation is None


def test_box_on_an_empty_slice_marks_background_only_training():
    labels = np.zeros((3, 32, 32), dtype=np.uint8)
    labels[0, 4:12, 4:12] = 1
    data = TrainingData.from_arrays(
        np.zeros((3, 32, 32)), labels, regions=[(2, 0, 0, 16, 16)], validation_fraction=0
    )
    assert data.slice_indices == (2,)  # the box-less labelled slice 0 is outside every box
    assert np.all(data.targets == 0)
    assert np.count_nonzero(data.weights) == 16 * 16


def test_border_class_for_three_classes():
    labels = _two_touching_squares()
    data = TrainingData.from_arrays(labels.astype(float), labels, n_classes=3)
    target = data.targets[0]
    assert target[15, 19] == 2 and target[15, 20] == 2  # the touching columns
    assert target[10, 12] == 2  # the outline of a cell
    assert target[15, 15] == 1  # its interior
    assert target[2, 2] == 0


def test_bad_input_gives_clear_errors():
    labels = _two_touching_squares()
    with pytest.raises(InputError, match="nothing is annotated"):
        TrainingData.from_arrays(np.zeros((64, 64)), np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(InputError, match="integer image"):
        TrainingData.from_arrays(np.zeros((64, 64)), labels.astype(np.float32))
    with pytest.raises(InputError, match="shape"):
        TrainingData.from_arrays(np.zeros((64, 60)), labels)
    with pytest.raises(InputError, match="too small"):
        TrainingData.from_arrays(np.zeros((4, 64)), np.ones((4, 64), dtype=np.uint8))
    with pytest.raises(InputError, match="expected \\(slice_index or None"):
        TrainingData.from_arrays(np.zeros((64, 64)), labels, regions=[(0, 1, 2)])
    with pytest.raises(InputError, match="slice 7"):
        TrainingData.from_arrays(np.zeros((64, 64)), labels, regions=[(7, 0, 0, 5, 5)])


def test_tiles_keep_image_target_and_weights_aligned_with_mirrored_context():
    rng = np.random.default_rng(1)
    labels = np.zeros((40, 40), dtype=np.uint16)
    for i, (y, x) in enumerate(rng.integers(2, 34, (8, 2))):
        labels[y : y + 5, x : x + 5] = i + 1
    image = (labels > 0).astype(np.float32)  # bright cells: the image encodes the labels
    data = TrainingData.from_arrays(image, labels, validation_fraction=0)
    sampler = TileSampler(data, in_size=60, out_size=20, seed=0)  # tile larger than the image
    for _ in range(10):
        tiles, targets, weights = sampler.sample(batch=3)
        assert tiles.shape == (3, 1, 60, 60) and targets.shape == weights.shape == (3, 60, 60)
        # image and target come from the same (mirrored) window: target 1 only where bright
        assert np.all(tiles[:, 0][targets == 1] > 0.5)
        assert np.any(targets == 1)
        # the loss region holds an annotated pixel; weights vanish outside the image
        centre = weights[:, 20:40, 20:40]
        assert np.all(centre.reshape(3, -1).max(axis=1) > 0)
        assert np.all(np.count_nonzero(weights, axis=(1, 2)) <= 40 * 40)


def test_hold_out_prefers_a_slice_with_cells():
    labels = np.zeros((4, 48, 48), dtype=np.uint8)
    labels[0, 5:15, 5:15] = 1
    labels[1, 36:46, 20:30] = 2
    boxes = [(0, 0, 0, 48, 48), (1, 0, 0, 48, 48), (3, 0, 0, 20, 20)]  # slice 3: no cells
    data = TrainingData.from_arrays(np.zeros((4, 48, 48)), labels, regions=boxes)
    assert data.slice_indices == (0, 1, 3)
    assert data.validation.slice_index == 1 and data.validation.y0 == 38
    # one slice with cells and one without: hold out a band of the one with cells
    data = TrainingData.from_arrays(np.zeros((4, 48, 48)), labels, regions=boxes[::2])
    assert data.validation.slice_index == 0 and data.validation.y0 == 0  # the band with cells


def test_band_hold_out_needs_cells_bottom_first_else_top_else_none():
    labels = np.zeros((64, 64), np.uint16)
    labels[55:60, 5:10] = 1  # a cell in the bottom band
    labels[30:36, 30:36] = 2
    assert TrainingData.from_arrays(labels.astype(np.float32), labels).validation.y0 == 51
    labels[55:60, 5:10] = 0  # only the middle cell: neither band has cells
    assert TrainingData.from_arrays(labels.astype(np.float32), labels).validation is None
