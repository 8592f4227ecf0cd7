"""Every dock given the wrong layers, layers changed during a run, docks and the viewer
closed mid-run: a clear message or a clean stop, never a traceback, user layers intact.

pytest-qt fails a test on any exception raised inside a Qt callback, so "no traceback"
is checked by every test here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from _threshold_model import threshold_unet
from napari_unet.core import project
from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from napari_unet.widgets._layers import set_layer
from napari_unet.widgets.annotate import AnnotateDock
from napari_unet.widgets.augmentation import AugmentationDock
from napari_unet.widgets.evaluate import EvaluateDock
from napari_unet.widgets.predict import PredictDock
from napari_unet.widgets.train import TrainDock
from napari_unet.widgets.weight_map import WeightMapDock
from test_predict import METADATA, _squares
from test_predict_dock import _slow

DOCKS = (AnnotateDock, WeightMapDock, AugmentationDock, EvaluateDock, TrainDock, PredictDock)
TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def clean_session():
    _session.clear()
    yield
    _session.clear()


def _pickers(dock):
    return [getattr(dock, n) for n in vars(dock) if n.endswith("_picker")]


def _offered(dock) -> set[str]:
    return {layer.name for p in _pickers(dock) for layer in p.choices if layer is not None}


def _snapshot(viewer) -> dict[str, np.ndarray]:
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}


def _unchanged(viewer, before: dict[str, np.ndarray]) -> None:
    for name, data in before.items():
        np.testing.assert_array_equal(np.asarray(viewer.layers[name].data), data)


@pytest.mark.parametrize("dock_class", DOCKS)
def test_previews_points_shapes_and_float_images_are_not_offered(make_napari_viewer, dock_class):
    viewer = make_napari_viewer()
    image, labels = touching_cells((64, 64), seed=3)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="truth")
    set_layer(viewer, "truth weight map", labels.astype(np.float32))  # a plugin preview
    set_layer(viewer, "truth separated target", labels, "labels")
    viewer.add_points([[1, 1]], name="dots")
    viewer.add_shapes(name="drawings")
    dock = dock_class(viewer)
    offered = _offered(dock)
    assert not offered & {"truth weight map", "truth separated target", "dots"}
    if dock_class is not TrainDock:  # Train offers rectangles as training regions
        assert "drawings" not in offered
    # Previews added while the dock is open stay out too.
    set_layer(viewer, "gallery", np.zeros((2, 8, 8), np.float32))
    assert "gallery" not in _offered(dock)


def _run(dock, qtbot) -> None:
    """Press the dock's main button and wait for any job to end."""
    for name in ("start_button", "run_button", "evaluate_button", "preview_button"):
        if hasattr(dock, name):
            getattr(dock, name).click()
            break
    else:
        dock.create_labels()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)


WRONG_IMAGES = {
    "RGB": (np.zeros((48, 48, 3), np.uint8), {"rgb": True}, "RGB"),
    "4D": (np.zeros((2, 2, 48, 48), np.float32), {}, "(Z, Y, X)"),
}


@pytest.mark.parametrize("case", list(WRONG_IMAGES))
@pytest.mark.parametrize("dock_class", [AugmentationDock, TrainDock, PredictDock, AnnotateDock])
def test_wrong_images_get_a_clear_message(make_napari_viewer, qtbot, dock_class, case):
    data, kwargs, expected = WRONG_IMAGES[case]
    viewer = make_napari_viewer()
    viewer.add_image(data, name="odd", **kwargs)
    viewer.add_labels(np.zeros(data.shape[:-1] if kwargs else data.shape, np.uint8), name="l")
    _session.set_current_model(threshold_unet(), METADATA)
    before = _snapshot(viewer)
    dock = dock_class(viewer)
    if dock_class is AnnotateDock and case == "RGB":
        layer = dock.create_labels()  # an RGB image is annotated on its pixel grid
        assert layer.data.shape == (48, 48)
    else:
        _run(dock, qtbot)
        if dock_class is TrainDock and case == "RGB":  # colour is 3 channels (`core.axes`)
            expected = "nothing is annotated"  # accepted: the empty labels are the problem
        if dock_class is AugmentationDock and case == "RGB":  # previewed in colour
            expected = "samples of 'odd'"
        assert expected in dock.status.text() or (
            dock_class is PredictDock and "channel" in dock.status.text()
        ), dock.status.text()
    _unchanged(viewer, before)


