"""Evaluate dock: score a prediction labels layer against ground truth and show the errors.

All numbers come from ``core.metrics`` in a worker thread; the dock only fills a table,
draws the AP curve and puts the offending objects into plugin-owned labels layers.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_unet.core import metrics
from napari_unet.core.io import InputError
from napari_unet.widgets._channels import is_time_lapse
from napari_unet.widgets._common import (
    layer_choices,
    layer_named,
    report_error,
    set_layer,
    start_job,
)

ANNOTATED, CURRENT = "Annotated slices", "Current slice"


class EvaluateDock(QWidget):
    """Pick prediction and ground truth, press Evaluate, read the table, step through errors."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.prediction_combo = QComboBox()
        self.truth_combo = QComboBox()
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([ANNOTATED, CURRENT])
        self.scope_combo.setToolTip(
            "Stacks: score every slice with ground truth, or only the slice on screen"
        )
        self.evaluate_button = QPushButton("Evaluate")
        self.next_error_button = QPushButton("Next error ▶")
        self.next_error_button.setEnabled(False)
        self.next_error_button.setToolTip("Centre the view on the next error object")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Metric", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(220)

        form = QFormLayout()
        form.addRow("Prediction", self.prediction_combo)
        form.addRow("Ground truth", self.truth_combo)
        form.addRow("Score", self.scope_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.evaluate_button)
        buttons.addWidget(self.next_error_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        self.figure, self.canvas = self._make_plot()
        layout.addWidget(self.canvas)

        self.worker = None
        self.evaluation: metrics.Evaluation | None = None
        self._error_index = -1
        self._truth_layer = None
        self.evaluate_button.clicked.connect(self.evaluate)
        self.next_error_button.clicked.connect(self.next_error)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()

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

    def _refresh_choices(self, event=None) -> None:
        names = [n for n in layer_choices(self.viewer, "labels") if n not in metrics.ERROR_KINDS]
        for combo, guess in ((self.prediction_combo, "predict"), (self.truth_combo, "")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif guess and any(guess in n.lower() for n in names):
                combo.setCurrentText(next(n for n in names if guess in n.lower()))
            combo.blockSignals(False)
        if (
            self.truth_combo.currentText() == self.prediction_combo.currentText()
            and len(names) > 1
        ):
            self.truth_combo.setCurrentText(
                next(n for n in names if n != self.prediction_combo.currentText())
            )

    def _layer(self, combo: QComboBox):
        return layer_named(self.viewer, combo.currentText())

    def _current_slice(self, layer) -> int:
        return int(round(layer.world_to_data(self.viewer.dims.point)[0]))

    def evaluate(self) -> None:
        """Read the two layers and start scoring in a worker thread."""
        prediction, truth = self._layer(self.prediction_combo), self._layer(self.truth_combo)
        try:
            if prediction is None or truth is None:
                raise InputError("Pick a prediction and a ground-truth labels layer first.")
            if prediction.data.shape != truth.data.shape:
                raise InputError(
                    f"Prediction {prediction.name!r} has shape {prediction.data.shape} but "
                    f"ground truth {truth.name!r} has {truth.data.shape}: pick layers of "
                    "the same image."
                )
        except InputError as exc:
            report_error(exc)
            self.status.setText(str(exc))
            return
        gt, pred = np.asarray(truth.data), np.asarray(prediction.data)
        slices = None
        if gt.ndim == 3 and self.scope_combo.currentText() == CURRENT:
            slices = [min(max(self._current_slice(truth), 0), len(gt) - 1)]
        self._truth_layer = truth
        self.evaluate_button.setEnabled(False)
        self.status.setText("Evaluating…")
        self.worker = start_job(
            metrics.evaluate_iter,
            gt,
            pred,
            slices=slices,
            volume=slices is None and not is_time_lapse(truth),  # Z stacks: 3D objects too
            on_yield=self._on_progress,
            on_return=self._show,
            on_finish=self._on_finish,
        )
        self.worker.errored.connect(lambda exc: self.status.setText(str(exc)))

    def _on_progress(self, event: metrics.SliceDone) -> None:
        self.status.setText(f"Evaluating… slice {event.done} of {event.total}")

    def _on_finish(self) -> None:
        self.evaluate_button.setEnabled(True)
        self.worker = None

    def _show(self, evaluation: metrics.Evaluation) -> None:
        self.evaluation = evaluation
        self._fill_table(evaluation.metrics)
        self._plot(evaluation)
        for kind in metrics.ERROR_KINDS:
            set_layer(self.viewer, kind, evaluation.error_labels[kind], kind="labels")
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
        """Centre the camera on the next error object and select its layer."""
        if self.evaluation is None or not self.evaluation.errors:
            return
        self._error_index = (self._error_index + 1) % len(self.evaluation.errors)
        error = self.evaluation.errors[self._error_index]
        position = error.centroid if error.slice is None else (error.slice, *error.centroid)
        reference = self._truth_layer if self._truth_layer in self.viewer.layers else None
        world = reference.data_to_world(position) if reference is not None else position
        if error.slice is not None:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, world[0])
        self.viewer.camera.center = tuple(world[-2:])
        if error.kind in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[error.kind]
        where = "" if error.slice is None else f" on slice {error.slice}"
        self.status.setText(
            f"{error.kind[:-1]} {error.label}{where} "
            f"({self._error_index + 1} of {len(self.evaluation.errors)})"
        )
