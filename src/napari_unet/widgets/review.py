"""Review dock: the predicted objects worst first, one-key fixes, and where to annotate next.

**Score** predicts the image (or a stack's current slice) with the 8 flips/rotations
(`core.confidence`), shows the labels as "<image> U-Net labels", the uncertainty as
"<image> U-Net uncertainty" and the objects in a table, least confident first. Actions
write only the *annotation* labels (`core.review`, through napari's undo history) and
mark the reviewed area as a training region, so Resume in the Train dock learns from
them. **Propose regions** adds boxes to the Train dock's "training regions" layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QShortcut,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
)

from napari_unet.core.annotations import Box, boxes_from_rectangles, next_label
from napari_unet.core.io import InputError
from napari_unet.widgets import _session
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._jobs import report_error
from napari_unet.widgets._layers import RESULT, kind_of, layer_named, set_layer
from napari_unet.widgets._layers import pixel_shape as labels_shape_for
from napari_unet.widgets.annotate import REGIONS_LAYER
from napari_unet.widgets.predict import (
    FILE,
    PREDICTION_JOB,
    SESSION,
    labels_name,
    model_file_for,
    model_sources,
    starter_for_layer,
)

UNCERTAINTY_SUFFIX = " U-Net uncertainty"
CUT_LAYER = "review cut line"
COLUMNS = ("id", "confidence", "area", "why doubtful", "done")
# (button text, key, method name)
ACTIONS = (
    ("Accept", "A", "accept"),
    ("Delete", "D", "delete"),
    ("Merge with neighbour", "M", "merge"),
    ("Split along line", "S", "split"),
    ("Repaint", "R", "repaint"),
    ("Undo", "U", "undo"),
)
VIEW_CELLS = 6  # selecting a row zooms so that about this many object widths fit the view
VIEW_PX = 500  # assumed canvas size for that zoom, screen pixels


def fill_combo(combo, names: list[str]) -> None:
    """Offer ``names``, keeping the current choice when it is still there (signals blocked)."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def layer_choices(viewer, kind: str) -> list[str]:
    return [layer.name for layer in viewer.layers if kind_of(layer) == kind]


