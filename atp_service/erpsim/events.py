"""ERP inventory events (contract.md s3) built from ledger changes, and the in-memory log.

Pure: the wall clock and the id prefix are passed in. The log keeps the newest ``capacity``
events; positions keep counting from 0 for the process's life, so ``since`` cursors held by
a reader stay valid after old events are dropped.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .ledger import Change

Event = dict[str, Any]


def rfc3339(epoch: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix: ``2026-11-22T10:00:00.123Z``."""
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class EventFactory:
    """Turns a :class:`Change` into its event; ids are ``<prefix>-<n>``, unique per process."""

    def __init__(self, prefix: str, wall: Callable[[], float]) -> None:
        self._prefix = prefix
        self._wall = wall
        self._counter = itertools.count(1)

    def __call__(self, change: Change) -> Event:
        head = {
            "event_id": f"{self._prefix}-{next(self._counter)}",
            "type": change.kind,
            "sku": change.sku,
            "location": change.location,
            "seq": change.seq,
        }
        if change.kind == "snapshot":
            body: Event = {
                "on_hand": change.on_hand,
                "allocated": change.allocated,
                "safety_stock": change.safety_stock,
            }
        else:
            body = {
                "on_hand_delta": change.on_hand_delta,
                "allocated_delta": change.allocated_delta,
                "reason": change.reason,
            }
        return {**head, **body, "occurred_at": rfc3339(self._wall())}


class EventLog:
    def __init__(self, capacity: int) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._next = 0  # position the next event will get

    def append(self, event: Event) -> None:
        self._events.append(event)
        self._next += 1

    @property
    def next(self) -> int:
        return self._next

    @property
    def first(self) -> int:
        """Position of the oldest event still held."""
        return self._next - len(self._events)

    def since(self, position: int) -> Iterator[Event]:
        """Events at ``position`` and after (from the oldest held, if that is later)."""
        start = max(position, self.first) - self.first
        return itertools.islice(self._events, start, None)
