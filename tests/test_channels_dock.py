"""Channels and stacks in the docks, in a real viewer: RGB training and prediction, two
image layers as the channels of one input (napari's ``channel_axis``), 3D linking."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from _threshold_model import threshold_unet
from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from napari_unet.widgets.predict import SESSION, PredictDock
from napari_unet.widgets.train import TrainDock

TIMEOUT_MS = 180_000  # the test machine's CPU is shared


@pytest.fixture(autouse=True)
def clean_session():
    _session.clear()
    yield
    _session.clear()


def _train(
    viewer, qtbot, image: str, labels: str, extra: list[str] = (), model="new light model"
) -> tuple:
    """Train 2 steps in the Train dock; ``model=None`` keeps the dock's default choice."""
    dock = TrainDock(viewer)
    dock.image_picker.value = viewer.layers[image]
    dock.channels.tick(list(extra))
    dock.labels_picker.value = viewer.layers[labels]
    if model is not None:
        dock.model_combo.setCurrentText(model)
    dock.steps.setValue(2)
    dock.tile_size.setValue(92)
    dock.batch_size.setValue(1)
    dock.validate_every.setValue(2)
    dock.device.setCurrentText("cpu")
    qtbot.mouseClick(dock.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    current = _session.current_model()
    assert current is not None, dock.status.text()
    return current


def _predict(viewer, qtbot, image: str) -> PredictDock:
    dock = PredictDock(viewer)
    dock.image_picker.value = viewer.layers[image]
    dock.tile_size.setValue(92)
    dock.min_size.setValue(1)
    dock.run_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.run_button.isEnabled(), timeout=TIMEOUT_MS)
    return dock


