"""Cell size from annotations, the scale it sets, and that scale in the model file."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet.core import checkpoint, io, size
from napari_unet.core.data import TrainingData
from napari_unet.core.synthetic import hard_nuclei, touching_cells


def _disks(diameter: float, shape=(400, 400), spacing=None) -> np.ndarray:
    """Touching-free disks of a known diameter on a grid (ids 1..n)."""
    labels = np.zeros(shape, np.uint16)
    step = spacing or int(diameter * 1.5) + 2
    k = 0
    for y in range(step // 2, shape[0] - step // 2, step):
        for x in range(step // 2, shape[1] - step // 2, step):
            k += 1
            labels[disk((y, x), diameter / 2, shape=shape)] = k
    return labels


@pytest.mark.parametrize("diameter", [10.0, 24.0, 80.0])
def test_typical_diameter_of_disks_of_known_size(diameter):
    estimate = size.typical_diameter(_disks(diameter))
    assert estimate == pytest.approx(diameter, rel=0.1)  # disks of whole pixels


def test_typical_diameter_ignores_cells_cut_by_the_border_and_empty_labels():
    labels = _disks(20.0, shape=(200, 200))
    cut = labels.copy()
    cut[:, :3] = 7  # a sliver along the edge: not a whole cell
    assert size.typical_diameter(cut) == pytest.approx(size.typical_diameter(labels), rel=0.05)
    assert size.typical_diameter(np.zeros((10, 10), np.uint8)) is None


def test_hard_synthetic_nuclei_are_small_dense_and_touching():
    from napari_unet.core.synthetic import touching_pairs

    image, labels = hard_nuclei((256, 256), seed=3)
    diameter = size.typical_diameter(labels)
    assert 8 <= diameter <= 30
    assert len(touching_pairs(labels)) > labels.max() // 3
    means = np.array([image[labels == i].mean() for i in range(1, int(labels.max()) + 1)])
    assert np.percentile(means, 95) / np.percentile(means, 5) > 2.5  # wide brightness spread


def test_scale_shrinks_only_large_cells():
    assert size.scale_for(None) == 1.0
    assert size.scale_for(30.0) == 1.0
    assert size.scale_for(128.0) == pytest.approx(size.TARGET_DIAMETER_PX / 128.0)


def test_large_cells_are_shrunk_for_training_and_the_scale_is_stored(tmp_path):
    from napari_unet.core.events import run_to_end
    from napari_unet.core.predict import PredictConfig, prediction_job
    from napari_unet.core.train import TrainConfig, TrainResult, train

    labels = _disks(96.0, shape=(256, 256), spacing=120)
    image = (labels > 0).astype(np.float32)
    data = TrainingData.from_pairs([(image, labels)])
    factor = size.TARGET_DIAMETER_PX / size.typical_diameter(labels)
    assert data.normalisation["scale"] == pytest.approx(factor)
    assert data.normalisation["diameter_px"] == pytest.approx(96.0, rel=0.05)
    assert data.labels.shape[-2:] == (round(256 * factor),) * 2
    cfg = TrainConfig(steps=2, tile_size=60, device="cpu", augment=None)
    path = tmp_path / "m.safetensors"
    kept = TrainResult()
    for _ in train(data, cfg, result=kept):
        pass
    kept.trained().save(path)
    net, meta = checkpoint.load(path)
    assert meta["normalisation"]["scale"] == pytest.approx(factor)
    job = prediction_job((net, meta), image, PredictConfig(device="cpu"))
    labels_out = run_to_end(job).labels
    assert labels_out.shape == image.shape  # predicted at the model's scale, returned full size


def test_small_cells_are_not_resized():
    image, labels = touching_cells((96, 96), seed=2)
    data = TrainingData.from_arrays(image, labels, scale=None)
    assert data.normalisation["scale"] == 1.0 and data.labels.shape[-2:] == (96, 96)


def test_several_pairs_of_different_sizes_normalised_each_on_its_own():
    (a, la), (b, lb) = touching_cells((96, 128), seed=1), touching_cells((140, 80), seed=2)
    data = TrainingData.from_pairs([(a * 100.0, la), (b, lb)], validation_fraction=0)
    assert data.images.shape == (2, 1, 140, 128)
    # each image normalised with its own percentiles: the 100x brighter one looks the same
    assert np.percentile(data.images[0, 0, :96], 99.8) == pytest.approx(1.0, abs=0.01)
    assert np.percentile(data.images[1, 0, :, :80], 99.8) == pytest.approx(1.0, abs=0.01)
    # padding carries no loss and no labels
    assert not data.weights[0, 96:].any() and not data.weights[1, :, 80:].any()
    assert not data.labels[0, 96:].any()
    np.testing.assert_array_equal(data.labels[1, :, :80], lb)


def test_three_pairs_hold_out_the_last_one():
    pairs = [touching_cells((64, 64), seed=s) for s in (1, 2, 3)]
    data = TrainingData.from_pairs(pairs)
    assert data.validation is not None and data.validation.slice_index == 2
    assert not data.weights[2].any()


def test_cli_trains_on_several_pairs_and_on_a_folder(tmp_path):
    from napari_unet._cli import main

    files = []
    for seed, shape in ((1, (72, 96)), (2, (96, 64))):
        image, labels = touching_cells(shape, seed=seed)
        files += [
            io.write(tmp_path / f"c{seed}.tif", image),
            io.write(tmp_path / f"c{seed}_labels.tif", labels),
        ]
    out = tmp_path / "m.safetensors"
    common = ["-o", str(out), "--steps", "2", "--tile-size", "60", "--device", "cpu"]
    assert main(["train", *map(str, files), *common, "--classes", "2"]) == 0
    net, meta = checkpoint.load(out)
    assert net.n_classes == 2
    assert meta["training"]["annotated_slices"] == [0, 1]
    assert meta["normalisation"]["per_image"] is True
    assert main(["train", str(tmp_path), *common]) == 0  # NAME.tif + NAME_labels.tif
    assert checkpoint.load(out)[0].n_classes == 3  # the default for a new model


def test_cli_odd_number_of_files_exits_2(tmp_path, capsys):
    from napari_unet._cli import main

    image, _ = touching_cells((64, 64), seed=1)
    path = io.write(tmp_path / "a.tif", image)
    assert main(["train", str(path), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "IMAGE LABELS pairs" in capsys.readouterr().err
