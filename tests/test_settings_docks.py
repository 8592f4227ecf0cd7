"""What the Weight map and Augmentation docks preview is what the Train dock trains with."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from napari_unet.widgets.annotate import AnnotateDock
from napari_unet.widgets.augmentation import AugmentationDock
from napari_unet.widgets.train import TrainDock
from napari_unet.widgets.weight_map import WeightMapDock

TIMEOUT_MS = 180_000


@pytest.fixture
def viewer(make_napari_viewer):
    _session.clear()
    viewer = make_napari_viewer()
    image, labels = touching_cells((96, 96), seed=5)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells labels")
    yield viewer
    _session.clear()


def test_preview_settings_are_trained_saved_and_restored(viewer, qtbot, tmp_path):
    from napari_unet.core import checkpoint

    weight_dock, augment_dock = WeightMapDock(viewer), AugmentationDock(viewer)
    train_dock = TrainDock(viewer)
    for dock in (weight_dock, augment_dock, train_dock):
        qtbot.addWidget(dock)
    weight_dock.w0.setValue(20.0)
    weight_dock.balance.setChecked(False)
    augment_dock.elastic.setChecked(False)
    augment_dock.rotate.setValue(0.0)
    shared = _session.training_settings(viewer)
    assert shared.weights.w0 == 20.0 and shared.weights.balance is False
    assert shared.augment.elastic is False and shared.augment.rotate_deg == 0.0
    assert "w0 20" in train_dock.settings_label.text()
    assert "no elastic" in train_dock.settings_label.text()

    train_dock.model_combo.setCurrentText("new light model")
    train_dock.steps.setValue(1)
    train_dock.tile_size.setValue(92)
    train_dock.device.setCurrentText("cpu")
    train_dock.start()
    qtbot.waitUntil(lambda: not train_dock.jobs.busy, timeout=TIMEOUT_MS)
    saved = train_dock.save(tmp_path / "m.safetensors")
    stored = checkpoint.read_metadata(saved)["training"]["settings"]
    assert stored["weights"]["w0"] == 20.0 and stored["weights"]["balance"] is False
    assert stored["augment"]["elastic"] is False and stored["augment"]["rotate_deg"] == 0.0

    # Back to the defaults, then pick the saved model to fine-tune: its settings return
    # and every dock shows them.
    weight_dock.w0.setValue(10.0)
    augment_dock.elastic.setChecked(True)
    train_dock.model_combo.setCurrentText("model file")
    train_dock.model_file.setText(str(saved))
    train_dock.model_file.editingFinished.emit()
    qtbot.waitUntil(lambda: weight_dock.w0.value() == 20.0, timeout=20_000)
    assert not augment_dock.elastic.isChecked() and not weight_dock.balance.isChecked()
    assert "restored from m.safetensors" in train_dock.status.text()


def test_background_brush_and_what_training_will_use(viewer, qtbot):
    viewer.layers.remove("cells labels")
    annotate, train_dock = AnnotateDock(viewer), TrainDock(viewer)
    qtbot.addWidget(annotate)
    qtbot.addWidget(train_dock)
    labels = annotate.create_labels()
    _, truth = touching_cells((96, 96), seed=5)
    picked = np.unique(truth)[1:][::3][:4]
    painted = np.where(np.isin(truth, picked), truth, 0).astype(labels.data.dtype)
    labels.data = painted
    background = annotate.background_brush()
    assert background.name == "cells background" and background.data.shape == (96, 96)
    assert background.selected_label == 1 and background.mode == "paint"
    assert viewer.layers.selection.active is background
    assert annotate.labels_picker.current_choice == "cells annotations"  # not the strokes
    strokes = np.zeros((96, 96), np.uint8)
    strokes[1:4, 1:30] = 1  # one stroke along the top edge
    background.data = strokes
    qtbot.waitUntil(lambda: "1 background stroke" in annotate.status.text(), timeout=5000)

    assert train_dock.labels_picker.current_choice == "cells annotations"
    qtbot.waitUntil(lambda: "background stroke" in train_dock.use_label.text(), timeout=5000)
    text = train_dock.use_label.text()
    assert "4 cells, 1 background stroke; area used:" in text
    # the same numbers as the core computes for training
    from napari_unet.core.data import describe_use

    expected = describe_use(viewer.layers["cells"].data, painted, background=strokes)
    assert expected.describe() in text
    train_dock.unpainted.setCurrentText("background (completely painted)")
    qtbot.waitUntil(lambda: "area used: 100 %" in train_dock.use_label.text(), timeout=5000)
    assert _session.training_settings(viewer).unpainted == "background"
