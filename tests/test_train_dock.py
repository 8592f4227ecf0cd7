"""Train dock in a real viewer: a short training with plot, preview, status and model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from qtpy.QtCore import Qt, QTimer

from napari_unet.core.presets import ANCHOR, ANCHOR_MIN_IOU
from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from napari_unet.widgets.train import PREVIEW_SUFFIX, TrainDock

SIDE_PX = 96
TIMEOUT_MS = 180_000  # generous: the test machine's CPU is shared


@pytest.fixture
def viewer_with_cells(make_napari_viewer):
    _session.clear()
    viewer = make_napari_viewer()
    image, labels = touching_cells((SIDE_PX, SIDE_PX), seed=5)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells labels")
    yield viewer
    _session.clear()


def _tiny_dock(viewer, steps: int, validate_every: int = 3) -> TrainDock:
    """A dock set, through its own controls, for a few small CPU steps."""
    dock = TrainDock(viewer)
    dock.model_combo.setCurrentText("new light model")
    dock.steps.setValue(steps)
    dock.tile_size.setValue(92)
    dock.batch_size.setValue(1)
    dock.validate_every.setValue(validate_every)
    dock.device.setCurrentText("cpu")
    return dock


def _click(qtbot, button) -> None:
    assert button.isEnabled(), f"{button.text()} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _line_x(dock: TrainDock, name: str) -> list[float]:
    return list(dock.lines[name].get_xdata())


def _forward(net) -> np.ndarray:
    import torch

    size = net.nearest_input_size(92)
    with torch.no_grad():
        return net(
            torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1))
        ).numpy()


def test_training_updates_plot_preview_status_and_publishes_the_model(
    viewer_with_cells, qtbot, monkeypatch, tmp_path
):
    import napari_unet.core.train as core_train
    from napari_unet.core import checkpoint
    from napari_unet.core.model import UNet

    viewer = viewer_with_cells
    step_threads = set()
    real_loss = core_train.weighted_cross_entropy

    def recording_loss(*args):
        step_threads.add(threading.get_ident())
        return real_loss(*args)

    monkeypatch.setattr(core_train, "weighted_cross_entropy", recording_loss)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)

    dock = _tiny_dock(viewer, steps=6)
    assert dock.image_picker.current_choice == "cells"
    assert dock.labels_picker.current_choice == "cells labels"
    _click(qtbot, dock.start_button)
    assert not dock.start_button.isEnabled() and dock.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    timer.stop()

    # The GUI thread kept running its event loop; the steps ran on another thread.
    assert len(ticks) > 5
    assert step_threads and threading.get_ident() not in step_threads

    # The preview covers the part of the image on screen (here all of it), not only the
    # held-out region, which is the bottom band of the image (20 % of rows).
    preview = viewer.layers["cells" + PREVIEW_SUFFIX]
    assert preview.data.shape == (SIDE_PX, SIDE_PX)
    np.testing.assert_allclose(preview.translate, (0, 0))
    assert preview.data.min() >= 0.0 and preview.data.max() <= 1.0
    rows = round(0.2 * SIDE_PX)
    held_out = _session.current_model()[1]["validation"]["region"]
    assert held_out == [0, SIDE_PX - rows, 0, SIDE_PX, SIDE_PX]

    assert _line_x(dock, "loss") == [1, 2, 3, 4, 5, 6]
    assert _line_x(dock, "iou") == [1, 3, 6]  # after step 1, every 3 steps and the last
    assert _line_x(dock, "val_loss") == [1, 3, 6]
    assert "IoU" in dock.status.text() and "finished after 6 steps" in dock.status.text()

    current = _session.current_model()
    assert current is not None
    net, metadata = current
    assert isinstance(net, UNet) and not net.training
    assert metadata["training"]["steps_done"] == 6
    assert "value_range" in metadata["normalisation"]
    assert dock.start_button.isEnabled() and dock.resume_button.isEnabled()

    # Save writes a model file that loads back to the same outputs.
    written = dock.save(tmp_path / "trained")
    assert written == tmp_path / "trained.safetensors"
    loaded, loaded_meta = checkpoint.load(written)
    np.testing.assert_array_equal(_forward(loaded), _forward(net))
    assert loaded_meta["training"]["steps_done"] == 6

    # Resume continues the same model for more steps; the plot's step axis goes on.
    dock.steps.setValue(3)
    _click(qtbot, dock.resume_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    assert _line_x(dock, "loss") == list(range(1, 10))
    assert _line_x(dock, "iou")[-1] == 9
    assert _session.current_model()[0] is not net
    assert "after 9 steps" in dock.status.text()


def test_stop_mid_run_ends_the_worker_and_publishes_a_usable_model(viewer_with_cells, qtbot):
    dock = _tiny_dock(viewer_with_cells, steps=500, validate_every=2)
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: len(_line_x(dock, "loss")) >= 1, timeout=TIMEOUT_MS)
    _click(qtbot, dock.stop_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)

    current = _session.current_model()
    assert current is not None
    net, metadata = current
    assert metadata["training"]["steps_done"] < 500
    assert metadata["training"]["stopped_early"]
    assert np.isfinite(_forward(net)).all()
    assert "stopped" in dock.status.text()
    assert dock.start_button.isEnabled() and not dock.stop_button.isEnabled()


def test_training_regions_layer_limits_training_and_places_the_preview(viewer_with_cells, qtbot):
    viewer = viewer_with_cells
    box = np.array([[8, 10], [8, 70], [72, 70], [72, 10]], dtype=float)  # rows 8:72, cols 10:70
    viewer.add_shapes([box], shape_type="rectangle", name="training regions")
    dock = _tiny_dock(viewer, steps=2, validate_every=2)
    dock._viewed = lambda: None  # nothing on screen: the preview shows the held-out band
    assert dock.regions_picker.current_choice == "training regions"
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)

    preview = viewer.layers["cells" + PREVIEW_SUFFIX]
    rows = round(0.2 * 64)  # bottom band of the box
    assert preview.data.shape == (rows, 60)
    np.testing.assert_allclose(preview.translate, (72 - rows, 10))


def test_start_without_annotations_reports_it_and_enables_start_again(
    make_napari_viewer, qtbot, monkeypatch
):
    viewer = make_napari_viewer()
    image, _ = touching_cells((SIDE_PX, SIDE_PX), seed=5)
    viewer.add_image(image, name="cells")
    viewer.add_labels(np.zeros((SIDE_PX, SIDE_PX), np.uint16), name="empty")
    errors = []
    monkeypatch.setattr("napari_unet.widgets._jobs.report_error", errors.append)
    dock = _tiny_dock(viewer, steps=2)
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    assert len(errors) == 1 and "nothing is annotated" in str(errors[0])
    assert dock.start_button.isEnabled() and not dock.stop_button.isEnabled()
    assert "cells" + PREVIEW_SUFFIX not in viewer.layers


def test_mismatched_shapes_and_missing_model_file_are_refused(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="small")
    viewer.add_labels(np.ones((80, 80), np.uint16), name="big labels")
    errors = []
    monkeypatch.setattr("napari_unet.widgets.train.report_error", errors.append)
    dock = TrainDock(viewer)
    _click(qtbot, dock.start_button)
    assert "'big labels' has shape (80, 80) but image 'small' has (64, 64)" in str(errors[-1])
    assert not dock.jobs.busy and dock.start_button.isEnabled()

    viewer.layers["big labels"].data = np.ones((64, 64), np.uint16)
    dock.model_combo.setCurrentText("model file")
    dock.model_file.setText(str(tmp_path / "nowhere.safetensors"))
    _click(qtbot, dock.start_button)
    assert "nowhere.safetensors" in str(errors[-1]) and "does not exist" in str(errors[-1])
    assert not dock.resume_button.isEnabled() and not dock.save_button.isEnabled()


def test_stack_preview_sits_on_the_held_out_slice(make_napari_viewer, qtbot, cells_3d):
    _session.clear()
    viewer = make_napari_viewer()
    image, truth = cells_3d
    sparse = np.zeros_like(truth)
    sparse[[1, 3, 4]] = truth[[1, 3, 4]]  # three annotated slices: the last one is held out
    viewer.add_image(image, name="stack")
    viewer.add_labels(sparse, name="stack labels")
    dock = _tiny_dock(viewer, steps=1)
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)

    preview = viewer.layers["stack" + PREVIEW_SUFFIX]
    assert preview.data.shape == (1, *image.shape[1:])
    np.testing.assert_allclose(preview.translate, (4, 0, 0))
    assert _session.current_model()[1]["training"]["annotated_slices"] == [1, 3, 4]
    _session.clear()


def test_starter_and_model_file_choices_fine_tune_that_model(viewer_with_cells, qtbot, tmp_path):
    from napari_unet.core import checkpoint
    from napari_unet.models import starter_model_path

    dock = _tiny_dock(viewer_with_cells, steps=1)
    dock.model_combo.setCurrentText("starter model")
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    net, metadata = _session.current_model()
    assert metadata["training"]["from"] == starter_model_path().name
    starter, _ = checkpoint.load(starter_model_path())
    assert net.config == starter.config
    # the anchor at "auto": on, unless the starter did not find these cells before training
    fits = metadata["training"]["start_iou"] >= ANCHOR_MIN_IOU
    assert metadata["training"]["anchor"] == (ANCHOR if fits else 0.0)

    saved = dock.save(tmp_path / "tuned.safetensors")
    dock.model_combo.setCurrentText("model file")
    dock.model_file.setText(str(saved))
    dock.anchor.setValue(5.0)  # the user's own pull toward the saved model
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    training = _session.current_model()[1]["training"]
    assert training["from"] == "tuned.safetensors" and training["anchor"] == 5.0


def _in_channels(path) -> int:
    from napari_unet.core import checkpoint

    return checkpoint.read_metadata(path)["architecture"]["in_channels"]


def test_the_default_choice_fine_tunes_the_starter_that_finds_the_cells(viewer_with_cells, qtbot):
    from napari_unet.models import shipped_models

    dock = _tiny_dock(viewer_with_cells, steps=1)
    dock.model_combo.setCurrentText("best starter (auto)")
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    training = _session.current_model()[1]["training"]
    scores = training["start_scores"]
    gray = {m.file for m in shipped_models() if _in_channels(m.path) == 1}
    assert set(scores) == gray and len(scores) == 2  # the colour starter sits out on gray
    assert training["from"] == max(scores, key=scores.get)  # synthetic nuclei: the nuclei one
    assert f"Started from {training['from']}" in dock.status.text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_with_a_gpu_the_paper_model_trains_on_cuda(viewer_with_cells, qtbot):
    dock = TrainDock(viewer_with_cells)
    assert dock.model_combo.currentText() == "best starter (auto)"  # the default, GPU or not
    dock.model_combo.setCurrentText("new paper-size model")
    dock.steps.setValue(2)
    dock.tile_size.setValue(188)
    dock.validate_every.setValue(2)
    dock.device.setCurrentText("cuda")
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    net, metadata = _session.current_model()
    assert metadata["training"]["device"].startswith("cuda")
    assert metadata["architecture"]["base_channels"] == 64
    assert next(net.parameters()).device.type == "cpu"


def test_cell_size_is_shown_and_large_cells_are_shrunk(make_napari_viewer, qtbot):
    from skimage.draw import disk

    _session.clear()
    viewer = make_napari_viewer()
    labels = np.zeros((256, 256), np.uint16)
    for k, (y, x) in enumerate(((64, 64), (64, 192), (192, 64), (192, 192)), start=1):
        labels[disk((y, x), 45, shape=labels.shape)] = k
    viewer.add_image((labels > 0).astype(np.float32), name="big")
    viewer.add_labels(labels, name="big labels")
    dock = _tiny_dock(viewer, steps=2, validate_every=1)
    dock.tile_size.setValue(60)
    dock.start()
    import re

    diameter = float(re.search(r"≈ ([\d.]+) px", dock.size_label.text()).group(1))
    assert diameter == pytest.approx(90, abs=2)  # disks of radius 45
    assert f"shrunk ×{32 / diameter:.2f}" in dock.size_label.text()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    meta = _session.current_model()[1]
    assert meta["normalisation"]["scale"] == pytest.approx(dock._train_scale)
    assert dock._train_scale == pytest.approx(32 / meta["normalisation"]["diameter_px"])
    preview = viewer.layers["big" + PREVIEW_SUFFIX]
    assert preview.scale[-1] == pytest.approx(1 / dock._train_scale)
    _session.clear()


def test_more_pairs_of_other_sizes_train_together(viewer_with_cells, qtbot):
    image, labels = touching_cells((72, 120), seed=8)
    viewer_with_cells.add_image(image, name="second")
    viewer_with_cells.add_labels(labels, name="second labels")
    dock = _tiny_dock(viewer_with_cells, steps=2, validate_every=1)
    dock.image_picker.value = viewer_with_cells.layers["second"]
    dock.labels_picker.value = viewer_with_cells.layers["second labels"]
    _click(qtbot, dock.add_pair_button)
    _click(qtbot, dock.add_pair_button)  # twice: listed once
    assert dock.pairs_list.count() == 1
    dock.image_picker.value = viewer_with_cells.layers["cells"]
    dock.labels_picker.value = viewer_with_cells.layers["cells labels"]
    qtbot.waitUntil(lambda: "With 1 more pair," in dock.use_label.text(), timeout=TIMEOUT_MS)
    _click(qtbot, dock.start_button)
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=TIMEOUT_MS)
    meta = _session.current_model()[1]
    assert meta["training"]["annotated_slices"] == [0, 1]  # both pairs
    cells = (
        len(np.unique(labels))
        - 1
        + len(np.unique(viewer_with_cells.layers["cells labels"].data))
        - 1
    )
    assert dock.use_label.text().startswith(f"Trained on: {cells} cells,")
    assert meta["training"]["annotation"].startswith(f"{cells} cells,")
    assert meta["normalisation"]["per_image"] is True
    viewer_with_cells.layers.remove("second labels")
    _click(qtbot, dock.start_button)  # a listed layer is gone: one clear message
    assert not dock.jobs.busy and dock.start_button.isEnabled()
    _session.clear()


def test_use_line_announces_the_cell_hint_only_when_a_model_is_fine_tuned():
    from napari_unet.widgets.train import use_summary

    image, truth = touching_cells((128, 128), seed=5)
    painted = np.where(np.isin(truth, np.unique(truth)[1:4]), truth, 0)  # three cells
    tuned = use_summary(image, painted, None, None, "auto", from_model=True)
    new = use_summary(image, painted, None, None, "auto", from_model=False)
    assert tuned.startswith("Will train on: 3 cells") and "sparse" in tuned
    assert "background band too" in tuned and "background band too" not in new
    whole = use_summary(image, truth, None, None, "auto", from_model=True)
    assert "sparse" not in whole and "background band too" not in whole  # nothing to spare
