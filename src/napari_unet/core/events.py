"""Driving the core's progress generators to their end (scripts, tests, the CLI).

The long jobs yield progress events and *return* their result; this is the one place
that pulls such a generator through and hands back that return value.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

Result = TypeVar("Result")


@dataclass(frozen=True)
class Done:
    """Progress: ``done`` of ``total`` units of work (slices, tiles, samples) finished."""

    done: int
    total: int


def run_to_end(
    events: Generator[Any, Any, Result], on_event: Callable[[Any], None] | None = None
) -> Result:
    """Pull ``events`` to its end, calling ``on_event(event)`` for each; return its result."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
