"""Image layouts: RGB, channels first/last, Z, T, T + Z, picked channels; through predict,
train and the CLI, with clear errors for mismatched channels and ambiguous axes."""

from __future__ import annotations

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import axes, checkpoint, io
from napari_unet.core.events import run_to_end
from napari_unet.core.io import InputError
from napari_unet.core.predict import PredictConfig, prediction_job

CONFIG = PredictConfig(tile_size=60, device="cpu", min_size_px=1)
YX = (32, 40)


def _blobs(rng, shape):
    """Three bright squares, apart, on a dark plane: the threshold model's foreground."""
    plane = np.zeros(shape[-2:], np.float32)
    for k in range(3):
        y, x = rng.integers(1, 26), 13 * k + 1 + rng.integers(0, 4)  # 4+ px apart
        plane[y : y + 5, x : x + 5] = 1.0
    return plane


# (axes, shape, model channels, channels picked)
LAYOUTS = [
    ("YX", YX, 1, None),
    ("ZYX", (3, *YX), 1, None),
    ("TYX", (3, *YX), 1, None),
    ("TZYX", (2, 3, *YX), 1, None),
    ("YXC", (*YX, 3), 3, None),  # RGB
    ("CYX", (2, *YX), 2, None),
    ("ZCYX", (3, 2, *YX), 2, None),
    ("ZYXC", (3, *YX, 3), 3, None),
    ("TCYX", (2, 2, *YX), 2, None),
    ("TZCYX", (2, 3, 2, *YX), 2, None),
    ("TZCYX", (2, 2, 3, *YX), 2, [2, 0]),
    ("YXC", (*YX, 4), 1, [1]),  # one channel of an RGBA image
]


@pytest.mark.parametrize(("order", "shape", "n_channels", "picked"), LAYOUTS)
def test_every_layout_round_trips_through_predict(order, shape, n_channels, picked):
    rng = np.random.default_rng(len(shape))
    found = axes.Axes(order, shape)
    image = rng.uniform(0.0, 0.2, shape).astype(np.float32)  # dim noise in every channel
    first = picked[0] if picked else 0  # the threshold model reads its first channel
    c_axis = order.index("C") if "C" in order else None
    # paint blobs into the first used channel of every (T, Z) plane, in the image's order
    x = axes.to_tzcyx(image, found)  # a view: writes reach ``image``
    expected = np.zeros((x.shape[0], x.shape[1], *YX), bool)
    for t in range(x.shape[0]):
        for z in range(x.shape[1]):
            blobs = _blobs(rng, YX)
            x[t, z, first] = np.maximum(x[t, z, first], blobs)
            expected[t, z] = blobs > 0
    assert c_axis is None or image.shape[c_axis] == x.shape[2]
    net = threshold_unet(in_channels=n_channels)
    result = run_to_end(
        prediction_job((net, {}), image, CONFIG, axes=order, channels=picked)
    ).labels
    assert result.shape == found.labels_shape
    got = axes.labels_to_tzyx(result, found) > 0
    np.testing.assert_array_equal(got, expected)


def test_guessed_axes():
    assert axes.guess((64, 64)) == "YX"
    assert axes.guess((5, 64, 64)) == "ZYX"
    assert axes.guess((64, 64, 3)) == "YXC"
    assert axes.guess((2, 64, 64), channels=2) == "CYX"
    assert axes.guess((5, 2, 64, 64), channels=2) == "ZCYX"
    assert axes.guess((5, 64, 64, 3)) == "ZYXC"


def test_ambiguous_and_bad_axes_are_explained():
    with pytest.raises(InputError, match="ambiguous; say which"):
        axes.parse(None, (2, 5, 64, 64))
    with pytest.raises(InputError, match="ambiguous"):
        axes.parse(None, (2, 2, 5, 64, 64))
    with pytest.raises(InputError, match="name 3 dimensions but the shape"):
        axes.parse("ZYX", (2, 5, 64, 64))
    with pytest.raises(InputError, match="must end with YX"):
        axes.parse("YXZ", (2, 5, 64))
    with pytest.raises(InputError, match="each of the letters"):
        axes.parse("ZZYX", (2, 5, 64, 64))
    with pytest.raises(InputError, match=r"channels \[3\] do not exist"):
        axes.pick_channels(np.zeros((1, 1, 3, 4, 4)), [3])


