"""The model this napari session is working with, shared between the docks.

The Train dock publishes the model it just trained (or loaded); the Predict dock offers
it as "current model". Holds a CPU copy of the net and its metadata, nothing else.
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
