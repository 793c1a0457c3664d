"""The ERP event pipeline shared by ``POST /v1/events`` and (issue 3) the Kafka consumer.

Decode and validate every event first (a bad one is rejected with its reason and the rest go
on), group the valid ones by (sku, location), order each group by seq, and apply them with
``apply_events`` calls of ~SCRIPT_EVENTS events each (many keys per call). ``apply`` sends all
calls of a batch in one pipeline; the Kafka feed uses ``prepare`` and ``finish`` instead, to
keep calls in flight on its own connection while it decodes the next chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import decode, keys
from .cache import Cache
from .errors import BadRequest
from .metrics import Metrics
from .store import SCRIPTS, Store

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


@dataclass(slots=True)
class Prepared:
    """A batch of events decoded and packed into ``apply_events`` calls, not yet sent."""

    commands: list[bytes] = field(default_factory=list)  # EVALSHA in RESP, ready to write
    names: list[list[str]] = field(default_factory=list)  # each command's keys, in order
    tokens: list[int] = field(default_factory=list)  # each command's writer token (0: none)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _bulk(arg: str) -> str:
    return f"${len(arg)}\r\n{arg}\r\n"  # every argument here is ASCII: chars == bytes


_SCRIPT_KEYS = (keys.INV, keys.BUF, keys.SETTLE, keys.CHANGES, keys.outbox("background"))
_EVALSHA = "".join(
    _bulk(a)
    for a in ("EVALSHA", SCRIPTS["apply_events"].sha, str(len(_SCRIPT_KEYS)), *_SCRIPT_KEYS)
)
_FIXED_ARGS = 3 + len(_SCRIPT_KEYS) + 4  # EVALSHA sha numkeys KEYS now maxlen window tag


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
        """Validate, apply and count one batch (calls pipelined on pooled connections)."""
        prepared = self.prepare(raw_events)
        replies = await asyncio.gather(*(self.store.run_packed(c) for c in prepared.commands))
        return self.finish(prepared, replies, source)

    def prepare(
        self,
        raw_events: Sequence[Any],
        tagged: bool = False,
        event_arg: Callable[[Any], tuple[str, int, str]] = decode.event_arg,
    ) -> Prepared:
        """Decode and validate every event (a bad one is rejected with its reason and the rest
        go on), group by key, order each key's events by seq and pack the script calls.
        ``tagged``: mark each call's stream entry as this replica's own (see ``Cache.own``);
        only for calls whose replies are then finished in the order they were prepared.
        ``event_arg``: how one event is decoded (:func:`decode.event_arg` takes parsed JSON,
        :func:`decode.event_arg_json` a record's bytes)."""
        out = Prepared()
        groups: dict[str, list[tuple[int, str]]] = {}
        for index, raw in enumerate(raw_events):
            try:
                key, seq, arg = event_arg(raw)
            except BadRequest as exc:
                out.rejected.append({"index": index, "reason": exc.detail})
                continue
            group = groups.get(key)
            if group is None:
                groups[key] = [(seq, arg)]
            else:
                group.append((seq, arg))
        head = _bulk(str(int(self.clock() * 1000))) + _bulk(str(keys.CHANGES_MAXLEN))
        head += _bulk(str(self.gap_window_ms))
        parts: list[str] = []
        names: list[str] = []
        size = 0
        for key, events in groups.items():
            if len(events) > 1:
                events.sort(key=_first)  # stable: equal seqs keep their order
            parts.append(_bulk(key))
            parts.append(_bulk(str(len(events))))
            for _seq, arg in events:
                parts.append(_bulk(arg))
            names.append(key)
            size += len(events)
            if size >= SCRIPT_EVENTS:  # keep each script short: Redis runs nothing else meanwhile
                self._pack(out, head, parts, names, size, tagged)
                parts, names, size = [], [], 0
        if names:
            self._pack(out, head, parts, names, size, tagged)
        return out

    def _pack(
        self, out: Prepared, head: str, parts: list[str], names: list[str], size: int, tag: bool
    ) -> None:
        token = self.cache.next_token() if tag else 0
        writer = f"{self.cache.writer}:{token}" if tag else ""
        argc = _FIXED_ARGS + 2 * len(names) + size
        command = f"*{argc}\r\n{_EVALSHA}{head}{_bulk(writer)}" + "".join(parts)
        out.commands.append(command.encode())
        out.names.append(names)
        out.tokens.append(token)

    def finish(self, prepared: Prepared, replies: list[Any], source: str) -> IngestResult:
        """Count the replies of a prepared batch and put its records in the cache."""
        result = IngestResult(rejected=prepared.rejected)
        negative = settled = 0
        cache = self.cache
        for names, token, reply in zip(prepared.names, prepared.tokens, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            result.applied += reply[0]
            result.duplicates += reply[1]
            result.buffered += reply[2]
            negative += reply[3]
            settled += reply[4]
            cache.apply_replies(names, reply, 5)
            if token:
                cache.ack(token)
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


def _first(item: tuple[int, str]) -> int:
    return item[0]
