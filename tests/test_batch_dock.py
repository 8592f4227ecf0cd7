"""Predict dock's batch mode: a folder of images into labels files, overall progress,
re-run skips finished files, a corrupt file is reported, Cancel stops the batch."""

from __future__ import annotations

import pytest

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint, io
from napari_unet.widgets import _session
from napari_unet.widgets.predict import FILE, PredictDock
from test_predict import METADATA, _same_partition, _squares


@pytest.fixture(autouse=True)
def clean_session():
    _session.clear()
    yield
    _session.clear()


@pytest.fixture
def dock(make_napari_viewer, tmp_path):
    model = checkpoint.save(tmp_path / "threshold.safetensors", threshold_unet(), METADATA)
    dock = PredictDock(make_napari_viewer())
    dock.model_combo.setCurrentText(FILE)
    dock.model_path.setText(str(model))
    dock.min_size.setValue(4)
    return dock


def _folder(tmp_path, n):
    folder = tmp_path / "plate"
    for i in range(n):
        io.write(folder / f"img_{i:02d}.tif", _squares(i)[0])
    return folder


def _run_and_wait(panel, qtbot):
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.jobs.busy and panel.run_button.isEnabled(), timeout=60000)


def test_batch_mode_predicts_a_folder_and_skips_finished_files(dock, qtbot, tmp_path):
    folder = _folder(tmp_path, 3)
    (folder / "img_99.tif").write_bytes(b"not an image")
    panel = dock.batch
    panel.folder.setText(str(folder))
    _run_and_wait(panel, qtbot)
    out = folder / "unet_labels"
    for i in range(3):
        assert _same_partition(io.read(out / f"img_{i:02d}_labels.tif"), _squares(i)[1])
    assert "3 predicted, 0 already done, 1 failed" in panel.status.text()
    assert panel.overall.value() == panel.overall.maximum() == 4
    assert (out / "summary.csv").is_file()
    mtime = (out / "img_00_labels.tif").stat().st_mtime_ns
    _run_and_wait(panel, qtbot)
    assert "0 predicted, 3 already done, 1 failed" in panel.status.text()
    assert (out / "img_00_labels.tif").stat().st_mtime_ns == mtime


def test_cancel_stops_the_batch_between_files(dock, qtbot, tmp_path):
    folder = _folder(tmp_path, 12)
    panel = dock.batch
    panel.folder.setText(str(folder))
    panel.output.setText(str(tmp_path / "out"))
    panel.run_button.click()
    qtbot.waitUntil(lambda: len(panel._results) >= 1, timeout=60000)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=60000)
    assert panel.status.text().startswith("Cancelled")
    assert 1 <= len(list((tmp_path / "out").glob("*_labels.tif"))) < 12


def test_a_folder_of_gray_and_colour_images_runs_with_the_two_shipped_starters(
    make_napari_viewer, qtbot, tmp_path
):
    """The nuclei starter cannot take RGB: the colour file of the folder goes to the
    stained RGB starter (its labels those of predicting with it), and the dock says so."""
    from pathlib import Path

    from napari_unet.core.events import run_to_end
    from napari_unet.core.predict import prediction_job
    from napari_unet.models import STARTER_KEY, shipped_by_key, stained_starter_model_path

    data = Path(__file__).with_name("data")
    image = io.read(data / "dsb2018_aa58ba45_crop.tif")
    folder = tmp_path / "plate"
    io.write(folder / "stained.tif", image)
    io.write(folder / "gray.tif", image.mean(axis=-1).astype("uint8"))
    dock = PredictDock(make_napari_viewer())
    dock.model_combo.setCurrentText(shipped_by_key(STARTER_KEY).title)
    panel = dock.batch
    panel.folder.setText(str(folder))
    _run_and_wait(panel, qtbot)
    assert "2 predicted (1 with the Stained RGB starter), 0 already done, 0 failed" in (
        panel.status.text()
    )
    expected = run_to_end(prediction_job(stained_starter_model_path(), image, dock.config()))
    got = io.read(folder / "unet_labels" / "stained_labels.tif")
    assert expected.labels.max() > 5 and _same_partition(got, expected.labels)
    assert io.read(folder / "unet_labels" / "gray_labels.tif").max() > 0
