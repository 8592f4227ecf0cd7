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
from qtpy.QtWidgets import QCheckBox
from superqt import QLabeledDoubleSlider

from napari_unet.core import weights
from napari_unet.widgets import _session
from napari_unet.widgets._dock import Dock
from napari_unet.widgets._layers import grid_problem, owned_layer, plane_index, set_layer

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


class WeightMapDock(Dock):
    """Pick a labels layer; move w0/sigma and watch the weight map follow."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.labels_picker = self.picker("labels")
        self.w0 = _slider(0.0, W0_MAX, weights.W0)
        self.w0.setToolTip("Extra weight w0 of the gaps between touching cells (paper: 10)")
        self.sigma = _slider(*SIGMA_RANGE_PX, weights.SIGMA_PX)
        self.sigma.setToolTip("Width sigma of the border term in pixels (paper: about 5)")
        self.balance = QCheckBox("Balance cell / background frequencies")
        self.balance.setChecked(True)
        self.all_slices = QCheckBox("All slices of a stack (else the current one)")

        self.add_form(("Labels", self.labels_picker), ("w0", self.w0), ("sigma (px)", self.sigma))
        self.body.addWidget(self.balance)
        self.body.addWidget(self.all_slices)
        self.end_body()

        # Slider drags fire many changes: gather them for 60 ms, then compute once.
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(60)
        self._debounce.timeout.connect(lambda: self.jobs.replace(self._start))
        self._watched = None  # the labels layer whose edits trigger an update
        self._max_class_weight = weights.MAX_CLASS_WEIGHT

        for signal in (self.w0.valueChanged, self.sigma.valueChanged, self.balance.toggled):
            signal.connect(self._publish)
        self.all_slices.toggled.connect(self._schedule)
        self.labels_picker.changed.connect(self._on_layer_chosen)
        self.listen(self.viewer.dims.events.current_step, self._on_step)
        self.listen(_session.settings_changed(self.viewer), self.adopt)
        self.adopt(_session.training_settings(self.viewer))
        self._on_layer_chosen()

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

    def _on_layer_chosen(self, *args) -> None:
        if self._watched is not None:
            self.unlisten(self._watched.events.data, self._schedule)
            self.unlisten(self._watched.events.paint, self._schedule)
        self._watched = self.labels_picker.value
        if self._watched is not None:
            self.listen(self._watched.events.data, self._schedule)
            self.listen(self._watched.events.paint, self._schedule)
        self._schedule()

    def _on_step(self, event=None) -> None:
        layer = self._watched
        if layer is not None and layer.ndim == 3 and not self.all_slices.isChecked():
            self._schedule()

    def _schedule(self, *args) -> None:
        self._debounce.start()

    # --- background computation -------------------------------------------------------

    def _start(self) -> None:
        layer = self._watched
        if layer is None or layer not in self.viewer.layers:
            return
        problem = grid_problem(layer)
        if problem:
            self.status.setText(problem)
            return
        whole = layer.ndim == 2 or self.all_slices.isChecked()
        z = None if whole else plane_index(self.viewer, layer)
        labels = np.array(layer.data if whole else layer.data[z])  # a copy: painting goes on
        if labels.min(initial=0) < 0:
            self.status.setText(f"Labels {layer.name!r} hold negative values: 0 is background.")
            return
        params = {
            "w0": self.w0.value(),
            "sigma": self.sigma.value(),
            "balance": self.balance.isChecked(),
            "max_class_weight": self._max_class_weight,
        }
        n_slices = labels.shape[0] if labels.ndim == 3 else None
        started = time.perf_counter()
        self.status.setText("computing…")
        self.jobs.start(
            weights.weight_maps_iter,
            labels,
            **params,
            on_return=lambda maps: self._show(layer, z, maps, started),
            progress_total=n_slices,
            progress_desc="weight map",
        )

    def _show(self, layer, z: tuple | None, maps: weights.WeightMaps, started) -> None:
        if layer not in self.viewer.layers:
            return  # deleted meanwhile
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
        where = "" if z is None else f"slice {z[0]}: "
        self.status.setText(
            f"{where}max weight {top:.2f}; cells matter up to {maps.reach_px:.0f} px; "
            f"{time.perf_counter() - started:.2f} s"
        )

    def _put(self, name, data, z, shape, kind="image", **kwargs):
        """Whole result, or one slice written into the plugin's stack-shaped layer."""
        if z is None:
            return set_layer(self.viewer, name, data, kind, **kwargs)
        owned = owned_layer(self.viewer, name)
        if owned is None or owned.data.shape != shape or owned.data.dtype != data.dtype:
            owned = set_layer(self.viewer, name, np.zeros(shape, data.dtype), kind, **kwargs)
        owned.data[z] = data
        owned.refresh()
        return owned
