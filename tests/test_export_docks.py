"""The docks and bioimage.io packages: the Predict dock predicts with one, the Train dock
exports its model as one (Export…) and fine-tunes one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint, export
from napari_unet.core.events import run_to_end
from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from napari_unet.widgets.predict import FILE, PredictDock
from napari_unet.widgets.train import TrainDock
from test_predict import METADATA, _same_partition, _squares

pytest.importorskip("bioimageio.core")
TIMEOUT_MS = 400_000  # the export's bioimageio test run is slow on a shared CPU


@pytest.fixture(autouse=True)
def clean_session():
    _session.clear()
    yield
    _session.clear()


def test_predict_dock_predicts_with_a_package(make_napari_viewer, qtbot, tmp_path):
    package = tmp_path / "threshold.zip"
    run_to_end(export.export_iter(threshold_unet(), METADATA, package, onnx=False, check=False))
    viewer = make_napari_viewer()
    image, expected = _squares(0)
    viewer.add_image(image, name="cells")
    dock = PredictDock(viewer)
    dock.model_combo.setCurrentText(FILE)
    dock.model_path.setText(str(package))
    dock.tile_size.setValue(60)
    dock.min_size.setValue(4)
    dock.run_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.run_button.isEnabled(), timeout=30000)
    assert _same_partition(np.asarray(viewer.layers["cells U-Net labels"].data), expected)


@pytest.mark.slow
def test_train_dock_exports_its_model_and_fine_tunes_the_package(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    image, labels = touching_cells((96, 96), seed=5)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells labels")
    dock = TrainDock(viewer)
    assert not dock.export_button.isEnabled()  # nothing trained yet
    dock.model_combo.setCurrentText("new light model")
    dock.steps.setValue(1)
    dock.tile_size.setValue(92)
    dock.batch_size.setValue(1)
    dock.device.setCurrentText("cpu")
    dock.start_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.export_button.isEnabled(), timeout=TIMEOUT_MS)  # fmt: skip
    trained, _ = _session.current_model()

    dock.export(tmp_path / "shared")  # what Export… does after its file dialog
    qtbot.waitUntil(lambda: dock.status.text().startswith("Exported"), timeout=TIMEOUT_MS)
    assert "test passed" in dock.status.text()
    package = tmp_path / "shared.zip"
    net, _ = checkpoint.load(package)
    for a, b in zip(net.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    dock.model_combo.setCurrentText("model file")
    dock.model_file.setText(str(package))
    dock.start_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.save_button.isEnabled(), timeout=TIMEOUT_MS)  # fmt: skip
    tuned, metadata = _session.current_model()
    assert metadata["training"]["from"] == "shared.zip"
    assert tuned.config == net.config
