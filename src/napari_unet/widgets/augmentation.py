"""Augmentation dock: a gallery of what the network will be shown during training.

Takes the current slice of an image (and optionally its labels), augments it N times
with `core.augment` off the GUI thread, and shows the samples as a stack beside the
original, with the deformed sampling grid drawn over each sample. Its settings are the
viewer's training settings (`_session.training_settings`): the Train dock trains with
exactly what is previewed here.
"""

from __future__ import annotations

import random

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from napari_unet.core.augment import GRID, SIGMA_PX, AugmentConfig, Gallery, gallery
from napari_unet.widgets import _session
from napari_unet.widgets._common import (
    layer_choices,
    layer_named,
    report_error,
    set_layer,
    start_job,
)

GALLERY = "augmentation gallery"
GALLERY_LABELS = "augmentation gallery labels"
GRID_LINES = "augmentation grid"
OWNED = (GALLERY, GALLERY_LABELS, GRID_LINES)
NO_LABELS = "(none)"
GAP_PX = 10  # between the original and the gallery
DEFAULTS = AugmentConfig()


def _slider(low: float, high: float, value: float, tip: str, decimals: int = 2):
    slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    slider.setRange(low, high)
    slider.setDecimals(decimals)
    slider.setValue(value)
    slider.setToolTip(tip)
    return slider


def _check(text: str, on: bool, tip: str) -> QCheckBox:
    box = QCheckBox(text)
    box.setChecked(on)
    box.setToolTip(tip)
    return box


