"""Redis access: the Lua scripts and the per-loop-tick pipeline that batches them.

Every ATP-changing step is one script (``lua/*.lua``), so replicas sharing a Redis cannot
oversell against each other. Concurrent requests in one event-loop tick go to Redis together
(one round trip for all of them), in writes of at most :data:`FLUSH_AT` calls, and the next
tick's calls go out without waiting for the previous replies.

Scripts are called by EVALSHA, hand-encoded (:func:`pack`) and written in one go on one
pipelined connection (:class:`~atp_service.wire.Wire`: redis-py's Pipeline costs more per
command than the rest of a reservation, and its script bookkeeping a SCRIPT EXISTS round trip
per execute); NOSCRIPT (Redis restarted) reloads and retries, which is safe because an EVALSHA
answered NOSCRIPT did not run. A retried *executed* script is safe too: every write script is
idempotent on its key (reservation id, event (key, seq)). Other commands (reads, warm-up,
status) go through the redis-py ``client``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError

from . import keys
from .config import PRIORITIES
from .errors import Unavailable
from .wire import Wire, pack

OUTBOX_KEYS = tuple(keys.outbox(p) for p in PRIORITIES)


def _load(name: str) -> str:
    lua = resources.files("atp_service") / "lua"
    return (lua / "prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str

    @classmethod
    def named(cls, name: str) -> Script:
        source = _load(name)
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


SCRIPTS = {
    name: Script.named(name)
    for name in ("reserve", "transition", "apply_events", "erp_next", "erp_outcome")
}


def connect(url: str, max_connections: int = 64, socket_timeout: float = 2.0) -> aioredis.Redis:
    """A client with a *blocking* pool: beyond max_connections, callers wait, not fail.

    One quick retry on a broken connection (a Redis restart), none on a timeout: a hung Redis
    becomes a 503 within ~socket_timeout instead of several. Retrying would be safe anyway:
    every write script is idempotent on its key.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        socket_timeout=socket_timeout,
        socket_connect_timeout=1,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 1, (ConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)


# The most calls one write carries: once a tick has queued this many, they go out at once,
# while the tick is still making more. Redis starts on the first ones (and answers them)
# while this process handles the rest; one write of the whole tick at its end left Redis
# idle until the tick ended and this process idle until Redis was through. With 64
# reservations in flight: 1.21x the holds/s and a lower p50 and p99 (``python -m
# benchmarks.reserve --versus <ref before>``); 12, 16 and 24 did alike, 8 less. Each extra
# write is one syscall: 0.05 more per reservation, measured.
FLUSH_AT = 16


class Store:
    """Runs scripts, batching calls made in the same loop tick (:data:`FLUSH_AT` a write)."""

    def __init__(self, client: aioredis.Redis, url: str, timeout: float = 2.0) -> None:
        # Any: redis-py types replies as bytes|str unions; this client never decodes (bytes).
        self.client: Any = client
        self.wire = Wire(url, [s.source for s in SCRIPTS.values()], timeout=timeout)
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._scheduled = False

    async def load_scripts(self) -> None:
        for script in SCRIPTS.values():
            await self.client.script_load(script.source)

    def run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one script call for this tick's pipeline; the future gets its reply."""
        script = SCRIPTS[name]
        return self.run_packed(pack("EVALSHA", script.sha, len(keys_), *keys_, *args))

    def run_packed(self, command: bytes) -> asyncio.Future[Any]:
        """Queue one EVALSHA already in RESP (see :func:`pack`) for this tick's pipeline."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        queue = self._queue
        queue.append((command, fut))
        if len(queue) >= FLUSH_AT:
            self._queue = []
            self.wire.send(queue)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        batch, self._queue, self._scheduled = self._queue, [], False
        if batch:
            self.wire.send(batch)

    async def close(self) -> None:
        await self.wire.close()


class Lane:
    """One dedicated connection on which script calls run in the order they were sent, with
    several in flight: the caller sends call i+1 (and prepares i+2) while Redis runs call i,
    and reads the replies in order. (``Store`` pipelines per loop tick on pooled
    connections, which does not order the calls of two ticks.)

    Any failure (connection lost, timeout, Redis lost its scripts) drops the connection and
    every call in flight, whose effects are then unknown, and raises ``Unavailable``: the
    caller sends them again, which is safe because every write script is idempotent.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Any = None
        self.in_flight = 0

    async def send(self, command: bytes) -> None:
        try:
            if self._conn is None:
                await self.store.load_scripts()  # Redis may have restarted since
                self._conn = await self.store.client.connection_pool.get_connection()
            await self._conn.send_packed_command(command, check_health=False)
        except (RedisError, OSError) as exc:
            await self.reset()
            raise Unavailable("shared state unreachable", retry_after=1) from exc
        self.in_flight += 1

    async def reply(self) -> Any:
        """The reply of the oldest call in flight (a script error is returned, not raised)."""
        assert self._conn is not None and self.in_flight
        try:
            try:
                result = await self._conn.read_response()
            except NoScriptError:
                raise
            except ResponseError as exc:
                result = exc
        except (RedisError, OSError) as exc:
            await self.reset()
            raise Unavailable("shared state unreachable", retry_after=1) from exc
        self.in_flight -= 1
        return result

    async def reset(self) -> None:
        """Drop the connection and whatever is in flight on it."""
        conn, self._conn, self.in_flight = self._conn, None, 0
        if conn is not None:
            pool = self.store.client.connection_pool
            try:
                await conn.disconnect()
            finally:
                await pool.release(conn)
