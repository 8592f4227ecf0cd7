"""Background jobs of a dock: one way to cancel, one guard against stale results.

A dock owns one `JobSlot`. ``start`` runs a core generator in a worker thread;
``cancel`` sets the job's stop event: a job function with a ``stop`` parameter gets the
event and ends itself (returning what it has, e.g. the best model so far), any other
generator is closed at its next event (its ``finally`` runs) and returns nothing to
show. ``replace`` is for previews: the newest request wins, the running job is
cancelled and its results are dropped. Nothing reaches a dock that was deleted.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error

from napari_unet.core.io import InputError


def report_error(exc: BaseException) -> None:
    """A notification a person can read: our own input errors without a traceback."""
    if isinstance(exc, InputError | ValueError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


CANCELLED = object()  # what a job stopped by `cancel` returns: nothing to show


class core_job:  # noqa: N801 (used like a function)
    """The core generator function ``"module:name"``, imported in the worker thread when
    the job starts (so torch never loads on the GUI thread)."""

    def __init__(self, path: str):
        self.path = path

    def resolve(self) -> Callable[..., Any]:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)


def _drive(function: Callable[..., Any], stop: threading.Event, args, kwargs) -> Generator:
    """Pull ``function``'s generator until it returns or ``stop`` is set."""
    if isinstance(function, core_job):
        function = function.resolve()
    handles_stop = "stop" in inspect.signature(function).parameters
    if handles_stop:
        kwargs = {**kwargs, "stop": stop}
    job = function(*args, **kwargs)
    if not inspect.isgenerator(job):
        return job
    try:
        while handles_stop or not stop.is_set():
            try:
                event = next(job)
            except StopIteration as end:
                return end.value
            yield event
        return CANCELLED
    finally:
        job.close()


class _Worker(GeneratorWorker):
    """A worker whose ``quit`` (also napari's own cancel, e.g. on closing the window)
    sets the job's stop event instead of abandoning the generator mid-way."""

    stop: threading.Event

    def quit(self) -> None:
        self.stop.set()


class JobSlot:
    """The one background job a dock runs at a time (see the module docstring)."""

    def __init__(self, owner, status=None):
        self._owner_alive = True
        self._status = status  # a QLabel that shows errors in place of a stale line
        self._worker = None
        self._stop = threading.Event()
        self._ticket = 0  # bumped when results of the running job become stale
        self._queued: Callable[[], None] | None = None
        owner.destroyed.connect(self._owner_gone)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def start(
        self,
        function: Callable[..., Any],
        *args: Any,
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        progress_total: int | None = None,
        progress_desc: str = "",
        **kwargs: Any,
    ) -> None:
        """Run ``function(*args, **kwargs)`` (a generator function) in a worker thread.

        Handlers run on the GUI thread, and only while this job's results are wanted.
        Errors become one notification and the status line; ``on_finish`` always runs.
        """
        if self.busy:
            raise RuntimeError("a job is running: cancel or replace it first")
        self._stop = stop = threading.Event()
        ticket = self._ticket
        fresh = self._fresh
        progress = {"total": progress_total, "desc": progress_desc} if progress_total else None
        # ignore_errors: errors are shown once by `_error`, not re-raised with a traceback.
        worker = create_worker(
            _drive,
            function,
            stop,
            args,
            kwargs,
            _start_thread=False,
            _progress=progress,
            _worker_class=_Worker,
            _ignore_errors=True,
        )
        worker.stop = stop
        if on_yield is not None:
            worker.yielded.connect(lambda value: fresh(ticket) and on_yield(value))
        if on_return is not None:
            worker.returned.connect(
                lambda value: value is not CANCELLED and fresh(ticket) and on_return(value)
            )
        worker.errored.connect(lambda exc: self._error(ticket, exc, on_error))
        worker.finished.connect(lambda: self._finished(ticket, on_finish))
        self._worker = worker
        worker.start()

    def _fresh(self, ticket: int) -> bool:
        return self._owner_alive and ticket == self._ticket

    def _error(self, ticket: int, exc: BaseException, on_error) -> None:
        if not self._fresh(ticket):
            return
        report_error(exc)
        if self._status is not None:
            self._status.setText(str(exc))
        if on_error is not None:
            on_error(exc)

    def _finished(self, ticket: int, on_finish) -> None:
        self._worker = None
        if self._fresh(ticket) and on_finish is not None:
            on_finish()
        queued, self._queued = self._queued, None
        if queued is not None and self._owner_alive:
            queued()

    def cancel(self) -> None:
        """Ask the running job to stop at its next event (see the module docstring)."""
        self._stop.set()

    def replace(self, starter: Callable[[], None]) -> None:
        """Newest wins: run ``starter`` now, or once the running job (now stale) has ended."""
        if not self.busy:
            starter()
            return
        self._ticket += 1
        self._queued = starter
        self.cancel()

    def _owner_gone(self, *args) -> None:
        self._owner_alive = False
        self._queued = None
        self.cancel()
