"""The biologist's loop in a real viewer: paint a few cells, train, predict, correct, resume."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from napari_unet.widgets.annotate import AnnotateDock
from napari_unet.widgets.predict import SESSION, PredictDock
from napari_unet.widgets.train import TrainDock

TIMEOUT_MS = 300_000  # the test machine's CPU is shared


@pytest.fixture
def viewer(make_napari_viewer):
    _session.clear()
    viewer = make_napari_viewer()
    yield viewer
    _session.clear()


def _click(qtbot, button) -> None:
    assert button.isEnabled(), f"{button.text()} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _paint(layer, truth: np.ndarray, cell: int) -> None:
    """What a brush stroke does: the cell's pixels get the next free id."""
    data = np.array(layer.data)
    data[truth == cell] = data.max() + 1
    layer.data = data


def test_paint_train_predict_correct_resume(viewer, qtbot):
    image, truth = touching_cells((128, 128), seed=12)
    viewer.add_image(image, name="cells")
    annotate = AnnotateDock(viewer)
    train_dock, predict_dock = TrainDock(viewer), PredictDock(viewer)
    for dock in (annotate, train_dock, predict_dock):
        qtbot.addWidget(dock)

    # 1. paint six cells and one background stroke
    labels = annotate.create_labels()
    cells = np.unique(truth)[1:]
    for cell in cells[::3][:6]:
        _paint(labels, truth, cell)
    background = annotate.background_brush()
    strokes = np.zeros(truth.shape, np.uint8)
    strokes[truth == 0] = 1
    strokes[:, 12:] = 0
    background.data = strokes
    labels_name = labels.name
    assert train_dock.labels_picker.current_choice == labels_name
    qtbot.waitUntil(lambda: "6 cells" in train_dock.use_label.text(), timeout=10_000)

    # 2. fine-tune the starter model (which also spares the cells it finds, said first)
    train_dock.model_combo.setCurrentText("starter model")
    qtbot.waitUntil(lambda: "background band too" in train_dock.use_label.text(), timeout=10_000)
    train_dock.steps.setValue(12)
    train_dock.tile_size.setValue(92)
    train_dock.device.setCurrentText("cpu")
    _click(qtbot, train_dock.start_button)
    qtbot.waitUntil(lambda: not train_dock.jobs.busy, timeout=TIMEOUT_MS)
    first = train_dock._finished
    assert first is not None and first.steps_done == 12
    assert first.metadata["training"]["annotation"].startswith("6 cells, ")
    used = first.metadata["training"]["annotation"]
    assert train_dock.use_label.text() == f"Trained on: {used}."
    assert first.metadata["validation"]["history"][0]["step"] == 0  # the starter's score
    first_losses = [loss for _, loss in train_dock._history["loss"]]
    assert len(first_losses) == 12

    # 3. predict the whole image with the model just trained
    assert predict_dock.model_combo.currentText() == SESSION
    _click(qtbot, predict_dock.run_button)
    qtbot.waitUntil(
        lambda: not predict_dock.jobs.busy and predict_dock.run_button.isEnabled(),
        timeout=TIMEOUT_MS,
    )
    predicted = np.asarray(viewer.layers["cells U-Net labels"].data)
    assert predicted.shape == truth.shape and predicted.max() >= 5  # cells, not "all background"

    # 4. correct: paint a cell the model should learn too (the user's layer, not the output)
    missed = next(c for c in cells if not (np.asarray(labels.data)[truth == c]).any())
    _paint(labels, truth, missed)
    qtbot.waitUntil(lambda: "7 cells" in train_dock.use_label.text(), timeout=10_000)

    # 5. resume: the last weights with their optimiser state; the plot goes on
    train_dock.steps.setValue(4)
    _click(qtbot, train_dock.resume_button)
    qtbot.waitUntil(lambda: not train_dock.jobs.busy, timeout=TIMEOUT_MS)
    again = train_dock._finished
    steps = [step for step, _ in train_dock._history["loss"]]
    assert steps == list(range(1, 17))
    assert again.metadata["training"]["resumed"] is True
    assert again.metadata["training"]["annotation"].startswith("7 cells, ")
    # the model as it is now teaches where it is sure, as the starter did in the first run
    assert "the start model's sure pixels elsewhere" in used
    assert "the start model's sure pixels elsewhere" in again.metadata["training"]["annotation"]
    assert again.resume.optimizer["state"][0]["step"] == 16  # momentum carried on
    resumed = [loss for _, loss in train_dock._history["loss"]][12:]
    assert max(resumed) < 10 * np.median(first_losses)  # no jump back
    assert _session.current_model()[0] is again.net
