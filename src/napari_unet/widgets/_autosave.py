"""Autosave of annotation layers into the image's project folder (`core.project`).

One `Autosave` per viewer, shared by the Annotate and Train docks: each watched labels
layer is written a moment after each paint stroke (debounced), atomically. The folder
is the one next to the image file, or one the user chose (an image with no file).
"""

from __future__ import annotations

import weakref
from pathlib import Path

from qtpy.QtCore import QObject, QTimer, Signal

from napari_unet.core import project

DELAY_MS = 300  # a stroke is saved this long after the brush stops

_per_viewer: dict[int, Autosave] = {}


def autosave_for(viewer) -> Autosave:
    """The viewer's autosave (made on first use, forgotten with the viewer)."""
    key = id(viewer)
    if key not in _per_viewer:
        autosave = _per_viewer[key] = Autosave()
        # A deleted layer is no longer watched (a stroke still pending is saved first).
        viewer.layers.events.removed.connect(lambda event: autosave.unwatch(event.value))
        weakref.finalize(viewer, _per_viewer.pop, key, None)
    return _per_viewer[key]


def image_file(image_layer) -> Path | None:
    """The file an image layer was opened from, if any."""
    path = getattr(getattr(image_layer, "source", None), "path", None)
    return Path(path) if path else None


class Autosave(QObject):
    """Watches labels layers and saves them into their image's project folder."""

    saved = Signal(str)  # the file written
    failed = Signal(str)  # a message for people (disk full, folder not writable...)

    def __init__(self):
        super().__init__()
        self._chosen: dict[int, Path] = {}  # id(image layer) -> folder chosen by the user
        # id(labels layer) -> (labels layer, folder, debounce timer, image layer, callback)
        self._watched: dict[int, tuple] = {}

    def folder(self, image_layer) -> Path | None:
        """Where the work on this image is kept: the chosen folder, or one next to its file."""
        if image_layer is None:
            return None
        if id(image_layer) in self._chosen:
            return self._chosen[id(image_layer)]
        path = image_file(image_layer)
        return None if path is None else project.folder_for(path)

    def choose_folder(self, image_layer, folder: str | Path) -> None:
        self._chosen[id(image_layer)] = Path(folder)
        for layer, _, _, image, _ in list(self._watched.values()):
            if image is image_layer:
                self.watch(layer, image_layer)

    def watch(self, labels_layer, image_layer) -> Path | None:
        """Save ``labels_layer`` after every stroke into ``image_layer``'s project folder."""
        folder = self.folder(image_layer)
        self.unwatch(labels_layer)
        if folder is None or labels_layer is None:
            return None
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(DELAY_MS)
        timer.timeout.connect(lambda: self.save_now(labels_layer))
        restart = lambda *_: timer.start()  # noqa: E731
        labels_layer.events.paint.connect(restart)
        labels_layer.events.data.connect(restart)
        self._watched[id(labels_layer)] = (labels_layer, folder, timer, image_layer, restart)
        return folder

    def unwatch(self, labels_layer) -> None:
        entry = self._watched.pop(id(labels_layer), None)
        if entry is None:
            return
        layer, folder, timer, _, restart = entry
        if timer.isActive():  # a stroke waits to be saved: nothing is lost
            self.save_now(layer, folder=folder)
        layer.events.paint.disconnect(restart)
        layer.events.data.disconnect(restart)
        timer.stop()
        timer.deleteLater()

    def watching(self, labels_layer) -> Path | None:
        entry = self._watched.get(id(labels_layer))
        return None if entry is None else entry[1]

    def save_now(self, labels_layer, folder: Path | None = None) -> Path | None:
        """Write the layer now (also what the debounce timer calls)."""
        folder = folder or self.watching(labels_layer)
        if folder is None:
            return None
        try:
            written = project.save_labels(folder, labels_layer.name, labels_layer.data)
        except (OSError, ValueError) as exc:
            self.failed.emit(f"Autosave into {folder} failed: {exc}")
            return None
        self.saved.emit(str(written))
        return written
