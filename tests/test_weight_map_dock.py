"""Weight map dock in a real viewer: pick labels, move sliders, see the layers follow."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core import weights
from napari_unet.widgets.weight_map import WeightMapDock

TIMEOUT_MS = 15000


@pytest.fixture
def viewer_with_cells(make_napari_viewer, cells_2d):
    image, labels = cells_2d
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="nuclei")
    return viewer


def _wait_idle(dock, qtbot):
    qtbot.waitUntil(
        lambda: not dock.jobs.busy and not dock._debounce.isActive(), timeout=TIMEOUT_MS
    )


def test_moving_w0_updates_the_weight_map(viewer_with_cells, qtbot, cells_2d):
    viewer = viewer_with_cells
    _, labels = cells_2d
    dock = WeightMapDock(viewer)
    viewer.window.add_dock_widget(dock)
    assert dock.labels_picker.current_choice == "nuclei"
    qtbot.waitUntil(lambda: "nuclei weight map" in viewer.layers, timeout=TIMEOUT_MS)
    _wait_idle(dock, qtbot)
    for name in ("nuclei separated target", "nuclei d1", "nuclei d2"):
        assert name in viewer.layers
    separated = weights.separate_touching(labels)
    np.testing.assert_array_equal(viewer.layers["nuclei separated target"].data, separated)
    gaps = (labels > 0) & (separated == 0)
    before = viewer.layers["nuclei weight map"].data.copy()
    assert before[gaps].mean() > 5 * before[separated > 0].mean()  # the gaps stand out

    dock.w0.setValue(30.0)
    qtbot.waitUntil(
        lambda: viewer.layers["nuclei weight map"].data.max() > before.max() + 10,
        timeout=TIMEOUT_MS,
    )
    _wait_idle(dock, qtbot)
    after = viewer.layers["nuclei weight map"].data
    expected = weights.weight_map(labels, w0=30.0, sigma=dock.sigma.value())
    np.testing.assert_allclose(after, expected, atol=1e-5)
    # The contrast the user saw is kept, but the range grows to the new largest weight.
    weight_layer = viewer.layers["nuclei weight map"]
    assert weight_layer.contrast_limits[1] == pytest.approx(before.max(), rel=1e-4)
    assert weight_layer.contrast_limits_range[1] >= after.max() - 1e-4
    np.testing.assert_array_equal(viewer.layers["nuclei"].data, labels)  # user data untouched


def test_balance_off_and_stale_results_dropped(viewer_with_cells, qtbot, cells_2d):
    viewer = viewer_with_cells
    _, labels = cells_2d
    dock = WeightMapDock(viewer)
    qtbot.waitUntil(lambda: "nuclei weight map" in viewer.layers, timeout=TIMEOUT_MS)
    # A burst of changes, as a slider drag gives: only the last one must be shown.
    for value in (2.0, 4.0, 6.0, 8.0):
        dock.sigma.setValue(value)
        qtbot.wait(20)
    dock.balance.setChecked(False)
    dock.w0.setValue(12.0)
    _wait_idle(dock, qtbot)
    qtbot.wait(100)
    expected = weights.weight_map(labels, w0=12.0, sigma=8.0, balance=False)
    np.testing.assert_allclose(viewer.layers["nuclei weight map"].data, expected, atol=1e-5)


def test_stack_current_slice_then_all(make_napari_viewer, qtbot, cells_3d):
    _, labels = cells_3d
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="stack")
    viewer.dims.set_current_step(0, 2)
    dock = WeightMapDock(viewer)
    qtbot.waitUntil(lambda: "stack weight map" in viewer.layers, timeout=TIMEOUT_MS)
    _wait_idle(dock, qtbot)
    shown = viewer.layers["stack weight map"].data
    assert shown.shape == labels.shape
    np.testing.assert_allclose(shown[2], weights.weight_map(labels[2]), atol=1e-5)
    assert not shown[3].any()  # only the current slice was computed

    dock.all_slices.setChecked(True)
    qtbot.waitUntil(lambda: viewer.layers["stack weight map"].data[3].any(), timeout=TIMEOUT_MS)
    _wait_idle(dock, qtbot)
    np.testing.assert_allclose(
        viewer.layers["stack weight map"].data, weights.weight_map(labels), atol=1e-5
    )


def test_layer_choices_follow_the_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = WeightMapDock(viewer)
    assert dock.labels_picker.choices == ()
    labels = np.zeros((40, 40), np.uint16)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2
    viewer.add_labels(labels, name="painted")
    assert dock.labels_picker.current_choice == "painted"
    qtbot.waitUntil(lambda: "painted weight map" in viewer.layers, timeout=TIMEOUT_MS)
    _wait_idle(dock, qtbot)
    # The dock's own labels output is not offered as an input.
    assert [x.name for x in dock.labels_picker.choices] == ["painted"]
    # Painting a new cell updates the preview.
    viewer.layers["painted"].data = np.where(np.arange(40)[None, :] > 30, 3, labels).astype(
        np.uint16
    )
    qtbot.waitUntil(
        lambda: 3 in np.unique(viewer.layers["painted separated target"].data),
        timeout=TIMEOUT_MS,
    )
    viewer.layers.remove("painted")
    assert dock.labels_picker.choices == ()
