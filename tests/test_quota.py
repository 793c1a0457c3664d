"""ATP_HOLD_QUOTA: the most units one API key may have in uncommitted cart holds. Enforced in
reserve.lua (so replicas cannot together let a key past it), given back by transition.lua on
commit, release and expiry, and never counted twice for a replayed reservation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from atp_service import keys
from atp_service.config import ConfigError, Settings

from .conftest import start_app
from .procs import ADMIN, RedisProc, snapshot

WRITE = {"Authorization": "Bearer test-write"}
QUOTA = "hold-quota-exceeded"


def line(qty: int, sku: str = "Q", location: str = "DC1") -> dict[str, Any]:
    return {"sku": sku, "location": location, "qty": qty}


def hold(rid: str, *lines: dict[str, Any], seconds: int | None = 600) -> dict[str, Any]:
    body: dict[str, Any] = {"reservation_id": rid, "priority": "checkout", "lines": list(lines)}
    if seconds is not None:
        body["hold_seconds"] = seconds
    return body


@pytest.fixture
async def client(redis_proc: RedisProc) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    c = await start_app(redis_proc.url, ATP_HOLD_QUOTA="3")
    events = [snapshot("Q", "DC1", 1, 100), snapshot("Q", "DC2", 1, 100)]
    assert (await c.post("/v1/events", json={"events": events}, headers=ADMIN)).status == 200
    yield c
    await c.close()


async def post(c: TestClient, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:  # type: ignore[type-arg]
    async with c.post("/v1/reservations", json=body, headers=headers) as r:
        return r.status, await r.json()


async def atp(c: TestClient) -> int:  # type: ignore[type-arg]
    async with c.get("/v1/availability/Q?location=DC1", headers=ADMIN) as r:
        return int((await r.json())["total_atp"])


async def test_commit_release_and_expiry_give_the_units_back(
    client: TestClient,  # type: ignore[type-arg]
    redis_proc: RedisProc,
) -> None:
    c = client
    assert (await post(c, hold("a", line(1), line(1, location="DC2")), WRITE))[0] == 201
    assert (await post(c, hold("b", line(1)), WRITE))[0] == 201  # 3 units held: the quota
    before = await atp(c)

    status, body = await post(c, hold("c", line(1)), WRITE)
    assert status == 409 and body["type"].endswith("/" + QUOTA), body
    assert body["held"] == 3 and body["quota"] == 3
    assert await atp(c) == before  # refused: nothing held, nothing written
    assert (await c.get("/v1/reservations/c", headers=WRITE)).status == 404

    # A replay is the stored reservation, not a new hold: nothing more counted.
    assert (await post(c, hold("a", line(1), line(1, location="DC2")), WRITE))[0] == 200
    # Another key has a quota of its own; an order (no hold_seconds) is not counted.
    assert (await post(c, hold("adm", line(3)), ADMIN))[0] == 201
    assert (await post(c, hold("order", line(5), seconds=None), WRITE))[0] == 201

    # Release gives back both of a's units ...
    assert (await c.delete("/v1/reservations/a", headers=WRITE)).status == 200
    assert (await post(c, hold("c", line(2)), WRITE))[0] == 201
    assert (await post(c, hold("d", line(1)), WRITE))[0] == 409
    # ... and so does a commit (the hold becomes an order).
    assert (await c.post("/v1/reservations/b/commit", headers=WRITE)).status == 200
    assert (await post(c, hold("d", line(1)), WRITE))[0] == 201

    # Expiry: the admin key's units come back when its short hold expires.
    assert (await c.delete("/v1/reservations/adm", headers=ADMIN)).status == 200
    assert (await post(c, hold("short", line(3), seconds=1), ADMIN))[0] == 201
    assert (await post(c, hold("more", line(1)), ADMIN))[0] == 409
    deadline = time.monotonic() + 5
    while (await (await c.get("/v1/reservations/short", headers=ADMIN)).json())["status"] == "held":
        assert time.monotonic() < deadline, "the hold did not expire"
        await asyncio.sleep(0.05)
    assert (await post(c, hold("more", line(3)), ADMIN))[0] == 201

    # What is left counted in Redis: write holds c (2) and d (1), admin's "more" (3).
    async with redis.from_url(redis_proc.url) as db:
        held = {k.decode(): int(v) for k, v in (await db.hgetall(keys.HELD)).items()}
    assert sorted(held.values()) == [3, 3]
    for rid, who in (("c", WRITE), ("d", WRITE), ("more", ADMIN)):
        assert (await c.delete(f"/v1/reservations/{rid}", headers=who)).status == 200
    async with redis.from_url(redis_proc.url) as db:
        assert await db.hgetall(keys.HELD) == {}  # emptied, not left at zero


async def test_two_replicas_never_let_a_key_past_its_quota(
    services: Any, http: aiohttp.ClientSession
) -> None:
    a, b = services(ATP_HOLD_QUOTA="10"), services(ATP_HOLD_QUOTA="10")
    async with http.post(
        a.url + "/v1/events", json={"events": [snapshot("Q", "DC1", 1, 1000)]}, headers=ADMIN
    ) as r:
        assert r.status == 200

    async def one(i: int) -> tuple[int, Any]:
        svc = (a, b)[i % 2]
        async with http.post(
            svc.url + "/v1/reservations", json=hold(f"h{i}", line(1)), headers=WRITE
        ) as r:
            return r.status, await r.json()

    results = await asyncio.gather(*(one(i) for i in range(80)))
    statuses = [s for s, _ in results]
    assert statuses.count(201) == 10, statuses
    assert statuses.count(409) == 70
    assert all(body["type"].endswith("/" + QUOTA) for s, body in results if s == 409)

    # Each replica learns of the other's holds through the change stream: within milliseconds,
    # not by the time the last answer is back.
    async def both() -> list[int]:
        out = []
        for svc in (a, b):
            async with http.get(svc.url + "/v1/availability/Q", headers=ADMIN) as r:
                out.append((await r.json())["total_atp"])
        return out

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if await both() == [990, 990]:
            break
        await asyncio.sleep(0.01)
    assert await both() == [990, 990]


async def test_a_key_with_a_quota_of_its_own(redis_proc: RedisProc) -> None:
    """``hold_quota=N`` in a key's ATP_API_KEYS entry overrides ATP_HOLD_QUOTA for that key
    (0: no limit); the other keys keep the default."""
    c = await start_app(
        redis_proc.url,
        ATP_HOLD_QUOTA="2",
        ATP_API_KEYS="test-admin:*;web:reservations:write,hold_quota=5;"
        "rep:reservations:write;batch:hold_quota=0,reservations:write",
    )
    try:
        events = [snapshot("Q", "DC1", 1, 100)]
        assert (await c.post("/v1/events", json={"events": events}, headers=ADMIN)).status == 200
        web, rep, batch = ({"Authorization": f"Bearer {k}"} for k in ("web", "rep", "batch"))
        assert (await post(c, hold("w1", line(5)), web))[0] == 201
        status, body = await post(c, hold("w2", line(1)), web)
        assert status == 409 and body["held"] == 5 and body["quota"] == 5, body
        assert "quota of 5" in body["detail"]
        assert (await post(c, hold("r1", line(2)), rep))[0] == 201
        status, body = await post(c, hold("r2", line(1)), rep)
        assert status == 409 and body["held"] == 2 and body["quota"] == 2, body
        for i in range(3):  # no limit, and nothing counted
            assert (await post(c, hold(f"b{i}", line(10)), batch))[0] == 201
        async with redis.from_url(redis_proc.url) as db:
            held = sorted(int(v) for v in (await db.hgetall(keys.HELD)).values())
        assert held == [2, 5]
    finally:
        await c.close()


@pytest.mark.parametrize("raw", ["-1", "x", "1.5", str(10**13)])
def test_a_bad_quota_setting_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="ATP_HOLD_QUOTA"):
        Settings.from_env({"ATP_REDIS_URL": "redis://127.0.0.1:1", "ATP_HOLD_QUOTA": raw})
