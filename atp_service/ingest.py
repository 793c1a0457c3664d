"""The ERP event pipeline shared by ``POST /v1/events`` and (issue 3) the Kafka consumer.

Decode and validate every event first (a bad one is rejected with its reason and the rest go
on), group the valid ones by (sku, location), order each group by seq, and apply each group
with one ``apply_events`` script; all groups of a batch go to Redis in one pipeline.
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
        self, store: Store, cache: Cache, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
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
        for key, events in groups.items():
            events.sort(key=lambda e: e.seq)
            args: list[Any] = [key, now, keys.CHANGES_MAXLEN]
            for ev in events:
                args.extend(_args(ev))
            script_keys = (keys.INV, keys.BUF, keys.SETTLE, keys.CHANGES)
            futures.append(self.store.run("apply_events", script_keys, args))
        negative = settled = 0
        for reply in await asyncio.gather(*futures):
            applied, dups, buffered, neg, settle, key, record = reply
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
