"""Linking slice-wise instances into 3D objects (core.stitch), in prediction and evaluation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import metrics, stitch, synthetic
from napari_unet.core.io import InputError
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.core.weights import separate_touching


def _slice_wise(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """What a 2D segmenter gives: each slice's objects with their own, shuffled ids."""
    rng = np.random.default_rng(seed)
    out = np.zeros(gt.shape, np.uint32)
    for z, plane in enumerate(gt):
        ids = np.unique(plane[plane > 0])
        lookup = np.zeros(int(gt.max()) + 1, np.uint32)
        lookup[ids] = rng.permutation(len(ids)) + 1
        out[z] = lookup[plane]
    return out


def _one_label_each(gt: np.ndarray, out: np.ndarray) -> float:
    """Share of ground-truth 3D objects covered by exactly one output label that covers
    nothing else (brute force over objects, independent of `metrics.match`)."""
    good = 0
    ids = np.unique(gt[gt > 0])
    for i in ids:
        inside = np.unique(out[gt == i])
        if len(inside) == 1 and inside[0] > 0 and np.array_equal(out == inside[0], gt == i):
            good += 1
    return good / len(ids)


def test_two_hand_made_columns_are_linked_and_a_new_object_gets_a_new_id():
    labels = np.zeros((3, 10, 10), np.uint16)
    labels[:, 1:4, 1:4] = np.array([5, 1, 7])[:, None, None]  # one column, new id per slice
    labels[0, 6:9, 6:9] = 2
    labels[1, 6:9, 6:9] = 3  # the second column ...
    labels[2, 6:8, 6:8] = 9  # ... shrinking: 4 of its 9 pixels overlap, all of the smaller
    labels[2, 0, 9] = 4  # appears only in the last slice
    out = stitch.stitch(labels, threshold=0.5)
    assert len(np.unique(out[:, 1:4, 1:4])) == 1
    assert len(np.unique(out[:, 6:8, 6:8])) == 1
    assert out[2, 0, 9] not in (out[0, 1, 1], out[0, 6, 6])
    assert sorted(np.unique(out[out > 0])) == [1, 2, 3]


def test_one_to_one_best_overlap_first():
    previous = np.zeros((1, 8, 8), np.uint16)
    previous[0, :, :4] = 1
    current = np.zeros((1, 8, 8), np.uint16)
    current[0, :, :3] = 1  # fully inside previous 1
    current[0, :, 3:6] = 2  # a third inside previous 1 (below 0.5: a new object)
    out = stitch.stitch(np.concatenate([previous, current]), threshold=0.5)
    assert out[1, 0, 0] == out[0, 0, 0]
    assert out[1, 0, 4] not in (0, out[0, 0, 0])


@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_stack_objects_come_out_as_one_3d_label_each(seed):
    _, gt = synthetic.touching_cells_3d((16, 128, 128), seed=seed)
    out = stitch.stitch(_slice_wise(gt, seed))
    assert _one_label_each(gt, out) >= 0.95
    scores = metrics.objects_3d(gt, out)
    assert scores["splits_3d"] == 0
    assert scores["merges_3d"] <= 0.05 * scores["n_gt_3d"]


def test_bad_threshold_and_shape_are_explained():
    with pytest.raises(InputError, match="between 0 and 1"):
        stitch.stitch(np.zeros((2, 4, 4), np.uint8), threshold=1.5)
    with pytest.raises(InputError, match=r"\(Z, Y, X\)"):
        stitch.stitch(np.zeros((4, 4), np.uint8))


def _rendered_stack(seed: int = 1):
    """An image the threshold model segments exactly: separated cells bright, gaps dark."""
    _, gt = synthetic.touching_cells_3d((12, 96, 96), seed=seed)
    image = np.stack([separate_touching(plane) > 0 for plane in gt]).astype(np.float32)
    return image, gt


def test_prediction_links_a_z_stack_and_keeps_per_slice_ids_when_off():
    image, gt = _rendered_stack()
    net = threshold_unet()
    model = (net, {"architecture": net.config})
    config = PredictConfig(tile_size=140, device="cpu", min_size_px=4)
    linked = _run(prediction_job(model, image, replace(config, stitch_threshold=0.5)))
    per_slice = _run(prediction_job(model, image, config))
    assert np.mean((per_slice > 0) == (image > 0)) > 0.95
    # off (time-lapse): every slice numbered on, no id in two slices
    ids_per_slice = [set(np.unique(p[p > 0])) for p in per_slice]
    assert sum(len(s) for s in ids_per_slice) == len(set().union(*ids_per_slice))
    # on (Z stack): the same pixels, linked as the core function links the slices
    np.testing.assert_array_equal(linked, stitch.stitch(per_slice))
    scores = metrics.evaluate(gt, linked, warping=False, volume=True)
    assert scores["n_pred_3d"] < scores["n_pred"] / 3  # 3D objects, not one per slice
    assert scores["tp_3d"] >= 0.9 * scores["n_gt_3d"]


def _run(job):
    from napari_unet.core.events import run_to_end

    return run_to_end(job).labels


def test_objects_3d_counts_a_split_along_z():
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[:, 1:5, 1:5] = 1
    pred = gt.astype(np.uint16)
    pred[3, 1:5, 1:5] = 2  # the column cut in two along Z: 3 slices + 1 slice
    scores = metrics.objects_3d(gt, pred)
    assert scores["splits_3d"] == 1 and scores["n_pred_3d"] == 2
    assert (scores["tp_3d"], scores["fp_3d"], scores["fn_3d"]) == (1, 1, 0)  # IoU 3/4, 1/4
