"""Train dock: fine-tune a U-Net on the annotated cells and watch it learn.

The dock gathers layers and settings and runs `core.train.train` in a worker thread
(the targets and weight maps are built there too). Its events drive a progress bar, a
live plot of the losses and the validation IoU, a status line and a preview layer of
the held-out region. The best model is published to the session for the Predict dock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils import progress
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
)

from napari_unet.core.annotations import boxes_from_rectangles
from napari_unet.core.io import InputError, check_same_shape
from napari_unet.core.presets import (
    ANCHOR,
    AUTO,
    DEVICES,
    LIGHT,
    MODEL_PRESETS,
    PRESET_HELP,
    PRESET_TITLES,
)
from napari_unet.models import PHASE_KEY, STAINED_KEY, STARTER_KEY
from napari_unet.widgets import _session
from napari_unet.widgets._autosave import autosave_for
from napari_unet.widgets._channels import gather
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._jobs import JobSlot, report_error
from napari_unet.widgets._layers import grid_problem, kind_of, plane_index, set_layer
from napari_unet.widgets.annotate import REGIONS_LAYER, background_layer_for

FILE = "file"
BEST_STARTER = "auto"  # the shipped starter that finds the annotated cells best
UNPAINTED = {  # choice shown -> `TrainingSettings.unpainted`
    "auto": "auto",
    "ignored (a few painted cells)": "ignore",
    "background (completely painted)": "background",
}
USE_REFRESH_MS = 300  # the "what will be used" line follows painting at most this often


def new_model_choice(preset: str) -> str:
    """The model choice that trains a new model of ``preset`` ("new light model")."""
    return f"new {PRESET_TITLES[preset]} model"


MODELS = {  # model choice shown -> what training starts from
    **{new_model_choice(preset): preset for preset in MODEL_PRESETS},
    "best starter (auto)": BEST_STARTER,
    "starter model": STARTER_KEY,
    "phase-contrast starter model": PHASE_KEY,
    "stained RGB starter model": STAINED_KEY,
    "model file": FILE,
}
NO_REGIONS = "(none: whole annotated slices)"
PREVIEW_SUFFIX = " U-Net preview"
REDRAW_MS = 250  # the plot is redrawn at most 4 times per second
PAIR_SEPARATOR = " ← "  # "image ← labels" in the list of more pairs


def train_and_keep(
    image: np.ndarray,
    labels: np.ndarray,
    settings: dict[str, Any],
    start_from: Any,
    regions: list | None,
    stop: threading.Event,
    folder: Path | None = None,
    **options: Any,
) -> Generator[Any, None, Any]:
    """`core.train.training_job` (``options``: resume, background, training, view, axes,
    channel_names), then the best model and the settings go into the project folder.
    Runs in the worker thread (torch loads there), so the model is kept even when the
    viewer was closed during training (that stops it after a step)."""
    from napari_unet.core import project
    from napari_unet.core.train import training_job

    trained = yield from training_job(
        image, labels, settings, start_from, regions, stop=stop, **options
    )
    if trained is not None and folder is not None:
        project.save_model(folder, trained.net, trained.metadata)
        project.save_settings(folder, {"training": settings})
    return trained


def _read_settings(path: str):
    """The `TrainingSettings` saved in a model file, or None when it cannot be read."""
    from napari_unet.core.checkpoint import CheckpointError, read_metadata
    from napari_unet.core.settings import TrainingSettings

    try:
        return TrainingSettings.from_metadata(read_metadata(path))
    except CheckpointError:
        return None


def _auto_spin(maximum: int, step: int = 1, tip: str = "") -> QSpinBox:
    """A spin box where 0 reads "auto" (the preset's default, see `TrainConfig`)."""
    box = QSpinBox()
    box.setRange(0, maximum)
    box.setSingleStep(step)
    box.setSpecialValueText(AUTO)
    box.setValue(0)
    box.setToolTip(tip)
    return box


def use_summary(
    image,
    labels,
    boxes,
    background,
    unpainted: str,
    from_model: bool = False,
    axes=None,
    more_pairs: int = 0,
) -> str:
    """The Train dock's "what will be used" line (`core.data.describe_use`), or why
    nothing can be used. ``from_model``: training starts from a model, which on sparse
    painting also spares the cells it finds from the background band and teaches where
    it is sure (`train.start_view`, worked out at Start: running a model here would
    block typing). ``axes``: the picked image's (RGB, extra channels, a time-lapse), as
    training gets them. ``more_pairs``: listed pairs, summed up in the "Trained on"
    line (reading them all after each stroke would slow painting)."""
    from napari_unet.core.data import describe_use

    try:
        use = describe_use(
            image, labels, regions=boxes, background=background, unpainted=unpainted, axes=axes
        )
    except InputError as exc:
        return str(exc)
    hint = (
        " At Start, the cells the starting model finds outside your painting are left out"
        " of the background band too, and where it is sure of its answer it keeps"
        " teaching it, so the unpainted cells it already finds are not forgotten."
        if from_model and use.sparse_slices
        else ""
    )
    warnings = "".join(f"<br><b>Warning:</b> {w}" for w in use.warnings)
    more = (
        f" With {more_pairs} more pair{'s' if more_pairs > 1 else ''}, each used the same"
        " way; the line after training counts them all."
        if more_pairs
        else ""
    )
    return "Will train on: " + use.describe() + "." + more + hint + warnings


def _axes_of(picked) -> str | None:
    """The axes training takes a picked image in (None: a plain gray image or Z stack)."""
    return picked.axes or ("TYX" if picked.time_lapse else None)


class TrainDock(Dock):
    """Pick image, labels and regions; Start, watch the plot and preview; Save the model."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.image_picker = self.picker("image")
        self.channels = self.channel_picker(self.image_picker)
        self.labels_picker = self.picker("labels")
        self.regions_picker = self.picker(
            "shapes",
            none=NO_REGIONS,
            prefer=lambda x: x.name == REGIONS_LAYER,
            tooltip="Rectangles drawn in the Annotate dock: train inside them",
        )
        self.pairs_list = QListWidget()  # more image/labels pairs: "image ← labels"
        self.pairs_list.setMaximumHeight(60)
        self.pairs_list.setToolTip("Trained on together with Image/Labels above")
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.setToolTip("Add the Image and Labels chosen above to the list")
        self.remove_pair_button = QPushButton("Remove")
        self.model_combo = QComboBox()
        self.model_combo.addItems(list(MODELS))
        # fine-tuning a starter beats a new model in minutes on real images (README
        # "Accuracy on real images"); auto: the shipped one that finds the annotated cells
        # best (`train.choose_start`); colour: its first layer is spread over the channels
        self.model_combo.setCurrentText("best starter (auto)")
        self.model_combo.setToolTip(
            "; ".join(f"{PRESET_TITLES[p]}: {PRESET_HELP[p]}" for p in MODEL_PRESETS)
            + "; best starter: of the shipped starters, the one that already finds your "
            "annotated cells best (scored before training)"
            + f"; starter: {PRESET_TITLES[LIGHT]}, pre-trained on DSB2018 nuclei; "
            "phase-contrast starter: the same, on phase-contrast cells (usiigaci); "
            "stained RGB starter: the same, on stained brightfield colour images (DSB2018); "
            "model file: continue from a saved model"
        )
        self.model_file = QLineEdit()
        self.model_file.setPlaceholderText("model.safetensors")
        self.browse_button = QPushButton("Browse…")
        self.steps = _auto_spin(1_000_000, 100, "Optimiser steps (auto: by model size)")
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(0.0, 1.0)
        self.learning_rate.setSingleStep(1e-4)
        self.learning_rate.setSpecialValueText(AUTO)
        self.learning_rate.setToolTip("Peak learning rate (auto: the optimiser's default)")
        self.tile_size = _auto_spin(2048, 4, "Input tile side in pixels (rounded to a valid size)")
        self.batch_size = _auto_spin(256, 1, "Tiles per optimiser step")
        self.validate_every = _auto_spin(
            100_000, 10, "Validate and refresh the preview every this many steps"
        )
        self.anchor = QDoubleSpinBox()
        self.anchor.setRange(-1.0, 1000.0)
        self.anchor.setDecimals(1)
        self.anchor.setValue(-1.0)
        self.anchor.setSpecialValueText(AUTO)
        self.anchor.setToolTip(
            f"Pull toward the model fine-tuned from, after every step (auto: {ANCHOR:g} "
            "for a saved or starter model, let go when it does not find your cells; 0: off)"
        )
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.unpainted = QComboBox()
        self.unpainted.addItems(list(UNPAINTED))
        self.unpainted.setToolTip(
            "Pixels nobody painted. auto: ignored when only a few cells are painted (many "
            "unpainted pixels look like cells; no training boxes), else background"
        )
        self.use_label = QLabel("")
        self.use_label.setWordWrap(True)
        self.settings_label = QLabel("")
        self.settings_label.setWordWrap(True)
        self.settings_label.setToolTip(
            "Set in the Weight map and Augmentation docks; saved in the model file and "
            "restored when you fine-tune a saved model"
        )
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Train the model trained so far for more steps")
        self.save_button = QPushButton("Save…")
        self.size_label = QLabel("estimated from the labels at Start")
        self.size_label.setWordWrap(True)
        self.size_label.setToolTip(
            "Typical cell diameter (median of the annotated cells); cells wider than "
            "64 px are shrunk to 32 px for the network, in training and prediction"
        )
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Write a bioimage.io model package (.zip): Fiji, ilastik, ..."
        )
        self.status.setText("Annotate a few cells, then press Start.")
        self.figure, self.canvas, self.lines = self._make_plot()

        file_row = QHBoxLayout()
        file_row.addWidget(self.model_file)
        file_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Image", self.image_picker.native)
        form.addRow("+ channels", self.channels)
        form.addRow("Labels", self.labels_picker.native)
        pair_buttons = QHBoxLayout()
        pair_buttons.addWidget(self.add_pair_button)
        pair_buttons.addWidget(self.remove_pair_button)
        form.addRow("More pairs", self.pairs_list)
        form.addRow("", pair_buttons)
        form.addRow("Regions", self.regions_picker.native)
        form.addRow("Model", self.model_combo)
        form.addRow("Model file", file_row)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Tile size (px)", self.tile_size)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Validate every", self.validate_every)
        form.addRow("Anchor", self.anchor)
        form.addRow("Device", self.device)
        form.addRow("Unpainted pixels", self.unpainted)
        form.addRow("Cell size", self.size_label)
        buttons = QHBoxLayout()
        for button in (
            self.start_button,
            self.stop_button,
            self.resume_button,
            self.save_button,
            self.export_button,
        ):
            buttons.addWidget(button)
        self.body.addLayout(form)
        self.body.addWidget(self.use_label)
        self.body.addWidget(self.settings_label)
        self.body.addLayout(buttons)
        self.body.addWidget(self.canvas)
        self.end_body()

        self._image_layer = None  # the image of the running training (preview placement)
        self._background = None  # its background strokes
        self._view_box = None  # (slice, y0, x0, y1, x1) of the image on screen
        self._train_scale = 1.0  # images are resized by this for the network (core/size.py)
        self._first_slices = 1  # slices of the first pair (the preview can only go there)
        self._project: Path | None = None  # where the model is kept (`core.project`)
        self._pbar = None
        self._finished = None  # the latest trained model (`core.train.Trained`)
        self._offset = 0  # steps of earlier runs (Resume continues the plot's x axis)
        self._best_iou: float | None = None
        self._best_step = 0
        self._step_text = ""
        self._history: dict[str, list[list[float]]] = {"loss": [], "val_loss": [], "iou": []}
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)

        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self._ask_save)
        self.export_button.clicked.connect(self._ask_export)
        self.browse_button.clicked.connect(self._browse)
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(
            lambda: self.pairs_list.takeItem(self.pairs_list.currentRow())
        )
        self.pairs_list.model().rowsInserted.connect(self._schedule_use)
        self.pairs_list.model().rowsRemoved.connect(self._schedule_use)
        self.model_combo.currentTextChanged.connect(self._on_model_choice)
        self.model_file.editingFinished.connect(self._restore_settings)
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; before: viewer.camera
        camera = scene.camera if scene is not None else self.viewer.camera
        self.listen(camera.events.center, self._update_view_box)
        self.listen(camera.events.zoom, self._update_view_box)
        self.listen(self.viewer.dims.events.current_step, self._update_view_box)
        # What the annotation will teach: recounted shortly after painting stops.
        self._use_jobs = JobSlot(self)  # the "what will be used" line, off the GUI thread
        self._use_timer = QTimer(self)
        self._use_timer.setSingleShot(True)
        self._use_timer.setInterval(USE_REFRESH_MS)
        self._use_timer.timeout.connect(self.refresh_use)
        self._watched: list = []
        for picker in (self.image_picker, self.labels_picker, self.regions_picker):
            picker.changed.connect(self._on_layers_chosen)
        # a background strokes layer added or removed: watch it (the pickers skip it)
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            self.listen(emitter, self._on_layers_chosen)
        self.unpainted.currentTextChanged.connect(self._publish_unpainted)
        self.unpainted.currentTextChanged.connect(self._schedule_use)
        self._show_settings(_session.training_settings(self.viewer))
        self.listen(_session.settings_changed(self.viewer), self._show_settings)
        self._restoring = None
        self._on_layers_chosen()
        self._on_model_choice(self.model_combo.currentText())
        self._set_running(False)

    # --- controls ---------------------------------------------------------------------

    def _make_plot(self):
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # matplotlib is optional: the status line still shows numbers
            return None, QLabel("Install matplotlib to see the training curves."), {}
        # constrained layout keeps the legend (above the axes) outside the curves
        figure = Figure(figsize=(4, 2.8), layout="constrained")
        canvas = FigureCanvasQTAgg(figure)
        canvas.setMinimumHeight(220)
        loss_axes = figure.add_subplot(1, 1, 1)
        loss_axes.set_xlabel("step")
        loss_axes.set_ylabel("loss (log scale)")
        loss_axes.set_yscale("log")  # a spike and a slow decline both stay readable
        iou_axes = loss_axes.twinx()
        iou_axes.set_ylabel("validation IoU")
        iou_axes.set_ylim(0.0, 1.0)
        lines = {
            "loss": loss_axes.plot([], [], color="tab:blue", lw=0.8, label="training loss")[0],
            "val_loss": loss_axes.plot(
                [], [], color="tab:orange", marker="o", ms=3, label="validation loss"
            )[0],
            "iou": iou_axes.plot(
                [], [], color="tab:green", marker="s", ms=3, label="validation IoU"
            )[0],
        }
        loss_axes.legend(
            handles=list(lines.values()),
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=3,
            fontsize="x-small",
            frameon=False,
        )
        return figure, canvas, lines

    def add_pair(self) -> None:
        """Remember the Image/Labels chosen above as one more training pair."""
        image_layer, labels_layer = self.image_picker.value, self.labels_picker.value
        if image_layer is None or labels_layer is None:
            report_error(InputError("More pairs: choose an Image and its Labels first"))
            return
        text = f"{image_layer.name}{PAIR_SEPARATOR}{labels_layer.name}"
        if not self.pairs_list.findItems(text, Qt.MatchFlag.MatchExactly):
            self.pairs_list.addItem(text)

    def _extra_pairs(self, first: tuple[str, str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The listed pairs (other than ``first``) as copied arrays, shapes checked."""
        pairs = []
        for row in range(self.pairs_list.count()):
            names = tuple(self.pairs_list.item(row).text().split(PAIR_SEPARATOR))
            if names == first:
                continue
            layers = {layer.name: layer for layer in self.viewer.layers}
            image, labels = layers.get(names[0]), layers.get(names[1])
            if image is None or labels is None:
                raise InputError(f"More pairs: layer {names[0]!r} or {names[1]!r} is gone")
            check_same_shape(image.data.shape, labels.data.shape, image=names[0], labels=names[1])
            pairs.append((np.asarray(image.data), np.array(labels.data)))
        return pairs

    def _on_model_choice(self, text: str) -> None:
        from_file = MODELS.get(text) == FILE
        self.model_file.setEnabled(from_file)
        self.browse_button.setEnabled(from_file)
        self._restore_settings()
        self._schedule_use()  # a new model gets no cell hint

    # --- shared settings and what the annotation teaches --------------------------------

    def _show_settings(self, settings) -> None:
        self.settings_label.setText("Training settings: " + settings.describe())
        mode = next(k for k, v in UNPAINTED.items() if v == settings.unpainted)
        if self.unpainted.currentText() != mode:
            self.unpainted.setCurrentText(mode)

    def _publish_unpainted(self, text: str) -> None:
        _session.update_training_settings(self.viewer, unpainted=UNPAINTED[text])

    def _restore_settings(self) -> None:
        """Fine-tuning a saved model: its loss and augmentation settings become the
        viewer's (the preview docks follow). The file is read off the GUI thread."""
        if MODELS.get(self.model_combo.currentText()) in (*MODEL_PRESETS, BEST_STARTER):
            return
        try:
            _, path = self._start_from()
        except InputError:
            return
        worker = thread_worker(_read_settings, start_thread=False)(path)
        worker.returned.connect(lambda restored: self._on_restored(path, restored))
        worker.start()
        self._restoring = worker

    def _on_restored(self, path: str, restored) -> None:
        if restored is None or self.jobs.busy:
            return
        _session.update_training_settings(
            self.viewer, weights=restored.weights, augment=restored.augment
        )
        self.status.setText(
            f"Training settings restored from {Path(path).name}: {restored.describe()}"
        )

    def _on_layers_chosen(self, *args) -> None:
        """Watch the chosen labels, background and regions layers for edits."""
        for emitter in self._watched:
            self.unlisten(emitter, self._schedule_use)
        self._watched = []
        image = self.image_picker.value
        layers = [
            self.labels_picker.value,
            None if image is None else background_layer_for(self.viewer, image.name),
            self.regions_picker.value,
        ]
        for layer in layers:
            if layer is None:
                continue
            for name in ("paint", "data", "set_data"):
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    self.listen(emitter, self._schedule_use)
                    self._watched.append(emitter)
        self._schedule_use()

    def _schedule_use(self, *args) -> None:
        self._use_timer.start()

    def refresh_use(self) -> None:
        """Say what training will use ("12 cells, 3 background strokes, area used: 18 %");
        worked out in a worker thread, the newest request wins."""
        try:
            annotation = self._annotation()
        except InputError as exc:
            self.use_label.setText(str(exc))
            return
        _, labels, boxes, background = annotation
        unpainted = UNPAINTED[self.unpainted.currentText()]
        from_model = MODELS[self.model_combo.currentText()] not in MODEL_PRESETS
        picked = self._picked  # with the ticked channels, as `_job_arguments` trains on
        self._use_jobs.replace(
            lambda: self._use_jobs.start(
                use_summary,
                np.asarray(picked.data),
                labels,
                boxes,
                background,
                unpainted,
                from_model,
                _axes_of(picked),
                self.pairs_list.count(),
                on_return=self.use_label.setText,
            )
        )

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Model to start from",
            "",
            "napari-unet model or bioimage.io package (*.safetensors *.zip)",
        )
        if path:
            self.model_file.setText(path)

    def _settings(self, preset: str | None) -> dict[str, Any]:
        """`TrainConfig` keyword arguments from the controls (0 = auto = None)."""
        return {
            "steps": self.steps.value() or None,
            "preset": preset,
            "lr": self.learning_rate.value() or None,
            "tile_size": self.tile_size.value() or None,
            "batch_size": self.batch_size.value() or None,
            "validate_every": self.validate_every.value() or None,
            "anchor": None if self.anchor.value() < 0 else self.anchor.value(),
            "device": self.device.currentText(),
        }

    def _start_from(self) -> tuple[str | None, Any]:
        """(preset for a new model, what to start from: None, a model file, or the
        shipped starters' files to choose from).

        A model file brings its own architecture: no preset then.
        """
        choice = MODELS[self.model_combo.currentText()]
        if choice in MODEL_PRESETS:
            return choice, None
        if choice == BEST_STARTER:
            from napari_unet.models import shipped_paths

            paths = shipped_paths()
            if not paths:
                raise InputError("No starter model is installed; pick a new model or a file")
            return None, paths
        if choice in (STARTER_KEY, PHASE_KEY, STAINED_KEY):
            from napari_unet.models import shipped_by_key

            path = shipped_by_key(choice).path
            if not path.is_file():
                raise InputError(
                    f"The {choice} starter model is missing from this install ({path})"
                )
            return None, str(path)
        text = self.model_file.text().strip()
        if not text:
            raise InputError("Model file: choose a .safetensors model to start from")
        if not Path(text).is_file():
            raise InputError(f"Model file {text!r} does not exist")
        return None, text

    # --- running ----------------------------------------------------------------------

    def start(self, resume: bool = False) -> None:
        """Start training (or, with ``resume``, continue the latest model) in a worker."""
        if self.jobs.busy:
            return
        try:
            job_args = self._job_arguments(resume)
        except InputError as exc:
            report_error(exc)
            self.status.setText(str(exc))
            return
        if not resume:
            self._offset = 0
            self._best_iou, self._best_step = None, 0
            for values in self._history.values():
                values.clear()
        self._show_size([job_args[1], *(labels for _, labels in job_args[-1])])
        *job_args, extra_pairs = job_args
        self._set_running(True)
        self.status.setText("Preparing the training data (targets and weight maps)…")
        # Closing the dock or the viewer stops the job (`JobSlot`); the best model is kept.
        self.jobs.start(
            train_and_keep,
            *job_args,
            **self._channel_options,
            folder=self._project,
            # Resume: the last weights with the optimiser's state, not the best weights
            resume=self._finished.resume if resume and self._finished is not None else None,
            background=self._background,
            training=_session.training_settings(self.viewer),
            view=self._viewed,
            extra_pairs=extra_pairs,
            on_yield=self._on_event,
            on_return=self._on_return,
            on_finish=self._on_finish,
        )

    def _show_size(self, labels: list[np.ndarray]) -> None:
        """Show the estimated cell diameter and the scale it sets (cheap: bincounts).

        The same rule as `TrainingData.from_pairs`: the median over the pairs."""
        from napari_unet.core import size

        try:  # bad labels (negative, float) are reported by the job itself
            known = [d for lab in labels if (d := size.typical_diameter(lab))]
        except (ValueError, TypeError):
            self._train_scale = 1.0
            self.size_label.setText("not estimated: the labels are not valid")
            return
        diameter = float(np.median(known)) if known else None
        self._train_scale = size.scale_for(diameter)
        if diameter is None:
            self.size_label.setText("no annotated cells")
        elif self._train_scale == 1.0:
            self.size_label.setText(f"≈ {diameter:.1f} px across: images used as they are")
        else:
            self.size_label.setText(
                f"≈ {diameter:.1f} px across: images shrunk ×{self._train_scale:.2f} to "
                f"{size.TARGET_DIAMETER_PX:.0f} px cells (training and prediction; "
                "the smallest kept cell scales too)"
            )

    def _annotation(self) -> tuple:
        """(image, labels copy, boxes or None, background strokes or None) of the choices."""
        image_layer, labels_layer = self.image_picker.value, self.labels_picker.value
        if image_layer is None:
            raise InputError("Image: open an image to train on")
        if labels_layer is None:
            raise InputError("Labels: create a labels layer and paint a few cells first")
        for layer in (image_layer, labels_layer):
            if grid_problem(layer):
                raise InputError(grid_problem(layer))
        picked = gather(self.viewer, image_layer, self.channels.ticked())
        self._picked = picked  # the image with the ticked channels, for `_job_arguments`
        check_same_shape(
            picked.labels_shape,
            labels_layer.data.shape,
            image=image_layer.name,
            labels=labels_layer.name,
        )
        labels = np.array(labels_layer.data)  # a copy: painting may go on while training
        regions = self.regions_picker.value
        boxes = None
        if regions is not None:
            rectangles = [
                data
                for data, kind in zip(regions.data, regions.shape_type, strict=True)
                if kind == "rectangle"
            ]
            boxes = boxes_from_rectangles(rectangles, labels.shape) or None
        strokes = background_layer_for(self.viewer, image_layer.name)
        background = None
        if (
            strokes is not None
            and kind_of(strokes) == "labels"
            and strokes.data.shape == labels.shape
        ):
            background = np.array(strokes.data)
        return np.asarray(image_layer.data), labels, boxes, background

    def _job_arguments(self, resume: bool) -> tuple:
        image, labels, boxes, background = self._annotation()
        image_layer, labels_layer = self.image_picker.value, self.labels_picker.value
        if resume:
            if self._finished is None:
                raise InputError("Resume: train a model first (Start)")
            preset, start_from = None, self._finished.net
            plotted = self._history["loss"]
            self._offset = int(plotted[-1][0]) if plotted else 0  # the plot goes on
        else:
            preset, start_from = self._start_from()
        extra = self._extra_pairs((image_layer.name, labels_layer.name))
        self._image_layer = image_layer
        self._first_slices = 1 if image_layer.ndim == 2 else image_layer.data.shape[0]
        # The annotations trained on are autosaved, and the model kept, in the project.
        autosave = autosave_for(self.viewer)
        self._project = autosave.watch(labels_layer, image_layer)
        autosave.save_now(labels_layer)
        picked = self._picked
        image = np.asarray(picked.data)
        self._channel_options = {
            "axes": _axes_of(picked),
            "channel_names": picked.names,
        }
        self._background = background
        self._update_view_box()
        return image, labels, self._settings(preset), start_from, boxes, extra

    def stop(self) -> None:
        """Stop after the current step; the best model so far is kept and published."""
        if self.jobs.busy:
            self.jobs.cancel()
            self.status.setText(
                "Stopping after the current step; the last weights are validated once more "
                "and the better of them and the best so far is kept…"
            )

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.resume_button.setEnabled(not running and self._finished is not None)
        self.save_button.setEnabled(not running and self._finished is not None)
        self.export_button.setEnabled(not running and self._finished is not None)

    def _on_event(self, event) -> None:
        from napari_unet.core.train import Step, Validation

        if isinstance(event, Step):
            self._history["loss"].append([self._offset + event.step, event.loss])
            self._step_text = (
                f"step {self._offset + event.step} ({event.step}/{event.total}) · "
                f"loss {event.loss:.4f} · {event.tiles_per_s:.1f} tiles/s"
            )
        elif isinstance(event, Validation):
            step = self._offset + event.step
            self._history["val_loss"].append([step, event.loss])
            self._history["iou"].append([step, event.iou])
            if event.best:
                self._best_iou, self._best_step = event.iou, step
            self._show_preview(event)
        self.status.setText(self._step_text + self._iou_text())
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()
        if isinstance(event, Step):
            # Last: napari's progress bar may process queued events (even the job's end).
            if self._pbar is None:
                self._pbar = progress(total=event.total, desc="U-Net training")
            self._pbar.update(1)

    def _iou_text(self) -> str:
        if not self._history["iou"]:
            return ""
        latest = self._history["iou"][-1][1]
        return f" · IoU {latest:.3f} (best {self._best_iou:.3f} at step {self._best_step})"

    def _update_view_box(self, event=None) -> None:
        """Remember the part of the training image on screen (the worker asks for it)."""
        layer = self._image_layer
        if layer is None or layer not in self.viewer.layers or grid_problem(layer):
            return
        corners = np.asarray(layer.corner_pixels, dtype=float)  # data coordinates
        (y0, x0), (y1, x1) = corners[0, -2:], corners[1, -2:]
        z = 0
        if layer.ndim == 3:
            (z,) = plane_index(self.viewer, layer)
        k = self._train_scale  # the network sees images resized by this (core/size.py)
        self._view_box = (z, int(y0 * k), int(x0 * k), int((y1 + 1) * k), int((x1 + 1) * k))

    def _viewed(self):
        return self._view_box  # read by the worker thread: a tuple, replaced atomically

    def _show_preview(self, event) -> None:
        """Foreground probability of the part on screen (else the held-out region), placed
        where it is in the image."""
        preview, region = event.preview, event.region
        if getattr(event, "view", None) is not None:
            preview, region = event.view, event.view_region
        if preview is None or region is None or self._image_layer is None:
            return
        if self._image_layer not in self.viewer.layers:
            return  # deleted during training: nowhere to place the preview
        image_layer = self._image_layer
        slice_index, y0, x0, _, _ = region
        if slice_index >= self._first_slices:
            return  # held out on one of the more pairs: no place on this image
        two_d = image_layer.ndim == 2
        data = preview if two_d else preview[None]
        offset = np.array((y0, x0) if two_d else (slice_index, y0, x0), dtype=float)
        scale = np.asarray(image_layer.scale)[-data.ndim :].astype(float)
        scale[-2:] /= self._train_scale  # the region is in the network's (resized) pixels
        translate = np.asarray(image_layer.translate)[-data.ndim :] + offset * scale
        layer = set_layer(
            self.viewer,
            image_layer.name + PREVIEW_SUFFIX,
            data,
            colormap="magma",
            blending="additive",
            contrast_limits=(0.0, 1.0),
            opacity=0.7,
        )
        layer.scale = scale
        layer.translate = translate

    def _redraw(self) -> None:
        if self.figure is None:
            return
        for name, line in self.lines.items():
            points = np.asarray(self._history[name], dtype=float).reshape(-1, 2)
            line.set_data(points[:, 0], points[:, 1])
        loss_axes = self.lines["loss"].axes
        loss_axes.relim()
        loss_axes.autoscale_view()
        self.canvas.draw_idle()

    def _on_return(self, finished) -> None:
        if finished is None:
            self.status.setText("Stopped before training began.")
            return
        self._finished = finished
        _session.set_current_model(finished.net, finished.metadata)
        used = finished.metadata.get("training", {}).get("annotation")
        if used:  # what training really used, the cell hint included
            self.use_label.setText(f"Trained on: {used}.")
        how = "stopped" if finished.stopped else "finished"
        score = "" if finished.best_iou is None else f", validation IoU {finished.best_iou:.3f}"
        self.status.setText(
            f"Training {how} after {self._offset + finished.steps_done} steps. The best "
            f"model (step {self._offset + finished.best_step}{score}) is now the current "
            "model for the Predict dock; Save keeps it. "
            + finished.note()
            + ("" if self._project is None else f" A copy is in {self._project}.")
        )

    def _on_finish(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._redraw_timer.stop()
        self._redraw()
        self._set_running(False)

    # --- saving -----------------------------------------------------------------------

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", "model.safetensors", "napari-unet model (*.safetensors)"
        )
        if path:
            self.save(path)

    def save(self, path: str | Path) -> Path | None:
        """Write the latest trained model and its metadata to ``path`` (atomic)."""
        from napari_unet.core import checkpoint

        if self._finished is None:
            report_error(InputError("Save: train a model first"))
            return None
        path = Path(path)
        if path.suffix != checkpoint.SUFFIX:
            path = path.with_name(path.name + checkpoint.SUFFIX)
        started = time.perf_counter()
        try:
            written = self._finished.save(path)  # and its resume state beside it
        except (OSError, InputError) as exc:
            report_error(exc)
            return None
        self.status.setText(f"Saved {written} ({time.perf_counter() - started:.1f} s).")
        return written

    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export bioimage.io package", "model.zip", "bioimage.io package (*.zip)"
        )
        if path:
            self.export(path)

    def export(self, path: str | Path):
        """Write the latest trained model as a bioimage.io package (checked) in a worker."""
        from napari_unet.core.export import export_iter

        if self._finished is None:
            report_error(InputError("Export: train a model first"))
            return None
        if self.jobs.busy:
            return None
        path = Path(path)
        if path.suffix.lower() != ".zip":
            path = path.with_name(path.name + ".zip")
        self.export_button.setEnabled(False)
        self.status.setText(f"Exporting {path.name} and test-running it with bioimageio…")

        def done(result) -> None:
            notes = "".join(f" {note}" for note in result.notes)
            self.status.setText(
                f"Exported {result.path} ({', '.join(result.weight_formats)}; bioimageio "
                f"test {result.test_status}).{notes}"
            )

        return self.jobs.start(
            export_iter,
            self._finished.net,
            self._finished.metadata,
            path,
            on_return=done,
            on_finish=lambda: self._set_running(False),
        )
