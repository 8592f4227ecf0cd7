"""Small helpers every dock uses: plugin-owned layers, background jobs, messages."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from napari.qt.threading import GeneratorWorker, thread_worker
from napari.utils.notifications import show_error, show_info

from napari_unet.core.io import InputError


def set_layer(viewer, name: str, data: np.ndarray, kind: str = "image", **kwargs: Any):
    """Replace the data of the plugin's layer ``name`` or add it. Returns the layer.

    Only for layers the plugin owns (previews, predictions): a user's layer is never
    written because callers always pass a plugin-specific name.
    """
    if name in viewer.layers and type(viewer.layers[name]).__name__.lower() == kind:
        layer = viewer.layers[name]
        layer.data = data  # keep the user's display settings (contrast, opacity)
        return layer
    if name in viewer.layers:
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)


def report_error(exc: BaseException) -> None:
    """A notification a person can read: our own input errors without a traceback."""
    if isinstance(exc, InputError | ValueError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


def start_job(
    generator_function: Callable[..., Generator],
    *args: Any,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    progress_total: int | None = None,
    progress_desc: str | None = None,
    **kwargs: Any,
) -> GeneratorWorker:
    """Run a core generator in a worker thread; handlers run on the GUI thread.

    ``worker.quit()`` stops it at the next yield (the generator's ``finally`` runs).
    """
    progress = None
    if progress_total is not None:
        progress = {"total": progress_total, "desc": progress_desc or ""}
    # ignore_errors: errors go to `report_error` below, not re-raised in the event loop
    # (which would show a second notification with a traceback).
    worker = thread_worker(
        generator_function, progress=progress, start_thread=False, ignore_errors=True
    )(*args, **kwargs)
    if on_yield is not None:
        worker.yielded.connect(on_yield)
    if on_return is not None:
        worker.returned.connect(on_return)
    worker.errored.connect(report_error)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker


def core_job(path: str) -> Callable[..., Generator]:
    """The core generator function ``"module:name"``, imported when the job starts in its
    worker thread (so torch never loads on the GUI thread)."""
    module, _, name = path.partition(":")

    def job(*args: Any, **kwargs: Any) -> Generator:
        function = getattr(importlib.import_module(module), name)
        return (yield from function(*args, **kwargs))

    job.__name__ = name
    return job


def notify(message: str) -> None:
    show_info(message)


def layer_named(viewer, name: str):
    """The viewer's layer called ``name``, or None (a combo box may name a removed layer)."""
    return next((layer for layer in viewer.layers if layer.name == name), None)


def fill_combo(combo, names: list[str]) -> None:
    """Offer ``names`` in a combo box, keeping the current choice when it is still there.

    Signals are blocked meanwhile, so refilling never looks like a user's choice.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def layer_choices(viewer, kind: str) -> list[str]:
    """Names of the viewer's layers of one kind ("image", "labels", "shapes")."""
    return [layer.name for layer in viewer.layers if type(layer).__name__.lower() == kind]
