"""The ERP event pipeline shared by ``POST /v1/events`` and (issue 3) the Kafka consumer.

Decode and validate every event first (a bad one is rejected with its reason and the rest go
on), group the valid ones by (sku, location), order each group by seq, and apply them with
``apply_events`` calls of ~SCRIPT_EVENTS events each (many keys per call); all calls of a
batch go to Redis in one pipeline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import decode, keys
from .cache import Cache
from .errors import BadRequest
from .inventory import Adjustment, Event
from .metrics import Metrics
from .store import Store

SCRIPT_EVENTS = 500  # events per apply_events call (~1 ms of Redis time)


@dataclass(slots=True)
class IngestResult:
    applied: int = 0
    duplicates: int = 0
    buffered: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "duplicates": self.duplicates,
            "buffered": self.buffered,
            "rejected": self.rejected,
        }


def _args(ev: Event) -> tuple[str, int, str]:
    if isinstance(ev, Adjustment):
        return "a", ev.seq, f"{ev.on_hand_delta}|{ev.allocated_delta}"
    return "s", ev.seq, f"{ev.on_hand}|{ev.allocated}|{ev.safety_stock}"


class Ingest:
    def __init__(
        self,
        store: Store,
        cache: Cache,
        metrics: Metrics,
        gap_window_ms: int = -1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gap_window_ms = gap_window_ms  # -1: no ERP to resync from; gaps wait for events
        self.store = store
        self.cache = cache
        self.metrics = metrics
        self.clock = clock

    async def apply(self, raw_events: list[Any], source: str) -> IngestResult:
        result = IngestResult()
        groups: dict[str, list[Event]] = {}
        for index, raw in enumerate(raw_events):
            try:
                ev = decode.event(raw)
            except BadRequest as exc:
                result.rejected.append({"index": index, "reason": exc.detail})
                continue
            groups.setdefault(f"{ev.sku}|{ev.location}", []).append(ev)
        now = int(self.clock() * 1000)
        futures = []
        script_keys = (keys.INV, keys.BUF, keys.SETTLE, keys.CHANGES, keys.outbox("background"))
        head: list[Any] = [now, keys.CHANGES_MAXLEN, self.gap_window_ms]
        args = list(head)
        size = 0
        for key, events in groups.items():
            events.sort(key=lambda e: e.seq)
            args += (key, len(events))
            for ev in events:
                args.extend(_args(ev))
            size += len(events)
            if size >= SCRIPT_EVENTS:  # keep each script short: Redis runs nothing else meanwhile
                futures.append(self.store.run("apply_events", script_keys, args))
                args, size = list(head), 0
        if size:
            futures.append(self.store.run("apply_events", script_keys, args))
        negative = settled = 0
        for reply in await asyncio.gather(*futures):
            for j in range(0, len(reply), 7):
                applied, dups, buffered, neg, settle, key, record = reply[j : j + 7]
                result.applied += applied
                result.duplicates += dups
                result.buffered += buffered
                negative += neg
                settled += settle
                if record:
                    self.cache.apply(key.decode(), record)
        m = self.metrics
        m.events.labels(source, "applied").inc(result.applied)
        m.events.labels(source, "duplicate").inc(result.duplicates)
        m.events.labels(source, "buffered").inc(result.buffered)
        m.events.labels(source, "rejected").inc(len(result.rejected))
        if negative:
            m.negative.inc(negative)
        if settled:
            m.settled.inc(settled)
        return result
