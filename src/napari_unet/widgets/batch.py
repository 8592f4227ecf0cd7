"""Predict dock's batch mode: every image of a folder into labels files and summary.csv.

Runs `core.batch.predict_files` in a worker thread with the dock's model and settings (a
shipped nuclei or stained starter hands colour or gray files it cannot take to the other);
shows the file being predicted, its tiles, and an overall bar; Cancel stops after the
current batch of tiles (finished files stay written, a re-run skips them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from napari_unet.core.io import InputError
from napari_unet.widgets import _session
from napari_unet.widgets._jobs import JobSlot, report_error

OUTPUT_FOLDER = "unet_labels"  # default output folder, inside the input folder


def batch_job(model: Any, folder: str, out_dir: str, config: Any) -> Generator[Any, None, Any]:
    """Worker-thread job: ``model`` (a file or the session's (net, metadata)) is loaded once,
    then every image of ``folder`` is predicted (`core.batch.predict_files`)."""
    from napari_unet.core import batch

    if not folder or not Path(folder).is_dir():
        raise InputError(f"Choose a folder of images first (got {folder!r}).")
    if model is None:
        raise InputError("No model has been trained in this session yet: train one first.")
    if not isinstance(model, tuple) and not str(model):
        raise InputError("Choose a model file (.safetensors) first.")
    inputs = batch.expand_inputs(folder)
    options = batch.Options(config=config)
    return (yield from batch.predict_files(model, inputs, out_dir, options=options))


class BatchPanel(QGroupBox):
    """Folder in, folder out, Run batch / Cancel, per-file and overall progress."""

    def __init__(self, dock: Any):
        super().__init__("Batch: every image in a folder")
        self.dock = dock
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder of images (tif, png, npy, zarr)")
        self.output = QLineEdit()
        self.output.setPlaceholderText(f"output folder (default: <folder>/{OUTPUT_FOLDER})")
        self.browse_button = QPushButton("Browse…")
        self.run_button = QPushButton("Run batch")
        self.cancel_button = QPushButton("Cancel batch")
        self.cancel_button.setEnabled(False)
        self.overall = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Output", self.output)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.overall)
        layout.addWidget(self.status)
        self.jobs = JobSlot(self, self.status)
        self._file = ""
        self._results: list[Any] = []
        self._cancelled = False
        self.browse_button.clicked.connect(self._browse)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images to predict")
        if folder:
            self.folder.setText(folder)

    def out_dir(self) -> str:
        folder = self.folder.text().strip()
        return self.output.text().strip() or str(Path(folder) / OUTPUT_FOLDER)

    def run(self) -> None:
        from napari_unet.widgets.predict import SESSION, model_file_for

        source = self.dock.model_combo.currentText()
        path = model_file_for(source, self.dock.model_path.text())
        self._results = []
        self._cancelled = False
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Starting…")
        self.jobs.start(
            batch_job,
            _session.current_model() if source == SESSION else path,
            self.folder.text().strip(),
            self.out_dir(),
            self.dock.config(),
            on_yield=self._on_event,
            on_finish=self._on_finish,
        )

    def cancel(self) -> None:
        if self.jobs.busy:
            self._cancelled = True
            self.jobs.cancel()
            self.status.setText("Cancelling after the current batch of tiles…")

    def _on_event(self, event: Any) -> None:
        from napari_unet.core import batch
        from napari_unet.core.events import Done
        from napari_unet.core.predict import Progress

        if isinstance(event, batch.FileStarted):
            self._file = f"File {event.index + 1} of {event.total}: {event.path.name}"
            self.overall.setRange(0, event.total)
            self.status.setText(self._file)
        elif isinstance(event, Progress | Done):
            done, total = (
                (event.tiles_done, event.tiles_total)
                if isinstance(event, Progress)
                else (event.done, event.total)
            )
            self.status.setText(f"{self._file} — {done} of {total}")
        elif isinstance(event, batch.FileDone):
            self._results.append(event)
            self.overall.setRange(0, event.total)
            self.overall.setValue(event.index + 1)
            if event.error:
                report_error(InputError(f"Skipped {event.path.name}: {event.error}"))

    def _on_finish(self) -> None:
        failed = sum(1 for r in self._results if r.error)
        skipped = sum(1 for r in self._results if r.skipped)
        done = len(self._results) - failed - skipped
        switched = Counter(r.switched_to for r in self._results if r.switched_to)
        if self._results or self._cancelled:
            stop = "Cancelled: " if self._cancelled else ""
            others = "".join(f" ({n} with the {title})" for title, n in switched.items())
            self.status.setText(
                f"{stop}{done} predicted{others}, {skipped} already done, {failed} failed: "
                f"{Path(self.out_dir()) / 'summary.csv'}"
            )
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
