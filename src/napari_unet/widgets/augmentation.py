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
from qtpy.QtWidgets import QCheckBox, QPushButton, QSpinBox
from superqt import QLabeledDoubleSlider

from napari_unet.core.augment import GRID, SIGMA_PX, AugmentConfig, Gallery, gallery
from napari_unet.widgets import _session
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._jobs import report_error
from napari_unet.widgets._layers import (
    OWNER_KEY,
    PREVIEW,
    current_plane,
    grid_problem,
    owned_layer,
    set_layer,
)

GALLERY = "augmentation gallery"
GALLERY_LABELS = "augmentation gallery labels"
GRID_LINES = "augmentation grid"
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


class AugmentationDock(Dock):
    """Pick image + labels, set the augmentations, press Preview to see N samples."""

    status_changed = Signal(str)  # after each preview: the message shown below the buttons

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.seed = 0
        self.image_picker = self.picker("image")
        self.labels_picker = self.picker("labels", none=NO_LABELS, prefer=lambda x: x is not None)
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

        self.add_form(
            ("Image", self.image_picker),
            ("Labels", self.labels_picker),
            self.elastic,
            ("Grid nodes", self.grid),
            ("Sigma (px)", self.sigma),
            self.flips,
            self.rot90,
            ("Rotation (°)", self.rotate),
            ("Zoom ±", self.zoom),
            ("Gain ±", self.gain),
            ("Offset ±", self.offset),
            ("Gamma ±", self.gamma),
            ("Noise std", self.noise),
            ("Blur (px)", self.blur),
            ("Samples", self.n_samples),
        )
        self.add_row(self.preview_button, self.reseed_button)
        self.end_body()

        # Once a gallery is shown, parameter changes refresh it (gathered for 150 ms).
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.preview)
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
        self.n_samples.valueChanged.connect(self._preview_changed)
        self.adopt(_session.training_settings(self.viewer))
        self.listen(_session.settings_changed(self.viewer), self.adopt)

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

    # --- jobs ---------------------------------------------------------------------------

    def _changed(self, *args) -> None:
        _session.update_training_settings(self.viewer, source=self.adopt, augment=self.config())
        self._preview_changed()

    def _preview_changed(self, *args) -> None:
        if self._live:
            self._debounce.start()

    def reseed(self) -> None:
        self.seed = random.randrange(2**31)
        self.preview()

    def preview(self) -> None:
        """Make the gallery; a running one is stopped and its samples dropped."""
        self.jobs.replace(self._start)

    def _start(self) -> None:
        image_layer, labels_layer = self.image_picker.value, self.labels_picker.value
        try:
            image, labels = self._inputs(image_layer, labels_layer)
        except ValueError as exc:
            self._say(str(exc))
            report_error(exc)
            return
        n = self.n_samples.value()
        self._live = True
        self.status.setText("making samples…")
        self.jobs.start(
            gallery,
            image,
            labels,
            n,
            self.config(),
            seed=self.seed,
            on_return=lambda result: self._show(result, image_layer, labels_layer),
            progress_total=n,
            progress_desc="augmentation gallery",
        )

    def _inputs(self, image_layer, labels_layer):
        """The planes on screen of the chosen image and labels, checked."""
        if image_layer is None:
            raise ValueError("Open or choose an image layer first.")
        for layer in (image_layer, labels_layer):
            if layer is not None and grid_problem(layer):
                raise ValueError(grid_problem(layer))
        image = current_plane(self.viewer, image_layer)
        if getattr(image_layer, "rgb", False):  # channels deformed together, as in training
            image = np.moveaxis(image, -1, 0)
        labels = None if labels_layer is None else current_plane(self.viewer, labels_layer)
        if labels is not None and labels.shape != image.shape[-2:]:
            raise ValueError(
                f"Labels {labels_layer.name!r} slice has shape {labels.shape} but image "
                f"{image_layer.name!r} has {image.shape[-2:]}: pick a labels layer of the "
                "same shape."
            )
        if labels is not None and labels.min(initial=0) < 0:
            raise ValueError(
                f"Labels {labels_layer.name!r} hold negative values: 0 is background."
            )
        return image, labels

    def _show(self, result: Gallery, image_layer, labels_layer) -> None:
        n, height, width = result.images.shape[0], *result.images.shape[-2:]
        scale = tuple(image_layer.scale[-2:])
        translate = tuple(image_layer.translate[-2:])
        placed = {
            "scale": (1.0, *scale),
            # Beside the original, so both are visible in 2D.
            "translate": (0.0, translate[0], translate[1] + (width + GAP_PX) * scale[1]),
        }
        colour = result.images.ndim == 4  # (N, C, Y, X): shown as RGB, in [0, 1]
        old = owned_layer(self.viewer, GALLERY)
        if old is not None and bool(getattr(old, "rgb", False)) != colour:
            self.viewer.layers.remove(old)  # a gray layer cannot take colour, nor the reverse
        style = {"rgb": True} if colour else {"colormap": "gray"}
        images = np.clip(np.moveaxis(result.images, 1, -1), 0, 1) if colour else result.images
        shown = [set_layer(self.viewer, GALLERY, images, **style, **placed)]
        if result.labels is not None:
            shown.append(set_layer(self.viewer, GALLERY_LABELS, result.labels, "labels", **placed))
        elif owned_layer(self.viewer, GALLERY_LABELS) is not None:
            self.viewer.layers.remove(owned_layer(self.viewer, GALLERY_LABELS))
        for layer in shown:  # an existing layer keeps its place unless we move it
            layer.scale, layer.translate = placed["scale"], placed["translate"]
        if owned_layer(self.viewer, GRID_LINES) is not None:  # paths: rebuilt, not swapped
            self.viewer.layers.remove(owned_layer(self.viewer, GRID_LINES))
        if result.grid_lines:
            self.viewer.add_shapes(
                result.grid_lines,
                shape_type="path",
                edge_color="yellow",
                edge_width=scale[1],
                opacity=0.7,
                name=GRID_LINES,
                metadata={OWNER_KEY: PREVIEW},
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
