"""Event sinks: where the simulator's ERP events go besides its in-memory log.

A sink queues events as they happen (``submit`` never blocks and never drops) and delivers
them in that order from one background task, a batch at a time. A failed or partial delivery
is retried, after a backoff, from the first event not acknowledged: nothing is lost and no
event of a key arrives before an earlier one of that key (a retry may repeat events; the
service drops repeats by (key, seq)). ``close`` flushes for a bounded time, then gives up.

- :class:`HttpSink` posts ``{"events": [...]}`` to the service's ``POST /v1/events``;
- :class:`KafkaSink` produces to a topic with aiokafka, key ``"<sku>|<location>"``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ..config import KafkaSecurity
from .events import Event

log = logging.getLogger("atp.erpsim.publisher")
# A partition's share of a round (500 events ~ 150 KB) fits one record batch, well under the
# broker's default message.max.bytes (~1 MB).
KAFKA_BATCH_BYTES = 512 * 1024


class DeliveryError(Exception):
    """A batch was not (fully) acknowledged; ``delivered`` events at its head were."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + rand() * ceiling / 2


class Sink(abc.ABC):
    name = "sink"

    def __init__(
        self,
        batch_size: int = 500,
        linger: float = 0.02,
        base_backoff: float = 0.05,
        max_backoff: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._batch_size = batch_size
        self._linger = linger
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._rand = rand
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()  # the queue is not empty
        self._full = asyncio.Event()  # the queue holds a full batch
        self._empty = asyncio.Event()  # everything submitted was delivered
        self._empty.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """Where events go, for logs and the admin API."""

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect; raising makes the sink retry after a backoff."""

    @abc.abstractmethod
    async def _deliver(self, batch: list[Event]) -> None:
        """Deliver a batch, in order; raise :class:`DeliveryError` if not all got through."""

    @abc.abstractmethod
    async def _shut(self) -> None:
        """Release the connection."""

    def submit(self, event: Event) -> None:
        self._queue.append(event)
        self._empty.clear()
        self._ready.set()
        if len(self._queue) >= self._batch_size:
            self._full.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"erpsim-{self.name}-sink")

    async def close(self, grace: float = 5.0) -> None:
        """Deliver what is queued (for up to ``grace`` seconds), then stop."""
        self._closing = True
        self._full.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(grace):
                    await self._empty.wait()
            except TimeoutError:
                log.warning("%s sink: %d events not delivered at exit", self.name, len(self._queue))
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._shut()

    def stats(self) -> dict[str, Any]:
        return {
            "sink": self.name,
            "target": self.target,
            "queued": len(self._queue),
            "delivered": self.delivered,
            "failures": self.failures,
            "last_error": self.last_error,
        }

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._open()
                break
            except Exception as exc:  # any failure to connect is retried
                attempt += 1
                self._failed(f"connect: {exc!r}")
                await asyncio.sleep(self._delay(attempt))
        attempt = 0
        while True:
            await self._ready.wait()
            await self._fill()
            batch = list(itertools.islice(self._queue, self._batch_size))
            try:
                await self._deliver(batch)
                done, error = len(batch), None
            except DeliveryError as exc:
                done, error = exc.delivered, str(exc)
            except Exception as exc:  # never let the sink die: retry
                done, error = 0, repr(exc)
            for _ in range(done):
                self._queue.popleft()
            self.delivered += done
            if not self._queue:
                self._ready.clear()
                self._empty.set()
            if len(self._queue) < self._batch_size and not self._closing:
                self._full.clear()
            if error is None:
                attempt = 0
                continue
            attempt += 1
            self._failed(error)
            await asyncio.sleep(self._delay(attempt))

    async def _fill(self) -> None:
        """Wait up to the linger time for a full batch."""
        if len(self._queue) >= self._batch_size or self._closing:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger):
                await self._full.wait()

    def _delay(self, attempt: int) -> float:
        return backoff(attempt, self._base_backoff, self._max_backoff, self._rand)

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        log.warning("%s sink to %s: %s (will retry)", self.name, self.target, error)


class HttpSink(Sink):
    """Posts batches to the ATP service's ``POST /v1/events``."""

    name = "http"

    def __init__(self, url: str, key: str | None, timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._url = url
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.refused = 0  # events the service answered in "rejected" (invalid; not retried)

    @property
    def target(self) -> str:
        return self._url

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "refused": self.refused}

    async def _open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )

    async def _deliver(self, batch: list[Event]) -> None:
        assert self._session is not None
        body = orjson.dumps({"events": batch})
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as resp:
                raw = await resp.read()
                if not 200 <= resp.status < 300:
                    text = raw[:300].decode(errors="replace")
                    raise DeliveryError(f"HTTP {resp.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(repr(exc)) from exc
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            refused = orjson.loads(raw).get("rejected") or []
            if refused:
                # The service judged these events invalid; sending them again cannot help.
                self.refused += len(refused)
                log.warning("http sink: the service refused %d events: %s", len(refused),
                            refused[:3])  # fmt: skip

    async def _shut(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class KafkaSink(Sink):
    """Produces each event to ``topic`` with key ``"<sku>|<location>"`` (contract.md s3).

    Each delivery round puts a partition's events into one record batch (more only if they
    overflow ``max_batch_size``, then sent one after the other), which the broker appends
    all or nothing; partitions go in parallel. A failed partition batch is retried from its
    first event, so a key's events reach its partition in order, never with a hole before a
    later seq (at worst repeated, which the service drops by seq). Keys map to partitions as
    aiokafka's (and Java's) default partitioner maps them. ``enable_idempotence`` stays off
    (the local test broker refuses idempotent producers), with ``acks="all"`` for durability.
    """

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        producer_factory: Callable[[], Any] | None = None,
        security: KafkaSecurity | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._bootstrap = bootstrap
        self._security = security or KafkaSecurity()
        self._topic = topic
        self._factory = producer_factory or self._producer
        self._producer_instance: Any = None
        self._partitioner = DefaultPartitioner()

    @property
    def target(self) -> str:
        return f"kafka://{self._bootstrap}/{self._topic}"

    def _producer(self) -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id="atp-erp-sim",
            acks="all",
            enable_idempotence=False,
            max_batch_size=KAFKA_BATCH_BYTES,
            request_timeout_ms=30_000,
            retry_backoff_ms=200,
            **self._security.client_options(),
        )

    async def _open(self) -> None:
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer_instance = producer

    async def _deliver(self, batch: list[Event]) -> None:
        partitions = sorted(await self._producer_instance.partitions_for(self._topic))
        keys = [f"{e['sku']}|{e['location']}".encode() for e in batch]
        by_partition: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            partition = self._partitioner(key, partitions, partitions)
            by_partition.setdefault(partition, []).append(index)
        outcomes = await asyncio.gather(
            *(self._produce(p, indexes, keys, batch) for p, indexes in by_partition.items())
        )
        failed = [outcome for outcome in outcomes if outcome is not None]
        if failed:
            first, error = min(failed, key=lambda outcome: outcome[0])
            raise DeliveryError(repr(error), first)

    async def _produce(
        self, partition: int, indexes: list[int], keys: list[bytes], batch: list[Event]
    ) -> tuple[int, BaseException] | None:
        """One partition's events, in order; the first one not acknowledged, and why."""
        producer = self._producer_instance
        pos = 0
        while pos < len(indexes):
            start = pos
            builder = producer.create_batch()
            while pos < len(indexes):
                i = indexes[pos]
                if (
                    builder.append(key=keys[i], value=orjson.dumps(batch[i]), timestamp=None)
                    is None
                ):
                    break  # full: the rest goes in the next record batch
                pos += 1
            try:
                await (await producer.send_batch(builder, self._topic, partition=partition))
            except Exception as exc:  # any failure: retried from this record batch
                return indexes[start], exc
        return None

    async def _shut(self) -> None:
        if self._producer_instance is not None:
            await self._producer_instance.stop()
            self._producer_instance = None
