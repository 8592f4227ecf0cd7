"""Probabilities -> instance labels: touching cells stay apart, gaps go back to their cells
without growing outlines, tiny objects go, the dtype is the smallest that fits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.io import InputError
from napari_unet.core.metrics import average_precision
from napari_unet.core.postprocess import to_instances
from napari_unet.core.synthetic import touching_cells, touching_pairs
from napari_unet.core.weights import separate_touching


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering: a one-to-one map between the label values covers all pixels."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_two_touching_squares_come_back_exactly():
    labels = np.zeros((20, 30), np.uint16)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2
    target = separate_touching(labels)
    assert not target[:, 14:16].any()  # the training target has a 2 px gap between them
    out = to_instances((target > 0).astype(np.float32))
    assert _same_partition(out, labels)


def test_a_lone_cell_does_not_grow_past_its_outline():
    yy, xx = np.mgrid[:40, :40]
    disk = ((yy - 20) ** 2 + (xx - 18) ** 2 < 12**2).astype(np.float32)
    out = to_instances(np.stack([1 - disk, disk]))
    assert out.max() == 1
    np.testing.assert_array_equal(out > 0, disk > 0)


def test_round_trip_through_the_training_target_scores_ap75_above_095(cells_2d):
    _, labels = cells_2d
    foreground = (separate_touching(labels) > 0).astype(np.float32)
    out = to_instances(np.stack([1 - foreground, foreground]))
    ap50, ap75 = average_precision(labels, out, thresholds=(0.5, 0.75))
    assert ap50 > 0.99 and ap75 > 0.95
    # every touching pair in the ground truth comes out as two different labels
    predicted = {  # the output label covering most of each gt cell
        cell: np.bincount(out[labels == cell]).argmax() for cell in np.unique(labels)[1:]
    }
    for a, b in touching_pairs(labels):
        assert predicted[a] != predicted[b]


def test_blind_growth_would_fail_where_restricted_growth_passes(cells_2d):
    """Why the growth is restricted: expanding every cell by the gap width ruins AP@0.75."""
    from skimage.segmentation import expand_labels

    _, labels = cells_2d
    target = separate_touching(labels)
    blind = expand_labels(ndi.label(target > 0)[0], distance=2)
    restricted = to_instances((target > 0).astype(np.float32))
    assert average_precision(labels, blind, (0.75,))[0] < 0.9
    assert average_precision(labels, restricted, (0.75,))[0] > 0.95


def test_soft_probabilities_still_split_touching_cells():
    _, labels = touching_cells((192, 192), seed=5)
    soft = ndi.gaussian_filter((separate_touching(labels) > 0).astype(np.float32), 0.7)
    out = to_instances(soft)
    assert average_precision(labels, out, (0.5, 0.75)).min() > 0.9


def test_tiny_objects_are_removed_and_labels_are_sequential():
    fg = np.zeros((30, 30), np.float32)
    fg[2:10, 2:10] = 1  # 64 px
    fg[20, 20:23] = 1  # 3 px speck
    fg[15:25, 5:12] = 1  # 70 px
    out = to_instances(fg, min_size=12)
    assert sorted(np.unique(out)) == [0, 1, 2]
    assert out[20, 21] == 0
    assert to_instances(fg, min_size=1, split_merged=False).max() == 3


def test_smallest_unsigned_dtype():
    few = np.zeros((20, 20), np.float32)
    few[2:6, 2:6] = 1
    assert to_instances(few, min_size=1).dtype == np.uint8
    many = np.zeros((100, 100), np.float32)
    many[::3, ::3] = 1  # 34 x 34 = 1156 one-pixel objects
    out = to_instances(many, min_size=1, gap_px=0, split_merged=False)
    assert out.max() == 1156 and out.dtype == np.uint16
    assert to_instances(np.zeros((5, 5), np.float32)).dtype == np.uint8


def test_merged_pair_of_disks_is_split_by_default_but_a_lone_disk_or_ellipse_is_not():
    yy, xx = np.mgrid[:40, :60]
    blob = ((yy - 20) ** 2 + (xx - 18) ** 2 < 11**2) | ((yy - 20) ** 2 + (xx - 36) ** 2 < 11**2)
    fg = blob.astype(np.float32)
    assert to_instances(fg, split_merged=False).max() == 1
    split = to_instances(fg)
    assert split.max() == 2 and split[20, 18] != split[20, 36]
    np.testing.assert_array_equal(split > 0, blob)
    disk = ((yy - 20) ** 2 + (xx - 30) ** 2 < 12**2).astype(np.float32)
    ellipse = (((yy - 20) / 8.0) ** 2 + ((xx - 30) / 20.0) ** 2 < 1).astype(np.float32)
    assert to_instances(disk).max() == 1
    assert to_instances(ellipse).max() == 1


def test_split_seeds_follow_the_cell_size_given():
    """Two 8-px-apart bumps of one blob: two cells when cells are ~10 px wide, one when
    they are ~60 px wide (the seed must stand out by a twentieth of the diameter)."""
    yy, xx = np.mgrid[:30, :40]
    blob = ((yy - 15) ** 2 + (xx - 15) ** 2 < 6**2) | ((yy - 15) ** 2 + (xx - 25) ** 2 < 6**2)
    fg = blob.astype(np.float32)
    assert to_instances(fg, diameter_px=10, min_size=1).max() == 2
    assert to_instances(fg, diameter_px=60, min_size=1).max() == 1


def test_three_class_output_uses_class_one_and_bad_input_is_refused():
    fg = np.zeros((20, 20), np.float32)
    fg[5:12, 5:12] = 1
    border = np.zeros_like(fg)
    probs = np.stack([1 - fg, fg, border])
    assert to_instances(probs).max() == 1
    with pytest.raises(InputError, match=r"\(n_classes, Y, X\)"):
        to_instances(np.zeros((2, 2, 20, 20), np.float32))
    with pytest.raises(InputError, match="class 1 = cell"):
        to_instances(np.zeros((1, 20, 20), np.float32))
    with pytest.raises(InputError, match="low_threshold"):
        to_instances(fg, threshold=0.5, low_threshold=0.7)


def test_three_class_round_trip_grows_interiors_over_their_borders(cells_2d):
    """The 3-class target (interior / border) of real cells comes back as those cells."""
    from napari_unet.core.data import _targets

    _, labels = cells_2d
    target = _targets(labels[None], 3)[0]
    np.testing.assert_array_equal(_targets(labels, 3), target)  # an image as a 1-slice stack
    probs = np.stack([target == k for k in range(3)]).astype(np.float32)
    out = to_instances(probs)
    ap50, ap75 = average_precision(labels, out, thresholds=(0.5, 0.75))
    assert ap50 > 0.99 and ap75 > 0.95
    assert (out > 0).sum() > (target == 1).sum()  # the outlines went back to the cells
    predicted = {cell: np.bincount(out[labels == cell]).argmax() for cell in np.unique(labels)[1:]}
    assert all(predicted[a] != predicted[b] for a, b in touching_pairs(labels))


def test_h_maxima_by_part_equals_h_maxima_over_the_whole_image():
    """Seeds for splitting come from each connected part alone, and a part with one
    maximum skips the reconstruction: the same maxima as skimage over the whole image,
    on the smoothed distance (parts of many cells) and on it cut to the cells (one part
    per cell or fused group), including a part too low to hold any, a part on the image
    border and an empty image."""
    from skimage.morphology import h_maxima

    from napari_unet.core.postprocess import h_maxima_by_part

    _, labels = touching_cells((160, 160), seed=2)
    cores = labels > 0
    cores[:40, :40] = False
    cores[10:13, 10:13] = True  # a small part: its peak is lower than h
    smooth = ndi.gaussian_filter(ndi.distance_transform_edt(cores), 1.5)
    for distance in (smooth, np.where(cores, smooth, 0.0)):
        for h in (0.5, 1.5, 4.0):
            expected = h_maxima(distance, h)
            assert expected.any()
            assert np.array_equal(h_maxima_by_part(distance, h), expected)
    assert h_maxima_by_part(np.where(cores, smooth, 0.0), 0.5)[10:13, 10:13].any()
    assert not h_maxima_by_part(np.where(cores, smooth, 0.0), 1.5)[10:13, 10:13].any()
    empty = np.zeros((32, 32))
    assert not h_maxima_by_part(empty, 1.0).any()
