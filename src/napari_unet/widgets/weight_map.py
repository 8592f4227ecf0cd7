"""Weight map dock: a live preview of the loss weights the U-Net trains with.

Shows, for a labels layer, the separated target (touching cells split by gaps), the
distances d1/d2 and the weight map of the paper, recomputed off the GUI thread whenever
a parameter, the slice or the labels change. The numbers come from `core.weights`.
Its parameters are the viewer's training settings (`_session.training_settings`): what
the preview shows is what the Train dock trains with.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget
from superqt import QLabeledDoubleSlider

from napari_unet.core import weights
from napari_unet.widgets import _session
from napari_unet.widgets._common import (
    fill_combo,
    layer_choices,
    layer_named,
    set_layer,
    start_job,
)

# Suffixes of the layers this dock owns, added to the labels layer's name.
TARGET, D1, D2, WEIGHTS = " separated target", " d1", " d2", " weight map"
W0_MAX = 50.0
SIGMA_RANGE_PX = (0.5, 25.0)


def _slider(low: float, high: float, value: float) -> QLabeledDoubleSlider:
    slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    slider.setRange(low, high)
    slider.setDecimals(1)
    slider.setValue(value)
    return slider


class WeightMapDock(QWidget):
    """Pick a labels layer; move w0/sigma and watch the weight map follow."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.labels_combo = QComboBox()
        self.w0 = _slider(0.0, W0_MAX, weights.W0)
        self.w0.setToolTip("Extra weight w0 of the gaps between touching cells (paper: 10)")
        self.sigma = _slider(*SIGMA_RANGE_PX, weights.SIGMA_PX)
        self.sigma.setToolTip("Width sigma of the border term in pixels (paper: about 5)")
        self.balance = QCheckBox("Balance cell / background frequencies")
        self.balance.setChecked(True)
        self.all_slices = QCheckBox("All slices of a stack (else the current one)")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        form.addRow("w0", self.w0)
        form.addRow("sigma (px)", self.sigma)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.balance)
        layout.addWidget(self.all_slices)
        layout.addWidget(self.status)
        layout.addStretch(1)

        # Slider drags fire many changes: gather them for 60 ms, then compute once.
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(60)
        self._debounce.timeout.connect(self._request)
        self._worker = None
        self._wanted = 0  # id of the newest request; older results are dropped
        self._running = 0  # id of the request the worker is computing
        self._watched = None  # the labels layer whose edits trigger an update

        for signal in (self.w0.valueChanged, self.sigma.valueChanged, self.balance.toggled):
            signal.connect(self._publish)
        self.all_slices.toggled.connect(self._schedule)
        self.labels_combo.currentTextChanged.connect(self._on_layer_chosen)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.adopt(_session.training_settings(self.viewer))
        forget = _session.on_settings_changed(self.viewer, self.adopt)
        self.destroyed.connect(lambda *_: forget())
        self._refresh_choices()

    # --- shared settings ----------------------------------------------------------------

    def adopt(self, settings) -> None:
        """Show the viewer's training settings (changed by another dock or a loaded model)."""
        ws = settings.weights
        for control, value in (
            (self.w0, ws.w0),
            (self.sigma, ws.sigma_px),
            (self.balance, ws.balance),
        ):
            control.blockSignals(True)
            if isinstance(value, bool):
                control.setChecked(value)
            else:
                control.setValue(value)
            control.blockSignals(False)
        self._max_class_weight = ws.max_class_weight
        self._schedule()

    def _publish(self, *args) -> None:
        """The sliders changed: they are now the training settings too."""
        current = _session.training_settings(self.viewer).weights
        _session.update_training_settings(
            self.viewer,
            source=self.adopt,
            weights=replace(
                current,
                w0=float(self.w0.value()),
                sigma_px=float(self.sigma.value()),
                balance=self.balance.isChecked(),
            ),
        )
        self._schedule()

    # --- choices and triggers ---------------------------------------------------------

    def _refresh_choices(self, event=None) -> None:
        owned = (TARGET, D1, D2, WEIGHTS)
        names = [n for n in layer_choices(self.viewer, "labels") if not n.endswith(owned)]
        current = self.labels_combo.currentText()
        fill_combo(self.labels_combo, names)
        if self.labels_combo.currentText() != current:
            self._on_layer_chosen(self.labels_combo.currentText())

    def _on_layer_chosen(self, name: str) -> None:
        if self._watched is not None:
            self._watched.events.data.disconnect(self._schedule)
            self._watched.events.paint.disconnect(self._schedule)
        self._watched = layer_named(self.viewer, name)
        if self._watched is not None:
            self._watched.events.data.connect(self._schedule)
            self._watched.events.paint.connect(self._schedule)
        self._schedule()

    def _on_step(self, event=None) -> None:
        layer = self._watched
        if layer is not None and layer.ndim == 3 and not self.all_slices.isChecked():
            self._schedule()

    def _schedule(self, *args) -> None:
        self._debounce.start()

    # --- background computation -------------------------------------------------------

    def _current_slice(self, layer) -> int:
        step = self.viewer.dims.current_step[self.viewer.dims.ndim - layer.ndim]
        return int(np.clip(step, 0, layer.data.shape[0] - 1))

    def _request(self) -> None:
        """Ask for the newest parameters; a running job is stopped or its result dropped."""
        self._wanted += 1
        if self._worker is not None:
            self._worker.quit()  # stops a stack between slices; its result is dropped
            return
        self._start()

    def _start(self) -> None:
        layer = self._watched
        if layer is None or layer.ndim not in (2, 3):
            return
        self._running = request = self._wanted
        whole = layer.ndim == 2 or self.all_slices.isChecked()
        z = None if whole else self._current_slice(layer)
        labels = np.array(layer.data if whole else layer.data[z])  # a copy: painting goes on
        params = {
            "w0": self.w0.value(),
            "sigma": self.sigma.value(),
            "balance": self.balance.isChecked(),
            "max_class_weight": self._max_class_weight,
        }
        n_slices = labels.shape[0] if labels.ndim == 3 else None
        started = time.perf_counter()
        self.status.setText("computing…")
        self._worker = start_job(
            weights.weight_maps_iter,
            labels,
            **params,
            on_return=lambda maps: self._show(request, layer, z, maps, started),
            on_finish=self._on_finish,
            progress_total=n_slices,
            progress_desc="weight map",
        )

    def _on_finish(self) -> None:
        self._worker = None
        if self._running != self._wanted:
            self._start()

    def _show(self, request: int, layer, z: int | None, maps: weights.WeightMaps, started) -> None:
        if request != self._wanted or layer.name not in self.viewer.layers:
            return  # parameters changed meanwhile: a newer result is on its way
        reach = max(maps.reach_px, 1.0)
        name = layer.name
        # Results cover the labels layer's grid (one slice of it, or all of it).
        common = {"scale": layer.scale, "translate": layer.translate}
        self._put(name + TARGET, maps.target, z, layer.data.shape, "labels", **common)
        for suffix, data in ((D1, maps.d1), (D2, maps.d2)):
            shown = self._put(
                name + suffix,
                data,
                z,
                layer.data.shape,
                colormap="viridis",
                contrast_limits=(0.0, reach),
                visible=False,
                **common,
            )
            # d1/d2 are capped at the reach, which follows sigma: show 0..reach.
            shown.contrast_limits_range = (0.0, reach)
            shown.contrast_limits = (0.0, reach)
        top = float(maps.weights.max()) or 1.0
        shown = self._put(
            name + WEIGHTS,
            maps.weights,
            z,
            layer.data.shape,
            colormap="magma",
            blending="additive",
            contrast_limits=(0.0, top),
            **common,
        )
        # Keep the contrast the user set (an absolute scale shows w0 growing), but let
        # the range grow so that larger weights can still be reached.
        shown.contrast_limits_range = (0.0, max(shown.contrast_limits[1], top))
        where = "" if z is None else f"slice {z}: "
        self.status.setText(
            f"{where}max weight {top:.2f}; cells matter up to {maps.reach_px:.0f} px; "
            f"{time.perf_counter() - started:.2f} s"
        )

    def _put(self, name, data, z, shape, kind="image", **kwargs):
        """Whole result, or one slice written into the plugin's stack-shaped layer."""
        if z is None:
            return set_layer(self.viewer, name, data, kind, **kwargs)
        owned = layer_named(self.viewer, name)
        if owned is None or owned.data.shape != shape or owned.data.dtype != data.dtype:
            owned = set_layer(self.viewer, name, np.zeros(shape, data.dtype), kind, **kwargs)
        owned.data[z] = data
        owned.refresh()
        return owned

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        if self._worker is not None:
            self._worker.quit()
        super().closeEvent(event)
