"""Invariants 1 and 2 with real processes: replicas sharing one Redis never oversell, a
replayed reservation holds once, and an answered reservation survives kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from .procs import ADMIN, RedisProc, ServiceProc, snapshot, wait_until


async def push(http: aiohttp.ClientSession, svc: ServiceProc, *events: dict[str, Any]) -> None:
    async with http.post(svc.url + "/v1/events", json={"events": list(events)},
                         headers=ADMIN) as r:  # fmt: skip
        assert r.status == 200, await r.text()


async def reserve(
    http: aiohttp.ClientSession, svc: ServiceProc, rid: str, lines: list[dict[str, Any]],
    **extra: Any,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    body = {"reservation_id": rid, "priority": "checkout", "lines": lines, **extra}
    async with http.post(svc.url + "/v1/reservations", json=body, headers=ADMIN) as r:
        return r.status, await r.json()


async def atp(http: aiohttp.ClientSession, svc: ServiceProc, sku: str) -> int:
    async with http.get(f"{svc.url}/v1/availability/{sku}", headers=ADMIN) as r:
        assert r.status == 200
        return int((await r.json())["total_atp"])


async def eventually_atp(
    http: aiohttp.ClientSession, svcs: tuple[ServiceProc, ...], sku: str, want: int
) -> None:
    """Every replica reads ``want`` within 2 s: a replica learns of another's writes through
    the change stream, which may be behind the last answer on a busy machine."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if all([await atp(http, svc, sku) == want for svc in svcs]):
            return
        await asyncio.sleep(0.01)
    assert [await atp(http, svc, sku) for svc in svcs] == [want] * len(svcs)


async def test_two_replicas_never_oversell(services, http) -> None:  # type: ignore[no-untyped-def]
    a, b = services(), services()
    await push(http, a, snapshot("HOT", "DC1", 1, 100))
    line = [{"sku": "HOT", "location": "DC1", "qty": 1}]
    results = await asyncio.gather(
        *(reserve(http, (a, b)[i % 2], f"r{i}", line) for i in range(400))
    )
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 100
    assert statuses.count(409) == 300
    assert all(body["type"].endswith("/insufficient-stock") for s, body in results if s == 409)
    assert all(body["lines"][0]["atp"] == 0 for s, body in results if s == 409)
    # Each replica reads 0: its own writes at once, the other's within milliseconds.
    await eventually_atp(http, (a, b), "HOT", 0)


async def test_a_write_on_one_replica_shows_on_the_other_within_milliseconds(
    services, http
) -> None:  # type: ignore[no-untyped-def]
    a, b = services(), services()
    await push(http, a, snapshot("P", "DC1", 1, 10))
    started = time.monotonic()
    status, _ = await reserve(http, a, "p1", [{"sku": "P", "location": "DC1", "qty": 4}])
    assert status == 201
    while await atp(http, b, "P") != 6:
        assert time.monotonic() - started < 1.0, "replica b did not see the hold within 1 s"
        await asyncio.sleep(0.002)


async def test_a_write_on_one_replica_shows_in_the_others_batch_answers(services, http) -> None:  # type: ignore[no-untyped-def]
    """Replica b's memoised batch answers (Cache.memo) go as the change stream brings a's
    write: a location, a group and a whole-sku item, each answered from b's memo before."""
    a, b = services(), services()
    await push(http, a, snapshot("Q", "DC1", 1, 10), snapshot("Q", "DC2", 1, 5))
    items = [{"sku": "Q", "location": "DC1", "qty": 8}, {"sku": "Q", "group": "EAST"},
             {"sku": "Q"}]  # fmt: skip

    async def answers() -> list[tuple[int, bool]]:
        async with http.post(f"{b.url}/v1/availability", json={"items": items},
                             headers=ADMIN) as r:  # fmt: skip
            assert r.status == 200, await r.text()
            return [(i["atp"], i["available"]) for i in (await r.json())["items"]]

    async def until(want: list[tuple[int, bool]], what: str) -> None:
        started = time.monotonic()
        while (got := await answers()) != want:
            assert time.monotonic() - started < 1.0, f"{what}: b still answers {got} after 1 s"
            await asyncio.sleep(0.002)

    await until([(10, True), (10, True), (15, True)], "a's events")
    assert await answers() == [(10, True), (10, True), (15, True)]  # now from b's memo
    status, _ = await reserve(http, a, "q1", [{"sku": "Q", "location": "DC1", "qty": 4}])
    assert status == 201
    await until([(6, False), (6, True), (11, True)], "a's hold")


