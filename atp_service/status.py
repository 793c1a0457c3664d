"""What ``GET /v1/status`` tells people: a business-level summary of this replica and the
service around it, and the heartbeat that lets every replica count its peers.

Every ``BEAT_SECONDS`` each replica re-sets its key ``atp:replica:<id>`` with a time to live of
``SEEN_SECONDS`` and keeps its id in the set ``atp:replicas``; the replicas seen in the last
``SEEN_SECONDS`` are the members whose key still exists. Redis's own expiry does the "last 10 s"
(no clock comparison between hosts), and a beat changes no stored *value* (the key holds this
replica's start time, and a TTL is not part of a DUMP), so tests that fingerprint the keyspace
to prove a request wrote nothing are not disturbed by it. A hash of last-seen times would
change every 2 s, and per-field expiry (HEXPIRE) needs Redis 7.4. A replica leaves the set on a
clean stop; members whose key expired (a replica killed) are removed by whichever replica
notices. The beat's round trip is also a Redis latency probe (``atp_redis_roundtrip_seconds``).

The summary never waits long for Redis: queue figures, the replica count and Redis's clock come
in two pipelined round trips under ``timeout`` seconds; if Redis does not answer in time the
summary says what this replica knows from memory, with ``status: degraded`` and the figures it
could not read as null.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from . import keys
from .cache import Cache
from .config import PRIORITIES, Settings
from .feed import Feed
from .gateway import Gateway
from .metrics import Metrics, package_version
from .store import OUTBOX_KEYS
from .tailer import Tailer

log = logging.getLogger("atp.status")

REPLICAS = keys.PREFIX + "replicas"  # set of replica ids
REPLICA = (
    keys.PREFIX + "replica:"
)  # + id: string (start time, ms), expires SEEN_SECONDS after a beat
BEAT_SECONDS = 2.0
SEEN_SECONDS = 10.0
TIMEOUT = 0.5  # seconds the summary waits for Redis


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
        metrics: Metrics | None = None,
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
        self.replica_id = replica_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        )
        self.timeout = timeout
        self.wall = wall
        self.clock = clock
        self.started_wall = wall()
        self.started = clock()
        self.version = package_version()
        self.groups: Mapping[str, tuple[str, ...]] = settings.location_groups
        self.beats = 0
        self.roundtrip = 0.0  # seconds the last heartbeat's TIME call took
        if metrics is not None:
            # Declared here, next to what it measures (like the cache gauges in app.py).
            metrics.live(
                lambda: {
                    "atp_redis_roundtrip_seconds": (
                        "Round trip of this replica's last Redis heartbeat (every 2 s)",
                        self.roundtrip,
                    ),
                }
            )

    # -- heartbeat ---------------------------------------------------------------------------

    async def beat(self) -> None:
        """Say "alive" for the next SEEN_SECONDS; now and then forget replicas that are gone."""
        started = time.perf_counter()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(
            REPLICA + self.replica_id, int(self.started_wall * 1000), px=int(SEEN_SECONDS * 1000)
        )
        pipe.sadd(REPLICAS, self.replica_id)
        await pipe.execute()
        self.roundtrip = time.perf_counter() - started
        self.beats += 1
        if self.beats % 15 == 1:
            ids = sorted(await self.client.smembers(REPLICAS))
            alive = await self.client.mget([REPLICA.encode() + i for i in ids]) if ids else []
            gone = [i for i, seen in zip(ids, alive, strict=True) if seen is None]
            if gone:
                await self.client.srem(REPLICAS, *gone)

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
                pipe = self.client.pipeline(transaction=False)
                pipe.delete(REPLICA + self.replica_id)
                pipe.srem(REPLICAS, self.replica_id)
                await asyncio.wait_for(pipe.execute(), 0.5)
            raise

    # -- the summary -------------------------------------------------------------------------

    async def _shared(self) -> dict[str, Any] | None:
        """Queue figures and the replica count from Redis, or None if it did not answer."""
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=False)
                pipe.time()
                for box in OUTBOX_KEYS:
                    pipe.zcard(box)
                    pipe.zrange(box, 0, 0, withscores=True)
                pipe.zcard(keys.INFLIGHT)
                pipe.smembers(REPLICAS)
                result = await pipe.execute()
                ids = list(result[-1])
                alive = await self.client.mget([REPLICA.encode() + i for i in ids]) if ids else []
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("status: redis did not answer: %s", exc.__class__.__name__)
            return None
        now_ms = _redis_ms(result[0])
        queues = {}
        for i, prio in enumerate(PRIORITIES):
            length, head = result[1 + 2 * i], result[2 + 2 * i]
            oldest = max(0.0, (now_ms - head[0][1]) / 1000) if head else 0.0
            queues[prio] = {"length": int(length), "oldest_seconds": round(oldest, 3)}
        seen = sum(1 for value in alive if value is not None)
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
            "last_error": feed.last_error,
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