class ReviewDock(Dock):
    """Score a prediction, walk its objects worst first, fix them into the annotations."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image_combo = QComboBox()
        self.annotations_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("path/to/model.safetensors")
        self.score_button = QPushButton("Score")
        self.score_button.setToolTip("Predict with the 8 flips/rotations and rank the objects")
        self.show_uncertainty = QCheckBox("Show the uncertainty layer")
        self.show_uncertainty.setChecked(True)
        self.add_regions = QCheckBox("Reviewed objects become training regions")
        self.add_regions.setChecked(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        for column, width in enumerate((44, 72, 48, 300)):
            self.table.setColumnWidth(column, width)
        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for i, (text, key, method) in enumerate(ACTIONS):
            button = QPushButton(f"{text} ({key})")
            button.clicked.connect(getattr(self, method))
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(getattr(self, method))
            self.buttons[method] = button
            grid.addWidget(button, i // 3, i % 3)
        self.n_boxes = QSpinBox()
        self.n_boxes.setRange(1, 20)
        self.n_boxes.setValue(3)
        self.propose_button = QPushButton("Propose regions to annotate")

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotations", self.annotations_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("", self.model_path)
        propose_row = QHBoxLayout()
        propose_row.addWidget(self.n_boxes)
        propose_row.addWidget(self.propose_button)
        layout = self.body
        layout.addLayout(form)
        layout.addWidget(self.score_button)
        layout.addWidget(self.show_uncertainty)
        layout.addWidget(self.table, 1)
        layout.addLayout(grid)
        layout.addWidget(self.add_regions)
        layout.addLayout(propose_row)
        self.end_body()

        self.queue: list[Any] = []  # ObjectScore, worst first (the table's rows)
        self.uncertainty: np.ndarray | None = None  # (Z, Y, X) of the last scoring
        self._scored: tuple[str, bool] | None = None  # (image name, is stack)
        self._history: list[tuple[bool, int]] = []  # (labels changed, boxes added) per action
        self.score_button.clicked.connect(self.score)
        self.propose_button.clicked.connect(self.propose)
        self.table.itemSelectionChanged.connect(self._go_to_selected)
        self.show_uncertainty.toggled.connect(self._toggle_uncertainty)
        self.model_combo.currentTextChanged.connect(
            lambda s: self.model_path.setEnabled(s == FILE)
        )
        self.image_combo.currentTextChanged.connect(self._starter_for_image)
        self.listen(self.viewer.layers.events.inserted, self._refresh)
        self.listen(self.viewer.layers.events.removed, self._refresh)
        self._disconnect_session = _session.on_model_changed(self._refresh)
        self.destroyed.connect(lambda *_: self._disconnect_session())
        self._refresh()

    # --- choices -----------------------------------------------------------------------

    def _refresh(self, event=None) -> None:
        images = [
            n for n in layer_choices(self.viewer, "image") if not n.endswith(UNCERTAINTY_SUFFIX)
        ]
        fill_combo(self.image_combo, [n for n in images if not n.endswith(" U-Net foreground")])
        labels = [
            n for n in layer_choices(self.viewer, "labels") if not n.endswith(" U-Net labels")
        ]
        fill_combo(self.annotations_combo, labels)
        image = self.image_combo.currentText()
        if f"{image} annotations" in labels and not self.annotations_combo.currentText():
            self.annotations_combo.setCurrentText(f"{image} annotations")
        fill_combo(self.model_combo, model_sources())
        self._starter_for_image()
        self.model_path.setEnabled(self.model_combo.currentText() == FILE)

    def _starter_for_image(self, *_args) -> None:
        starter_for_layer(self.model_combo, self._image())

    def _image(self):
        return layer_named(self.viewer, self.image_combo.currentText())

    def _annotations(self, create: bool = True):
        """The annotation labels layer (created as "<image> annotations" when missing)."""
        layer = layer_named(self.viewer, self.annotations_combo.currentText())
        image = self._image()
        if layer is None and create and image is not None:
            shape = labels_shape_for(image)
            layer = self.viewer.add_labels(
                np.zeros(shape, np.uint32),
                name=f"{image.name} annotations",
                scale=image.scale[-len(shape) :],
                translate=image.translate[-len(shape) :],
            )
            self.annotations_combo.setCurrentText(layer.name)
        return layer

    def prediction_name(self) -> str:
        return labels_name(self.image_combo.currentText())

    # --- scoring -----------------------------------------------------------------------

    def score(self) -> None:
        """Predict with confidence in a worker thread; fills the table when done."""
        from napari_unet.core.confidence import reference_from
        from napari_unet.core.predict import PredictConfig

        image_layer = self._image()
        if image_layer is None:
            report_error(InputError("Pick an image layer first."))
            return
        source = self.model_combo.currentText()
        path = model_file_for(source, self.model_path.text())
        if source == SESSION:
            model = _session.current_model()
            if model is None:
                report_error(InputError("No model has been trained in this session yet."))
                return
        else:
            model = path
        data = (
            image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
        )
        is_stack = len(labels_shape_for(image_layer)) == 3
        slices = [self._current_slice()] if is_stack else None
        annotations = self._annotations(create=False)
        reference = None if annotations is None else reference_from(np.asarray(annotations.data))
        self._scored = (image_layer.name, is_stack)
        self.score_button.setEnabled(False)
        self.status.setText(f"Scoring {image_layer.name!r} (8 flips/rotations)…")
        self.jobs.start(
            PREDICTION_JOB,
            model,
            data,
            PredictConfig(confidence="tta"),
            slices=slices,
            reference=reference,
            name=image_layer.name,
            on_return=self._on_scored,
            on_finish=self._on_finish,
        )

    def _current_slice(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def _on_finish(self) -> None:
        self.score_button.setEnabled(True)

    def _on_scored(self, prediction) -> None:
        from napari_unet.core.confidence import worst_first

        image_layer = layer_named(self.viewer, self._scored[0])
        is_stack = self._scored[1]
        scale, translate = image_layer.scale, image_layer.translate
        ndim = 3 if is_stack else 2
        labels, uncertainty = prediction.labels, prediction.uncertainty
        if is_stack:  # keep the other slices of an earlier prediction
            index = prediction.objects[0].slice if prediction.objects else self._current_slice()
            old = layer_named(self.viewer, self.prediction_name())
            shape = labels_shape_for(image_layer)
            stack = np.zeros(shape, np.uint32)
            if old is not None and tuple(old.data.shape) == shape:
                stack[:] = np.asarray(old.data)
            stack[index] = labels[index]
            labels = stack
        set_layer(
            self.viewer,
            self.prediction_name(),
            labels,
            "labels",
            role=RESULT,
            scale=scale[-ndim:],
            translate=translate[-ndim:],
        )
        self.uncertainty = uncertainty if is_stack else uncertainty[None]
        layer = set_layer(
            self.viewer,
            f"{image_layer.name}{UNCERTAINTY_SUFFIX}",
            uncertainty,
            "image",
            role=RESULT,
            colormap="inferno",
            contrast_limits=(0.0, 1.0),
            blending="additive",
            opacity=0.5,
            scale=scale[-ndim:],
            translate=translate[-ndim:],
        )
        layer.visible = self.show_uncertainty.isChecked()
        self.viewer.layers.selection.active = image_layer
        self.queue = worst_first(prediction.objects)
        self._fill_table()
        self.status.setText(
            f"{len(self.queue)} objects, least confident first. Select a row, then "
            "A accept · D delete · M merge · S split · R repaint · U undo."
        )
        if self.queue:
            self.table.selectRow(0)

    def _toggle_uncertainty(self, visible: bool) -> None:
        if self._scored is None:
            return
        layer = layer_named(self.viewer, f"{self._scored[0]}{UNCERTAINTY_SUFFIX}")
        if layer is not None:
            layer.visible = visible

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.queue))
        for row, obj in enumerate(self.queue):
            cells = (str(obj.id), f"{obj.confidence:.2f}", str(obj.area), obj.reason, "")
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 3:
                    item.setToolTip(
                        f"certainty {obj.certainty:.2f}, stability {obj.stability:.2f}, "
                        f"outline {obj.boundary:.2f}, "
                        f"size {obj.size:.2f}, shape {obj.shape:.2f}"
                    )
                self.table.setItem(row, column, item)

    # --- navigation --------------------------------------------------------------------

    def current(self):
        rows = self.table.selectionModel().selectedRows()
        return self.queue[rows[0].row()] if rows else None

    def _go_to_selected(self) -> None:
        """Centre and zoom the view on the selected object (its slice in a stack)."""
        obj, image = self.current(), self._image()
        if obj is None or image is None:
            return
        point = (obj.y, obj.x) if obj.slice is None else (obj.slice, obj.y, obj.x)
        world = np.asarray(image.data_to_world(point), dtype=float)
        if obj.slice is not None:
            self.viewer.dims.set_current_step(0, obj.slice)
        self.viewer.camera.center = tuple(world[-2:])
        y0, x0, y1, x1 = obj.bbox
        extent = max(y1 - y0, x1 - x0, 1) * float(max(image.scale[-2:]))
        self.viewer.camera.zoom = float(np.clip(VIEW_PX / (VIEW_CELLS * extent), 0.05, 50))
        prediction = layer_named(self.viewer, self.prediction_name())
        if prediction is not None:
            prediction.selected_label = obj.id

    def _advance(self, done: str) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        row = rows[0].row()
        self.table.item(row, 4).setText(done)
        for column in range(len(COLUMNS)):
            self.table.item(row, column).setForeground(Qt.gray)
        if row + 1 < self.table.rowCount():
            self.table.selectRow(row + 1)

    # --- actions -----------------------------------------------------------------------

    def _planes(self):
        """(object, prediction plane, annotations layer, annotation plane, slice or None)."""
        obj = self.current()
        if obj is None:
            raise InputError("Score the image and select an object in the table first.")
        prediction = layer_named(self.viewer, self.prediction_name())
        if prediction is None:
            raise InputError(
                f"The prediction layer {self.prediction_name()!r} is gone: score again."
            )
        annotations = self._annotations()
        if tuple(annotations.data.shape) != tuple(prediction.data.shape):
            raise InputError(
                f"Annotations {annotations.name!r} have shape {annotations.data.shape} but the "
                f"prediction has {prediction.data.shape}: pick the image's annotation layer."
            )
        pred = np.asarray(prediction.data)
        ann = np.asarray(annotations.data)
        if obj.slice is not None:
            pred, ann = pred[obj.slice], ann[obj.slice]
        return obj, pred, annotations, ann, obj.slice

    def _run(self, action: str, make_edit) -> Any:
        try:
            obj, pred, annotations, ann, index = self._planes()
            edit = make_edit(obj, pred, ann, next_label(np.asarray(annotations.data)))
        except InputError as exc:
            report_error(exc)
            self.status.setText(str(exc))
            return None
        regions = self.add_regions.isChecked()
        boxes = self._regions_layer(annotations)[1] if regions else 0  # before the edit
        rows, cols = edit.indices
        changed = len(rows) > 0
        if changed:
            indices = (rows, cols) if index is None else (np.full_like(rows, index), rows, cols)
            values = edit.values.astype(annotations.data.dtype, copy=False)
            annotations.data_setitem(indices, values)
        if regions:
            boxes += self._add_training_region(edit.box, index, annotations)
        self._history.append((changed, boxes))
        self.status.setText(f"Object {obj.id}: {action}.")
        self._advance(action)
        return edit

    def accept(self) -> None:
        from napari_unet.core import review

        self._run("accepted", lambda o, p, a, n: review.accept(p, a, o.id, n))

    def delete(self) -> None:
        from napari_unet.core import review

        self._run("deleted", lambda o, p, a, n: review.delete(p, a, o.id))

    def merge(self) -> None:
        from napari_unet.core import review

        self._run("merged", lambda o, p, a, n: review.merge(p, a, o.id, n))

    def split(self) -> None:
        """Cut the object along the last line drawn in the "review cut line" layer."""
        from napari_unet.core import review

        layer = layer_named(self.viewer, CUT_LAYER)
        if layer is None or not len(layer.data):
            image = self._image()
            ndim = len(labels_shape_for(image)) if image is not None else 2
            layer = layer or self.viewer.add_shapes(
                ndim=ndim, name=CUT_LAYER, edge_color="cyan", edge_width=1
            )
            layer.mode = "add_path"
            self.viewer.layers.selection.active = layer
            self.status.setText("Draw a line across the object, then press Split (S) again.")
            return
        line = np.asarray(layer.data[-1])[:, -2:]
        if self._run("split", lambda o, p, a, n: review.split(p, a, o.id, line, n)) is not None:
            layer.data = []

    def repaint(self) -> None:
        """Accept the object, then hand over the brush with its id to fix the outline."""
        from napari_unet.core import review

        edit = self._run("repainted", lambda o, p, a, n: review.accept(p, a, o.id, n))
        if edit is not None:
            annotations = self._annotations()
            annotations.selected_label = edit.label
            annotations.mode = "paint"
            self.viewer.layers.selection.active = annotations

    def undo(self) -> None:
        """Undo the dock's last action (the labels edit and the training region it added)."""
        if not self._history:
            self.status.setText("Nothing to undo.")
            return
        changed, boxes = self._history.pop()
        if changed:
            self._annotations().undo()
        regions = layer_named(self.viewer, REGIONS_LAYER)
        if boxes and regions is not None:
            regions.data = list(regions.data)[:-boxes]
        self.status.setText("Undone.")

    # --- training regions --------------------------------------------------------------

    def _regions_layer(self, annotations) -> tuple[Any, int]:
        """The Train dock's regions layer; a new one first keeps annotations made so far
        (a box over every already annotated slice). Returns (layer, boxes added)."""
        layer = layer_named(self.viewer, REGIONS_LAYER)
        if layer is not None:
            return layer, 0
        shape = tuple(annotations.data.shape)
        layer = self.viewer.add_shapes(
            ndim=len(shape),
            name=REGIONS_LAYER,
            edge_color="yellow",
            face_color=[1, 1, 0, 0.08],
            edge_width=2,
            scale=annotations.scale,
            translate=annotations.translate,
        )
        from napari_unet.core.annotations import annotated_slices

        data = np.asarray(annotations.data)
        planes = annotated_slices(data) if data.ndim == 3 else ([None] if data.any() else [])
        whole = [Box(z, 0, 0, *shape[-2:]) for z in planes]
        self._add_boxes(layer, whole, len(shape))
        return layer, len(whole)

    def _add_training_region(self, box: Box, index: int | None, annotations) -> int:
        """Add the reviewed area unless a box already covers it; returns boxes added."""
        layer, added = self._regions_layer(annotations)
        existing = boxes_from_rectangles(list(layer.data), tuple(annotations.data.shape))
        placed = Box(index, box.y0, box.x0, box.y1, box.x1)
        if any(
            b.slice_index in (None, index)
            and b.y0 <= placed.y0
            and b.x0 <= placed.x0
            and b.y1 >= placed.y1
            and b.x1 >= placed.x1
            for b in existing
        ):
            return added
        self._add_boxes(layer, [placed], len(annotations.data.shape))
        return added + 1

    @staticmethod
    def _add_boxes(layer, boxes: list[Box], ndim: int) -> None:
        if not boxes:
            return
        rectangles = []
        for b in boxes:
            corners = np.array([[b.y0, b.x0], [b.y0, b.x1], [b.y1, b.x1], [b.y1, b.x0]], float)
            if ndim == 3:
                corners = np.column_stack([np.full(4, b.slice_index or 0), corners])
            rectangles.append(corners)
        layer.add_rectangles(rectangles)

    # --- annotate next -----------------------------------------------------------------

    def _predicted_reference(self, index: int | None):
        """Typical cell size from the scored prediction (too few cells annotated yet)."""
        from napari_unet.core.confidence import reference_from

        layer = layer_named(self.viewer, self.prediction_name())
        if layer is None:
            return None
        data = np.asarray(layer.data)
        return reference_from(data if index is None else data[index])

    def propose(self) -> list[Box]:
        """Add boxes where annotating helps most to the "training regions" layer."""
        from napari_unet.core.confidence import propose_regions, reference_from

        if self.uncertainty is None or self._scored is None:
            report_error(InputError("Score the image first: proposals follow its uncertainty."))
            return []
        image = self._image()
        annotations = self._annotations()
        data = np.asarray(annotations.data)
        is_stack = self._scored[1]
        index = self._current_slice() if is_stack else None
        plane = data[index] if is_stack else data
        regions = layer_named(self.viewer, REGIONS_LAYER)
        existing = boxes_from_rectangles(list(regions.data), data.shape) if regions else []
        raw = np.asarray(image.data[index] if is_stack else image.data, dtype=np.float32)
        if raw.ndim == 3:  # RGB
            raw = raw.mean(axis=-1)
        boxes = propose_regions(
            self.uncertainty[index or 0],
            plane,
            self.n_boxes.value(),
            image=raw,
            existing=existing,
            slice_index=index,
            reference=reference_from(data) or self._predicted_reference(index),
        )
        if not boxes:
            self.status.setText("No free place left for a box outside the annotated areas.")
            return []
        layer, added = self._regions_layer(annotations)
        self._add_boxes(layer, boxes, data.ndim)
        self.viewer.layers.selection.active = annotations
        self.status.setText(
            f"{len(boxes)} boxes added to {REGIONS_LAYER!r}: annotate every cell reaching "
            "into them, whole (a cell cut at the box edge would teach a false outline; "
            "inside a training region unlabelled pixels count as background), then Resume."
        )
        return boxes
