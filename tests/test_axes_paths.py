"""--axes / --channels / stitching on every prediction path (confidence, batch, chunked)
and channels together with background strokes in training."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import batch, checkpoint, io
from napari_unet.core.data import TrainingData
from napari_unet.core.events import run_to_end
from napari_unet.core.io import InputError
from napari_unet.core.predict import PredictConfig
from napari_unet.core.train import _training_data

YX = (32, 40)


def _zcyx_image() -> np.ndarray:
    """(Z=3, C=2, Y, X): one square through all slices in channel 1, noise in channel 0."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 0.2, (3, 2, *YX)).astype(np.float32)
    image[:, 1, 8:16, 8:16] = 1.0
    image[1, 1, 20:26, 25:31] = 1.0  # a second object, in the middle slice only
    return image


def _model(tmp_path, in_channels=1):
    net = threshold_unet(in_channels=in_channels)
    return str(checkpoint.save(tmp_path / "m.safetensors", net, {"architecture": net.config}))


def test_cli_confidence_path_takes_axes_channels_and_stitching(tmp_path):
    from napari_unet._cli import main

    model = _model(tmp_path)
    io.write(tmp_path / "img.tif", _zcyx_image())
    out, scores = tmp_path / "labels.tif", tmp_path / "objects.csv"
    args = ["predict", model, str(tmp_path / "img.tif"), "-o", str(out), "--device", "cpu"]
    args += ["--axes", "ZCYX", "--channels", "1", "--tile-size", "60", "--min-size", "1"]
    assert main([*args, "--confidence", str(scores)]) == 0
    labels = io.read(out)
    assert labels.shape == (3, *YX)
    assert len(np.unique(labels[labels > 0])) == 2  # the square linked through Z
    with open(scores, newline="") as f:
        rows = list(csv.DictReader(f))
    # one score per object per slice: the square in 3 slices, the small one in 1
    assert len(rows) == 4
    assert {int(r["id"]) for r in rows} == set(np.unique(labels[labels > 0]).tolist())


def test_cli_folder_path_takes_axes_channels_and_stitch_threshold(tmp_path):
    from napari_unet._cli import main

    model = _model(tmp_path)
    folder = tmp_path / "plate"
    for i in range(2):
        io.write(folder / f"s{i}.tif", _zcyx_image())
    base = ["predict", model, str(folder), "--device", "cpu", "--axes", "ZCYX"]
    base += ["--channels", "1", "--tile-size", "60", "--min-size", "1"]
    assert main([*base, "-o", str(tmp_path / "linked")]) == 0
    assert main([*base, "-o", str(tmp_path / "flat"), "--stitch-threshold", "0"]) == 0
    for i in range(2):
        linked = io.read(tmp_path / "linked" / f"s{i}_labels.tif")
        flat = io.read(tmp_path / "flat" / f"s{i}_labels.tif")
        assert linked.shape == flat.shape == (3, *YX)
        assert len(np.unique(linked[linked > 0])) == 2
        assert len(np.unique(flat[flat > 0])) == 4  # every slice numbered on
        np.testing.assert_array_equal(linked > 0, flat > 0)


def test_chunked_images_refuse_axes_and_channels_clearly(tmp_path):
    model = _model(tmp_path)
    image = np.zeros((*YX, 2), np.float32)
    image[5:15, 5:15, 1] = 1.0
    io.write(tmp_path / "big.tif", image)
    options = batch.Options(
        PredictConfig(device="cpu", min_size_px=1), chunked_above_px=100, axes="YXC", channels=(1,)
    )
    with pytest.raises(InputError, match="--axes/--channels work in memory only"):
        run_to_end(batch.predict_file(model, tmp_path / "big.tif", tmp_path / "o.tif", options))
    assert not (tmp_path / "o.tif").exists()
    # in memory (not big) the same options work: channel 1 holds the square
    options = batch.Options(
        PredictConfig(device="cpu", min_size_px=1, tile_size=60), axes="YXC", channels=(1,)
    )
    row = run_to_end(batch.predict_file(model, tmp_path / "big.tif", tmp_path / "o.tif", options))
    labels = io.read(tmp_path / "o.tif")
    assert labels.shape == YX and (labels > 0).sum() == 100
    assert row["cells"] == 1 and row["mean_intensity_c1"] == pytest.approx(1.0)


def test_background_strokes_follow_the_picked_axes_in_training():
    image = _zcyx_image()
    labels = np.zeros((3, *YX), np.uint16)
    labels[:, 8:16, 8:16] = 1
    background = np.zeros((3, *YX), np.uint8)
    background[:, 25:30, 2:10] = 1
    options = {"background": background, "unpainted": "ignore"}
    picked = _training_data(image, labels, None, "ZCYX", [1], None, **options)
    plain = TrainingData.from_arrays(image[:, 1], labels, n_classes=picked.n_classes, **options)
    np.testing.assert_array_equal(picked.weights, plain.weights)
    np.testing.assert_array_equal(picked.targets, plain.targets)
    # the strokes count (slice 0 is trained on; the last one is held out)
    unstroked = _training_data(image, labels, None, "ZCYX", [1], None, unpainted="ignore")
    assert (picked.weights[0, 25:30, 2:10] > 0).all()
    assert picked.weights[0, 25:30, 2:10].sum() > unstroked.weights[0, 25:30, 2:10].sum()
