"""Predict dock: one click turns an image or stack into a plugin-owned labels layer.

The model comes from this session's Train dock, the shipped starter model, or a file.
Prediction runs in a worker thread (``core.predict``); the dock only gathers settings,
shows progress and refreshes the layers "<image> U-Net labels" / "<image> U-Net
foreground" as each slice finishes. The user's layers are never written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from napari_unet.core import postprocess
from napari_unet.core.io import InputError
from napari_unet.core.predict import PredictConfig
from napari_unet.core.presets import AUTO
from napari_unet.core.stitch import STITCH_THRESHOLD
from napari_unet.widgets import _session
from napari_unet.widgets._channels import gather
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._jobs import core_job, report_error
from napari_unet.widgets._layers import (
    RESULT,
    grid_problem,
    layer_named,
    owned_layer,
    plane_index,
    select,
    set_layer,
)
from napari_unet.widgets.batch import BatchPanel

SESSION, FILE = "Model trained in this session", "Model file…"
CURRENT, ALL = "Current slice", "All slices"
LABELS_SUFFIX, FOREGROUND_SUFFIX = " U-Net labels", " U-Net foreground"


def labels_name(image_name: str) -> str:
    return f"{image_name}{LABELS_SUFFIX}"


def foreground_name(image_name: str) -> str:
    return f"{image_name}{FOREGROUND_SUFFIX}"


def model_sources() -> list[str]:
    """The model choices of the Predict, Review and Batch docks: this session's model
    (once there is one), the shipped models installed, a file."""
    from napari_unet.models import shipped_models

    session = [SESSION] if _session.current_model() is not None else []
    return [*session, *(m.title for m in shipped_models()), FILE]


def model_file_for(source: str, typed: str) -> str:
    """The file behind a model choice: a shipped model's, else what was typed."""
    from napari_unet.models import shipped_by_title

    shipped = shipped_by_title(source)
    return str(shipped.path) if shipped is not None else typed.strip()


PREDICTION_JOB = core_job("napari_unet.core.predict:prediction_job")


def starter_for_layer(combo, layer) -> None:
    """Between shipped starters only: an RGB layer gets the stained RGB starter, a gray
    one the nuclei starter back (a gray model cannot take colour, nor the reverse). The
    session's model or a file the user chose is left alone."""
    from napari_unet.models import STAINED_KEY, colour_counterpart, shipped_by_title

    current = shipped_by_title(combo.currentText())
    other = None if layer is None or current is None else colour_counterpart(current.path)
    if other is not None and (other.key == STAINED_KEY) == bool(getattr(layer, "rgb", False)):
        combo.setCurrentText(other.title)


