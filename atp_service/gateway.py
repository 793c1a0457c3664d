"""The ERP gateway: drains the durable outbox to the rate-limited ERP.

Every replica runs one. Each call is claimed with ``erp_next.lua``, which also enforces the
shared pace (at most ATP_ERP_RATE calls in any second, all replicas together, even spacing)
and leases the entry so two replicas never send it at once; a dead replica's lease expires
and the entry goes back to its queue. The reply is recorded with ``erp_outcome.lua``.

Failures: 429 re-queues the entry after Retry-After and pauses every replica for that long,
and widens this replica's spacing until calls are answered again (:class:`Spacing`);
timeouts, connection errors and 5xx re-queue it with exponential backoff and jitter and count
towards the circuit breaker, and so do 401/403/407/408/425 (``erp.ABOUT_THE_CALL``: a refused
ATP_ERP_TOKEN must not reject every reservation); any other 4xx is a permanent refusal
(``rejected``).
Nothing is dropped: an entry leaves the outbox only with a final answer.
Entries: ``r:<id>`` POST the reservation, ``c:<id>`` DELETE it (release after the ERP may have
allocated it), ``g:<sku|loc>`` GET the key's inventory to heal a gap in its event seq.

Tracing: a reservation's calls carry the ``X-Request-ID`` of the request that created it (a
cancel: of the release that caused it) and a ``traceparent`` in that trace with a new parent id
per call (:mod:`trace`); a resync, which no request asked for, carries a new id and trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from . import keys
from .breaker import Breaker
from .cache import Cache
from .config import PRIORITIES, Settings
from .erp import Outcome, Transport, classify
from .errors import Unavailable
from .ingest import Ingest
from .inventory import FLAG_GAP, FLAGS
from .ledger import iso_ms
from .metrics import Metrics
from .store import OUTBOX_KEYS, Store
from .trace import Context

log = logging.getLogger("atp.gateway")

POLL = 0.02  # seconds between looks at an empty outbox
INTERVAL_MARGIN = 1.05  # spacing a little wider than 1/rate: jitter must not bunch calls
CALL_KIND = {"r": "reserve", "c": "cancel", "g": "resync"}  # the `kind` label of ERP calls


class SendPacer:
    """This replica's own calls leave at least ``interval`` apart *when they are sent*.

    The shared pace in Redis spaces the claims; between claim and send a replica reads the
    reservation and its loop may be busy, so two claims 21 ms apart could leave 3 ms apart and
    a strict ERP (a token bucket with a burst of 1) would answer 429, pausing every replica
    for Retry-After. Spacing the sends again locally closes that gap."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.next_at = 0.0

    async def wait(self) -> None:
        now = self.clock()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await self.sleep(at - now)


