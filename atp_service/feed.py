"""The ERP event feed from Kafka (aiokafka), in consumer group ATP_KAFKA_GROUP.

Each fetched record is decoded from its bytes (``decode.event_arg_json``: msgspec, and orjson
with the precise error at any doubt), applied through the same ``Ingest`` pipeline as
``POST /v1/events`` (validation, per-key seq rules, few pipelined Lua calls), its invalid
records are sent to ``<topic>.dlq`` with the original bytes and the reason, source topic,
partition and offset in headers, and only then are the offsets committed. A batch that cannot
be applied (Redis unreachable) is not committed: the consumer seeks back and tries again.
Redelivery after a crash or a rebalance is harmless: events apply exactly once by (key, seq).

Freshness: lookups say ``stale`` until the consumer has its partitions and is within
``lag_bound`` records of the end, and again when the broker has been unreachable for more
than ``unreachable_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from . import decode
from .config import KafkaSecurity
from .errors import Unavailable
from .ingest import Ingest, Prepared
from .metrics import Metrics
from .store import Lane

log = logging.getLogger("atp.feed")

BATCH = 500  # records per fetch (aiokafka parses them all in one step)
CHUNK = 100  # records per apply: keeps each step short so lookups are never held up
DEPTH = 4  # apply calls in flight on the lane: Redis runs one while the next is decoded
# A connection the broker never completes (TLS spoken to a plaintext listener waits for bytes
# that never come) fails after this long, with a reason, instead of hanging the feed.
START_TIMEOUT = 10.0
COMMIT_EVERY = 0.2  # seconds between offset commits while busy (at once when idle)


@dataclass(slots=True)
class _Batch:
    """One fetched batch until it is committed."""

    first: dict[TopicPartition, int]  # where to seek back to if it must be fetched again
    commit: dict[TopicPartition, int]  # the offsets to commit once it is all in Redis
    chunks: int  # chunks not yet finished
    dead: list[tuple[ConsumerRecord[Any, Any], str]] = field(default_factory=list)


class Feed:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        ingest: Ingest,
        metrics: Metrics,
        lag_bound: int = 10_000,
        unreachable_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security or KafkaSecurity()
        self.topic = topic
        self.dlq_topic = topic + ".dlq"
        self.group = group
        self.ingest = ingest
        self.metrics = metrics
        self.lag_bound = lag_bound
        self.unreachable_after = unreachable_after
        self.clock = clock
        self.lag = 0
        self.joined = False
        # Why the last connection failed (a refused SASL login, an untrusted certificate, the
        # broker away), for /v1/status; None once a connection has started since.
        self.last_error: str | None = None
        self.broker_ok_at = 0.0
        self.newest_ms = 0  # Kafka timestamp of the newest applied record
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.lane: Lane | None = None
        # chunks sent on the lane, oldest first: (calls, their records, batch, newest ts)
        self._flights: deque[tuple[Prepared, list[ConsumerRecord[Any, Any]], _Batch, int]] = deque()
        self._batches: deque[_Batch] = deque()  # fetched, not yet all in Redis, oldest first
        self._done: dict[TopicPartition, int] = {}  # offsets all in Redis, not yet committed
        self._committed_at = 0.0

    @property
    def fresh(self) -> bool:
        return (
            self.joined
            and self.lag <= self.lag_bound
            and self.clock() - self.broker_ok_at <= self.unreachable_after
        )

    async def run(self) -> None:
        """Consume for ever; (re)connects with backoff while the broker is away."""
        backoff = 0.5
        while True:
            try:
                try:
                    await asyncio.wait_for(self._start(), START_TIMEOUT)
                except TimeoutError:
                    raise KafkaError(
                        f"the broker did not complete the connection in {START_TIMEOUT:g} s "
                        "(a TLS or SASL setting it does not speak?)"
                    ) from None
                backoff = 0.5
                await asyncio.gather(self._consume(), self._watch())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a TLS handshake refused, say: retried, never fatal
                self.last_error = f"{exc.__class__.__name__}: {exc}"[:300]
                if isinstance(exc, KafkaError):
                    log.warning("kafka feed interrupted: %s", self.last_error)
                else:
                    log.exception("kafka feed failed; retrying")
            finally:
                await self._stop()
            self.joined = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _start(self) -> None:
        options = self.security.client_options()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=False, acks="all", **options
        )
        self.consumer = AIOKafkaConsumer(
            self.topic,
            **options,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # also when a committed offset no longer exists
            max_poll_records=BATCH,
            metadata_max_age_ms=5000,
        )
        await self.producer.start()
        await self.consumer.start()
        self.last_error = None
        self.broker_ok_at = self.clock()

    async def _stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self.consumer = self.producer = None

    async def _watch(self) -> None:
        """Broker reachability and lag, once a second (metadata fetch with a timeout)."""
        consumer = self.consumer
        assert consumer is not None
        while True:
            try:
                await asyncio.wait_for(consumer.topics(), timeout=2.0)
                self.broker_ok_at = self.clock()
            except (KafkaError, TimeoutError):
                pass
            await self._update_lag(consumer)
            await asyncio.sleep(1.0)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Records between this consumer's position and the end of its partitions."""
        assigned = consumer.assignment()
        lag = 0
        for tp in assigned:
            high = consumer.highwater(tp)  # known after the first fetch of the partition
            if high is None:
                continue
            with contextlib.suppress(KafkaError, AssertionError, TimeoutError):
                lag += max(0, high - await asyncio.wait_for(consumer.position(tp), 2.0))
        self.lag = lag
        self.joined = bool(assigned)
        self.metrics.feed_lag.set(lag)
        if self.newest_ms:
            self.metrics.feed_event_age.set(max(0.0, time.time() - self.newest_ms / 1000))

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            while True:
                try:
                    # With calls in flight, take only what is already fetched: Redis must
                    # not wait for the broker's long poll.
                    batch = await consumer.getmany(
                        timeout_ms=0 if self._flights else 500, max_records=BATCH
                    )
                    if not batch:
                        if self._flights or self._done:
                            await self._land(0)
                        else:
                            self.joined = bool(consumer.assignment())
                        continue
                    self.broker_ok_at = self.clock()
                    await self._apply(batch)
                except Unavailable:
                    # Redis is away: nothing uncommitted counts; fetch it all again later.
                    await self._rewind(consumer)
                    await asyncio.sleep(0.5)
        finally:
            await self._abandon()

    async def _apply(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Send the batch chunk by chunk on the lane, keeping at most DEPTH calls in flight;
        each earlier batch whose calls have all returned is dead-lettered and committed."""
        records = [r for rs in batch.values() for r in rs]
        pending = _Batch(
            first={tp: rs[0].offset for tp, rs in batch.items()},
            commit={tp: rs[-1].offset + 1 for tp, rs in batch.items()},
            chunks=(len(records) + CHUNK - 1) // CHUNK,
        )
        self._batches.append(pending)
        lane = self._lane()
        event_arg = decode.event_arg_json  # from the record's bytes; invalid JSON is rejected
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            prepared = self.ingest.prepare(
                [r.value for r in chunk], tagged=True, event_arg=event_arg
            )
            newest = max([r.timestamp for r in chunk])
            for command in prepared.commands:
                await self._land(DEPTH - 1)
                await lane.send(command)
            self._flights.append((prepared, chunk, pending, newest))
            await asyncio.sleep(0)  # one chunk per step: lookups wait for no more than that
        await self._land(DEPTH)

    async def _land(self, keep: int) -> None:
        """Finish the oldest chunks until at most ``keep`` calls are in flight, then
        dead-letter and commit every batch whose chunks are all in Redis."""
        lane = self._lane()
        flights = self._flights
        while flights and (lane.in_flight > keep or not flights[0][0].commands):
            prepared, origin, pending, newest = flights.popleft()
            replies = [await lane.reply() for _ in prepared.commands]
            result = self.ingest.finish(prepared, replies, "kafka")
            for item in result.rejected:
                pending.dead.append((origin[item["index"]], item["reason"]))
            self.newest_ms = max(self.newest_ms, newest)
            pending.chunks -= 1
        while self._batches and self._batches[0].chunks == 0:
            done = self._batches[0]
            if done.dead:
                await self._dead_letter(done.dead)  # delivered before the offsets commit
                done.dead = []
            self._batches.popleft()
            self._done.update(done.commit)
        # Only now, Redis has all of it. Not after every batch: a commit is a broker round
        # trip, and what is applied but not yet committed only comes back as duplicates.
        if self._done and (keep == 0 or self.clock() - self._committed_at >= COMMIT_EVERY):
            consumer = self.consumer
            assert consumer is not None
            done_offsets, self._done = self._done, {}
            self._committed_at = self.clock()
            # A partition revoked by a rebalance meanwhile is not ours to commit (aiokafka
            # raises for it): its new owner re-reads those records, as harmless duplicates.
            assigned = consumer.assignment()
            done_offsets = {tp: o for tp, o in done_offsets.items() if tp in assigned}
            if done_offsets:
                await consumer.commit(done_offsets)

    async def _rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Seek every partition back to its oldest uncommitted record; forget what was in
        flight (it is fetched and applied again: duplicates are harmless)."""
        first: dict[TopicPartition, int] = {}
        for pending in self._batches:
            for tp, offset in pending.first.items():
                first.setdefault(tp, offset)
        done = self._done  # all in Redis: still to be committed
        await self._abandon()
        self._done = done
        assigned = consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                consumer.seek(tp, offset)

    async def _abandon(self) -> None:
        """Drop the lane and every chunk in flight; their stream entries, if they ran, are
        then applied by the tailer (the cache takes a new writer id)."""
        # Always: a call sent but not yet listed in _flights may have run too, and a later
        # ack under the same writer id would make the tailer drop its entry unapplied.
        self.ingest.cache.new_writer()
        self._flights.clear()
        self._batches.clear()
        self._done = {}  # applied, not committed: fetched again, as duplicates
        if self.lane is not None:
            with contextlib.suppress(Exception):
                await self.lane.reset()

    def _lane(self) -> Lane:
        if self.lane is None:
            self.lane = Lane(self.ingest.store)
        return self.lane

    async def _dead_letter(self, dead: list[tuple[ConsumerRecord[Any, Any], str]]) -> None:
        producer = self.producer
        assert producer is not None
        sends = []
        for record, reason in dead:
            headers = [
                ("dlq.reason", reason.encode()),
                ("dlq.source.topic", record.topic.encode()),
                ("dlq.source.partition", str(record.partition).encode()),
                ("dlq.source.offset", str(record.offset).encode()),
            ]
            sends.append(
                await producer.send(self.dlq_topic, record.value, key=record.key, headers=headers)
            )
        await asyncio.gather(*sends)  # delivered before the source offsets are committed
        self.metrics.dlq.inc(len(dead))
        log.warning("sent %d invalid events to %s", len(dead), self.dlq_topic)
