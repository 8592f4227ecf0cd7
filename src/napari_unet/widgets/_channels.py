"""Channel picker shared by the Train and Predict docks.

napari opens a multi-channel image (``channel_axis=``) as one image layer per channel;
the picker lets people tick further layers of the same shape as the extra channels of
the chosen image (in list order), or use an RGB layer as its three colour channels.
`gather` turns the choice into an array and its axes for `core.axes`; no numbers here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from napari_unet.core.io import InputError

TIME_LABELS = ("t", "time", "frame")  # napari axis labels that mean a time-lapse


@dataclass(frozen=True)
class Picked:
    """The image to run on: ``axes`` None means a plain gray (Y, X) / (Z, Y, X) layer."""

    data: np.ndarray
    axes: str | None
    names: list[str]  # one per channel (layer names; "<rgb layer> R/G/B" for colour)
    labels_shape: tuple[int, ...]  # the image's shape without channels
    time_lapse: bool  # a 3D layer whose first axis is labelled time


def is_time_lapse(layer) -> bool:
    labels = getattr(layer, "axis_labels", ())
    ndim = len(layer.data.shape) - int(getattr(layer, "rgb", False))
    return ndim == 3 and str(labels[0]).lower() in TIME_LABELS


class ChannelPicker(QListWidget):
    """Tickable list of image layers usable as extra channels of the chosen image."""

    def __init__(self) -> None:
        super().__init__()
        self.setMaximumHeight(90)
        self.setToolTip(
            "Tick image layers of the same shape to use them as further channels of the "
            "chosen image (e.g. nuclei + membrane opened with channel_axis)"
        )

    def offer(self, viewer, main_name: str) -> None:
        """List the gray image layers shaped like ``main_name``, keeping ticks by name."""
        ticked = set(self.ticked())
        main = next((x for x in viewer.layers if x.name == main_name), None)
        self.clear()
        if main is None or getattr(main, "rgb", False):
            return
        for layer in viewer.layers:
            same = type(layer).__name__ == "Image" and not layer.rgb
            if same and layer.name != main_name and layer.data.shape == main.data.shape:
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if layer.name in ticked else Qt.Unchecked)
                self.addItem(item)

    def ticked(self) -> list[str]:
        items = (self.item(i) for i in range(self.count()))
        return [item.text() for item in items if item.checkState() == Qt.Checked]

    def tick(self, names: list[str]) -> None:
        for i in range(self.count()):
            item = self.item(i)
            item.setCheckState(Qt.Checked if item.text() in names else Qt.Unchecked)


def gather(viewer, layer, extra: list[str]) -> Picked:
    """The chosen layer plus the ticked ``extra`` layers as one image and its axes."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    time_lapse = is_time_lapse(layer)
    stack_axis = "T" if time_lapse else "Z"
    if layer.rgb:
        shape = tuple(data.shape[:-1])
        axes = (stack_axis if len(shape) == 3 else "") + "YXC"
        names = [f"{layer.name} {c}" for c in "RGBA"[: data.shape[-1]]]
        return Picked(np.asarray(data), axes, names, shape, time_lapse)
    if not extra:
        return Picked(data, None, [layer.name], tuple(data.shape), time_lapse)
    others = [next((x for x in viewer.layers if x.name == n), None) for n in extra]
    if any(o is None or o.data.shape != data.shape for o in others):
        raise InputError(f"Channels: every picked layer must have the shape of {layer.name!r}")
    stacked = np.stack([np.asarray(x.data) for x in (layer, *others)], axis=-3)
    axes = (stack_axis if data.ndim == 3 else "") + "CYX"
    return Picked(stacked, axes, [layer.name, *extra], tuple(data.shape), time_lapse)