WRONG_LABELS = {
    "4D": (np.zeros((2, 2, 48, 48), np.uint8), "(Z, Y, X)"),
    "negative": (np.where(np.eye(48) > 0, -3, 0).astype(np.int32), ">= 0|negative"),
}


@pytest.mark.parametrize("case", list(WRONG_LABELS))
@pytest.mark.parametrize("dock_class", [WeightMapDock, EvaluateDock, TrainDock, AugmentationDock])
def test_wrong_labels_get_a_clear_message(make_napari_viewer, qtbot, dock_class, case):
    import re

    labels, expected = WRONG_LABELS[case]
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random(labels.shape, np.float32), name="img")
    viewer.add_labels(labels, name="bad")
    viewer.add_labels(np.zeros_like(labels), name="prediction")
    before = _snapshot(viewer)
    dock = dock_class(viewer)
    for name in ("labels_picker", "truth_picker"):
        if hasattr(dock, name):
            getattr(dock, name).value = viewer.layers["bad"]
    if dock_class is not WeightMapDock:
        _run(dock, qtbot)
    qtbot.waitUntil(
        lambda: re.search(expected, dock.status.text()) is not None, timeout=TIMEOUT_MS
    )
    assert "bad weight map" not in viewer.layers
    _unchanged(viewer, before)


def test_evaluate_warns_when_the_same_layer_is_picked_twice_and_defaults_differ(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    truth = viewer.add_labels(np.eye(20, dtype=np.uint8), name="cells labels")
    predicted = viewer.add_labels(np.eye(20, dtype=np.uint8), name="cells U-Net labels")
    predicted.metadata["napari_unet"] = "result"
    dock = EvaluateDock(viewer)
    assert dock.prediction_picker.value is predicted and dock.truth_picker.value is truth
    dock.truth_picker.value = predicted
    assert "same layer" in dock.status.text() and not dock.evaluate_button.isEnabled()
    dock.truth_picker.value = truth
    assert dock.status.text() == "" and dock.evaluate_button.isEnabled()


def test_an_error_clears_the_old_table_and_status(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gt = np.zeros((30, 30), np.uint8)
    gt[5:15, 5:15] = 1
    viewer.add_labels(gt, name="ground truth")
    viewer.add_labels(gt.copy(), name="prediction")
    dock = EvaluateDock(viewer)
    _run(dock, qtbot)
    assert dock.table.rowCount() > 0
    viewer.layers["prediction"].data = np.zeros((30, 40), np.uint8)
    _run(dock, qtbot)
    assert dock.table.rowCount() == 0 and not dock.next_error_button.isEnabled()
    assert "(30, 40)" in dock.status.text()


def test_train_error_replaces_the_preparing_status_line(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="cells")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="nothing painted")
    dock = TrainDock(viewer)
    dock.device.setCurrentText("cpu")
    _run(dock, qtbot)
    assert "Preparing" not in dock.status.text()
    assert "annotated" in dock.status.text() and dock.start_button.isEnabled()


def test_predict_survives_renaming_and_deleting_the_image_during_a_run(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_squares(seed)[0] for seed in range(8)])
    viewer.add_image(stack, name="stack")
    mine = viewer.add_labels(np.ones(stack.shape, np.uint8), name="stack U-Net labels (mine)")
    _session.set_current_model(_slow(threshold_unet()), METADATA)
    dock = PredictDock(viewer)
    dock.tile_size.setValue(60)
    dock.run_button.click()
    qtbot.waitUntil(lambda: "stack U-Net labels" in viewer.layers, timeout=TIMEOUT_MS)
    viewer.layers["stack"].name = "renamed"
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    assert "renamed U-Net labels" not in viewer.layers  # the run keeps its output layer
    assert viewer.layers["stack U-Net labels"].data[-1].any()
    assert mine.data.all()

    dock.run_button.click()
    viewer.layers.remove("renamed")
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    assert dock.run_button.isEnabled()


