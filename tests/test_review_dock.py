"""Review dock in a real viewer: score, walk the queue worst first, fix objects into the
annotations (never the prediction or the image), undo, and propose regions."""

from __future__ import annotations

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core.annotations import boxes_from_rectangles
from napari_unet.core.data import TrainingData
from napari_unet.widgets import _session
from napari_unet.widgets.annotate import REGIONS_LAYER
from napari_unet.widgets.review import CUT_LAYER, FILE, SESSION, ReviewDock
from test_predict import METADATA, _squares


@pytest.fixture(autouse=True)
def session_model():
    _session.clear()
    _session.set_current_model(threshold_unet(), METADATA)
    yield
    _session.clear()


@pytest.fixture
def scored(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = _squares(3, shape=(80, 100), n=6)
    dim = np.isin(truth, [2, 5])
    image[dim] = 100 + int(0.56 * 800)  # near the threshold model's cut-off: unsure
    viewer.add_image(image, name="cells")
    dock = ReviewDock(viewer)
    assert dock.model_combo.currentText() == SESSION
    dock.score_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.table.rowCount() > 0, timeout=60000)
    return viewer, dock, image, dim


def test_score_fills_the_queue_worst_first_and_centres_on_the_object(scored):
    viewer, dock, image, dim = scored
    prediction = np.asarray(viewer.layers["cells U-Net labels"].data)
    assert dock.table.rowCount() == len(np.unique(prediction)) - 1 == 6
    confidences = [float(dock.table.item(r, 1).text()) for r in range(6)]
    assert confidences == sorted(confidences)
    dim_ids = set(np.unique(prediction[dim]).tolist()) - {0}
    assert {int(dock.table.item(r, 0).text()) for r in range(2)} == dim_ids
    assert viewer.layers["cells U-Net uncertainty"].visible
    dock.table.selectRow(1)
    obj = dock.current()
    ys, xs = np.nonzero(prediction == obj.id)
    np.testing.assert_allclose(viewer.camera.center[-2:], (ys.mean(), xs.mean()), atol=0.5)
    assert viewer.camera.zoom > 1
    dock.show_uncertainty.setChecked(False)
    assert not viewer.layers["cells U-Net uncertainty"].visible


def test_walking_the_queue_changes_only_the_annotations_and_undoes(scored, qtbot):
    viewer, dock, image, _ = scored
    pred_layer = viewer.layers["cells U-Net labels"]
    prediction = np.asarray(pred_layer.data).copy()
    dock.table.selectRow(0)
    first = dock.current()

    dock.accept()  # creates "cells annotations", writes the object, moves on
    annotations = viewer.layers["cells annotations"]
    assert np.array_equal(np.asarray(annotations.data) > 0, prediction == first.id)
    assert dock.table.item(0, 4).text() == "accepted"
    assert dock.current().id != first.id
    boxes = boxes_from_rectangles(list(viewer.layers[REGIONS_LAYER].data), prediction.shape)
    assert len(boxes) == 1
    ys, xs = np.nonzero(prediction == first.id)
    assert boxes[0].y0 <= ys.min() and boxes[0].y1 > ys.max()
    # What the Train dock (Resume) would learn from: exactly the reviewed box.
    data = TrainingData.from_arrays(image, annotations.data, boxes, validation_fraction=0)
    b = boxes[0]
    assert data.n_training_pixels == (b.y1 - b.y0) * (b.x1 - b.x0)
    assert data.targets[0][prediction == first.id].mean() > 0.5

    second = dock.current()
    dock.delete()  # nothing annotated there: a reviewed background box only
    assert np.array_equal(np.asarray(annotations.data) > 0, prediction == first.id)
    assert len(viewer.layers[REGIONS_LAYER].data) == 2

    third = dock.current()
    dock.split()  # no line yet: the dock asks for one
    assert CUT_LAYER in viewer.layers
    ys, xs = np.nonzero(prediction == third.id)
    row = (ys.min() + ys.max()) / 2
    viewer.layers[CUT_LAYER].add_paths([np.array([[row, xs.min() - 2], [row, xs.max() + 2]])])
    dock.split()
    parts = np.unique(np.asarray(annotations.data)[prediction == third.id])
    assert len(parts) == 2 and 0 not in parts

    dock.repaint()
    fourth = dock.table.item(3, 0).text()
    assert annotations.mode == "paint"
    assert annotations.selected_label == np.asarray(annotations.data)[prediction == int(fourth)][0]

    np.testing.assert_array_equal(pred_layer.data, prediction)  # prediction untouched
    np.testing.assert_array_equal(viewer.layers["cells"].data, image)  # image untouched

    for _ in range(4):
        dock.undo()
    assert not np.asarray(annotations.data).any()
    assert len(viewer.layers[REGIONS_LAYER].data) == 0
    assert second.id != first.id


def test_proposals_land_inside_the_image_and_off_the_annotations(scored):
    viewer, dock, image, _ = scored
    dock.table.selectRow(0)
    dock.accept()
    dock.n_boxes.setValue(2)
    boxes = dock.propose()
    assert len(boxes) == 2
    annotated = np.asarray(viewer.layers["cells annotations"].data) > 0
    regions = boxes_from_rectangles(list(viewer.layers[REGIONS_LAYER].data), image.shape)
    assert len(regions) == 3  # the reviewed object's box and the two proposals
    for b in boxes:
        assert 0 <= b.y0 < b.y1 <= image.shape[0] and 0 <= b.x0 < b.x1 <= image.shape[1]
        assert not annotated[b.y0 : b.y1, b.x0 : b.x1].any()
        assert b in regions


def test_an_rgb_image_is_scored_with_the_stained_starter(make_napari_viewer, qtbot):
    """As in the Predict dock: picking an RGB layer switches a shipped nuclei starter to
    the stained RGB one (a gray model cannot take colour), and a gray layer back."""
    from pathlib import Path

    from napari_unet.core import io, metrics

    _session.clear()  # no session model: the first shipped starter is offered
    data = Path(__file__).with_name("data")
    truth = io.read(data / "dsb2018_aa58ba45_crop_labels.tif")
    viewer = make_napari_viewer()
    viewer.add_image(io.read(data / "dsb2018_1c681dfa_crop.tif"), name="nuclei")
    viewer.add_image(io.read(data / "dsb2018_aa58ba45_crop.tif"), name="stained", rgb=True)
    dock = ReviewDock(viewer)
    dock.model_combo.setCurrentText("Starter model")
    dock.image_combo.setCurrentText("stained")
    assert dock.model_combo.currentText() == "Stained RGB starter"
    dock.score_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=120000)
    labels = np.asarray(viewer.layers["stained U-Net labels"].data)
    assert metrics.average_precision(truth, labels, (0.5,))[0] > 0.5  # stained nuclei found
    assert dock.table.rowCount() == len(np.unique(labels)) - 1  # every object is queued
    dock.image_combo.setCurrentText("nuclei")
    assert dock.model_combo.currentText() == "Starter model"
    dock.model_combo.setCurrentText(FILE)  # a choice of the user's own stays
    dock.image_combo.setCurrentText("stained")
    assert dock.model_combo.currentText() == FILE