class PredictDock(Dock):
    """Image, model, slices, tile size, TTA, threshold, min size; Run / Cancel."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image_picker = self.picker("image")
        self.channels = self.channel_picker(self.image_picker)
        self.model_combo = QComboBox()
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("path/to/model.safetensors")
        self.browse_button = QPushButton("Browse…")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([ALL, CURRENT])
        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 4096)
        self.tile_size.setSingleStep(64)
        self.tile_size.setSpecialValueText(AUTO)
        self.tile_size.setToolTip("Input tile edge in pixels; auto = from free memory")
        self.tta = QCheckBox("Average flips/rotations (TTA, ~5x slower on a CPU)")
        self.tta.setChecked(PredictConfig.tta)
        self.tta.setToolTip(
            "Predict each tile in its 8 flips/rotations and average (on by default): on "
            "real images +0.02-0.05 AP@0.5; untick for ~5x faster prediction on a CPU "
            "(README, Predict)"
        )
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 0.95)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(postprocess.THRESHOLD)
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 100_000)
        self.min_size.setValue(postprocess.MIN_SIZE_PX)
        self.min_size.setSuffix(" px")
        self.split_merged = QCheckBox("Split merged cells (distance watershed)")
        self.split_merged.setChecked(True)
        self.split_merged.setToolTip(
            "Seeds at the centres of the predicted cells, sized by the cells the model was "
            "trained on: separates touching cells whose gap the model missed"
        )
        self.show_foreground = QCheckBox("Also show the cell probability")
        self.link_z = QCheckBox("Link objects across Z into 3D objects, overlap ≥")
        self.link_z.setChecked(True)
        self.link_z.setToolTip(
            "Z stacks: an object takes the id of the object it overlaps in the slice above "
            "(overlap = share of the smaller one). Off, or a time-lapse: ids per slice"
        )
        self.stitch_threshold = QDoubleSpinBox()
        self.stitch_threshold.setRange(0.05, 1.0)
        self.stitch_threshold.setSingleStep(0.05)
        self.stitch_threshold.setValue(STITCH_THRESHOLD)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)

        path_row = QHBoxLayout()
        path_row.addWidget(self.model_path)
        path_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Image", self.image_picker.native)
        form.addRow("+ channels", self.channels)
        form.addRow("Model", self.model_combo)
        form.addRow("", path_row)
        form.addRow("Predict", self.scope_combo)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Threshold", self.threshold)
        form.addRow("Min size", self.min_size)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.body.addLayout(form)
        self.body.addWidget(self.tta)
        self.body.addWidget(self.split_merged)
        self.body.addWidget(self.show_foreground)
        link_row = QHBoxLayout()
        link_row.addWidget(self.link_z)
        link_row.addWidget(self.stitch_threshold)
        self.body.addLayout(link_row)
        self.body.addLayout(buttons)
        self.batch = BatchPanel(self)  # batch mode: a whole folder (widgets/batch.py)
        self.body.addWidget(self.batch)
        self.end_body()

        self._progress = None
        self._target: tuple | None = None  # (image layer, its name, labels, foreground)
        self._cells = 0
        self._done = False
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.browse_button.clicked.connect(self._browse)
        self.model_combo.currentTextChanged.connect(self._model_source_changed)
        self.image_picker.changed.connect(self._starter_for_image)
        self._disconnect_session = _session.on_model_changed(self._refresh_models)
        self.destroyed.connect(lambda *_: self._disconnect_session())
        self._refresh_models()
        self._starter_for_image()

    def release(self) -> None:
        super().release()
        self._disconnect_session()  # a closed dock no longer follows the session's model

    # --- choices ---------------------------------------------------------------------

    def _refresh_models(self) -> None:
        current = self.model_combo.currentText()
        sources = model_sources()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(sources)
        # A freshly published model is what people want next; otherwise keep their choice.
        if SESSION in sources:
            self.model_combo.setCurrentText(SESSION)
        elif current in sources:
            self.model_combo.setCurrentText(current)
        self.model_combo.blockSignals(False)
        self._model_source_changed(self.model_combo.currentText())

    def _starter_for_image(self, *_args) -> None:
        starter_for_layer(self.model_combo, self.image_picker.value)

    def _model_source_changed(self, source: str) -> None:
        self.model_path.setEnabled(source == FILE)
        self.browse_button.setEnabled(source == FILE)
        if source == SESSION and _session.current_model() is not None:
            self.offer_channels(_session.current_model()[1])

    def offer_channels(self, metadata: dict) -> None:
        """Pick the layers a model was trained on (by name) when they are open."""
        names = (metadata.get("input") or {}).get("channel_names") or []
        first = layer_named(self.viewer, names[0]) if len(names) > 1 else None
        if first is not None:
            select(self.image_picker, first)
            self.channels.offer(self.viewer, names[0])
            self.channels.tick(names[1:])

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open a U-Net model",
            "",
            "napari-unet models or bioimage.io packages (*.safetensors *.zip)",
        )
        if path:
            self.model_path.setText(path)

    # --- run -------------------------------------------------------------------------

    def config(self, time_lapse: bool = False):
        link = self.link_z.isChecked() and not time_lapse
        return PredictConfig(
            stitch_threshold=self.stitch_threshold.value() if link else 0.0,
            tile_size=self.tile_size.value() or None,
            tta=self.tta.isChecked(),
            threshold=self.threshold.value(),
            min_size_px=self.min_size.value(),
            split_merged=self.split_merged.isChecked(),
        )

    def run(self) -> None:
        """Start predicting the chosen image (or its current slice) in a worker thread."""
        layer = self.image_picker.value
        source = self.model_combo.currentText()
        path = model_file_for(source, self.model_path.text())
        try:  # cheap checks (file header, shapes) here, so mistakes never reach the worker
            if layer is None:
                raise InputError("Pick an image layer first.")
            if not layer.rgb and grid_problem(layer):
                raise InputError(grid_problem(layer))
            picked = gather(self.viewer, layer, self.channels.ticked())
            self._check(source, path, picked, layer.name)
        except InputError as exc:
            report_error(exc)
            self.status.setText(str(exc))
            return
        image, shape = picked.data, picked.labels_shape
        is_stack = len(shape) == 3
        slices = None
        if picked.axes is None and is_stack and self.scope_combo.currentText() == CURRENT:
            slices = list(plane_index(self.viewer, layer))
        # gray: slice by slice into the shown arrays; channels: any layout, labels at the end
        options = {"slices": slices} if picked.axes is None else {"axes": picked.axes}
        labels, foreground = self._outputs(layer, shape, is_stack, fresh=slices is None)
        # Names fixed now: renaming the image during the run does not start new layers.
        self._target = (layer, layer.name, labels, foreground)
        self._done = False
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Predicting {layer.name!r}…")
        model = _session.current_model() if source == SESSION else path
        self.jobs.start(
            PREDICTION_JOB,
            model,
            image,
            self.config(picked.time_lapse),
            **options,
            **({} if picked.axes else {"labels_out": labels, "foreground_out": foreground}),
            keep_foreground=foreground is not None,
            name=layer.name,
            on_yield=self._on_event,
            on_return=self._on_done,
            on_finish=self._on_finish,
        )

    @staticmethod
    def _check(source: str, path: str, picked: Any, name: str) -> None:
        from napari_unet.core import axes, checkpoint
        from napari_unet.core.predict import check_channels, stack_layout

        if source == SESSION:
            current = _session.current_model()
            if current is None:
                raise InputError("No model has been trained in this session yet.")
            architecture = current[1].get("architecture", current[0].config)
        elif not path:
            raise InputError("Choose a model file (.safetensors) first.")
        else:
            architecture = checkpoint.read_metadata(path)["architecture"]
        in_channels = int(architecture.get("in_channels", 1))
        if picked.axes is None:
            try:
                stack_layout(picked.data.shape, in_channels, name)
            except InputError:
                check_channels(in_channels, 1, name, " (tick more layers as channels)")
                raise
        else:
            found = axes.parse(picked.axes, picked.data.shape, in_channels, name)
            check_channels(in_channels, found.channels, name, f" ({', '.join(picked.names)})")

    def _outputs(self, layer, shape: tuple[int, ...], is_stack: bool, fresh: bool):
        """Arrays the worker writes slice by slice; one slice keeps the other slices' labels."""
        stack_shape = shape if is_stack else (1, *shape)
        labels = np.zeros(stack_shape, np.uint32)
        old = owned_layer(self.viewer, labels_name(layer.name))
        if not fresh and old is not None and tuple(old.data.shape) == shape:
            labels[:] = np.asarray(old.data).reshape(stack_shape)
        foreground = (
            np.zeros(stack_shape, np.float32) if self.show_foreground.isChecked() else None
        )
        return labels, foreground

    def cancel(self) -> None:
        if self.jobs.busy:
            self.jobs.cancel()
            self.status.setText("Cancelling after the current batch of tiles…")

    def _on_event(self, event) -> None:
        from napari.utils import progress

        from napari_unet.core.predict import Progress, SliceResult

        if isinstance(event, Progress):
            if self._done:  # a late queued event must not overwrite the final status
                return
            # Text first: napari's progress bar may process queued events re-entrantly.
            self.status.setText(
                f"Slice {event.slice_index} ({event.slices_done + 1} of {event.n_slices}): "
                f"{event.tiles_done} of {event.tiles_total} tiles"
            )
            if self._progress is None:
                self._progress = progress(total=event.tiles_total, desc="U-Net prediction")
            bar = self._progress
            bar.n = event.tiles_done
            bar.refresh()
            if not self.jobs.busy and bar is self._progress:  # finished meanwhile
                bar.close()
                self._progress = None
        elif isinstance(event, SliceResult):
            self._cells = int(event.labels.max())  # ids run on through a stack
            self._show_layers()

    def _show_layers(self) -> None:
        """Put the arrays the worker fills into the plugin's layers (GUI thread only)."""
        if self._target is None:
            return
        layer, name, labels, foreground = self._target
        is_stack = labels.shape[0] > 1 or layer.ndim == 3
        scale = tuple(layer.scale[-3:] if is_stack else layer.scale[-2:])
        translate = tuple(layer.translate[-3:] if is_stack else layer.translate[-2:])
        view = labels if is_stack else labels[0]
        out = set_layer(
            self.viewer,
            labels_name(name),
            view,
            "labels",
            role=RESULT,
            scale=scale,
            translate=translate,
        )
        out.refresh()
        if foreground is not None:
            fg = set_layer(
                self.viewer,
                foreground_name(name),
                foreground if is_stack else foreground[0],
                "image",
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                opacity=0.6,
                blending="additive",
                scale=scale,
                translate=translate,
            )
            fg.refresh()

    def _on_done(self, prediction) -> None:
        self._done = True
        if self._target is not None and prediction is not None:  # channels: labels at the end
            _, _, labels, foreground = self._target
            if prediction.labels is not labels:
                labels[:] = np.asarray(prediction.labels).reshape(labels.shape)
                self._cells = int(labels.max())
            if foreground is not None and prediction.foreground is not None:
                foreground[:] = np.asarray(prediction.foreground).reshape(foreground.shape)
        self._show_layers()
        self.status.setText(
            f"Done: {self._cells} cells. Correct them with the Annotate dock if needed."
        )

    def _on_finish(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if not self._done and "Cancelling" in self.status.text():
            self.status.setText("Cancelled; the slices done so far are shown.")