@pytest.mark.slow
def test_rgb_layer_fine_tunes_the_starter_in_colour_and_predicts(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gray, labels = touching_cells((96, 96), seed=3)
    rgb = (np.stack([gray, 0.6 * gray, 1.0 - gray], axis=-1).clip(0, 1) * 255).astype(np.uint8)
    viewer.add_image(rgb, name="stained", rgb=True)
    viewer.add_labels(labels, name="cells")
    net, metadata = _train(viewer, qtbot, "stained", "cells", model=None)
    assert net.in_channels == 3 and metadata["input"]["axes"] == "YXC"
    # the default fine-tunes the gray starter, spread over the channels by their
    # contrast: cells bright in R and G, dark in B
    assert metadata["training"]["from"] == "starter.safetensors"
    red, green, blue = metadata["training"]["spread_channels"]
    assert red > 0 and green > 0 and blue < 0
    assert metadata["input"]["channel_names"] == ["stained R", "stained G", "stained B"]
    dock = _predict(viewer, qtbot, "stained")
    assert dock.model_combo.currentText() == SESSION
    out = viewer.layers["stained U-Net labels"]
    assert out.data.shape == (96, 96) and "Done" in dock.status.text()


def test_train_dock_says_what_an_rgb_layer_will_train_on(make_napari_viewer, qtbot):
    """The "Will train on" line reads an RGB layer as training does (it once said the
    image was not gray), and counts a few painted cells as sparse painting."""
    viewer = make_napari_viewer()
    gray, truth = touching_cells((96, 96), seed=3)
    rgb = (np.stack([gray, 0.6 * gray, 1.0 - gray], axis=-1).clip(0, 1) * 255).astype(np.uint8)
    viewer.add_image(rgb, name="stained", rgb=True)
    painted = np.where(np.isin(truth, np.unique(truth)[1:4]), truth, 0)
    viewer.add_labels(painted, name="cells")
    dock = TrainDock(viewer)
    dock.image_picker.value = viewer.layers["stained"]
    dock.labels_picker.value = viewer.layers["cells"]
    dock.refresh_use()
    qtbot.waitUntil(lambda: "Will train on" in dock.use_label.text(), timeout=10_000)
    assert "3 cells, 0 background strokes" in dock.use_label.text()
    assert "sparse" in dock.use_label.text() and "RGB" not in dock.use_label.text()


def test_two_image_layers_train_as_channels_and_predict_offers_them_again(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    nuclei, labels = touching_cells((96, 96), seed=4)
    membrane = np.roll(nuclei, 3, axis=1)
    viewer.add_image(np.stack([nuclei, membrane]), channel_axis=0, name=["nuclei", "membrane"])
    viewer.add_labels(labels, name="cells")
    net, metadata = _train(viewer, qtbot, "nuclei", "cells", extra=["membrane"])
    assert net.in_channels == 2
    assert metadata["input"]["channel_names"] == ["nuclei", "membrane"]

    # a model that segments its first channel: predictions say which layer came first
    _session.set_current_model(threshold_unet(in_channels=2), metadata)
    viewer.add_image(np.zeros((96, 96), np.float32), name="other")  # a distractor
    dock = PredictDock(viewer)
    assert dock.image_picker.current_choice == "nuclei"
    assert dock.channels.ticked() == ["membrane"]
    dock.tile_size.setValue(92)
    dock.min_size.setValue(1)
    dock.run_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.run_button.isEnabled(), timeout=TIMEOUT_MS)
    out = np.asarray(viewer.layers["nuclei U-Net labels"].data)
    from napari_unet.core.normalize import normalize

    assert out.shape == (96, 96)
    expected = normalize(nuclei) > 0.5
    assert np.mean((out > 0) == expected) > 0.97

    dock.channels.tick([])  # one layer for a 2-channel model: refused, nothing runs
    dock.run_button.click()
    assert not dock.jobs.busy and "takes 2 channel" in dock.status.text()


def test_z_stack_is_linked_in_3d_and_a_time_lapse_keeps_per_frame_ids(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.zeros((4, 64, 64), np.float32)
    stack[:, 10:30, 10:30] = 1.0  # the same square on every plane
    viewer.add_image(stack, name="z", scale=(3.0, 0.5, 0.5))
    viewer.add_image(stack.copy(), name="t", axis_labels=("t", "y", "x"))
    _session.set_current_model(threshold_unet(), {})
    dock = PredictDock(viewer)
    assert dock.link_z.isChecked()
    dock.tile_size.setValue(60)
    for name in ("z", "t"):
        dock.image_picker.value = viewer.layers[name]
        dock.run_button.click()
        qtbot.waitUntil(lambda: not dock.jobs.busy and dock.run_button.isEnabled(), timeout=30000)
    z = viewer.layers["z U-Net labels"]
    t = np.asarray(viewer.layers["t U-Net labels"].data)
    assert len(np.unique(np.asarray(z.data)[np.asarray(z.data) > 0])) == 1
    np.testing.assert_allclose(z.scale, (3.0, 0.5, 0.5))  # voxel size kept
    assert len(np.unique(t[t > 0])) == 4


def test_evaluate_dock_scores_3d_objects_of_a_z_stack_not_of_a_time_lapse(
    make_napari_viewer, qtbot
):
    from napari_unet.widgets.evaluate import EvaluateDock
    from test_evaluate_dock import run, table_values

    viewer = make_napari_viewer()
    truth = np.zeros((4, 32, 32), np.uint16)
    truth[:, 4:20, 4:20] = 1  # one 3D cell ...
    cut = truth.copy()
    cut[2:] *= 2  # ... predicted as two pieces along Z (each slice still matches)
    viewer.add_labels(cut, name="pred")
    viewer.add_labels(truth, name="truth")
    dock = EvaluateDock(viewer)
    dock.prediction_picker.value = viewer.layers["pred"]
    dock.truth_picker.value = viewer.layers["truth"]
    run(dock, qtbot)
    values = table_values(dock)
    assert values["ap@0.50"] == "1.0000" and values["splits_3d"] == "1"
    viewer.layers["truth"].axis_labels = ("t", "y", "x")
    dock.table.setRowCount(0)
    run(dock, qtbot)
    assert "splits_3d" not in table_values(dock)