def test_weight_map_drops_the_result_of_a_deleted_layer(make_napari_viewer, qtbot, cells_3d):
    viewer = make_napari_viewer()
    viewer.add_labels(cells_3d[1], name="stack")
    dock = WeightMapDock(viewer)
    dock.all_slices.setChecked(True)
    qtbot.waitUntil(lambda: dock.jobs.busy, timeout=TIMEOUT_MS)
    viewer.layers.remove("stack")
    qtbot.waitUntil(
        lambda: not dock.jobs.busy and not dock._debounce.isActive(), timeout=TIMEOUT_MS
    )
    assert [layer.name for layer in viewer.layers if "stack" in layer.name] in (
        [],
        ["stack separated target", "stack d1", "stack d2", "stack weight map"],
    )


def test_a_closed_weight_map_dock_stops_reacting(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = WeightMapDock(viewer)
    viewer.window.add_dock_widget(dock, name="Weight map")
    viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    labels = np.zeros((40, 40), np.uint8)
    labels[5:15, 5:15], labels[5:15, 15:25] = 1, 2
    layer = viewer.add_labels(labels, name="painted")
    layer.paint((30, 30), 3)
    qtbot.wait(300)
    assert not dock.jobs.busy
    assert [x.name for x in viewer.layers] == ["painted"]
    assert dock.labels_picker.choices == ()  # no longer follows the layer list


@pytest.mark.slow
def test_closing_the_viewer_during_training_keeps_the_best_model(
    make_napari_viewer, qtbot, tmp_path
):
    image, labels = touching_cells((96, 96), seed=5)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, image)
    viewer = make_napari_viewer()
    viewer.open(str(path))
    viewer.add_labels(labels, name="cells labels")
    dock = TrainDock(viewer)
    viewer.window.add_dock_widget(dock, name="Train")
    dock.model_combo.setCurrentText("new light model")
    dock.steps.setValue(500)
    dock.tile_size.setValue(92)
    dock.batch_size.setValue(1)
    dock.validate_every.setValue(2)
    dock.device.setCurrentText("cpu")
    jobs = dock.jobs
    dock.start_button.click()
    qtbot.waitUntil(lambda: len(dock._history["iou"]) >= 1, timeout=TIMEOUT_MS)
    viewer.close()
    qtbot.waitUntil(lambda: not jobs.busy, timeout=TIMEOUT_MS)
    folder = project.folder_for(path)
    assert project.model_path(folder) is not None  # the best model so far was kept
    saved = project.load_labels(folder)["cells labels"]
    np.testing.assert_array_equal(saved, labels)  # and the annotations trained on


def test_closing_the_viewer_during_prediction_stops_cleanly(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([_squares(seed)[0] for seed in range(30)]), name="long")
    _session.set_current_model(_slow(threshold_unet()), METADATA)
    dock = PredictDock(viewer)
    viewer.window.add_dock_widget(dock, name="Predict")
    dock.tile_size.setValue(60)
    jobs = dock.jobs
    dock.run_button.click()
    qtbot.waitUntil(lambda: jobs.busy, timeout=TIMEOUT_MS)
    viewer.close()
    qtbot.waitUntil(lambda: not jobs.busy, timeout=TIMEOUT_MS)


def test_empty_layers_give_an_empty_result_not_an_error(make_napari_viewer, qtbot):
    """A blank image and blank labels: 0 cells, a flat gallery, a perfect empty score."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="blank")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="ground truth")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="prediction")
    _session.set_current_model(threshold_unet(), METADATA)
    predict = PredictDock(viewer)
    _run(predict, qtbot)
    assert "0 cells" in predict.status.text()
    assert not viewer.layers["blank U-Net labels"].data.any()
    augment = AugmentationDock(viewer)
    _run(augment, qtbot)
    assert "samples of 'blank'" in augment.status.text()
    evaluate = EvaluateDock(viewer)
    _run(evaluate, qtbot)
    assert "0 missed, 0 extra" in evaluate.status.text()
