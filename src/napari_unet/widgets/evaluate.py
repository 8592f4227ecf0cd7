"""Evaluate dock: score a prediction labels layer against ground truth and show the errors.

All numbers come from ``core.metrics`` in a worker thread; the dock only fills a table,
draws the AP curve and puts the offending objects into plugin-owned labels layers.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from napari_unet.core import metrics
from napari_unet.core.io import InputError, as_labels
from napari_unet.widgets._channels import is_time_lapse
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._jobs import report_error
from napari_unet.widgets._layers import (
    OWNER_KEY,
    PREVIEW,
    RESULT,
    grid_problem,
    owned_layer,
    plane_index,
    set_layer,
)

ANNOTATED, CURRENT = "Annotated slices", "Current slice"
HIGHLIGHT = "current error"
VIEW_FRACTION = 0.25  # Next error zooms so the object spans this part of the view


def looks_predicted(layer) -> bool:
    """A layer the Predict dock made, or one named like a prediction."""
    return layer.metadata.get(OWNER_KEY) == RESULT or "predict" in layer.name.lower()


class EvaluateDock(Dock):
    """Pick prediction and ground truth, press Evaluate, read the table, step through errors."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        # Predictions first in one box, anything else first in the other: distinct defaults.
        self.prediction_picker = self.picker("labels", prefer=looks_predicted)
        self.truth_picker = self.picker("labels", prefer=lambda x: not looks_predicted(x))
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([ANNOTATED, CURRENT])
        self.scope_combo.setToolTip(
            "Stacks: score every slice with ground truth, or only the slice on screen"
        )
        self.evaluate_button = QPushButton("Evaluate")
        self.next_error_button = QPushButton("Next error ▶")
        self.next_error_button.setEnabled(False)
        self.next_error_button.setToolTip("Centre, zoom and frame the next error object")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Metric", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(220)

        self.add_form(
            ("Prediction", self.prediction_picker),
            ("Ground truth", self.truth_picker),
            ("Score", self.scope_combo),
        )
        self.add_row(self.evaluate_button, self.next_error_button)
        self.body.addWidget(self.status)
        self.body.addWidget(self.table)
        self.figure, self.canvas = self._make_plot()
        self.body.addWidget(self.canvas)
        self.body.addStretch(1)
        self.fit_width()

        self.evaluation: metrics.Evaluation | None = None
        self._error_index = -1
        self._truth_layer = None
        self.evaluate_button.clicked.connect(self.evaluate)
        self.next_error_button.clicked.connect(self.next_error)
        for picker in (self.prediction_picker, self.truth_picker):
            picker.changed.connect(self._check_pair)
        self._check_pair()

    @staticmethod
    def _make_plot():
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # matplotlib is optional: the table still works
            return None, QLabel("Install matplotlib to see the AP curve.")
        figure = Figure(figsize=(4, 2.4), tight_layout=True)
        canvas = FigureCanvasQTAgg(figure)
        canvas.setMinimumHeight(180)
        return figure, canvas

    def _pair_problem(self) -> str | None:
        prediction, truth = self.prediction_picker.value, self.truth_picker.value
        if prediction is None or truth is None:
            return "Pick a prediction and a ground-truth labels layer first."
        if prediction is truth:
            return (
                f"Prediction and ground truth are the same layer ({truth.name!r}): "
                "pick two different labels layers."
            )
        for layer in (prediction, truth):
            if grid_problem(layer):
                return grid_problem(layer)
        if prediction.data.shape != truth.data.shape:
            return (
                f"Prediction {prediction.name!r} has shape {prediction.data.shape} but "
                f"ground truth {truth.name!r} has {truth.data.shape}: pick layers of "
                "the same image."
            )
        return None

    def _check_pair(self, *args) -> None:
        """Warn as soon as the same layer is picked twice (the score would be a perfect 1)."""
        problem = self._pair_problem()
        same = problem is not None and "same layer" in problem
        if same and len(self.truth_picker.choices) < 2:
            problem = (
                "Evaluate needs two labels layers: a prediction (Predict dock) and a "
                "ground truth (e.g. your annotations)."
            )
        self.status.setText(problem if same else "")
        self.evaluate_button.setEnabled(not same and not self.jobs.busy)

    def _clear_results(self) -> None:
        """No table, curve or Next error from an earlier run next to a new message."""
        self.evaluation = None
        self.table.setRowCount(0)
        self.next_error_button.setEnabled(False)
        if self.figure is not None:
            self.figure.clear()
            self.canvas.draw_idle()

    def evaluate(self) -> None:
        """Read the two layers and start scoring in a worker thread."""
        prediction, truth = self.prediction_picker.value, self.truth_picker.value
        self._clear_results()
        try:
            problem = self._pair_problem()
            if problem:
                raise InputError(problem)
            gt = as_labels(np.array(truth.data), f"Ground truth {truth.name!r}")
            pred = as_labels(np.array(prediction.data), f"Prediction {prediction.name!r}")
        except InputError as exc:
            report_error(exc)
            self.status.setText(str(exc))
            return
        slices = None
        if gt.ndim == 3 and self.scope_combo.currentText() == CURRENT:
            slices = list(plane_index(self.viewer, truth))
        self._truth_layer = truth
        self.evaluate_button.setEnabled(False)
        self.status.setText("Evaluating…")
        self.jobs.start(
            metrics.evaluate_iter,
            gt,
            pred,
            slices=slices,
            volume=slices is None and not is_time_lapse(truth),  # Z stacks: 3D objects too
            on_yield=self._on_progress,
            on_return=self._show,
            on_finish=self._on_finish,
        )

    def _on_progress(self, event: metrics.SliceDone) -> None:
        self.status.setText(f"Evaluating… slice {event.done} of {event.total}")

    def _on_finish(self) -> None:
        self.evaluate_button.setEnabled(True)

    def _show(self, evaluation: metrics.Evaluation) -> None:
        self.evaluation = evaluation
        self._fill_table(evaluation.metrics)
        self._plot(evaluation)
        reference = self._truth_layer
        placed = {"scale": reference.scale, "translate": reference.translate}
        for kind in metrics.ERROR_KINDS:
            set_layer(self.viewer, kind, evaluation.error_labels[kind], "labels", **placed)
        self._error_index = -1
        self.next_error_button.setEnabled(bool(evaluation.errors))
        m = evaluation.metrics
        self.status.setText(
            f"AP@0.5 {m['ap@0.50']:.3f} on {m['slices']} slice(s): {m['fn']} missed, "
            f"{m['fp']} extra, {m['splits']} split, {m['merges']} merged."
        )

    def _fill_table(self, result: dict[str, float]) -> None:
        self.table.setRowCount(len(result))
        for row, (key, value) in enumerate(result.items()):
            name, number = QTableWidgetItem(key), QTableWidgetItem(metrics.format_value(value))
            for item in (name, number):
                item.setToolTip(metrics.describe(key))
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, number)
        self.table.resizeColumnToContents(0)

    def _plot(self, evaluation: metrics.Evaluation) -> None:
        if self.figure is None:
            return
        self.figure.clear()
        ax = self.figure.add_subplot()
        ax.plot(evaluation.thresholds, evaluation.ap, "o-")
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("AP = TP / (TP+FP+FN)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        self.canvas.draw_idle()

    def next_error(self) -> None:
        """Centre and zoom the camera on the next error object and frame it in yellow."""
        if self.evaluation is None or not self.evaluation.errors:
            return
        self._error_index = (self._error_index + 1) % len(self.evaluation.errors)
        error = self.evaluation.errors[self._error_index]
        y0, x0, y1, x1 = metrics.error_box(self.evaluation, error)
        reference = self._truth_layer if self._truth_layer in self.viewer.layers else None
        lead = () if error.slice is None else (error.slice,)
        corners = np.array([[*lead, y0 - 0.5, x0 - 0.5], [*lead, y1 - 0.5, x1 - 0.5]], float)
        world = (
            corners
            if reference is None
            else np.array([reference.data_to_world(c) for c in corners])
        )
        if error.slice is not None:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, world[0, 0])
        self.viewer.camera.center = tuple((world[0, -2:] + world[1, -2:]) / 2)
        size = max(float(np.max(np.abs(world[1, -2:] - world[0, -2:]))), 1e-6)
        canvas = getattr(getattr(self.viewer, "canvas", None), "size", None) or (600, 800)
        self.viewer.camera.zoom = VIEW_FRACTION * min(canvas) / size
        self._highlight(world, error)
        where = "" if error.slice is None else f" on slice {error.slice}"
        self.status.setText(
            f"{error.kind[:-1]} {error.label}{where} "
            f"({self._error_index + 1} of {len(self.evaluation.errors)})"
        )

    def _highlight(self, world: np.ndarray, error: metrics.ErrorObject) -> None:
        """A yellow frame around the object; its error layer selected, its label picked."""
        (top, left), (bottom, right) = world[0, -2:], world[1, -2:]
        rectangle = np.array([[top, left], [top, right], [bottom, right], [bottom, left]])
        if error.slice is not None:
            lead = np.full((4, 1), world[0, 0])
            rectangle = np.hstack([lead, rectangle])
        old = owned_layer(self.viewer, HIGHLIGHT)
        if old is not None:
            self.viewer.layers.remove(old)
        self.viewer.add_shapes(
            [rectangle],
            shape_type="rectangle",
            edge_color="yellow",
            face_color="transparent",
            edge_width=max(abs(right - left), abs(bottom - top)) * 0.05 + 0.5,
            name=HIGHLIGHT,
            metadata={OWNER_KEY: PREVIEW},
        )
        errors = owned_layer(self.viewer, error.kind)
        if errors is not None:
            errors.selected_label = error.label
            self.viewer.layers.selection.active = errors