def test_channel_mismatch_names_both_counts():
    net = threshold_unet(in_channels=2)
    with pytest.raises(InputError, match=r"model takes 2 channel\(s\) but the image has 3"):
        run_to_end(prediction_job((net, {}), np.zeros((*YX, 3)), CONFIG, axes="YXC"))
    with pytest.raises(InputError, match="takes 1 channel but the image has 3"):
        run_to_end(prediction_job((threshold_unet(), {}), np.zeros((*YX, 3)), CONFIG))


def test_channels_remembered_in_the_model_are_used_by_default():
    image = np.zeros((3, *YX), np.float32)
    image[2, 4:10, 4:10] = 1.0  # only channel 2 has a cell
    net = threshold_unet(in_channels=1)
    remembered = {"input": {"channel_indices": [2]}}
    labels = run_to_end(prediction_job((net, remembered), image, CONFIG, axes="CYX")).labels
    assert labels.shape == YX and (labels > 0).sum() == 36


def _save_model(path, in_channels):
    net = threshold_unet(in_channels=in_channels)
    checkpoint.save(path, net, {"architecture": net.config})
    return path


def test_cli_predict_tzcyx_with_channels_and_errors_write_nothing(tmp_path, capsys):
    from napari_unet._cli import main

    model = _save_model(tmp_path / "m.safetensors", 2)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 0.2, (2, 3, 3, *YX)).astype(np.float32)
    image[:, :, 1, 8:16, 8:16] = 1.0  # a 3D object in channel 1 at every time point
    io.write(tmp_path / "img.tif", image)
    out = tmp_path / "labels.tif"
    args = ["predict", str(model), str(tmp_path / "img.tif"), "-o", str(out), "--device", "cpu"]
    assert main([*args, "--axes", "TZCYX", "--channels", "1,0", "--tile-size", "60"]) == 0
    labels = io.read(out)
    assert labels.shape == (2, 3, *YX)
    # Z stack per time point: one 3D object per frame (stitched by default)
    assert [len(np.unique(labels[t][labels[t] > 0])) for t in range(2)] == [1, 1]
    out.unlink()
    capsys.readouterr()
    assert main([*args, "--axes", "TZCYX"]) == 2  # 3 channels for a 2-channel model
    err = capsys.readouterr().err
    assert "model takes 2 channel(s) but the image has 3" in err and "Traceback" not in err
    assert main(args) == 2  # a 5D array without --axes is ambiguous
    assert "ambiguous" in capsys.readouterr().err
    assert not out.exists()


