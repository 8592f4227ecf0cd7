"""Predict dock in a real viewer: a model file or the session's model turns an image or one
slice of a stack into "<image> U-Net labels"; the user's layers stay untouched."""

from __future__ import annotations

import time

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint
from napari_unet.widgets import _session
from napari_unet.widgets.predict import ALL, CURRENT, FILE, SESSION, PredictDock
from test_predict import METADATA, _same_partition, _squares


@pytest.fixture(autouse=True)
def clean_session():
    _session.clear()
    yield
    _session.clear()


@pytest.fixture
def model_file(tmp_path):
    return checkpoint.save(tmp_path / "threshold.safetensors", threshold_unet(), METADATA)


def _run_and_wait(dock, qtbot):
    dock.run_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.run_button.isEnabled(), timeout=30000)


def test_predict_from_a_model_file_into_a_new_labels_layer(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    image, expected = _squares(0)
    viewer.add_image(image, name="cells")
    user_labels = viewer.add_labels(expected.copy(), name="my labels")
    dock = PredictDock(viewer)
    dock.model_combo.setCurrentText(FILE)
    dock.model_path.setText(str(model_file))
    dock.tile_size.setValue(60)
    dock.min_size.setValue(4)
    dock.show_foreground.setChecked(True)
    assert dock.tta.isChecked() and dock.config().tta  # the 8 flips/rotations by default
    dock.tta.setChecked(False)
    assert not dock.config().tta
    _run_and_wait(dock, qtbot)

    result = viewer.layers["cells U-Net labels"]
    assert type(result).__name__ == "Labels"
    assert _same_partition(np.asarray(result.data), expected)
    foreground = viewer.layers["cells U-Net foreground"]
    np.testing.assert_array_equal(np.asarray(foreground.data) > 0.5, expected > 0)
    np.testing.assert_array_equal(viewer.layers["cells"].data, image)  # untouched
    np.testing.assert_array_equal(user_labels.data, expected)
    assert "5 cells" in dock.status.text()

    # Re-run with a min size that drops the small squares: the same layer, new data.
    sizes = np.bincount(expected.ravel())[1:]
    dock.min_size.setValue(int(np.median(sizes)) + 1)
    _run_and_wait(dock, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert names.count("cells U-Net labels") == 1
    assert viewer.layers["cells U-Net labels"] is result
    assert 0 < result.data.max() < 5
    assert len(viewer.layers) == 4


def test_session_model_predicts_only_the_current_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    pairs = [_squares(seed) for seed in (1, 2, 3)]
    viewer.add_image(np.stack([p[0] for p in pairs]), name="stack")
    dock = PredictDock(viewer)
    assert dock.model_combo.currentText() != SESSION
    _session.set_current_model(threshold_unet(), METADATA)  # what the Train dock does
    assert dock.model_combo.currentText() == SESSION
    dock.tile_size.setValue(60)
    dock.min_size.setValue(4)
    viewer.dims.set_point(0, 1)
    dock.scope_combo.setCurrentText(CURRENT)
    _run_and_wait(dock, qtbot)
    labels = np.asarray(viewer.layers["stack U-Net labels"].data)
    assert labels.shape == (3, 70, 90)
    assert not labels[0].any() and not labels[2].any()
    assert _same_partition(labels[1], pairs[1][1])

    viewer.dims.set_point(0, 2)  # the next slice keeps the one already predicted
    _run_and_wait(dock, qtbot)
    labels = np.asarray(viewer.layers["stack U-Net labels"].data)
    assert labels[1].any() and _same_partition(labels[2], pairs[2][1])


def _slow(net):
    """The same model, 50 ms per forward pass: the run outlasts the click on Cancel."""
    forward = net.forward

    def slow_forward(x):
        time.sleep(0.05)
        return forward(x)

    net.forward = slow_forward
    return net


def test_cancel_stops_a_long_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([_squares(seed)[0] for seed in range(40)]), name="long")
    _session.set_current_model(_slow(threshold_unet()), METADATA)
    dock = PredictDock(viewer)
    dock.tile_size.setValue(60)
    dock.scope_combo.setCurrentText(ALL)
    dock.run_button.click()
    qtbot.waitUntil(lambda: dock._progress is not None, timeout=30000)
    dock.cancel_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=30000)
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    labels = (
        np.asarray(viewer.layers["long U-Net labels"].data)
        if "long U-Net labels" in viewer.layers
        else np.zeros((40, 1, 1))
    )
    assert not labels[-1].any()  # the last slices were never predicted


def test_a_missing_model_file_is_reported_and_nothing_is_added(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(_squares(4)[0], name="cells")
    dock = PredictDock(viewer)
    dock.model_combo.setCurrentText(FILE)
    dock.model_path.setText(str(tmp_path / "missing.safetensors"))
    _run_and_wait(dock, qtbot)
    assert "missing.safetensors" in dock.status.text()
    assert [layer.name for layer in viewer.layers] == ["cells"]


def test_an_rgb_image_is_refused_before_anything_runs(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    _session.set_current_model(threshold_unet(), METADATA)
    dock = PredictDock(viewer)
    dock.run_button.click()
    assert not dock.jobs.busy
    assert "takes 1 channel(s) but the image has 3 (photo R, photo G, photo B)" in (
        dock.status.text()
    )
    assert [layer.name for layer in viewer.layers] == ["photo"]


def test_shipped_starters_are_offered_and_the_phase_one_segments_phase_contrast(
    make_napari_viewer, qtbot
):
    from pathlib import Path

    from napari_unet.core import io, metrics
    from napari_unet.models import SHIPPED

    data = Path(__file__).with_name("data")
    image = io.read(data / "usiigaci_phase_s5_crop.tif")
    truth = io.read(data / "usiigaci_phase_s5_crop_labels.tif")
    viewer = make_napari_viewer()
    viewer.add_image(image, name="phase")
    dock = PredictDock(viewer)
    offered = [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
    assert offered == [*(m.title for m in SHIPPED), FILE]
    dock.model_combo.setCurrentText("Phase-contrast starter")
    _run_and_wait(dock, qtbot)
    labels = np.asarray(viewer.layers["phase U-Net labels"].data)
    assert metrics.iou_score(truth > 0, labels > 0) > 0.6  # real cells, not noise


def test_an_rgb_image_gets_the_stained_starter_and_a_gray_one_the_nuclei_starter(
    make_napari_viewer, qtbot
):
    from pathlib import Path

    from napari_unet.core import io, metrics

    data = Path(__file__).with_name("data")
    rgb = io.read(data / "dsb2018_aa58ba45_crop.tif")
    truth = io.read(data / "dsb2018_aa58ba45_crop_labels.tif")
    viewer = make_napari_viewer()
    viewer.add_image(io.read(data / "dsb2018_1c681dfa_crop.tif"), name="nuclei")
    viewer.add_image(rgb, name="stained", rgb=True)
    dock = PredictDock(viewer)
    dock.image_picker.value = viewer.layers["stained"]
    assert dock.model_combo.currentText() == "Stained RGB starter"
    _run_and_wait(dock, qtbot)
    labels = np.asarray(viewer.layers["stained U-Net labels"].data)
    assert metrics.average_precision(truth, labels, (0.5,))[0] > 0.5  # stained nuclei found
    dock.image_picker.value = viewer.layers["nuclei"]
    assert dock.model_combo.currentText() == "Starter model"
    dock.model_combo.setCurrentText(FILE)  # a choice of the user's own stays
    dock.image_picker.value = viewer.layers["stained"]
    assert dock.model_combo.currentText() == FILE