async def test_replayed_reservation_holds_once(services, http) -> None:  # type: ignore[no-untyped-def]
    a, b = services(), services()
    await push(http, a, snapshot("R", "DC1", 1, 50))
    line = [{"sku": "R", "location": "DC1", "qty": 7}]
    results = await asyncio.gather(
        *(reserve(http, (a, b)[i % 2], "same-id", line) for i in range(20))
    )
    statuses = [s for s, _ in results]
    assert statuses.count(201) == 1
    assert statuses.count(200) == 19
    assert {body["status"] for _, body in results} == {"confirmed"}
    await eventually_atp(http, (a, b), "R", 43)  # the winner may be either replica
    status, body = await reserve(http, b, "same-id", [{"sku": "R", "location": "DC1", "qty": 8}])
    assert status == 409
    assert body["type"].endswith("/idempotency-conflict")
    status, body = await reserve(http, b, "same-id", line, hold_seconds=30)
    assert status == 409 and body["type"].endswith("/idempotency-conflict")
    assert [await atp(http, svc, "R") for svc in (a, b)] == [43, 43]


async def _reserve_many(http: aiohttp.ClientSession, svc: ServiceProc, n: int) -> list[str]:
    lines = [{"sku": "K", "location": "DC1", "qty": 2}]
    results = await asyncio.gather(*(reserve(http, svc, f"k{i}", lines) for i in range(n)))
    assert all(s == 201 for s, _ in results)
    return [body["reservation_id"] for _, body in results]


async def test_answered_reservations_survive_kill9_of_service_and_redis(
    redis_proc: RedisProc, services, http
) -> None:  # type: ignore[no-untyped-def]
    svc = services()
    await push(http, svc, snapshot("K", "DC1", 1, 1000))
    ids = await _reserve_many(http, svc, 60)
    svc.kill9()  # right after the 201s
    redis_proc.kill9()  # and the shared state's process too: only the AOF remains
    redis_proc.start()
    again = services()
    for rid in ids:
        async with http.get(f"{again.url}/v1/reservations/{rid}", headers=ADMIN) as r:
            assert r.status == 200
            assert (await r.json())["status"] == "confirmed"
    assert await atp(http, again, "K") == 1000 - 2 * 60


async def test_a_second_service_on_the_same_data_dir_stops_and_the_first_serves_on(
    tmp_path: Path, http
) -> None:  # type: ignore[no-untyped-def]
    """The embedded Redis serves one process: a second ``serve`` on its ATP_DATA_DIR exits 2
    naming the owner, without touching the first one's redis-server (which it used to stop
    as a leftover); once the first is killed, the directory is free again."""
    env = {"ATP_DATA_DIR": str(tmp_path / "data"), "ATP_REDIS_URL": ""}
    first = ServiceProc(env, log=tmp_path / "first.log").start()
    try:
        await push(http, first, snapshot("K", "DC1", 1, 100))
        redis_pid = int((tmp_path / "data" / "redis.pid").read_text())
        second = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "atp_service.cli", "serve"],
            env={**os.environ, **env, "ATP_HTTP_PORT": "0", "ATP_API_KEYS": "k:*"},
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert first.proc is not None
        assert f"in use by another atp-service (pid {first.proc.pid})".encode() in second.stderr
        os.kill(redis_pid, 0)  # the first one's Redis untouched (raises if it is gone)
        status, body = await reserve(http, first, "after", [{"sku": "K", "location": "DC1",
                                                               "qty": 3}])  # fmt: skip
        assert status == 201, body
        first.kill9()
        again = ServiceProc(env, log=tmp_path / "again.log").start()  # the lock died with it
        try:
            assert await atp(http, again, "K") == 97
        finally:
            again.stop()
    finally:
        first.stop()


async def test_embedded_mode_survives_kill9(tmp_path: Path, http) -> None:  # type: ignore[no-untyped-def]
    env = {"ATP_DATA_DIR": str(tmp_path / "data"), "ATP_REDIS_URL": ""}
    svc = ServiceProc(env, log=tmp_path / "svc.log").start()
    try:
        await push(http, svc, snapshot("K", "DC1", 1, 1000))
        ids = await _reserve_many(http, svc, 40)
        redis_pid = int((tmp_path / "data" / "redis.pid").read_text())
        svc.kill9()
        os.kill(redis_pid, signal.SIGKILL)  # no clean shutdown for the embedded Redis either
        wait_until(lambda: not Path(f"/proc/{redis_pid}").exists(), 10)
        svc = ServiceProc(env, log=tmp_path / "svc.log").start()
        for rid in ids:
            async with http.get(f"{svc.url}/v1/reservations/{rid}", headers=ADMIN) as r:
                assert (await r.json())["status"] == "confirmed"
        assert await atp(http, svc, "K") == 1000 - 2 * 40
    finally:
        svc.stop()
    # A clean stop also stops the embedded redis-server it owned.
    pid = int((tmp_path / "data" / "redis.pid").read_text()) if (
        tmp_path / "data" / "redis.pid").exists() else None  # fmt: skip
    if pid is not None:
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10)
    _ = json
