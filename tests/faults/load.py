"""Load that runs while a fault is injected: lookups and reservations, each timed into the
test's :class:`FaultRecord`, each answer checked (lookups always 200; a reservation that fails
does so with a clear 503 problem, never a hang or a 500)."""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from atp_service import keys
from atp_service.inventory import PENDING, RECORD_FORMAT

from ..procs import ADMIN, ServiceProc
from .report import FaultRecord


@dataclass
class Seen:
    """What the load saw: each reservation id's final answer (0 = no HTTP answer) and when
    lookups said ``stale``."""

    answers: dict[str, int] = field(default_factory=dict)
    stale_at: list[float] = field(default_factory=list)
    fresh_at: list[float] = field(default_factory=list)
    slowest_failure_ms: float = 0.0

    def accepted(self) -> list[str]:
        return [rid for rid, s in self.answers.items() if s == 201]


async def lookups(http: aiohttp.ClientSession, svc: ServiceProc, sku: str, rec: FaultRecord,
                  seen: Seen, until: float, interval: float = 0.01) -> None:  # fmt: skip
    """Look ``sku`` up until ``until``: every answer must be a 200 from memory."""
    while time.monotonic() < until:
        started, t0 = time.monotonic(), time.perf_counter()
        async with http.get(f"{svc.url}/v1/availability/{sku}", headers=ADMIN) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        rec.add("lookup", started, (time.perf_counter() - t0) * 1000)
        (seen.stale_at if body["stale"] else seen.fresh_at).append(started)
        await asyncio.sleep(interval)


async def reservations(http: aiohttp.ClientSession, svc: ServiceProc, lines: list[dict[str, Any]],
                       rec: FaultRecord, seen: Seen, until: float, prefix: str,
                       timeout: float = 10.0, pause: float = 0.0,
                       hold_every: int = 0) -> None:  # fmt: skip
    """One client reserving ``lines`` under fresh ids until ``until``. A failure must be a 503
    problem (``.../unavailable``) answered within ``timeout``; it backs off 50 ms. Every
    ``hold_every``-th one is a 1 s cart hold (ids ending ``-h``)."""
    i = 0
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    while time.monotonic() < until:
        hold = hold_every > 0 and i % hold_every == 0
        rid = f"{prefix}-{i}" + ("-h" if hold else "")
        i += 1
        body: dict[str, Any] = {"reservation_id": rid, "priority": "checkout", "lines": lines}
        if hold:
            body["hold_seconds"] = 1
        started, t0 = time.monotonic(), time.perf_counter()
        status = 0
        try:
            async with http.post(svc.url + "/v1/reservations", json=body, headers=ADMIN,
                                 timeout=client_timeout) as r:  # fmt: skip
                status = r.status
                if status >= 500 or status == 429:
                    assert status == 503, await r.text()
                    assert r.headers["Content-Type"].startswith("application/problem+json")
                    problem = await r.json()
                    assert problem["type"].endswith("/unavailable")
                    assert "retry with the same reservation_id" in problem["detail"]
                else:
                    assert status in (201, 409), await r.text()
        except (aiohttp.ClientError, TimeoutError):
            status = 0  # no answer: the id's fate is read from Redis afterwards
        ms = (time.perf_counter() - t0) * 1000
        seen.answers[rid] = status
        rec.add("reserve", started, ms, ok=status in (201, 409))
        if status not in (201, 409):
            seen.slowest_failure_ms = max(seen.slowest_failure_ms, ms)
            await asyncio.sleep(0.05)
        elif pause:
            await asyncio.sleep(pause)


async def stored_state(redis_url: str, inv_key: str) -> tuple[set[str], tuple[int, ...]]:
    """Reservation ids in Redis, and the packed record of ``inv_key``."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        stored = set()
        async for key in client.scan_iter(match=keys.RESERVATION + "*", count=1000):
            stored.add(key.decode().removeprefix(keys.RESERVATION))
        record = struct.unpack(RECORD_FORMAT, await client.hget(keys.INV, inv_key))
    finally:
        await client.aclose()
    return stored, record


async def assert_nothing_lost_nothing_doubled(
    redis_url: str, inv_key: str, seen: Seen, qty: int, rec: FaultRecord
) -> None:
    """Every 201 is stored, and the stock held is exactly the stored reservations' (a retry or
    reconnect never decremented twice)."""
    stored, record = await stored_state(redis_url, inv_key)
    accepted = seen.accepted()
    lost = [rid for rid in accepted if rid not in stored]
    unanswered = [rid for rid, s in seen.answers.items() if s not in (201, 409)]
    rec.count(
        accepted=len(accepted),
        failed_fast_503=sum(1 for s in seen.answers.values() if s == 503),
        no_answer=sum(1 for s in seen.answers.values() if s == 0),
        unanswered_but_applied=sum(1 for rid in unanswered if rid in stored),
        lost=len(lost),
        held_minus_stored=record[PENDING] - qty * len(stored),
    )
    assert lost == []
    assert record[PENDING] == qty * len(stored)  # no double decrement, nothing half-done
