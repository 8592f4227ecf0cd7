"""Many images and big images from the CLI: one labels file per input, a CSV summary,
resume without redoing finished files, corrupt files skipped, chunked OME-Zarr output."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi

from _threshold_model import threshold_unet
from napari_unet._cli import main
from napari_unet.core import batch, bigio, checkpoint, io
from napari_unet.core.synthetic import touching_cells


@pytest.fixture
def plate(tmp_path):
    """A folder of 4 small images, and the model file."""
    folder = tmp_path / "plate"
    for i in range(4):
        image, _ = touching_cells((96, 96 + 8 * i), seed=10 + i)
        io.write(folder / f"well_{i}.tif", (image * 1000).astype(np.uint16))
    model = checkpoint.save(tmp_path / "model.safetensors", threshold_unet())
    return folder, str(model)


def _rows(path):
    with open(path, newline="") as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def test_a_folder_gives_one_labels_file_per_image_and_a_summary(plate, tmp_path):
    folder, model = plate
    out = tmp_path / "out"
    assert main(["predict", model, str(folder), "-o", str(out), "--device", "cpu"]) == 0
    rows = _rows(out / "summary.csv")
    assert sorted(rows) == [f"well_{i}.tif" for i in range(4)]
    for i in range(4):
        labels = io.read(out / f"well_{i}_labels.tif")
        image = io.read(folder / f"well_{i}.tif").astype(float)
        ids = np.arange(1, labels.max() + 1)
        row = rows[f"well_{i}.tif"]
        assert int(row["cells"]) == labels.max() > 3
        assert float(row["mean_area_px"]) == pytest.approx((labels > 0).sum() / labels.max())
        expected = np.mean(ndi.mean(image, labels, ids))
        assert float(row["mean_intensity_c0"]) == pytest.approx(expected, rel=1e-6)


def test_a_glob_picks_only_the_matching_files(plate, tmp_path):
    folder, model = plate
    out = tmp_path / "out"
    assert main(["predict", model, str(folder / "well_[12].tif"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_labels.tif")) == [
        "well_1_labels.tif",
        "well_2_labels.tif",
    ]


def test_an_interrupted_folder_run_resumes_without_redoing_finished_files(plate, tmp_path):
    folder, model = plate
    out = tmp_path / "out"
    events = batch.predict_files(model, batch.expand_inputs(folder), out)
    for event in events:
        if isinstance(event, batch.FileDone) and event.index == 1:
            break
    events.close()  # interrupted after two files
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.tif")}
    assert sorted(finished) == ["well_0_labels.tif", "well_1_labels.tif"]
    assert main(["predict", model, str(folder), "-o", str(out)]) == 0
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime
    assert len(list(out.glob("*_labels.tif"))) == 4
    assert len(_rows(out / "summary.csv")) == 4  # rows of the first run are kept


def test_a_corrupt_file_is_reported_and_skipped_the_rest_done(plate, tmp_path, capsys):
    folder, model = plate
    (folder / "well_2.tif").write_bytes(b"II*\x00 this is not a tiff")
    out = tmp_path / "out"
    assert main(["predict", model, str(folder), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "well_2.tif" in err and "Traceback" not in err
    assert "3 predicted, 0 already done, 1 failed" in err
    assert sorted(p.name for p in out.glob("*_labels.tif")) == [
        "well_0_labels.tif",
        "well_1_labels.tif",
        "well_3_labels.tif",
    ]
    assert "well_2.tif" not in _rows(out / "summary.csv")


def test_a_folder_output_must_be_a_folder(plate, tmp_path, capsys):
    folder, model = plate
    assert main(["predict", model, str(folder), "-o", str(tmp_path / "x.tif")]) == 2
    assert "give -o a folder" in capsys.readouterr().err


def test_cli_chunked_ome_zarr_output_matches_the_in_memory_prediction(tmp_path):
    image, _ = touching_cells((200, 230), seed=5)
    io.write(tmp_path / "big.tif", (image * 1000).astype(np.uint16))
    # a trained model knows its cells' size, which sizes the splitting of every chunk alike
    metadata = {"normalisation": {"diameter_px": 20.0}}
    model = str(checkpoint.save(tmp_path / "model.safetensors", threshold_unet(), metadata))
    base = ["predict", model, str(tmp_path / "big.tif"), "--device", "cpu", "-o"]
    assert main([*base, str(tmp_path / "whole.tif")]) == 0
    zarr_out = tmp_path / "labels.ome.zarr"
    assert (
        main(
            [
                *base,
                str(zarr_out),
                "--chunk-size",
                "64",
                "--probabilities",
                str(tmp_path / "p.zarr"),
            ]
        )
        == 0
    )
    chunked_labels = np.asarray(bigio.open_image(zarr_out)[:])
    whole = io.read(tmp_path / "whole.tif")
    assert chunked_labels.max() == whole.max() > 20
    pairs = np.unique(np.stack([whole[whole > 0], chunked_labels[whole > 0]]), axis=1)
    assert pairs.shape[1] == whole.max()  # the same cells, up to renumbering
    assert np.array_equal(whole > 0, chunked_labels > 0)
    assert bigio.open_image(tmp_path / "p.zarr").shape == image.shape
    assert not list(tmp_path.glob(".*chunks"))  # the work folder is cleaned up


def test_a_tiff_is_opened_lazily(tmp_path):
    import tifffile

    data = np.arange(300 * 400, dtype=np.uint16).reshape(300, 400)
    tifffile.imwrite(tmp_path / "tiled.tif", data, tile=(128, 128))
    lazy = bigio.open_image(tmp_path / "tiled.tif")
    assert not isinstance(lazy, np.ndarray) and lazy.shape == data.shape
    np.testing.assert_array_equal(lazy[130:140, 250:260], data[130:140, 250:260])


def test_an_ome_zarr_input_with_singleton_t_c_z_axes_is_read_region_by_region(tmp_path):
    import zarr
    from ome_zarr.writer import write_image

    image, _ = touching_cells((150, 170), seed=7)
    data = (image * 1000).astype(np.uint16)
    root = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w")
    write_image(data[None, None, None], root, axes="tczyx", scale_factors=[])
    lazy = bigio.open_image(tmp_path / "in.ome.zarr")
    assert lazy.shape == (150, 170)
    np.testing.assert_array_equal(lazy[10:20, 30:40], data[10:20, 30:40])
    model = str(checkpoint.save(tmp_path / "model.safetensors", threshold_unet()))
    io.write(tmp_path / "in.tif", data)
    for name in ("in.ome.zarr", "in.tif"):
        args = ["predict", model, str(tmp_path / name), "-o", str(tmp_path / f"{name}.out.tif")]
        assert main(args) == 0
    np.testing.assert_array_equal(
        io.read(tmp_path / "in.ome.zarr.out.tif"), io.read(tmp_path / "in.tif.out.tif")
    )


@pytest.mark.slow
def test_cli_workers_give_the_labels_of_one_process(tmp_path):
    image, _ = touching_cells((160, 160), seed=8)
    io.write(tmp_path / "img.tif", (image * 1000).astype(np.uint16))
    model = str(checkpoint.save(tmp_path / "model.safetensors", threshold_unet()))
    base = ["predict", model, str(tmp_path / "img.tif"), "--chunk-size", "64", "-o"]
    assert main([*base, str(tmp_path / "one.ome.zarr")]) == 0
    assert main([*base, str(tmp_path / "two.ome.zarr"), "--workers", "2"]) == 0
    one = np.asarray(bigio.open_image(tmp_path / "one.ome.zarr")[:])
    np.testing.assert_array_equal(np.asarray(bigio.open_image(tmp_path / "two.ome.zarr")[:]), one)
    assert one.max() > 10
