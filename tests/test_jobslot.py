"""JobSlot: one way to cancel a dock's job, one guard against stale results."""

from __future__ import annotations

import threading
import time

from qtpy.QtWidgets import QLabel, QWidget

from napari_unet.widgets._jobs import JobSlot


def _ticks(n: int, delay_s: float = 0.02):
    for i in range(n):
        time.sleep(delay_s)
        yield i
    return "all done"


def _ticks_with_stop(n: int, stop: threading.Event):
    done = 0
    for done in range(1, n + 1):
        time.sleep(0.02)
        yield done
        if stop.is_set():
            break
    return f"kept {done}"


OWNERS: list[QWidget] = []  # a dock that stays open for the test's length


def _slot(qtbot):
    owner = QWidget()
    OWNERS.append(owner)
    status = QLabel()
    return JobSlot(owner, status), status


def test_cancel_closes_a_plain_generator_and_shows_nothing(qtbot):
    slot, _ = _slot(qtbot)
    seen, returned, finished = [], [], []
    slot.start(_ticks, 500, on_yield=seen.append, on_return=returned.append,
               on_finish=lambda: finished.append(True))  # fmt: skip
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=10_000)
    slot.cancel()
    qtbot.waitUntil(lambda: not slot.busy, timeout=10_000)
    assert returned == [] and finished == [True] and len(seen) < 500


def test_a_job_taking_stop_ends_itself_and_returns_what_it_has(qtbot):
    slot, _ = _slot(qtbot)
    seen, returned = [], []
    slot.start(_ticks_with_stop, 500, on_yield=seen.append, on_return=returned.append)
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=10_000)
    slot.cancel()
    qtbot.waitUntil(lambda: not slot.busy, timeout=10_000)
    assert returned and returned[0].startswith("kept ") and int(returned[0][5:]) < 500


def test_replace_drops_the_stale_result_and_runs_the_newest(qtbot):
    slot, _ = _slot(qtbot)
    returned = []
    slot.start(_ticks, 200, on_return=returned.append)
    for n in (3, 4, 5):  # a burst of requests: only the last one's result is shown
        slot.replace(
            lambda n=n: slot.start(_ticks, n, on_return=lambda r, n=n: returned.append(n))
        )
    qtbot.waitUntil(lambda: returned == [5] and not slot.busy, timeout=10_000)


def test_an_error_replaces_the_status_line(qtbot):
    def broken():
        yield 1
        raise ValueError("Labels 'x': nothing is annotated")

    slot, status = _slot(qtbot)
    status.setText("Preparing the training data…")
    slot.start(broken)
    qtbot.waitUntil(lambda: not slot.busy, timeout=10_000)
    assert status.text() == "Labels 'x': nothing is annotated"
