"""What the docks share: the current model and, per viewer, the training settings.

The Train dock publishes the model it just trained (or loaded); the Predict dock offers
it as "current model" (a CPU copy of the net and its metadata). The Weight map and
Augmentation docks write the settings they preview; the Train dock trains with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_current: tuple[Any, dict] | None = None
_listeners: list[Callable[[], None]] = []


def set_current_model(net: Any, metadata: dict) -> None:
    """Publish a trained model (a `UNet` in eval mode) and its metadata to every dock."""
    global _current
    _current = (net, dict(metadata))
    for listener in list(_listeners):
        listener()


def current_model() -> tuple[Any, dict] | None:
    """(net, metadata) of the latest trained model in this session, or None."""
    return _current


def on_model_changed(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` whenever a new model is published; returns a disconnect function."""
    _listeners.append(callback)
    return lambda: _listeners.remove(callback) if callback in _listeners else None


def clear() -> None:
    """Forget the current model (tests use this to start from a clean session)."""
    global _current
    _current = None


# --- training settings, one object per viewer ------------------------------------------
# The Weight map and Augmentation docks write what they preview here; the Train dock
# shows it and trains with it. Keyed by id(viewer); forgotten when the viewer goes.
_settings: dict[int, Any] = {}


class _Listeners(list):
    """Callbacks with ``connect``/``disconnect``, like an event (a `Dock` can ``listen``)."""

    def connect(self, callback: Callable[[Any], None]) -> None:
        self.append(callback)

    def disconnect(self, callback: Callable[[Any], None]) -> None:
        if callback in self:
            self.remove(callback)


_settings_listeners: dict[int, _Listeners] = {}


def training_settings(viewer: Any):
    """The viewer's shared `core.settings.TrainingSettings` (defaults at first)."""
    from napari_unet.core.settings import TrainingSettings

    key = id(viewer)
    if key not in _settings:
        _settings[key] = TrainingSettings()
        _settings_listeners[key] = _Listeners()
        try:
            import weakref

            weakref.finalize(viewer, _forget, key)
        except TypeError:  # not weak-referenceable: kept for the session
            pass
    return _settings[key]


def update_training_settings(viewer: Any, source: Any = None, **changes: Any) -> Any:
    """Change some fields (``weights``, ``augment``, ``unpainted``) and tell every dock.

    ``source`` (a listener) is not called back, so a dock does not echo its own change.
    """
    current = training_settings(viewer)
    new = current.with_changes(**changes)
    _settings[id(viewer)] = new
    if new != current:
        listeners = _settings_listeners[id(viewer)]
        for listener in list(listeners):
            if listener != source:
                try:
                    listener(new)
                except RuntimeError:  # its dock's Qt object is gone
                    listeners.remove(listener)
    return new


def settings_changed(viewer: Any) -> _Listeners:
    """The callbacks ``callback(settings)`` run after each change of the viewer's settings
    (``connect``/``disconnect``; a dock uses ``self.listen(settings_changed(viewer), cb)``)."""
    training_settings(viewer)
    return _settings_listeners[id(viewer)]


def _forget(key: int) -> None:
    _settings.pop(key, None)
    _settings_listeners.pop(key, None)
