"""The base of every U-Net dock: a scrolling form, a status line, one background job,
and viewer connections that end when the dock is closed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets._channels import ChannelPicker
from napari_unet.widgets._jobs import JobSlot
from napari_unet.widgets._layers import layer_picker


class Dock(QWidget):
    """A dock's controls go into ``self.body`` (it scrolls, so a short screen fits)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.jobs = JobSlot(self, self.status)
        self._connections: list[tuple[Any, Callable]] = []
        self._docked = False
        inner = QWidget()
        self.body = QVBoxLayout(inner)
        self._scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        connections = self._connections
        self.destroyed.connect(lambda *_: _disconnect_all(connections))

    def add_form(self, *rows) -> QFormLayout:
        """Labelled rows ``(label, widget)`` (a widget, layout or magicgui widget); a
        bare widget spans the row."""
        form = QFormLayout()
        for row in rows:
            if isinstance(row, tuple):
                form.addRow(row[0], _native(row[1]))
            else:
                form.addRow(_native(row))
        self.body.addLayout(form)
        return form

    def add_row(self, *widgets) -> QHBoxLayout:
        """Widgets side by side (buttons)."""
        row = QHBoxLayout()
        for widget in widgets:
            row.addWidget(_native(widget))
        self.body.addLayout(row)
        return row

    def end_body(self) -> None:
        """The status line last, then stretch (controls stay at the top)."""
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.fit_width()

    def fit_width(self) -> None:
        """As wide as the controls need: the dock scrolls up and down, never sideways."""
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(self._scroll.widget().minimumSizeHint().width() + bar)

    # --- viewer connections -------------------------------------------------------------

    def listen(self, emitter, callback: Callable) -> None:
        """Connect ``callback`` to a viewer/layer event until the dock is closed."""
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def unlisten(self, emitter, callback: Callable) -> None:
        emitter.disconnect(callback)
        if (emitter, callback) in self._connections:
            self._connections.remove((emitter, callback))

    def picker(self, kind: str, **options: Any) -> ComboBox:
        """A layer picker (`_layers.layer_picker`) that follows the layer list."""
        picker = layer_picker(self.viewer, kind, **options)
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered, events.renamed):
            self.listen(emitter, picker.reset_choices)
        return picker

    def channel_picker(self, image_picker: ComboBox) -> ChannelPicker:
        """Extra channels for ``image_picker``'s layer, re-offered when it or the layer
        list changes."""
        channels = ChannelPicker()

        def offer(*_args) -> None:
            layer = image_picker.value
            channels.offer(self.viewer, layer.name if layer is not None else "")

        image_picker.changed.connect(offer)
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.renamed):
            self.listen(emitter, offer)
        offer()
        return channels

    def release(self) -> None:
        """Closed: stop the job (a training still publishes its best model) and every
        reaction to the viewer."""
        self.jobs.cancel()
        _disconnect_all(self._connections)

    def event(self, event) -> bool:
        # napari's close button takes a dock out of the window (parent None) without
        # deleting it: that is when it must stop listening.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self._docked:
                self.release()
            self._docked = self.parent() is not None
        return super().event(event)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self.release()
        super().closeEvent(event)


def _native(widget):
    return getattr(widget, "native", widget)  # magicgui widgets wrap a Qt one


def _disconnect_all(connections: list) -> None:
    while connections:
        emitter, callback = connections.pop()
        emitter.disconnect(callback)
