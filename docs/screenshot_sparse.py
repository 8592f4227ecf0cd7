"""Screenshot for the README: a few painted cells, a background stroke, the starter model
fine-tuned for a few steps; the Train dock says what it used and shows the live view.

Eight cells of the 2D sample's ground truth stand for the user's painting. Run under a
virtual display: `xvfb-run -a .venv/bin/python docs/screenshot_sparse.py`.
"""

from __future__ import annotations

import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_unet.widgets.annotate import AnnotateDock
from napari_unet.widgets.train import TrainDock

STEPS = 30

viewer = napari.Viewer(title="napari-unet")
viewer.window.resize(1500, 1200)
image, truth = viewer.open_sample("napari-unet", "cells2d")
truth.visible = False
annotate = AnnotateDock(viewer)
annotate_dock = viewer.window.add_dock_widget(annotate, name="Annotate", area="right")
annotate.image_picker.value = image
labels = annotate.create_labels()
ids = np.unique(truth.data)[1:]
painted = np.zeros_like(labels.data)
for new, cell in enumerate(ids[::37][:8], start=1):
    painted[truth.data == cell] = new
labels.data = painted
strokes = annotate.background_brush()
stroke = np.zeros(strokes.data.shape, np.uint8)
stroke[4:12, 4:200] = 1
stroke[truth.data > 0] = 0
strokes.data = stroke
# the painting is done: the Train dock gets the whole height (the Annotate dock above
# would push its live plot off the window)
viewer.window.remove_dock_widget(annotate_dock)
dock = TrainDock(viewer)
viewer.window.add_dock_widget(dock, name="Train", area="right")
dock.image_picker.value = image
dock.labels_picker.value = labels
dock.model_combo.setCurrentText("starter model")
dock.steps.setValue(STEPS)
dock.device.setCurrentText("cpu")
viewer.window._qt_window.show()
viewer.reset_view()
for _ in range(20):
    QApplication.processEvents()
    time.sleep(0.05)
dock.start()
started = time.perf_counter()
while dock.jobs.busy:
    QApplication.processEvents()
    time.sleep(0.02)
print(f"{time.perf_counter() - started:.0f} s: {dock.status.text()}")
for _ in range(10):
    QApplication.processEvents()
viewer.window.screenshot("docs/images/sparse.png", flash=False)
viewer.close()

from PIL import Image  # noqa: E402

shot = Image.open("docs/images/sparse.png").convert("RGB").resize((1200, 960), Image.LANCZOS)
shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
    "docs/images/sparse.png", optimize=True
)
