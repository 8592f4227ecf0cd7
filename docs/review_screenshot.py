"""README picture for the Review dock: a real fluorescence image scored by the starter
model, the queue worst first, two objects reviewed and two proposed boxes.

Run: ``xvfb-run -a .venv/bin/python docs/review_screenshot.py [IMAGE.tif]`` (default: a
DSB 2018 image from the development set, CC0; any 2D grayscale image works).
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
import tifffile
from qtpy.QtWidgets import QApplication

from napari_unet.models import SHIPPED
from napari_unet.widgets.review import ReviewDock

STARTER = SHIPPED[0].title  # the nuclei starter

OUT = Path(__file__).with_name("images") / "review.png"
DEFAULT = "/work/shared/data/real/dsb2018/images/4c465a54e329ec7b.tif"


def main() -> int:
    image = tifffile.imread(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 850)
    viewer.add_image(image, name="nuclei", colormap="gray")
    dock = ReviewDock(viewer)
    viewer.window.add_dock_widget(dock, name="Review", area="right")
    dock.model_combo.setCurrentText(STARTER)
    dock.score_button.click()
    app = QApplication.instance()
    while dock.jobs.busy or dock.table.rowCount() == 0:
        app.processEvents()
    dock.table.selectRow(0)
    dock.delete()
    dock.accept()
    dock.n_boxes.setValue(2)
    dock.propose()
    viewer.layers["nuclei U-Net labels"].contour = 1
    viewer.layers["nuclei U-Net labels"].opacity = 0.6
    viewer.layers.selection.active = viewer.layers["nuclei"]
    viewer.reset_view()
    dock.table.setColumnWidth(3, 260)
    for _ in range(30):
        app.processEvents()
    OUT.parent.mkdir(exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    from PIL import Image

    Image.open(OUT).convert("RGB").quantize(256).save(OUT, optimize=True)
    print(f"{dock.table.rowCount()} objects; worst: {dock.queue[0].reason}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
