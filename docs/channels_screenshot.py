"""README picture for the channel picker: the two-channel sample (nuclei + membrane, two
layers as opened with ``channel_axis``) with the Train dock using both as one input.

Run: ``xvfb-run -a .venv/bin/python docs/channels_screenshot.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_unet._sample_data import nuclei_membrane
from napari_unet.widgets.train import TrainDock

OUT = Path(__file__).with_name("images") / "channels.png"


def main() -> int:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1300, 760)
    for data, kwargs, kind in nuclei_membrane():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.add_labels(viewer.layers["cells ground truth"].data.copy(), name="annotations")
    dock = TrainDock(viewer)
    viewer.window.add_dock_widget(dock, name="Train", area="right")
    dock.image_combo.setCurrentText("nuclei")
    dock.channels.tick(["membrane"])
    dock.labels_combo.setCurrentText("annotations")
    viewer.layers["annotations"].opacity = 0.3
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    OUT.parent.mkdir(exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    from PIL import Image

    Image.open(OUT).convert("RGB").quantize(256).save(OUT, optimize=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
