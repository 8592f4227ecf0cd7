"""The sample data: touching cells with exact labels, deterministic per seed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet import _sample_data
from napari_unet.core.synthetic import touching_cells, touching_cells_3d, touching_pairs


def test_2d_sample_has_many_touching_cells():
    image, labels = touching_cells((512, 512), seed=0)
    assert image.shape == labels.shape == (512, 512)
    assert image.dtype == np.float32 and labels.dtype == np.uint16
    ids = np.unique(labels)[1:]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # ids 1..n, no gaps
    assert len(ids) > 150
    pairs = touching_pairs(labels)
    assert len(pairs) > 100  # most cells touch a neighbour
    assert len({a for p in pairs for a in p}) > 0.6 * len(ids)
    # every cell is one connected piece
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        assert ndi.label(labels[sl] == i)[1] == 1


def test_cells_are_brighter_than_background():
    image, labels = touching_cells((256, 256), seed=3)
    assert image[labels > 0].mean() > image[labels == 0].mean() + 0.2


def test_same_seed_same_data_other_seed_other_data():
    a = touching_cells((128, 128), seed=5)
    b = touching_cells((128, 128), seed=5)
    c = touching_cells((128, 128), seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_3d_stack_shape_and_touching_pairs():
    image, labels = touching_cells_3d((8, 128, 128), seed=0)
    assert image.shape == labels.shape == (8, 128, 128)
    assert labels.max() > 10
    assert len(touching_pairs(labels)) > 5


def test_touching_pairs_hand_worked():
    labels = np.zeros((5, 6), dtype=np.uint8)
    labels[0:2, 0:2] = 1
    labels[2, 2] = 2  # diagonal neighbour of 1
    labels[0:2, 3:5] = 3  # one column gap from 1, diagonal to 2
    labels[4, 5] = 4  # alone
    assert touching_pairs(labels) == {(1, 2), (2, 3)}


def test_npe2_sample_functions_return_image_and_hidden_labels():
    layers = _sample_data.cells_3d()
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = layers
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image.shape == labels.shape == (16, 256, 256)
    assert labels_meta["visible"] is False
