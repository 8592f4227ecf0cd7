"""Evaluate dock in a real viewer: table, AP plot, error layers, stepping through errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.widgets.evaluate import CURRENT, EvaluateDock


def squares(shape, boxes) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        labels[y0:y1, x0:x1] = k + 1
    return labels


def table_values(dock) -> dict[str, str]:
    return {
        dock.table.item(row, 0).text(): dock.table.item(row, 1).text()
        for row in range(dock.table.rowCount())
    }


def run(dock, qtbot) -> None:
    dock.evaluate_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.table.rowCount() > 0, timeout=10000)


def test_missing_and_extra_cells_fill_table_and_error_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    # Ground truth with 3 cells; the prediction misses cell 3 and adds one elsewhere.
    gt = squares((60, 60), [(5, 15, 5, 15), (20, 30, 20, 30), (40, 50, 40, 50)])
    pred = squares((60, 60), [(5, 15, 5, 15), (20, 30, 21, 31), (40, 50, 5, 15)])
    viewer.add_labels(gt, name="ground truth")
    viewer.add_labels(pred, name="prediction")
    dock = EvaluateDock(viewer)
    dock.prediction_picker.value = viewer.layers["prediction"]
    dock.truth_picker.value = viewer.layers["ground truth"]
    run(dock, qtbot)

    values = table_values(dock)
    assert (values["tp"], values["fp"], values["fn"]) == ("2", "1", "1")
    assert float(values["ap@0.50"]) == pytest.approx(2 / 4, abs=1e-4)
    assert float(values["precision"]) == pytest.approx(2 / 3, abs=1e-4)
    # Only the offending objects, with their own ids.
    assert np.array_equal(viewer.layers["false negatives"].data, np.where(gt == 3, 3, 0))
    assert np.array_equal(viewer.layers["false positives"].data, np.where(pred == 3, 3, 0))
    assert not viewer.layers["splits"].data.any() and not viewer.layers["merges"].data.any()
    # The user's layers are untouched, the AP curve is drawn.
    assert np.array_equal(viewer.layers["prediction"].data, pred)
    ax = dock.figure.axes[0]
    assert len(ax.lines[0].get_xdata()) == 10 and ax.lines[0].get_ydata()[0] == 0.5

    dock.next_error()
    assert tuple(viewer.camera.center[-2:]) == pytest.approx((44.5, 44.5))
    assert viewer.layers.selection.active.name == "false negatives"
    dock.next_error()
    assert tuple(viewer.camera.center[-2:]) == pytest.approx((44.5, 9.5))
    assert "2 of 2" in dock.status.text()


def test_split_and_merge_layers_and_current_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gt = np.zeros((3, 40, 60), dtype=np.uint16)
    gt[1] = squares((40, 60), [(5, 15, 5, 15), (5, 15, 15, 25), (25, 35, 30, 50)])
    pred = np.zeros_like(gt)
    pred[1, 5:15, 5:25] = 7  # two touching cells merged
    pred[1, 25:35, 30:40] = 8  # one cell split in two
    pred[1, 25:35, 40:50] = 9
    pred[2, 5:15, 5:15] = 5  # an object on an unannotated slice
    viewer.add_labels(gt, name="ground truth")
    viewer.add_labels(pred, name="prediction")
    dock = EvaluateDock(viewer)
    dock.prediction_picker.value = viewer.layers["prediction"]
    dock.truth_picker.value = viewer.layers["ground truth"]
    run(dock, qtbot)

    values = table_values(dock)
    assert (values["splits"], values["merges"], values["slices"]) == ("1", "1", "1")
    assert np.array_equal(viewer.layers["merges"].data, np.where(pred == 7, 7, 0))
    split = viewer.layers["splits"].data
    assert set(np.unique(split)) == {0, 8, 9} and split.shape == gt.shape

    # "Current slice" on an empty slice: the extra object there is one false positive.
    viewer.dims.set_point(0, 2)
    dock.scope_combo.setCurrentText(CURRENT)
    dock.table.setRowCount(0)
    run(dock, qtbot)
    values = table_values(dock)
    assert (values["slices"], values["fp"], values["n_gt"]) == ("1", "1", "0")
    assert np.array_equal(viewer.layers["false positives"].data, np.where(pred == 5, 5, 0))


def test_shape_mismatch_is_reported_not_raised(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((20, 20), np.uint8), name="ground truth")
    viewer.add_labels(np.zeros((20, 30), np.uint8), name="prediction")
    dock = EvaluateDock(viewer)
    dock.prediction_picker.value = viewer.layers["prediction"]
    dock.truth_picker.value = viewer.layers["ground truth"]
    dock.evaluate_button.click()
    assert "(20, 30)" in dock.status.text() and not dock.jobs.busy
    assert "false positives" not in viewer.layers
