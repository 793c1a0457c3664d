"""Invariant 4 (first part): while Redis is unreachable, lookups keep answering from memory
(flagged stale), writes fail fast with a 503 problem, and all recovers when Redis returns."""

from __future__ import annotations

import asyncio
import time

from .procs import ADMIN, RedisProc
from .test_replicas import push, reserve, snapshot


async def test_lookups_answer_while_redis_is_paused(redis_proc: RedisProc, services, http) -> None:  # type: ignore[no-untyped-def]
    svc = services(ATP_STALE_AFTER="1")
    await push(http, svc, snapshot("D", "DC1", 1, 10))
    redis_proc.pause()
    try:
        started = time.monotonic()
        became_stale = None
        while time.monotonic() - started < 3:
            t0 = time.perf_counter()
            async with http.get(svc.url + "/v1/availability/D", headers=ADMIN) as r:
                body = await r.json()
            assert r.status == 200
            assert time.perf_counter() - t0 < 0.1  # from memory, not waiting on Redis
            assert body["total_atp"] == 10
            if body["stale"] and became_stale is None:
                became_stale = time.monotonic() - started
            await asyncio.sleep(0.05)
        assert became_stale is not None and became_stale < 2.0
        async with http.get(svc.url + "/readyz") as r:
            assert r.status == 503
            assert r.headers["Content-Type"].startswith("application/problem+json")
        t0 = time.monotonic()
        status, body = await reserve(http, svc, "x1", [{"sku": "D", "location": "DC1", "qty": 1}])
        assert status == 503, body
        assert body["type"].endswith("/unavailable")
        assert time.monotonic() - t0 < 8
    finally:
        redis_proc.resume()
    deadline = time.monotonic() + 10
    while True:
        status, body = await reserve(http, svc, "x2", [{"sku": "D", "location": "DC1", "qty": 1}])
        if status == 201 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert status == 201, body
    async with http.get(svc.url + "/v1/availability/D", headers=ADMIN) as r:
        body = await r.json()
    # x1 was never answered 201; whether it ran is told by its own state, never by a double hold.
    async with http.get(svc.url + "/v1/reservations/x1", headers=ADMIN) as r:
        x1_held = r.status == 200
    assert body["total_atp"] == 10 - 1 - int(x1_held)
    deadline = time.monotonic() + 8  # the tailer's blocked read times out, then reconnects
    while body["stale"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        async with http.get(svc.url + "/v1/availability/D", headers=ADMIN) as r:
            body = await r.json()
    assert body["stale"] is False
