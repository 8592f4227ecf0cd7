"""Annotate dock: attach or create an instance labels layer and paint cells, slice by slice.

The dock never edits label values itself; it only sets napari's brush (label id, size,
mode), counts what is annotated and moves between annotated slices. The background
brush paints into a second labels layer, ``<image> background``: strokes there mean
"definitely no cell here" (as ilastik's background label), which training uses when
only a few cells are painted.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet.core import annotations
from napari_unet.widgets._common import fill_combo, layer_choices, layer_named, report_error

REGIONS_LAYER = "training regions"
BACKGROUND_SUFFIX = " background"  # the background strokes layer is "<image> background"
BACKGROUND_COLOUR = "#00c8ff"


def background_layer_for(viewer, image_name: str):
    """The background strokes layer of an image (``<image> background``), or None."""
    return layer_named(viewer, image_name + BACKGROUND_SUFFIX)


def labels_shape_for(image_layer) -> tuple[int, ...]:
    """The pixel grid of an image layer: its shape without an RGB(A) axis."""
    shape = tuple(image_layer.data.shape)
    return shape[:-1] if getattr(image_layer, "rgb", False) else shape


class AnnotateDock(QWidget):
    """Pick an image, attach or create its labels layer, paint cells, see what is annotated."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.create_button = QPushButton("Create labels layer")
        self.new_cell_button = QPushButton("New cell")
        self.new_cell_button.setToolTip("Select the next free label id and the paint brush")
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 200)
        self.brush_size.setValue(10)
        self.previous_button = QPushButton("◀ Previous annotated")
        self.next_button = QPushButton("Next annotated ▶")
        self.background_button = QPushButton("Background brush")
        self.background_button.setToolTip(
            "Paint where there is definitely no cell (its own layer, '<image> background'); "
            "with a few painted cells, training learns background there and next to them"
        )
        self.regions_button = QPushButton("Add training regions")
        self.regions_button.setToolTip(
            "Draw rectangles: only annotations inside them are used for training"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Brush size", self.brush_size)
        navigation = QHBoxLayout()
        navigation.addWidget(self.previous_button)
        navigation.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.create_button)
        layout.addWidget(self.new_cell_button)
        layout.addWidget(self.background_button)
        layout.addLayout(navigation)
        layout.addWidget(self.regions_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        # Recount at most every 200 ms while the user paints.
        self._recount_timer = QTimer(self)
        self._recount_timer.setSingleShot(True)
        self._recount_timer.setInterval(200)
        self._recount_timer.timeout.connect(self.refresh_status)
        self._watched = None

        self.create_button.clicked.connect(self.create_labels)
        self.new_cell_button.clicked.connect(self.new_cell)
        self.background_button.clicked.connect(self.background_brush)
        self.brush_size.valueChanged.connect(self._apply_brush)
        self.previous_button.clicked.connect(lambda: self.jump(-1))
        self.next_button.clicked.connect(lambda: self.jump(+1))
        self.regions_button.clicked.connect(self.add_regions_layer)
        self.image_combo.currentTextChanged.connect(lambda _: self._on_choice())
        self.labels_combo.currentTextChanged.connect(lambda _: self._on_choice())
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self.viewer.layers.events.moved.connect(self._refresh_choices)
        self._refresh_choices()

    # --- layers -------------------------------------------------------------------
    @property
    def image_layer(self):
        return layer_named(self.viewer, self.image_combo.currentText())

    @property
    def labels_layer(self):
        return layer_named(self.viewer, self.labels_combo.currentText())

    def _refresh_choices(self, event=None) -> None:
        fill_combo(self.image_combo, layer_choices(self.viewer, "image"))
        labels = layer_choices(self.viewer, "labels")
        fill_combo(self.labels_combo, [n for n in labels if not n.endswith(BACKGROUND_SUFFIX)])
        self._on_choice()

    def _on_choice(self) -> None:
        self._watch(self.labels_layer)
        self.refresh_status()

    def _watch(self, layer) -> None:
        """Recount when the chosen labels layer is painted or replaced."""
        if self._watched is layer:
            return
        if self._watched is not None:
            for emitter in self._label_events(self._watched):
                emitter.disconnect(self._schedule_recount)
        self._watched = layer
        if layer is not None:
            for emitter in self._label_events(layer):
                emitter.connect(self._schedule_recount)

    @staticmethod
    def _label_events(layer):
        names = ("paint", "data", "labels_update")
        return [getattr(layer.events, n) for n in names if hasattr(layer.events, n)]

    def _schedule_recount(self, event=None) -> None:
        self._recount_timer.start()

    def shape_problem(self) -> str | None:
        """Why the chosen labels layer cannot annotate the chosen image, or None."""
        image, labels = self.image_layer, self.labels_layer
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
        if image is None:
            report_error(ValueError("Open or choose an image layer first."))
            return None
        name = f"{image.name} annotations"
        if name in self.viewer.layers:
            self.labels_combo.setCurrentText(name)
            self.status.setText(f"Using the existing layer {name!r}; nothing was overwritten.")
            return self.viewer.layers[name]
        data = np.zeros(labels_shape_for(image), dtype=np.uint32)
        layer = self.viewer.add_labels(
            data,
            name=name,
            scale=image.scale[-data.ndim :],
            translate=image.translate[-data.ndim :],
        )
        self.labels_combo.setCurrentText(name)
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
        if image is None:
            report_error(ValueError("Open or choose an image layer first."))
            return None
        layer = background_layer_for(self.viewer, image.name)
        shape = labels_shape_for(image)
        if layer is not None and tuple(layer.data.shape) != shape:
            report_error(
                ValueError(
                    f"Layer {layer.name!r} has shape {tuple(layer.data.shape)} but image "
                    f"{image.name!r} has {shape}: rename or remove it to paint background."
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
            )
            self._watch_background(layer)
        _set_single_colour(layer, BACKGROUND_COLOUR)
        layer.selected_label = 1
        layer.brush_size = self.brush_size.value()
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.refresh_status()
        return layer

    def _watch_background(self, layer) -> None:
        for emitter in self._label_events(layer):
            emitter.connect(self._schedule_recount)

    def _apply_brush(self, size: int) -> None:
        if self.labels_layer is not None:
            self.labels_layer.brush_size = size

    # --- slices -------------------------------------------------------------------
    def summary(self) -> annotations.AnnotationSummary | None:
        layer = self.labels_layer
        return None if layer is None else annotations.summarize(layer.data)

    def refresh_status(self) -> None:
        problem = self.shape_problem()
        summary = self.summary()
        if problem:
            self.status.setText(problem)
        elif summary is None:
            self.status.setText("Choose an image and create its labels layer to start.")
        else:
            text = summary.describe()
            background = self.image_layer and background_layer_for(
                self.viewer, self.image_layer.name
            )
            if background is not None:
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
        axis = self.viewer.dims.ndim - 3
        current = int(self.viewer.dims.current_step[axis])
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
        self.viewer.dims.set_current_step(axis, target)
        return target

    # --- regions ------------------------------------------------------------------
    def add_regions_layer(self):
        """A rectangle Shapes layer; annotations outside its boxes are not used for training."""
        if REGIONS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[REGIONS_LAYER]
        else:
            image = self.image_layer
            ndim = len(labels_shape_for(image)) if image is not None else 2
            layer = self.viewer.add_shapes(
                ndim=ndim,
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
