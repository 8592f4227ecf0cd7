"""Docks as a newcomer meets them: autosave and restore, scaled layers, Next error,
and a window that fits a 1000-px screen with several docks open."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.core import project, weights
from napari_unet.widgets._autosave import DELAY_MS
from napari_unet.widgets._layers import plane_index
from napari_unet.widgets.annotate import AnnotateDock
from napari_unet.widgets.augmentation import AugmentationDock
from napari_unet.widgets.evaluate import HIGHLIGHT, EvaluateDock
from napari_unet.widgets.predict import PredictDock
from napari_unet.widgets.train import TrainDock
from napari_unet.widgets.weight_map import WeightMapDock

TIMEOUT_MS = 20_000


def test_annotations_are_autosaved_after_each_stroke_and_restored(
    make_napari_viewer, qtbot, tmp_path, cells_2d
):
    image, _ = cells_2d
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, image)
    folder = project.folder_for(path)

    viewer = make_napari_viewer()
    viewer.open(str(path))
    dock = AnnotateDock(viewer)
    assert str(folder) in dock.project_label.text()
    labels = dock.create_labels()
    labels.paint((40, 40), 1)
    qtbot.waitUntil(
        lambda: project.saved_labels(folder) == ["cells annotations"], timeout=TIMEOUT_MS
    )
    labels.paint((100, 100), 2)  # a second stroke is saved too
    qtbot.waitUntil(
        lambda: 2 in project.load_labels(folder)["cells annotations"], timeout=TIMEOUT_MS
    )
    painted = np.array(labels.data)

    # A new session: reopening the image offers the annotations back.
    viewer.layers.clear()
    viewer.open(str(path))
    assert dock.restore_button.isEnabled()
    restored = dock.restore()
    assert [layer.name for layer in restored] == ["cells annotations"]
    np.testing.assert_array_equal(viewer.layers["cells annotations"].data, painted)
    assert dock.labels_picker.value is viewer.layers["cells annotations"]
    assert not dock.restore_button.isEnabled()  # nothing more to restore
    assert dock.restore() == []  # an open layer is never overwritten


def test_an_image_without_a_file_autosaves_into_a_chosen_folder(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="sample")
    dock = AnnotateDock(viewer)
    assert "Autosave off" in dock.project_label.text()
    labels = dock.create_labels()
    dock.choose_folder(tmp_path / "work")
    labels.paint((10, 10), 1)
    qtbot.wait(DELAY_MS)
    qtbot.waitUntil(lambda: project.saved_labels(tmp_path / "work") != [], timeout=TIMEOUT_MS)
    assert project.load_labels(tmp_path / "work")["sample annotations"][10, 10] == 1


def _scaled_stack(viewer, cells_3d, kind: str):
    """A (6, 128, 128) stack with z-spacing 2.5 and an offset, so index != world."""
    image, labels = cells_3d
    placement = {"scale": (2.5, 0.5, 0.5), "translate": (10.0, 3.0, -4.0)}
    layers = {}
    if kind in ("image", "both"):
        layers["image"] = viewer.add_image(image, name="img", **placement)
    if kind in ("labels", "both"):
        layers["labels"] = viewer.add_labels(labels, name="lab", **placement)
    viewer.dims.set_point(0, 10.0 + 2.5 * 4)  # slice 4 on screen
    return image, labels, layers


def test_weight_map_reads_the_slice_on_screen_of_a_scaled_layer(
    make_napari_viewer, qtbot, cells_3d
):
    viewer = make_napari_viewer()
    _, labels, _ = _scaled_stack(viewer, cells_3d, "labels")
    dock = WeightMapDock(viewer)
    qtbot.waitUntil(lambda: "lab weight map" in viewer.layers, timeout=TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: not dock.jobs.busy and not dock._debounce.isActive(), timeout=TIMEOUT_MS
    )
    shown = viewer.layers["lab weight map"]
    np.testing.assert_allclose(shown.data[4], weights.weight_map(labels[4]), atol=1e-5)
    assert not shown.data[3].any()
    np.testing.assert_allclose(shown.scale, (2.5, 0.5, 0.5))


def test_augmentation_and_annotate_use_the_slice_on_screen_of_a_scaled_layer(
    make_napari_viewer, qtbot, cells_3d
):
    viewer = make_napari_viewer()
    image, labels, _ = _scaled_stack(viewer, cells_3d, "both")
    dock = AugmentationDock(viewer)
    dock.elastic.setChecked(False)
    for box in (dock.flips, dock.rot90):
        box.setChecked(False)
    for slider in (
        dock.rotate,
        dock.zoom,
        dock.gain,
        dock.offset,
        dock.gamma,
        dock.noise,
        dock.blur,
    ):
        slider.setValue(0.0)
    dock.n_samples.setValue(1)
    dock.preview()
    qtbot.waitUntil(lambda: "augmentation gallery labels" in viewer.layers, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(viewer.layers["augmentation gallery labels"].data[0], labels[4])

    annotate = AnnotateDock(viewer)
    annotate.labels_picker.value = viewer.layers["lab"]
    annotated = sorted({int(z) for z in np.flatnonzero(labels.reshape(6, -1).any(axis=1))})
    later = [z for z in annotated if z > 4]
    if later:
        assert annotate.jump(+1) == later[0]
        assert plane_index(viewer, viewer.layers["lab"]) == (later[0],)


def test_evaluate_current_slice_and_next_error_on_a_scaled_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gt = np.zeros((3, 60, 80), np.uint16)
    gt[2, 30:40, 50:60] = 1  # only slice 2 has a cell; the prediction misses it
    placement = {"scale": (4.0, 2.0, 2.0), "translate": (1.0, 5.0, 7.0)}
    viewer.add_labels(gt, name="ground truth", **placement)
    viewer.add_labels(np.zeros_like(gt), name="prediction", **placement)
    viewer.dims.set_point(0, 1.0 + 4.0 * 2)
    dock = EvaluateDock(viewer)
    dock.scope_combo.setCurrentText("Current slice")
    dock.evaluate_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.table.rowCount() > 0, timeout=TIMEOUT_MS)
    values = {
        dock.table.item(r, 0).text(): dock.table.item(r, 1).text()
        for r in range(dock.table.rowCount())
    }
    assert values["fn"] == "1"

    viewer.dims.set_point(0, 1.0)  # look elsewhere first
    zoom_before = viewer.camera.zoom
    dock.next_error()
    # Centred on the object (rows 30..39, columns 50..59 of slice 2) in world units ...
    assert tuple(viewer.camera.center[-2:]) == pytest.approx((5 + 2 * 34.5, 7 + 2 * 54.5))
    assert plane_index(viewer, viewer.layers["prediction"]) == (2,)
    # ... zoomed in so the 20-world-unit object fills a quarter of the view ...
    assert viewer.camera.zoom > zoom_before
    assert viewer.camera.zoom == pytest.approx(0.25 * min(viewer.canvas.size) / 20)
    # ... and framed: a rectangle around exactly that object, its label selected.
    frame = viewer.layers[HIGHLIGHT].data[0]
    np.testing.assert_allclose(frame[:, -2:].min(axis=0), (5 + 2 * 29.5, 7 + 2 * 49.5))
    np.testing.assert_allclose(frame[:, -2:].max(axis=0), (5 + 2 * 39.5, 7 + 2 * 59.5))
    assert viewer.layers.selection.active.name == "false negatives"
    assert viewer.layers["false negatives"].selected_label == 1
    assert HIGHLIGHT not in {x.name for x in dock.truth_picker.choices}


def test_three_docks_open_fit_a_1000_px_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    for dock_class in (TrainDock, PredictDock, AugmentationDock):
        viewer.window.add_dock_widget(dock_class(viewer), name=dock_class.__name__)
    window = viewer.window._qt_window
    qtbot.wait(200)
    assert window.minimumSizeHint().height() <= 1000
    assert window.height() <= 1000


def test_the_demo_opens_all_six_docks_as_readable_tabs(make_napari_viewer, qtbot):
    from npe2 import PluginManifest
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabWidget

    from napari_unet.demo import arrange
    from napari_unet.widgets._dock import Dock

    viewer = make_napari_viewer()
    names = [
        w.display_name
        for w in PluginManifest.from_distribution("napari-unet").contributions.widgets
    ]
    opened = [
        viewer.window.add_plugin_dock_widget("napari-unet", name, tabify=True) for name in names
    ]
    assert all(isinstance(widget, Dock) for _, widget in opened)
    arrange([dock_widget for dock_widget, _ in opened])
    assert [dock_widget.windowTitle() for dock_widget, _ in opened] == names
    window = opened[0][0].parentWidget()
    east = QTabWidget.TabPosition.East
    assert window.tabPosition(Qt.DockWidgetArea.RightDockWidgetArea) == east
