"""README picture for the Predict dock: the 2D sample before and after prediction.

Uses the shipped starter model when it exists, else trains a light model for a few
minutes on a synthetic image of another seed (never on the sample itself).
Run: ``xvfb-run -a .venv/bin/python docs/predict_screenshot.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_unet._sample_data import cells_2d
from napari_unet.core import checkpoint
from napari_unet.core.metrics import average_precision
from napari_unet.models import SHIPPED, starter_model_path
from napari_unet.widgets.predict import FILE, PredictDock

STARTER = SHIPPED[0].title  # the nuclei starter

OUT = Path(__file__).with_name("images") / "predict.png"


def model_file() -> Path:
    if starter_model_path().is_file():
        return starter_model_path()
    from napari_unet.core.data import TrainingData
    from napari_unet.core.synthetic import touching_cells
    from napari_unet.core.train import TrainConfig, train

    image, labels = touching_cells((384, 384), seed=7)
    events = train(TrainingData.from_arrays(image, labels), TrainConfig(steps=400, max_minutes=6))
    while True:
        try:
            next(events)
        except StopIteration as stop:
            result = stop.value
            break
    path = Path(tempfile.mkdtemp()) / "quick.safetensors"
    return checkpoint.save(path, result.net, result.metadata)


def _shrink(path: Path) -> None:
    """Keep the README picture small: 256-colour palette PNG."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def main() -> int:
    path = model_file()
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 800)
    (image, image_kw, _), (truth, truth_kw, _) = cells_2d()
    viewer.add_image(image, **{**image_kw, "name": "before"})
    layer = viewer.add_image(image, **image_kw)
    dock = PredictDock(viewer)
    viewer.window.add_dock_widget(dock, name="Predict", area="right")
    dock.image_picker.value = layer
    if path == starter_model_path():
        dock.model_combo.setCurrentText(STARTER)
    else:
        dock.model_combo.setCurrentText(FILE)
        dock.model_path.setText(str(path))
    dock.run_button.click()
    app = QApplication.instance()
    while dock.jobs.busy or not dock.run_button.isEnabled():
        app.processEvents()
    labels = viewer.layers[f"{layer.name} U-Net labels"]
    ap50, ap75 = average_precision(truth, np.asarray(labels.data), (0.5, 0.75))
    print(f"model {path.name}: AP@0.5 {ap50:.3f}, AP@0.75 {ap75:.3f} on the 2D sample")
    labels.opacity = 0.45
    labels.contour = 0
    viewer.grid.enabled = True
    viewer.grid.stride = 2
    viewer.grid.shape = (1, 2)
    viewer.reset_view()
    viewer.camera.zoom *= 1.3
    for _ in range(20):
        app.processEvents()
    OUT.parent.mkdir(exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    _shrink(OUT)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