class AugmentationDock(QWidget):
    """Pick image + labels, set the augmentations, press Preview to see N samples."""

    status_changed = Signal(str)  # after each preview: the message shown below the buttons

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.seed = 0
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.elastic = _check("Elastic deformation", True, "Paper: random 3x3 grid, 10 px")
        self.grid = QSpinBox()
        self.grid.setRange(2, 9)
        self.grid.setValue(GRID)
        self.grid.setToolTip("Nodes per axis of the coarse displacement grid (paper: 3)")
        self.sigma = _slider(0.0, 40.0, SIGMA_PX, "Std of node displacements, px (paper: 10)", 1)
        self.flips = _check("Random flips", DEFAULTS.flips, "Up/down and left/right")
        self.rot90 = _check("Random 90° turns", DEFAULTS.rot90, "Only 180° on non-square tiles")
        self.rotate = _slider(0.0, 45.0, DEFAULTS.rotate_deg, "Max extra rotation, degrees", 1)
        self.zoom = _slider(0.0, 0.5, DEFAULTS.scale[1] - 1, "Zoom 1 ± this")
        self.gain = _slider(0.0, 0.5, DEFAULTS.gain[1] - 1, "Intensity gain 1 ± this")
        self.offset = _slider(0.0, 0.5, DEFAULTS.offset[1], "Intensity offset ± this")
        self.gamma = _slider(0.0, 1.0, DEFAULTS.gamma[1] - 1, "Gamma between 1/(1+g) and 1+g")
        self.noise = _slider(0.0, 0.3, DEFAULTS.noise_std, "Max std of Gaussian noise")
        self.blur = _slider(0.0, 3.0, DEFAULTS.blur_sigma_px[1], "Max Gaussian blur sigma, px")
        self.n_samples = QSpinBox()
        self.n_samples.setRange(1, 64)
        self.n_samples.setValue(8)
        self.preview_button = QPushButton("Preview")
        self.reseed_button = QPushButton("Reseed")
        self.reseed_button.setToolTip("Draw new random samples")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow(self.elastic)
        form.addRow("Grid nodes", self.grid)
        form.addRow("Sigma (px)", self.sigma)
        form.addRow(self.flips)
        form.addRow(self.rot90)
        form.addRow("Rotation (°)", self.rotate)
        form.addRow("Zoom ±", self.zoom)
        form.addRow("Gain ±", self.gain)
        form.addRow("Offset ±", self.offset)
        form.addRow("Gamma ±", self.gamma)
        form.addRow("Noise std", self.noise)
        form.addRow("Blur (px)", self.blur)
        form.addRow("Samples", self.n_samples)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.reseed_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)

        # Once a gallery is shown, parameter changes refresh it (gathered for 150 ms).
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.preview)
        self._worker = None
        self._pending = False
        self._live = False

        self.preview_button.clicked.connect(self.preview)
        self.reseed_button.clicked.connect(self.reseed)
        for box in (self.elastic, self.flips, self.rot90):
            box.toggled.connect(self._changed)
        for slider in (
            self.sigma, self.rotate, self.zoom, self.gain, self.offset, self.gamma,
            self.noise, self.blur,
        ):  # fmt: skip
            slider.valueChanged.connect(self._changed)
        self.grid.valueChanged.connect(self._changed)
        self.n_samples.valueChanged.connect(self._changed)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()
        self.adopt(_session.training_settings(self.viewer))
        forget = _session.on_settings_changed(self.viewer, self.adopt)
        self.destroyed.connect(lambda *_: forget())

    # --- parameters ---------------------------------------------------------------------

    def _controls(self):
        return (
            self.elastic, self.grid, self.sigma, self.flips, self.rot90, self.rotate,
            self.zoom, self.gain, self.offset, self.gamma, self.noise, self.blur,
        )  # fmt: skip

    def adopt(self, settings) -> None:
        """Show the viewer's training augmentation (set elsewhere, e.g. by a loaded model).

        Training with augmentation off shows as every control off.
        """
        config = settings.augment or AugmentConfig.off(grid=DEFAULTS.grid)
        values = (
            config.elastic, config.grid, config.sigma_px, config.flips, config.rot90,
            config.rotate_deg, config.scale[1] - 1.0, config.gain[1] - 1.0,
            config.offset[1], config.gamma[1] - 1.0, config.noise_std,
            config.blur_sigma_px[1],
        )  # fmt: skip
        for control, value in zip(self._controls(), values, strict=True):
            control.blockSignals(True)
            if isinstance(control, QCheckBox):
                control.setChecked(bool(value))
            else:
                control.setValue(value)
            control.blockSignals(False)

    def config(self) -> AugmentConfig:
        """The AugmentConfig the controls describe (sliders at 0 switch a change off)."""
        zoom, gain, gamma = self.zoom.value(), self.gain.value(), self.gamma.value()
        return AugmentConfig(
            elastic=self.elastic.isChecked(),
            grid=self.grid.value(),
            sigma_px=self.sigma.value(),
            flips=self.flips.isChecked(),
            rot90=self.rot90.isChecked(),
            rotate_deg=self.rotate.value(),
            scale=(1.0 - zoom, 1.0 + zoom),
            gain=(1.0 - gain, 1.0 + gain),
            offset=(-self.offset.value(), self.offset.value()),
            gamma=(1.0 / (1.0 + gamma), 1.0 + gamma),
            noise_std=self.noise.value(),
            blur_sigma_px=(0.0, self.blur.value()),
        )

    def _refresh_choices(self, event=None) -> None:
        choices = (
            (self.image_combo, layer_choices(self.viewer, "image")),
            (self.labels_combo, [NO_LABELS, *layer_choices(self.viewer, "labels")]),
        )
        for combo, names in choices:
            names = [n for n in names if n not in OWNED]
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif combo is self.labels_combo and len(names) > 1:
                combo.setCurrentIndex(1)  # first labels layer rather than none
            combo.blockSignals(False)

    def _layer(self, combo: QComboBox):
        return layer_named(self.viewer, combo.currentText())

    def _current_slice(self, layer) -> np.ndarray:
        """The 2D plane of ``layer`` under the viewer's sliders (a copy)."""
        data = layer.data
        if data.ndim == 2:
            return np.array(data)
        leading = self.viewer.dims.current_step[self.viewer.dims.ndim - data.ndim :][:-2]
        index = tuple(
            int(np.clip(step, 0, size - 1))
            for step, size in zip(leading, data.shape, strict=False)
        )
        return np.array(data[index])

    # --- jobs ---------------------------------------------------------------------------

    def _changed(self, *args) -> None:
        _session.update_training_settings(self.viewer, source=self.adopt, augment=self.config())
        if self._live:
            self._debounce.start()

    def reseed(self) -> None:
        self.seed = random.randrange(2**31)
        self.preview()

    def preview(self) -> None:
        """Start making the gallery; a running one is stopped and restarted."""
        if self._worker is not None:
            self._pending = True
            self._worker.quit()
            return
        image_layer, labels_layer = self._layer(self.image_combo), self._layer(self.labels_combo)
        if image_layer is None:
            report_error(ValueError("Open or choose an image layer first."))
            return
        if getattr(image_layer, "rgb", False):
            report_error(ValueError(f"Image {image_layer.name!r} is RGB: pick a grayscale one."))
            return
        image = self._current_slice(image_layer)
        labels = None if labels_layer is None else self._current_slice(labels_layer)
        if labels is not None and labels.shape != image.shape:
            self._say(
                f"Labels {labels_layer.name!r} slice has shape {labels.shape} but image "
                f"{image_layer.name!r} has {image.shape}: pick a labels layer of the same shape."
            )
            report_error(ValueError(self.status.text()))
            return
        n = self.n_samples.value()
        self._live = True
        self.status.setText("making samples…")
        self._worker = start_job(
            gallery,
            image,
            labels,
            n,
            self.config(),
            seed=self.seed,
            on_return=lambda result: self._show(result, image_layer, labels_layer),
            on_finish=self._on_finish,
            progress_total=n,
            progress_desc="augmentation gallery",
        )

    def _on_finish(self) -> None:
        self._worker = None
        if self._pending:
            self._pending = False
            self.preview()

    def _show(self, result: Gallery, image_layer, labels_layer) -> None:
        if self._pending:
            return  # parameters changed meanwhile; a new gallery is on its way
        n, height, width = result.images.shape
        scale = tuple(image_layer.scale[-2:])
        translate = tuple(image_layer.translate[-2:])
        placed = {
            "scale": (1.0, *scale),
            # Beside the original, so both are visible in 2D.
            "translate": (0.0, translate[0], translate[1] + (width + GAP_PX) * scale[1]),
        }
        shown = [set_layer(self.viewer, GALLERY, result.images, colormap="gray", **placed)]
        if result.labels is not None:
            shown.append(set_layer(self.viewer, GALLERY_LABELS, result.labels, "labels", **placed))
        elif GALLERY_LABELS in self.viewer.layers:
            self.viewer.layers.remove(GALLERY_LABELS)
        for layer in shown:  # an existing layer keeps its place unless we move it
            layer.scale, layer.translate = placed["scale"], placed["translate"]
        if GRID_LINES in self.viewer.layers:
            self.viewer.layers.remove(GRID_LINES)  # paths: rebuilt, not data-swapped
        if result.grid_lines:
            self.viewer.add_shapes(
                result.grid_lines,
                shape_type="path",
                edge_color="yellow",
                edge_width=scale[1],
                opacity=0.7,
                name=GRID_LINES,
                **placed,
            )
        source = f"{image_layer.name!r}" + (
            f" + {labels_layer.name!r}" if labels_layer is not None else ""
        )
        self._say(
            f"{n} samples of {source} ({height}x{width}), seed {self.seed}; "
            "move the first slider to browse them."
        )

    def _say(self, message: str) -> None:
        self.status.setText(message)
        self.status_changed.emit(message)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        if self._worker is not None:
            self._worker.quit()
        super().closeEvent(event)
