"""A user opens an image, creates a labels layer, paints cells and moves between slices."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.widgets.annotate import REGIONS_LAYER, AnnotateDock


@pytest.fixture
def viewer_with_image(make_napari_viewer, cells_2d):
    viewer = make_napari_viewer()
    viewer.add_image(cells_2d[0], name="nuclei")
    return viewer


def test_create_labels_layer_matches_image_and_selects_new_cell(viewer_with_image, qtbot):
    viewer = viewer_with_image
    dock = AnnotateDock(viewer)
    qtbot.addWidget(dock)
    layer = dock.create_labels()
    assert layer.name == "nuclei annotations"
    assert layer.data.shape == (256, 256)
    assert not layer.data.any()
    assert layer.selected_label == 1
    assert layer.mode == "paint"
    assert dock.labels_picker.current_choice == "nuclei annotations"
    assert "no cells annotated" in dock.status.text()


def test_new_cell_takes_the_next_free_id_and_brush_size(viewer_with_image, qtbot):
    viewer = viewer_with_image
    dock = AnnotateDock(viewer)
    qtbot.addWidget(dock)
    layer = dock.create_labels()
    layer.data[10:20, 10:20] = 1  # the user paints two cells
    layer.data[40:50, 10:20] = 7
    layer.refresh()
    dock.brush_size.setValue(4)
    dock.new_cell()
    assert layer.selected_label == 8
    assert layer.brush_size == 4
    dock.refresh_status()
    assert dock.status.text() == "2 cells annotated"


def test_existing_labels_layer_is_attached_never_overwritten(viewer_with_image, qtbot):
    viewer = viewer_with_image
    painted = np.zeros((256, 256), dtype=np.uint16)
    painted[5:9, 5:9] = 3
    viewer.add_labels(painted.copy(), name="nuclei annotations")
    dock = AnnotateDock(viewer)
    qtbot.addWidget(dock)
    dock.image_picker.value = viewer.layers["nuclei"]
    layer = dock.create_labels()
    assert len([ly for ly in viewer.layers if ly.name.startswith("nuclei annotations")]) == 1
    np.testing.assert_array_equal(layer.data, painted)
    assert "nothing was overwritten" in dock.status.text()


def test_mismatched_labels_shape_is_refused_with_a_message(viewer_with_image, qtbot, monkeypatch):
    viewer = viewer_with_image
    viewer.add_labels(np.zeros((100, 120), dtype=np.uint8), name="other")
    dock = AnnotateDock(viewer)
    qtbot.addWidget(dock)
    errors = []
    monkeypatch.setattr("napari_unet.widgets.annotate.report_error", errors.append)
    dock.image_picker.value = viewer.layers["nuclei"]
    dock.labels_picker.value = viewer.layers["other"]
    assert "has shape (100, 120) but image 'nuclei' has (256, 256)" in dock.status.text()
    assert not dock.new_cell_button.isEnabled()
    dock.new_cell()
    assert len(errors) == 1 and "same shape" in str(errors[0])
    assert viewer.layers["other"].selected_label == 1  # untouched


def test_stack_counts_annotated_slices_and_jumps_between_them(make_napari_viewer, qtbot, cells_3d):
    viewer = make_napari_viewer()
    image, truth = cells_3d
    viewer.add_image(image, name="stack")
    dock = AnnotateDock(viewer)
    qtbot.addWidget(dock)
    layer = dock.create_labels()
    assert layer.data.shape == image.shape
    layer.data[1] = truth[1]
    layer.data[4] = truth[4]
    layer.refresh()
    expected_cells = len(np.setdiff1d(np.union1d(np.unique(truth[1]), np.unique(truth[4])), [0]))
    qtbot.waitUntil(lambda: "of 6 slices" in dock.status.text(), timeout=3000)
    dock.refresh_status()
    assert dock.status.text() == f"{expected_cells} cells on 2 of 6 slices (annotated: 1, 4)"
    viewer.dims.set_current_step(0, 0)
    assert dock.jump(+1) == 1
    assert viewer.dims.current_step[0] == 1
    assert dock.jump(+1) == 4
    assert dock.jump(+1) is None
    assert viewer.dims.current_step[0] == 4
    assert dock.jump(-1) == 1


def test_training_regions_layer_is_a_rectangle_shapes_layer(viewer_with_image, qtbot):
    viewer = viewer_with_image
    dock = AnnotateDock(viewer)
    qtbot.addWidget(dock)
    layer = dock.add_regions_layer()
    assert layer.name == REGIONS_LAYER
    assert layer.mode == "add_rectangle"
    assert dock.add_regions_layer() is layer  # asking again reuses it


def test_sample_data_opens_in_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-unet", "cells2d")
    assert [ly.name for ly in layers] == ["cells 2D", "cells 2D ground truth"]
    assert viewer.layers["cells 2D"].data.shape == (512, 512)
