"""Screenshot for the README: the Train dock after a short real training on the 2D sample.

The sample's ground truth of the cells reaching into a corner stands for the user's
annotation, inside a training-region rectangle; the default start (the best shipped
starter) is fine-tuned. Run under a virtual display:
`xvfb-run -a .venv/bin/python docs/screenshot_train.py` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_unet.widgets.train import TrainDock

STEPS = 100
BOX = (0, 0, 300, 300)  # y0, x0, y1, x1 of the annotated region (pixels)

viewer = napari.Viewer(title="napari-unet")
viewer.window.resize(1500, 950)
image, truth = viewer.open_sample("napari-unet", "cells2d")
y0, x0, y1, x1 = BOX
# every cell reaching into the box, painted whole (as a user annotates a training region)
inside = np.unique(truth.data[y0:y1, x0:x1])
annotation = np.where(np.isin(truth.data, inside[inside > 0]), truth.data, 0)
viewer.add_labels(annotation, name="cells 2D labels", opacity=0.4)
rectangle = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
viewer.add_shapes(
    [rectangle],
    shape_type="rectangle",
    name="training regions",
    edge_color="yellow",
    face_color="transparent",
    edge_width=3,
)
dock = TrainDock(viewer)
viewer.window.add_dock_widget(dock, name="Train", area="right")
dock.image_picker.value = viewer.layers["cells 2D"]
dock.labels_picker.value = viewer.layers["cells 2D labels"]
dock.steps.setValue(STEPS)
dock.validate_every.setValue(10)
dock.device.setCurrentText("cpu")
viewer.window._qt_window.show()
dock.start()
started = time.perf_counter()
while dock.jobs.busy:
    QApplication.processEvents()
    time.sleep(0.02)
print(f"{time.perf_counter() - started:.0f} s: {dock.status.text()}")
viewer.reset_view()
for _ in range(10):
    QApplication.processEvents()
viewer.window.screenshot("docs/images/train.png", flash=False)
viewer.close()

# Keep the README light: downscale and use a 256-colour palette (< 300 KB).
from PIL import Image  # noqa: E402

shot = Image.open("docs/images/train.png").convert("RGB").resize((1200, 760), Image.LANCZOS)
shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
    "docs/images/train.png", optimize=True
)
