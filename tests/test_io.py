"""Reading and writing images and labels, and the messages for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core import io
from napari_unet.core.io import InputError


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".png"])
def test_round_trip(tmp_path, suffix):
    data = (np.arange(40 * 30).reshape(40, 30) % 700).astype(np.uint16)
    path = io.write(tmp_path / f"a{suffix}", data)
    back = io.read(path)
    np.testing.assert_array_equal(back, data)
    assert not list(tmp_path.glob(".*partial*"))  # temporary file renamed away


def test_stack_round_trip_tif(tmp_path):
    data = np.random.default_rng(0).random((3, 20, 25)).astype(np.float32)
    np.testing.assert_array_equal(io.read(io.write(tmp_path / "s.tif", data)), data)


def test_unknown_suffix_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="unsupported file type '.jpg'"):
        io.read(tmp_path / "x.jpg")
    with pytest.raises(InputError, match="no such file"):
        io.read(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="cannot read it as tif"):
        io.read(bad)


def test_npy_pickles_are_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read"):
        io.read(path)


def test_png_refuses_float(tmp_path):
    with pytest.raises(InputError, match="Use .tif"):
        io.write(tmp_path / "f.png", np.zeros((4, 4), np.float32))


def test_as_image_shapes_and_errors():
    assert io.as_image(np.zeros((10, 12), np.uint8)).shape == (1, 1, 10, 12)
    assert io.as_image(np.zeros((3, 10, 12))).shape == (3, 1, 10, 12)
    assert io.as_image(np.zeros((10, 12, 2)), channels=2).shape == (1, 2, 10, 12)
    with pytest.raises(InputError, match="looks like an RGB image"):
        io.as_image(np.zeros((64, 64, 3)))
    with pytest.raises(InputError, match="got shape"):
        io.as_image(np.zeros((2, 2, 10, 12)))
    with pytest.raises(InputError, match="NaN"):
        io.as_image(np.array([[0.0, np.nan]]))


def test_as_labels_errors():
    assert io.as_labels(np.ones((4, 4), bool)).dtype == np.uint8
    with pytest.raises(InputError, match="integer image"):
        io.as_labels(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match=">= 0"):
        io.as_labels(np.full((4, 4), -1, np.int32))
    with pytest.raises(InputError, match="shape"):
        io.as_labels(np.zeros((4,), np.int32))


def test_shape_mismatch_names_both_layers():
    with pytest.raises(InputError, match="Labels 'cells' has shape \\(5, 5\\) but image 'nuclei'"):
        io.check_same_shape((3, 5, 5), (5, 5), image="nuclei", labels="cells")
