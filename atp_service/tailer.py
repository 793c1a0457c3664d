"""Keeps one replica's cache equal to Redis: bulk warm-up, then tail the change stream.

Warm-up notes the stream's last id *before* scanning, loads every record with HSCAN (one
``numpy.frombuffer`` per chunk), then tails from that id; entries written during the scan are
replayed, and the per-key version keeps the newest. If this replica was away so long that the
stream was trimmed past its position (``max-deleted-entry-id``), it reloads in full.

``fresh`` tells lookups whether the last successful read from Redis is recent; ``ready``
turns true once the first warm-up is done (``/readyz``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import keys
from .cache import Cache
from .errors import Unavailable
from .wire import Wire, bulk

log = logging.getLogger("atp.tailer")

SCAN_COUNT = 20_000
BLOCK_MS = 500
STEP_RECORDS = 1000  # records applied between yields to the event loop
WRITER_FIELD = b"~w"  # first field of an entry apply_events wrote for a tagged writer
# After a read that brought entries, wait this long before the next one: under load each
# XREAD then carries ~1 ms of writes instead of one loop tick's, which saves a round trip
# (two syscalls here, and Redis CPU on the core it shares) per tick. Idle, a read blocks in
# Redis and returns at once on the next write, so the pause adds at most this to how soon
# another replica's write shows here.
BUSY_PAUSE_S = 0.001


def _id_tuple(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Tailer:
    def __init__(
        self,
        client: aioredis.Redis,
        url: str,
        cache: Cache,
        stale_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client: Any = client  # replies are bytes (decode_responses off)
        # XREAD goes through a wire of its own: hiredis's nested lists straight, without
        # redis-py's per-call machinery and per-entry dicts (~1 read per loop tick under load).
        self.wire = Wire(url, timeout=BLOCK_MS / 1000 + 5)
        self.cache = cache
        self.stale_after = stale_after
        self.clock = clock
        self.ready = False
        self.last_id = "0-0"
        self.last_ok = 0.0
        self.applied = 0
        self.reloads = 0
        self.warm_seconds = 0.0

    @property
    def fresh(self) -> bool:
        return self.ready and self.clock() - self.last_ok <= self.stale_after

    async def warm(self) -> float:
        """Load every record; returns the seconds it took."""
        started = time.perf_counter()
        newest = await self.client.xrevrange(keys.CHANGES, count=1)
        last_id = newest[0][0].decode() if newest else "0-0"
        cursor = 0
        while True:
            cursor, chunk = await self.client.hscan(keys.INV, cursor, count=SCAN_COUNT)
            if chunk:
                names = [k.decode() for k in chunk]
                self.cache.load_bulk(names, b"".join(chunk.values()))
            if cursor == 0:
                break
        self.cache.sort_locations()
        # A million index entries make every full GC pass walk them (30-50 ms pauses seen under
        # load); they live as long as the process, so move them out of the collector's sight.
        gc.collect()
        gc.freeze()
        self.last_id = last_id
        self.last_ok = self.clock()
        self.ready = True
        self.warm_seconds = time.perf_counter() - started
        return self.warm_seconds

    async def _trimmed_past_us(self) -> bool:
        info = await self.client.xinfo_stream(keys.CHANGES)
        deleted = info.get("max-deleted-entry-id") or info.get(b"max-deleted-entry-id")
        return bool(deleted) and _id_tuple(deleted) > _id_tuple(self.last_id)

    async def run(self) -> None:
        """Warm up (retrying until Redis answers), then tail for ever."""
        backoff = 0.05
        while True:
            try:
                if not self.ready:
                    took = await self.warm()
                    log.info("cache warm: %d keys in %.2fs", len(self.cache), took)
                elif await self.client.exists(keys.CHANGES) and await self._trimmed_past_us():
                    self.reloads += 1
                    log.warning("change stream trimmed past this replica: full reload")
                    await self.warm()
                await self._tail()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, Unavailable) as exc:
                log.warning("redis unreachable from tailer: %s", exc.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.05

    async def _tail(self) -> None:
        cache = self.cache
        apply = cache.apply
        own = cache.own
        budget = STEP_RECORDS
        while True:
            # None: nothing new within BLOCK_MS
            reply = await self.wire.call(_XREAD + bulk(self.last_id.encode()))
            self.last_ok = self.clock()
            for _stream, entries in reply or ():
                for _entry_id, flat in entries:
                    self.applied += 1
                    if flat[0] == WRITER_FIELD:
                        fields = dict(zip(flat[2::2], flat[3::2], strict=True))
                        if own(flat[1], fields):
                            continue  # this replica's own write: its reply brings the records
                    for i in range(0, len(flat), 2):
                        if flat[i] != WRITER_FIELD:
                            apply(flat[i].decode(), flat[i + 1])
                    budget -= len(flat) >> 1
                    if budget <= 0:  # another replica's big ingest step: let lookups in
                        budget = STEP_RECORDS
                        await asyncio.sleep(0)
                self.last_id = entries[-1][0].decode()
            if reply:
                await asyncio.sleep(BUSY_PAUSE_S)

    async def close(self) -> None:
        await self.wire.close()


# XREAD COUNT 5000 BLOCK <ms> STREAMS <changes> <last id>, less the last id.
_XREAD = b"*8\r\n" + b"".join(
    bulk(a.encode()) for a in ("XREAD", "COUNT", "5000", "BLOCK", str(BLOCK_MS), "STREAMS",
                                keys.CHANGES)
)  # fmt: skip