class Spacing:
    """How far apart this replica spaces its ERP calls, as a multiple of ``1 / rate``.

    ``INTERVAL_MARGIN`` when all is well. A 429 means calls still arrived bunched at the ERP
    (a busy CPU on either side delays one call and not the next): every 429 costs a pause of
    a whole Retry-After for every replica, so each one widens the spacing by ``GROW`` (up to
    ``MAX``), and each answered call narrows it back by ``SHRINK``. Under a steady 1 ms of
    jitter this settles a few percent wide instead of pausing a second every second."""

    GROW = 1.25
    SHRINK = 0.002
    MAX = 2.0

    def __init__(self, rate: float) -> None:
        self.base_ms = 1000.0 / rate
        self.margin = INTERVAL_MARGIN

    @property
    def interval_ms(self) -> float:
        return self.base_ms * self.margin

    def throttled(self) -> None:
        self.margin = min(self.MAX, self.margin * self.GROW)

    def answered(self) -> None:
        self.margin = max(INTERVAL_MARGIN, self.margin - self.SHRINK)


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before retrying after a transient failure: exponential, capped, jittered."""
    delay: float = min(10.0, 0.25 * 2 ** max(0, attempts - 1)) * (0.5 + rng() / 2)
    return delay


class Gateway:
    def __init__(
        self,
        store: Store,
        cache: Cache,
        transport: Transport,
        settings: Settings,
        metrics: Metrics,
        ingest: Ingest,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cache = cache
        self.transport = transport
        self.settings = settings
        self.metrics = metrics
        self.ingest = ingest
        self.breaker = breaker or Breaker()
        self.clock = clock
        self.spacing = Spacing(settings.erp_rate)
        self.pacer = SendPacer(self.spacing.interval_ms / 1000)
        self.lease_ms = int((settings.erp_timeout + 10) * 1000)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        slots = asyncio.Semaphore(self.settings.erp_concurrency)
        aging = [int(self.settings.erp_aging[p] * 1000) for p in PRIORITIES]
        script_keys = (*OUTBOX_KEYS, keys.INFLIGHT, keys.ERP_NEXT, keys.ATTEMPTS)
        while True:
            self.metrics.breaker.set(self.breaker.code)
            pause = self.breaker.wait()
            if pause > 0:
                await asyncio.sleep(min(pause, 0.5))
                continue
            await slots.acquire()
            try:
                reply = await self.store.run(
                    "erp_next", script_keys, (self.spacing.interval_ms, self.lease_ms, *aging)
                )
            except (Unavailable, RedisError, OSError):
                slots.release()
                await asyncio.sleep(0.2)
                continue
            if reply[0] == b"claimed":
                self.breaker.started()
                member, prio = reply[1].decode(), reply[2].decode()
                task = asyncio.create_task(self._send(member, prio, int(reply[3])))
                self.tasks.add(task)
                task.add_done_callback(self._done(slots))
                continue
            slots.release()
            ms = float(reply[1])
            await asyncio.sleep(ms / 1000 if reply[0] == b"wait" else POLL if ms < 0 else min(
                ms / 1000, POLL))  # fmt: skip

    def _done(self, slots: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            slots.release()

        return done

    async def _send(self, member: str, prio: str, attempts: int) -> None:
        try:
            await self._send_once(member, prio, attempts)
        except Exception:  # the lease expires and another attempt follows
            log.exception("ERP call for %s failed before its outcome was recorded", member)

    async def _resync(self, key: str) -> tuple[Outcome, bool]:
        """Heal a gap: read the key from the ERP and apply it as a snapshot.
        Returns (outcome, whether a call was made)."""
        sku, _, location = key.partition("|")
        locs = self.cache.locations(sku)
        row = locs.get(location) if locs else None
        if row is None or not self.cache.row(row)[FLAGS] & FLAG_GAP:
            return Outcome("done"), False  # healed meanwhile by the missing event or a snapshot
        await self.pacer.wait()
        headers = Context.background().outgoing()
        reply = await self.transport.send("GET", f"/inventory/{sku}/{location}", None, headers)
        if reply.status != 200:
            return classify("g:" + key, reply), True
        body = reply.body if isinstance(reply.body, dict) else {}
        event = {
            "event_id": f"resync-{body.get('seq')}", "type": "snapshot", "sku": sku,
            "location": location, "seq": body.get("seq"), "on_hand": body.get("on_hand"),
            "allocated": body.get("allocated"), "safety_stock": body.get("safety_stock"),
            "occurred_at": iso_ms(int(self.clock() * 1000)),
        }  # fmt: skip
        result = await self.ingest.apply([event], "resync")
        if result.rejected:
            log.warning("ERP resync of %s answered an invalid state: %s", key, result.rejected)
            return Outcome("retry", transient=True), True
        if self.cache.row(row)[FLAGS] & FLAG_GAP:
            return Outcome("retry"), True  # the ERP is not past the gap yet: ask again later
        return Outcome("done"), True

    async def _send_once(self, member: str, prio: str, attempts: int) -> None:
        ident = member[2:]
        if member.startswith("g:"):
            outcome, called = await self._resync(ident)
            self.metrics.erp_calls.labels(CALL_KIND["g"], outcome.kind).inc(int(called))
            if called:
                self._adapt(outcome)
            await self._record(member, prio, attempts, outcome, {})
            return
        fields: dict[bytes, bytes] = await self.store.client.hgetall(keys.reservation(ident))
        lines: list[dict[str, Any]] = []
        headers = {"Idempotency-Key": ident}
        if fields:
            # A cancel carries the trace of the release that caused it, when it had one saved.
            cancel = member.startswith("c:") and b"cancel_request_id" in fields
            prefix = b"cancel_" if cancel else b""
            trace = Context.stored(
                fields.get(prefix + b"request_id"), fields.get(prefix + b"traceparent")
            )
            headers |= trace.outgoing()
        if not fields:
            outcome = Outcome("done")  # nothing to send for a reservation that is gone
        elif member.startswith("r:"):
            lines = [
                {"sku": x["sku"], "location": x["location"], "qty": x["qty"]}
                for x in orjson.loads(fields[b"lines"])
            ]
            body = {"reservation_id": ident, "priority": fields[b"priority"].decode(),
                    "lines": lines}  # fmt: skip
            await self.pacer.wait()
            reply = await self.transport.send("POST", "/reservations", body, headers)
            outcome = classify(member, reply, lines)
        else:
            await self.pacer.wait()
            reply = await self.transport.send("DELETE", f"/reservations/{ident}", None, headers)
            outcome = classify(member, reply)
        self.metrics.erp_calls.labels(CALL_KIND[member[0]], outcome.kind).inc()
        self._adapt(outcome)
        if outcome.transient:
            self.breaker.failure()
        elif fields:
            self.breaker.success()
        await self._record(member, prio, attempts, outcome, fields)

    def _adapt(self, outcome: Outcome) -> None:
        """Widen this replica's spacing after a 429, narrow it after an answered call."""
        if outcome.kind == "throttled":
            self.spacing.throttled()
        elif not outcome.transient:
            self.spacing.answered()
        self.pacer.interval = self.spacing.interval_ms / 1000

    async def _record(
        self, member: str, prio: str, attempts: int, outcome: Outcome, fields: dict[bytes, bytes]
    ) -> None:
        pause_ms = 0
        data: Any
        if outcome.kind == "throttled":
            kind, data = "retry", int(outcome.data * 1000)
            pause_ms = data
        elif outcome.kind == "retry":
            kind, data = "retry", int(backoff(attempts) * 1000)
        elif outcome.kind == "confirmed":
            kind, data = "confirmed", orjson.dumps(outcome.data)
        else:
            kind, data = outcome.kind, outcome.data or ""
        reply = await self.store.run(
            "erp_outcome",
            (keys.reservation(member[2:]), keys.INV, keys.CHANGES, keys.SETTLE, keys.INFLIGHT,
             *OUTBOX_KEYS, keys.ATTEMPTS, keys.ERP_NEXT),
            (member, prio, kind, int(self.clock() * 1000), keys.CHANGES_MAXLEN, data, pause_ms,
             int(self.settings.retention * 1000)),
        )  # fmt: skip
        records = reply[2:]
        self.cache.apply_many(
            (records[i].decode(), records[i + 1]) for i in range(0, len(records) - 1, 2)
        )
        if kind == "confirmed" and reply[0] == b"confirmed" and fields:
            waited = self.clock() - int(fields[b"created_ms"]) / 1000
            self.metrics.confirm_latency.labels(prio).observe(waited)

    async def refresh_stats(self) -> None:
        """Queue length and oldest entry age per priority, for /metrics and /v1/status."""
        pipe = self.store.client.pipeline(transaction=False)
        pipe.time()
        for box in OUTBOX_KEYS:
            pipe.zcard(box)
            pipe.zrange(box, 0, 0, withscores=True)
        pipe.zcard(keys.INFLIGHT)
        result = await pipe.execute()
        secs, micros = result[0]
        now_ms = secs * 1000 + micros // 1000
        for i, prio in enumerate(PRIORITIES):
            length, head = result[1 + 2 * i], result[2 + 2 * i]
            self.metrics.queue_length.labels(prio).set(length)
            age = max(0.0, (now_ms - head[0][1]) / 1000) if head else 0.0
            self.metrics.queue_oldest.labels(prio).set(age)
        self.metrics.inflight.set(result[-1])

    async def stats_loop(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self.refresh_stats()
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
