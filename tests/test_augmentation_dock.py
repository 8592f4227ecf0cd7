"""A user picks an image and its labels, presses Preview and browses augmented samples."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.widgets.augmentation import (
    GALLERY,
    GALLERY_LABELS,
    GRID_LINES,
    AugmentationDock,
)


@pytest.fixture
def viewer_with_cells(make_napari_viewer, cells_2d):
    viewer = make_napari_viewer()
    image, labels = cells_2d
    viewer.add_image(image[:96, :96].copy(), name="nuclei")
    viewer.add_labels(labels[:96, :96].copy(), name="cells")
    return viewer


def _preview(dock, qtbot, button=None) -> None:
    with qtbot.waitSignal(dock.status_changed, timeout=20000):
        (button or dock.preview_button).click()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=20000)


def test_preview_makes_a_gallery_of_n_samples_with_grid(viewer_with_cells, qtbot):
    viewer = viewer_with_cells
    before_image = viewer.layers["nuclei"].data.copy()
    before_labels = viewer.layers["cells"].data.copy()
    dock = AugmentationDock(viewer)
    qtbot.addWidget(dock)
    assert dock.labels_picker.current_choice == "cells"
    dock.n_samples.setValue(5)
    _preview(dock, qtbot)

    images = viewer.layers[GALLERY].data
    labels = viewer.layers[GALLERY_LABELS].data
    assert images.shape == labels.shape == (5, 96, 96)
    assert set(np.unique(labels)) <= set(np.unique(before_labels))
    # Each sample is a different augmentation of the same slice.
    assert len({images[i].tobytes() for i in range(5)}) == 5
    grid = viewer.layers[GRID_LINES]
    assert type(grid).__name__ == "Shapes" and set(grid.shape_type) == {"path"}
    assert {int(path[0, 0]) for path in grid.data} == set(range(5))
    # Shown beside the original, never written into the user's layers.
    assert viewer.layers[GALLERY].translate[-1] > 96
    np.testing.assert_array_equal(viewer.layers["nuclei"].data, before_image)
    np.testing.assert_array_equal(viewer.layers["cells"].data, before_labels)
    assert "5 samples" in dock.status.text()


@pytest.mark.slow
def test_reseed_draws_new_samples_and_switching_off_gives_the_original(viewer_with_cells, qtbot):
    viewer = viewer_with_cells
    dock = AugmentationDock(viewer)
    qtbot.addWidget(dock)
    dock.n_samples.setValue(2)
    _preview(dock, qtbot)
    first = viewer.layers[GALLERY].data.copy()
    _preview(dock, qtbot, dock.reseed_button)
    assert not np.array_equal(viewer.layers[GALLERY].data, first)

    for box in (dock.elastic, dock.flips, dock.rot90):
        box.setChecked(False)
    for slider in (dock.rotate, dock.zoom, dock.gain, dock.offset, dock.gamma):
        slider.setValue(0.0)
    dock.noise.setValue(0.0)
    dock.blur.setValue(0.0)
    _preview(dock, qtbot)
    original = viewer.layers["cells"].data
    np.testing.assert_array_equal(viewer.layers[GALLERY_LABELS].data[1], original)
    # A regular grid: every line is straight.
    for path in viewer.layers[GRID_LINES].data:
        assert np.ptp(path[:, 1]) < 1e-6 or np.ptp(path[:, 2]) < 1e-6


def test_stack_uses_the_current_slice(make_napari_viewer, qtbot, cells_3d):
    viewer = make_napari_viewer()
    image, labels = cells_3d
    viewer.add_image(image, name="stack")
    viewer.add_labels(labels, name="stack cells")
    viewer.dims.set_current_step(0, 4)
    dock = AugmentationDock(viewer)
    qtbot.addWidget(dock)
    dock.n_samples.setValue(2)
    dock.elastic.setChecked(False)
    dock.flips.setChecked(False)
    dock.rot90.setChecked(False)
    dock.rotate.setValue(0.0)
    dock.zoom.setValue(0.0)
    _preview(dock, qtbot)
    gallery_labels = viewer.layers[GALLERY_LABELS].data
    assert gallery_labels.shape == (2, *labels.shape[1:])
    np.testing.assert_array_equal(gallery_labels[0], labels[4])


def test_without_labels_only_images_and_mismatch_is_reported(viewer_with_cells, qtbot):
    viewer = viewer_with_cells
    dock = AugmentationDock(viewer)
    qtbot.addWidget(dock)
    dock.labels_picker.value = None
    dock.n_samples.setValue(3)
    _preview(dock, qtbot)
    assert viewer.layers[GALLERY].data.shape == (3, 96, 96)
    assert GALLERY_LABELS not in viewer.layers

    viewer.add_labels(np.zeros((50, 50), np.uint8), name="wrong size")
    dock.labels_picker.value = viewer.layers["wrong size"]
    _preview(dock, qtbot)
    assert "same shape" in dock.status.text()


def test_an_rgb_image_gives_a_colour_gallery(make_napari_viewer, qtbot, cells_2d):
    """Stained RGB images train in colour: the gallery shows them in colour (it once
    asked for a grayscale image), then a gray image gets a gray gallery back."""
    viewer = make_napari_viewer()
    image, labels = cells_2d
    gray = image[:96, :96]
    rgb = (np.stack([gray, 0.6 * gray, gray.max() - gray], -1) / gray.max() * 255).astype(np.uint8)
    viewer.add_image(rgb, name="stained", rgb=True)
    viewer.add_labels(labels[:96, :96].copy(), name="cells")
    dock = AugmentationDock(viewer)
    qtbot.addWidget(dock)
    dock.image_picker.value = viewer.layers["stained"]
    dock.n_samples.setValue(3)
    _preview(dock, qtbot)
    shown = viewer.layers[GALLERY]
    assert shown.rgb and shown.data.shape == (3, 96, 96, 3)
    assert shown.data.min() >= 0.0 and shown.data.max() <= 1.0
    assert viewer.layers[GALLERY_LABELS].data.shape == (3, 96, 96)
    assert "3 samples" in dock.status.text()
    viewer.add_image(gray.copy(), name="gray")
    dock.image_picker.value = viewer.layers["gray"]
    _preview(dock, qtbot)
    assert not viewer.layers[GALLERY].rgb and viewer.layers[GALLERY].data.shape == (3, 96, 96)
