"""Screenshot for the README: the sample image with the Annotate dock and a few painted cells.

Run under a virtual display: `xvfb-run -a .venv/bin/python docs/screenshot_annotate.py`.
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_unet.widgets.annotate import AnnotateDock

viewer = napari.Viewer(title="napari-unet")
viewer.window.resize(1400, 900)
image, truth = viewer.open_sample("napari-unet", "cells2d")
dock = AnnotateDock(viewer)
viewer.window.add_dock_widget(dock, name="Annotate", area="right")
layer = dock.create_labels()
# Paint a handful of true cells in one corner, as a user would after a few minutes.
ids = np.unique(truth.data[40:200, 40:220])[1:12]
layer.data = np.where(np.isin(truth.data, ids), truth.data, 0).astype(layer.data.dtype)
dock.refresh_status()
dock.new_cell()
viewer.reset_view()
viewer.window._qt_window.show()
for _ in range(5):
    QApplication.processEvents()
viewer.window.screenshot("docs/images/annotate.png", flash=False)
viewer.close()
