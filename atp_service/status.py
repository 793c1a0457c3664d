"""What ``GET /v1/status`` tells people: a business-level summary of this replica and the
service around it, and the heartbeat that lets every replica count its peers.

Each replica writes ``atp:replicas`` (hash: replica id -> Redis time in ms) every
``BEAT_SECONDS``; the summary counts the replicas seen in the last ``SEEN_SECONDS``. Both sides
use Redis's own clock (``TIME``), so clock skew between hosts cannot hide or invent a replica.
A replica removes its own field on a clean stop; fields older than ``FORGET_SECONDS`` (a replica
killed long ago) are removed by whichever replica notices them.

The summary never waits long for Redis: the queue figures, heartbeat count and Redis clock come
in one pipeline under ``timeout`` seconds; if Redis does not answer in time the summary says
what this replica knows from memory, with ``status: degraded`` and the figures it could not read
as null.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from redis.exceptions import RedisError

from . import keys
from .cache import Cache
from .config import PRIORITIES, Settings
from .feed import Feed
from .gateway import Gateway
from .store import OUTBOX_KEYS
from .tailer import Tailer

log = logging.getLogger("atp.status")

REPLICAS = keys.PREFIX + "replicas"  # hash replica id -> last heartbeat (Redis ms)
BEAT_SECONDS = 2.0
SEEN_SECONDS = 10.0
FORGET_SECONDS = 3600.0
TIMEOUT = 0.5  # seconds the summary waits for Redis


def _version() -> str:
    try:
        return metadata.version("atp-service")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _redis_ms(reply: tuple[int, int] | list[int]) -> int:
    secs, micros = reply
    return int(secs) * 1000 + int(micros) // 1000


class Status:
    def __init__(
        self,
        client: Any,
        settings: Settings,
        tailer: Tailer,
        cache: Cache,
        feed: Feed | None = None,
        gateway: Gateway | None = None,
        replica_id: str | None = None,
        timeout: float = TIMEOUT,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings
        self.tailer = tailer
        self.cache = cache
        self.feed = feed
        self.gateway = gateway
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.timeout = timeout
        self.wall = wall
        self.clock = clock
        self.started_wall = wall()
        self.started = clock()
        self.version = _version()
        self.groups: Mapping[str, tuple[str, ...]] = settings.location_groups
        self.beats = 0

    # -- heartbeat ---------------------------------------------------------------------------

    async def beat(self) -> None:
        """Write this replica's heartbeat; now and then forget replicas gone for long."""
        now_ms = _redis_ms(await self.client.time())
        await self.client.hset(REPLICAS, self.replica_id, now_ms)
        self.beats += 1
        if self.beats % 30 == 1:
            seen: dict[bytes, bytes] = await self.client.hgetall(REPLICAS)
            cutoff = now_ms - FORGET_SECONDS * 1000
            gone = [name for name, ms in seen.items() if int(ms) < cutoff]
            if gone:
                await self.client.hdel(REPLICAS, *gone)

    async def run(self) -> None:
        """The heartbeat loop (a background task of the app)."""
        try:
            while True:
                try:
                    await self.beat()
                except (RedisError, OSError) as exc:
                    log.debug("heartbeat skipped: %s", exc.__class__.__name__)
                await asyncio.sleep(BEAT_SECONDS)
        except asyncio.CancelledError:
            # A clean stop: leave the count at once instead of after SEEN_SECONDS.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.client.hdel(REPLICAS, self.replica_id), 0.5)
            raise

    # -- the summary -------------------------------------------------------------------------

    async def _shared(self) -> dict[str, Any] | None:
        """Queue figures and the heartbeat count from Redis in one round trip, or None."""
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=False)
                pipe.time()
                for box in OUTBOX_KEYS:
                    pipe.zcard(box)
                    pipe.zrange(box, 0, 0, withscores=True)
                pipe.zcard(keys.INFLIGHT)
                pipe.hgetall(REPLICAS)
                result = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("status: redis did not answer: %s", exc.__class__.__name__)
            return None
        now_ms = _redis_ms(result[0])
        queues = {}
        for i, prio in enumerate(PRIORITIES):
            length, head = result[1 + 2 * i], result[2 + 2 * i]
            oldest = max(0.0, (now_ms - head[0][1]) / 1000) if head else 0.0
            queues[prio] = {"length": int(length), "oldest_seconds": round(oldest, 3)}
        since = now_ms - SEEN_SECONDS * 1000
        seen = sum(1 for ms in result[-1].values() if int(ms) >= since)
        return {"queues": queues, "inflight": int(result[-2]), "replicas_seen": seen}

    def _feed(self) -> dict[str, Any] | None:
        feed = self.feed
        if feed is None:
            return None
        age = self.wall() - feed.newest_ms / 1000 if feed.newest_ms else None
        return {
            "topic": feed.topic,
            "lag": feed.lag,
            "joined": feed.joined,
            "event_age_seconds": None if age is None else round(max(0.0, age), 3),
            "broker_reachable": feed.clock() - feed.broker_ok_at <= feed.unreachable_after,
        }

    async def summary(self) -> dict[str, Any]:
        tailer = self.tailer
        shared = await self._shared()
        reasons: list[str] = []
        if shared is None:
            reasons.append(f"Redis did not answer within {self.timeout:.1f} s")
        if not tailer.ready:
            reasons.append("cache is warming up")
        elif not tailer.fresh:
            reasons.append(f"change stream not read for more than {tailer.stale_after:g} s")
        feed = self._feed()
        if feed is not None and self.feed is not None and not self.feed.fresh:
            reasons.append("Kafka feed is behind, not joined or unreachable")
        breaker = self.gateway.breaker.state if self.gateway is not None else "closed"
        if breaker != "closed":
            reasons.append(f"ERP circuit breaker is {breaker.replace('_', '-')}")
        age = tailer.clock() - tailer.last_ok if tailer.last_ok else None
        now = self.wall()
        return {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "generated_at": _iso(now),
            "replica": {
                "id": self.replica_id,
                "version": self.version,
                "started_at": _iso(self.started_wall),
                "uptime_seconds": round(self.clock() - self.started, 3),
            },
            "cache": {
                "keys": len(self.cache),
                "ready": tailer.ready,
                "fresh": tailer.fresh,
                "age_seconds": None if age is None else round(max(0.0, age), 3),
            },
            "feed": feed,
            "erp": {
                "mode": "erp" if self.settings.erp_url else "standalone",
                "rate": self.settings.erp_rate,
                "breaker": breaker,
                "queues": shared["queues"] if shared else None,
                "inflight": shared["inflight"] if shared else None,
            },
            "replicas_seen": shared["replicas_seen"] if shared else None,
            "groups": {name: list(members) for name, members in self.groups.items()},
            "low_stock": self.settings.low_stock,
        }
