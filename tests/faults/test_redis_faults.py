"""Redis away in the middle of reservation load: frozen (SIGSTOP) for a few seconds, or killed
(kill -9) and restarted. Every reservation answered 201 survives; the stock held equals exactly
the reservations stored (a redis-py retry or a reconnect never applies a write twice); while
Redis is away reservations fail fast with a 503 problem and lookups keep answering from
memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ..procs import ADMIN, RedisProc, snapshot
from ..test_replicas import push
from .load import Seen, assert_nothing_lost_nothing_doubled, lookups, reservations, stored_state
from .report import FaultRecord

LINE = [{"sku": "Z", "location": "DC1", "qty": 2}]
# Never runs out under the load: ~50,000 holds of 2 in 8 s were seen on a fast day, and a
# retry of an unanswered id must then be answered 201, not 409 insufficient-stock.
STOCK = 10_000_000


async def _run(http: aiohttp.ClientSession, svc: Any, rec: FaultRecord, seen: Seen,
               seconds: float, chaos: Any) -> None:  # fmt: skip
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(reservations(http, svc, LINE, rec, seen, until, f"z{n}") for n in range(16)),
        lookups(http, svc, "Z", rec, seen, until),
        chaos(),
    )


def _first_201_after(rec: FaultRecord, at: float) -> float | None:
    ok = sorted(t for t, _, good in rec.samples["reserve"] if good and t > at)
    return ok[0] if ok else None


async def _retry_unanswered(http: aiohttp.ClientSession, svc: Any, seen: Seen,
                            stored: Callable[[str], bool]) -> None:  # fmt: skip
    """A reservation whose answer was lost exists whole or not at all: retrying is
    idempotent (200 if it ran, 201 now if it did not)."""
    unknown = [rid for rid, s in seen.answers.items() if s not in (201, 409)][:20]
    for rid in unknown:
        body = {"reservation_id": rid, "priority": "checkout", "lines": LINE}
        async with http.post(svc.url + "/v1/reservations", json=body, headers=ADMIN) as r:
            assert r.status == (200 if stored(rid) else 201), (rid, await r.text())


async def test_redis_sigstop_during_reservation_load(
    redis_proc: RedisProc, services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("Redis frozen (SIGSTOP 5 s) during reservation load, 1 replica")
    svc = services(ATP_STALE_AFTER="1")
    await push(http, svc, snapshot("Z", "DC1", 1, STOCK))
    seen = Seen()

    async def chaos() -> None:
        await asyncio.sleep(2.0)
        redis_proc.pause()
        rec.mark("start")
        await asyncio.sleep(5.0)
        redis_proc.resume()
        rec.mark("end")

    try:
        await _run(http, svc, rec, seen, 11, chaos)
    finally:
        redis_proc.resume()
    recovered = _first_201_after(rec, rec.marks["end"])
    assert recovered is not None
    rec.mark("recovered", recovered)
    # Failing fast: 503 problems while Redis was frozen, each after at most the service's own
    # Redis socket timeout (2 s): no request waited for the whole 5 s pause.
    assert any(s == 503 for s in seen.answers.values())
    slowest = max(ms for _, ms, _ in rec.samples["reserve"])
    assert slowest < 4000, slowest
    # Lookups answered all along, from memory, and said stale while Redis was away.
    assert any(rec.marks["start"] < t < rec.marks["end"] + 1 for t in seen.stale_at)
    during = [ms for t, ms, _ in rec.samples["lookup"] if rec.phase_of(t) == "during"]
    assert len(during) > 50 and sorted(during)[int(len(during) * 0.99)] < 100
    await assert_nothing_lost_nothing_doubled(redis_proc.url, "Z|DC1", seen, 2, rec)
    stored, _ = await stored_state(redis_proc.url, "Z|DC1")
    await _retry_unanswered(http, svc, seen, stored.__contains__)


async def test_redis_kill9_and_restart_during_reservation_load(
    redis_proc: RedisProc, services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("Redis kill -9, restarted 1.5 s later from its AOF, during reservation load")
    svc = services()
    await push(http, svc, snapshot("Z", "DC1", 1, STOCK))
    seen = Seen()

    async def chaos() -> None:
        await asyncio.sleep(2.5)
        redis_proc.kill9()
        rec.mark("start")
        await asyncio.sleep(1.5)
        redis_proc.start()
        rec.mark("end")

    await _run(http, svc, rec, seen, 8, chaos)
    recovered = _first_201_after(rec, rec.marks["end"])
    assert recovered is not None
    rec.mark("recovered", recovered)
    assert len(seen.accepted()) > 100
    assert any(s == 503 for s in seen.answers.values())  # the outage was really seen
    lookup_ms = sorted(ms for _, ms, _ in rec.samples["lookup"])
    assert lookup_ms[int(len(lookup_ms) * 0.99)] < 100  # lookups kept answering
    await assert_nothing_lost_nothing_doubled(redis_proc.url, "Z|DC1", seen, 2, rec)
    stored, _ = await stored_state(redis_proc.url, "Z|DC1")
    await _retry_unanswered(http, svc, seen, stored.__contains__)