def test_cli_time_lapse_keeps_per_frame_ids_and_z_stack_links(tmp_path):
    from napari_unet._cli import main

    model = _save_model(tmp_path / "m.safetensors", 1)
    image = np.zeros((3, *YX), np.float32)
    image[:, 5:15, 5:15] = 1.0  # the same square in every slice
    io.write(tmp_path / "img.tif", image)
    base = ["predict", str(model), str(tmp_path / "img.tif"), "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "z.tif")]) == 0  # 3D: Z stack by default
    assert main([*base, "-o", str(tmp_path / "t.tif"), "--axes", "TYX"]) == 0
    z, t = io.read(tmp_path / "z.tif"), io.read(tmp_path / "t.tif")
    assert len(np.unique(z[z > 0])) == 1
    assert len(np.unique(t[t > 0])) == 3  # one object per frame


def _bleaching(rng) -> np.ndarray:
    """Three frames of the same squares, each dimmer than the last (photobleaching)."""
    plane = _blobs(rng, YX)
    return np.stack([plane * gain for gain in (1.0, 0.4, 0.1)])


def test_a_bleaching_time_lapse_is_normalised_frame_by_frame():
    stack = _bleaching(np.random.default_rng(3))
    model = (threshold_unet(), {})
    frames = run_to_end(prediction_job(model, stack, CONFIG, axes="TYX")).labels
    for t in range(3):  # every frame as if it were predicted alone
        alone = run_to_end(prediction_job(model, stack[t], CONFIG)).labels
        assert alone.any() and np.array_equal(frames[t] > 0, alone > 0)
    # a Z stack keeps its slices' brightness relative to each other: the dim slice is empty
    z = run_to_end(prediction_job(model, stack, CONFIG, axes="ZYX")).labels
    assert z[0].any() and not z[2].any()


def test_training_normalises_a_time_lapse_frame_by_frame():
    from napari_unet.core.data import TrainingData
    from napari_unet.core.train import _training_data

    stack = _bleaching(np.random.default_rng(4))
    labels = np.stack([io.as_labels((f > 0).astype(np.uint8), "l") for f in stack])
    data = _training_data(stack, labels, None, "TYX", None, None, validation_fraction=0)
    for t in range(3):
        alone = TrainingData.from_arrays(stack[t], labels[t], validation_fraction=0, scale=None)
        np.testing.assert_allclose(data.images[t], alone.images[0], atol=1e-6)
    z = _training_data(stack, labels, None, "ZYX", None, None, validation_fraction=0)
    assert z.images[2].max() < 0.5 * z.images[0].max()  # as a whole: the dim slice stays dim


@pytest.mark.slow
def test_cli_train_on_rgb_then_predict(tmp_path):
    from napari_unet._cli import main
    from napari_unet.core import synthetic

    gray, labels = synthetic.touching_cells((64, 64), seed=0)
    rgb = (np.stack([gray, 0.5 * gray, 1.0 - gray], axis=-1) * 255).astype(np.uint8)
    io.write(tmp_path / "rgb.png", rgb)
    io.write(tmp_path / "labels.tif", labels)
    model = tmp_path / "rgb.safetensors"
    train = ["train", str(tmp_path / "rgb.png"), str(tmp_path / "labels.tif"), "-o", str(model)]
    fast = ["--steps", "2", "--preset", "light", "--device", "cpu", "--tile-size", "92"]
    assert main([*train, *fast, "--batch-size", "1", "--validate-every", "2"]) == 0
    meta = checkpoint.read_metadata(model)
    assert meta["architecture"]["in_channels"] == 3
    assert meta["input"]["axes"] == "YXC" and len(meta["normalisation"]["value_range"]) == 3
    out = tmp_path / "pred.tif"
    predict = ["predict", str(model), str(tmp_path / "rgb.png"), "-o", str(out)]
    assert main([*predict, "--device", "cpu", "--tile-size", "92"]) == 0
    assert io.read(out).shape == (64, 64)
    # without --preset a gray shipped starter (the one that finds these synthetic cells
    # best) is fine-tuned, spread over R, G, B by their contrast: cells bright in R and G,
    # dark in B
    tuned = tmp_path / "tuned.safetensors"
    assert main([*train[:-1], str(tuned), *fast[:2], *fast[4:], "--batch-size", "1"]) == 0
    meta = checkpoint.read_metadata(tuned)
    assert meta["training"]["from"] in ("starter.safetensors", "phase_starter.safetensors")
    assert meta["architecture"]["in_channels"] == 3
    red, green, blue = meta["training"]["spread_channels"]
    assert red > 0 and green > 0 and blue < 0
    assert meta["training"]["anchor"] == 0  # a gray model meeting colour is not held back
    out = tmp_path / "tuned.tif"
    assert main(["predict", str(tuned), str(tmp_path / "rgb.png"), "-o", str(out)]) == 0
    assert io.read(out).shape == (64, 64)
