"""Annotate dock: attach or create an instance labels layer and paint cells, slice by slice.

The dock never edits label values itself; it only sets napari's brush (label id, size,
mode), counts what is annotated and moves between annotated slices. The background
brush paints into a second labels layer, ``<image> background``: strokes there mean
"definitely no cell here" (as ilastik's background label), which training uses when
only a few cells are painted.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QSpinBox

from napari_unet.core import annotations, project
from napari_unet.core.io import InputError
from napari_unet.widgets._autosave import autosave_for
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._jobs import report_error
from napari_unet.widgets._layers import (
    BACKGROUND,
    OWNER_KEY,
    go_to_plane,
    grid_problem,
    kind_of,
    layer_named,
    pixel_shape,
    plane_index,
)

REGIONS_LAYER = "training regions"
labels_shape_for = pixel_shape  # the labels grid of an image layer (no RGB axis)
BACKGROUND_SUFFIX = " background"  # the background strokes layer is "<image> background"
BACKGROUND_COLOUR = "#00c8ff"


def background_layer_for(viewer, image_name: str):
    """The background strokes layer of an image (``<image> background``), or None."""
    return layer_named(viewer, image_name + BACKGROUND_SUFFIX)


class AnnotateDock(Dock):
    """Pick an image, attach or create its labels layer, paint cells, see what is annotated."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image_picker = self.picker("image")
        self.labels_picker = self.picker("labels")
        self.create_button = QPushButton("Create labels layer")
        self.new_cell_button = QPushButton("New cell")
        self.new_cell_button.setToolTip("Select the next free label id and the paint brush")
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 200)
        self.brush_size.setValue(10)
        self.background_button = QPushButton("Background brush")
        self.background_button.setToolTip(
            "Paint where there is definitely no cell (its own layer, '<image> background'); "
            "with a few painted cells, training learns background there and next to them"
        )
        self.previous_button = QPushButton("◀ Previous annotated")
        self.next_button = QPushButton("Next annotated ▶")
        self.regions_button = QPushButton("Add training regions")
        self.regions_button.setToolTip(
            "Draw rectangles: only annotations inside them are used for training"
        )
        self.autosave = autosave_for(self.viewer)
        self.project_label = QLabel("")
        self.project_label.setWordWrap(True)
        self.folder_button = QPushButton("Project folder…")
        self.folder_button.setToolTip("Where annotations and models are saved as you work")
        self.restore_button = QPushButton("Restore saved annotations")

        self.add_form(
            ("Image", self.image_picker),
            ("Labels", self.labels_picker),
            ("Brush size", self.brush_size),
        )
        self.body.addWidget(self.create_button)
        self.body.addWidget(self.new_cell_button)
        self.body.addWidget(self.background_button)
        self.add_row(self.previous_button, self.next_button)
        self.body.addWidget(self.regions_button)
        self.add_row(self.folder_button, self.restore_button)
        self.body.addWidget(self.project_label)
        self.end_body()

        # Recount at most every 200 ms while the user paints.
        self._recount_timer = QTimer(self)
        self._recount_timer.setSingleShot(True)
        self._recount_timer.setInterval(200)
        self._recount_timer.timeout.connect(self.refresh_status)
        self._watched = None
        self._watched_background = None

        self.create_button.clicked.connect(self.create_labels)
        self.new_cell_button.clicked.connect(self.new_cell)
        self.background_button.clicked.connect(self.background_brush)
        self.brush_size.valueChanged.connect(self._apply_brush)
        self.previous_button.clicked.connect(lambda: self.jump(-1))
        self.next_button.clicked.connect(lambda: self.jump(+1))
        self.regions_button.clicked.connect(self.add_regions_layer)
        self.folder_button.clicked.connect(self._ask_folder)
        self.restore_button.clicked.connect(self.restore)
        self.image_picker.changed.connect(self._on_choice)
        self.labels_picker.changed.connect(self._on_choice)
        self.listen(self.autosave.saved, self._on_saved)
        self.listen(self.autosave.failed, self._on_save_failed)
        self.listen(self.viewer.layers.events.inserted, self._offer_restore)
        self._on_choice()
        self._offer_restore()

    # --- layers -------------------------------------------------------------------
    @property
    def image_layer(self):
        return self.image_picker.value

    @property
    def labels_layer(self):
        return self.labels_picker.value

    def _on_choice(self, *args) -> None:
        self._watch(self.labels_layer)
        self.refresh_status()
        self._update_project()

    # --- autosave and restore -------------------------------------------------------
    def _update_project(self) -> None:
        """Autosave the chosen labels into the image's project; say where."""
        image, labels = self.image_layer, self.labels_layer
        folder = self.autosave.folder(image)
        if labels is not None and folder is not None and not self.shape_problem():
            self.autosave.watch(labels, image)
        if folder is None:
            text = (
                "Autosave off: this image has no file. Choose a project folder to keep your work."
            )
        else:
            text = f"Autosave: {folder}"
        self.project_label.setText(text)
        self.restore_button.setEnabled(bool(self._restorable()))

    def _restorable(self) -> list[str]:
        folder = self.autosave.folder(self.image_layer)
        if folder is None:
            return []
        return [n for n in project.saved_labels(folder) if n not in self.viewer.layers]

    def _offer_restore(self, event=None) -> None:
        """An image with saved annotations was opened: say so (Restore brings them back)."""
        layer = getattr(event, "value", None) if event is not None else self.image_layer
        if layer is None or kind_of(layer) != "image" or self.autosave.folder(layer) is None:
            return
        folder = self.autosave.folder(layer)
        missing = [n for n in project.saved_labels(folder) if n not in self.viewer.layers]
        if missing:
            from napari.utils.notifications import show_info

            show_info(
                f"Saved annotations found for {layer.name!r} in {folder}: press "
                "'Restore saved annotations' in the Annotate dock to bring them back."
            )
        self.restore_button.setEnabled(bool(self._restorable()))

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder")
        if folder:
            self.choose_folder(folder)

    def choose_folder(self, folder) -> None:
        """Keep this image's work in ``folder`` (for images without a file, or elsewhere)."""
        if self.image_layer is None:
            report_error(InputError("Choose an image layer first."))
            return
        self.autosave.choose_folder(self.image_layer, folder)
        self._update_project()

    def restore(self) -> list:
        """Add the saved annotation layers of this image that are not open (never overwrite)."""
        image = self.image_layer
        folder = self.autosave.folder(image)
        if folder is None:
            return []
        try:
            saved = project.load_labels(folder)
        except InputError as exc:
            report_error(exc)
            return []
        added, skipped = [], []
        for name, data in saved.items():
            if name in self.viewer.layers or data.shape != labels_shape_for(image):
                skipped.append(name)
                continue
            added.append(
                self.viewer.add_labels(
                    data,
                    name=name,
                    scale=image.scale[-data.ndim :],
                    translate=image.translate[-data.ndim :],
                )
            )
        if added:
            self.labels_picker.value = added[0]
        note = f" (kept the open or differently shaped: {', '.join(skipped)})" if skipped else ""
        self.status.setText(f"Restored {len(added)} annotation layer(s) from {folder}{note}.")
        self.restore_button.setEnabled(bool(self._restorable()))
        return added

    def _on_saved(self, path: str) -> None:
        folder = self.autosave.folder(self.image_layer)
        if folder is not None:
            self.project_label.setText(f"Autosave: {folder} (saved {time.strftime('%H:%M:%S')})")

    def _on_save_failed(self, message: str) -> None:
        self.project_label.setText(message)
        report_error(InputError(message))

    def _watch(self, layer) -> None:
        """Recount when the chosen labels layer is painted or replaced."""
        if self._watched is layer:
            return
        if self._watched is not None:
            for emitter in self._label_events(self._watched):
                self.unlisten(emitter, self._schedule_recount)
        self._watched = layer
        if layer is not None:
            for emitter in self._label_events(layer):
                self.listen(emitter, self._schedule_recount)

    @staticmethod
    def _label_events(layer):
        names = ("paint", "data", "labels_update")
        return [getattr(layer.events, n) for n in names if hasattr(layer.events, n)]

    def _schedule_recount(self, event=None) -> None:
        self._recount_timer.start()

    def shape_problem(self) -> str | None:
        """Why the chosen labels layer cannot annotate the chosen image, or None."""
        image, labels = self.image_layer, self.labels_layer
        for layer in (image, labels):
            if layer is not None and grid_problem(layer):
                return grid_problem(layer)
        if image is None or labels is None:
            return None
        expected = labels_shape_for(image)
        if tuple(labels.data.shape) != expected:
            return (
                f"Labels {labels.name!r} has shape {tuple(labels.data.shape)} but image "
                f"{image.name!r} has {expected}: pick a labels layer of the same shape "
                "or create a new one."
            )
        return None

    def create_labels(self):
        """Add an empty labels layer matching the image; an existing one is attached, never replaced."""
        image = self.image_layer
        if image is None or grid_problem(image):
            report_error(ValueError(grid_problem(image) or "Open or choose an image layer first."))
            return None
        name = f"{image.name} annotations"
        if name in self.viewer.layers:
            self.labels_picker.value = self.viewer.layers[name]
            self.status.setText(f"Using the existing layer {name!r}; nothing was overwritten.")
            return self.viewer.layers[name]
        data = np.zeros(labels_shape_for(image), dtype=np.uint32)
        layer = self.viewer.add_labels(
            data,
            name=name,
            scale=image.scale[-data.ndim :],
            translate=image.translate[-data.ndim :],
        )
        self.labels_picker.value = layer
        self.new_cell()
        return layer

    # --- painting -----------------------------------------------------------------
    def new_cell(self) -> None:
        """Select the next free label id and the paint brush on the labels layer."""
        layer = self.labels_layer
        problem = self.shape_problem()
        if layer is None or problem:
            report_error(ValueError(problem or "Create or choose a labels layer first."))
            return
        layer.selected_label = annotations.next_label(layer.data)
        layer.brush_size = self.brush_size.value()
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer

    def background_brush(self):
        """Select the background brush: label 1 of the ``<image> background`` layer.

        The layer is created (empty, the image's shape) the first time, never replaced.
        """
        image = self.image_layer
        if image is None or grid_problem(image):
            report_error(ValueError(grid_problem(image) or "Open or choose an image layer first."))
            return None
        layer = background_layer_for(self.viewer, image.name)
        shape = labels_shape_for(image)
        if layer is not None and (kind_of(layer) != "labels" or layer.data.shape != shape):
            report_error(
                ValueError(
                    f"Layer {layer.name!r} is not a labels layer of shape {shape} like image "
                    f"{image.name!r}: rename or remove it to paint background."
                )
            )
            return None
        if layer is None:
            layer = self.viewer.add_labels(
                np.zeros(shape, dtype=np.uint8),
                name=image.name + BACKGROUND_SUFFIX,
                scale=image.scale[-len(shape) :],
                translate=image.translate[-len(shape) :],
                opacity=0.5,
                metadata={OWNER_KEY: BACKGROUND},
            )
        if self._watched_background is not layer:  # recount as background is painted
            if self._watched_background is not None:
                for emitter in self._label_events(self._watched_background):
                    self.unlisten(emitter, self._schedule_recount)
            for emitter in self._label_events(layer):
                self.listen(emitter, self._schedule_recount)
            self._watched_background = layer
        _set_single_colour(layer, BACKGROUND_COLOUR)
        layer.selected_label = 1
        layer.brush_size = self.brush_size.value()
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.refresh_status()
        return layer

    def _apply_brush(self, size: int) -> None:
        if self.labels_layer is not None:
            self.labels_layer.brush_size = size

    # --- slices -------------------------------------------------------------------
    def summary(self) -> annotations.AnnotationSummary | None:
        layer = self.labels_layer
        if layer is None or grid_problem(layer):
            return None
        return annotations.summarize(layer.data)

    def refresh_status(self) -> None:
        problem = self.shape_problem()
        summary = self.summary()
        if problem:
            self.status.setText(problem)
        elif summary is None:
            self.status.setText("Choose an image and create its labels layer to start.")
        else:
            text = summary.describe()
            image = self.image_layer
            background = None if image is None else background_layer_for(self.viewer, image.name)
            if background is not None and kind_of(background) == "labels":
                strokes = annotations.count_strokes(background.data)
                text += f"; {strokes} background stroke{'s' if strokes != 1 else ''}"
            self.status.setText(text)
        is_stack = summary is not None and summary.n_slices > 1
        self.previous_button.setEnabled(is_stack)
        self.next_button.setEnabled(is_stack)
        self.new_cell_button.setEnabled(summary is not None and not problem)

    def jump(self, step: int) -> int | None:
        """Move the viewer to the previous/next annotated slice of a stack."""
        summary = self.summary()
        if summary is None or summary.n_slices == 1:
            return None
        layer = self.labels_layer
        (current,) = plane_index(self.viewer, layer)
        target = annotations.neighbour_slice(summary.annotated_slices, current, step)
        if target is None:
            self.status.setText(
                summary.describe()
                + (
                    "\nNo annotated slice after this one."
                    if step > 0
                    else "\nNo annotated slice before this one."
                )
            )
            return None
        go_to_plane(self.viewer, layer, (target,))
        return target

    # --- regions ------------------------------------------------------------------
    def add_regions_layer(self):
        """A rectangle Shapes layer; annotations outside its boxes are not used for training."""
        if REGIONS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[REGIONS_LAYER]
        else:
            image = self.image_layer
            ndim = len(labels_shape_for(image)) if image is not None else 2
            placed = (
                {}
                if image is None
                else {"scale": image.scale[-ndim:], "translate": image.translate[-ndim:]}
            )
            layer = self.viewer.add_shapes(
                ndim=ndim,
                **placed,
                name=REGIONS_LAYER,
                edge_color="yellow",
                face_color=[1, 1, 0, 0.08],
                edge_width=2,
            )
        layer.mode = "add_rectangle"
        self.viewer.layers.selection.active = layer
        return layer


def _set_single_colour(layer, colour: str) -> None:
    """Show every stroke of ``layer`` in one colour (napari >= 0.5 and older)."""
    try:
        from napari.utils.colormaps import DirectLabelColormap

        layer.colormap = DirectLabelColormap(color_dict={1: colour, None: "transparent"})
    except (ImportError, TypeError, ValueError):  # older napari: keep its colours
        pass
