"""The Redis call path: RESP packing, and recovery when Redis loses its script cache."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from atp_service.store import pack

from .procs import ADMIN, RedisProc, snapshot


def test_pack_is_resp() -> None:
    assert pack("EVALSHA", b"\x00\xff", 3, 2.5) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\n\x00\xff\r\n$1\r\n3\r\n$3\r\n2.5\r\n"
    )
    with pytest.raises(TypeError):
        pack(True)
    with pytest.raises(TypeError):
        pack(None)


async def test_scripts_are_reloaded_after_redis_forgets_them(
    app_client, redis_proc: RedisProc
) -> None:  # type: ignore[no-untyped-def]
    r = await app_client.post("/v1/events", json={"events": [snapshot("F", "DC1", 1, 5)]},
                              headers=ADMIN)  # fmt: skip
    assert r.status == 200
    raw = aioredis.Redis.from_url(redis_proc.url)
    await raw.script_flush()
    await raw.aclose()
    body = {"reservation_id": "f1", "priority": "checkout",
            "lines": [{"sku": "F", "location": "DC1", "qty": 2}]}  # fmt: skip
    r = await app_client.post("/v1/reservations", json=body, headers=ADMIN)
    assert r.status == 201
    r = await app_client.get("/v1/availability/F", headers=ADMIN)
    assert (await r.json())["total_atp"] == 3  # held exactly once
