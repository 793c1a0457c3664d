"""The Redis call path: RESP packing, and recovery when Redis loses its script cache."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from atp_service.store import FLUSH_AT, Store, pack

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


async def test_a_ticks_calls_go_out_in_writes_of_at_most_flush_at(redis_proc: RedisProc) -> None:
    """Calls of one loop tick past FLUSH_AT go out at once, in order; the rest at the tick's
    end. Every reply reaches its own caller."""
    client = aioredis.Redis.from_url(redis_proc.url)
    store = Store(client, redis_proc.url)
    writes: list[int] = []
    send = store.wire.send

    def counting(batch: Sequence[tuple[bytes, asyncio.Future[Any]]]) -> None:
        writes.append(len(batch))
        send(batch)

    store.wire.send = counting  # type: ignore[method-assign]
    try:
        for n in (1, FLUSH_AT - 1, FLUSH_AT, 2 * FLUSH_AT + 3):
            writes.clear()
            futures = [store.run_packed(pack("ECHO", f"call-{i}")) for i in range(n)]
            assert writes == [FLUSH_AT] * (n // FLUSH_AT)  # before the tick ends
            replies = await asyncio.gather(*futures)
            assert replies == [f"call-{i}".encode() for i in range(n)]
            assert writes == [FLUSH_AT] * (n // FLUSH_AT) + ([n % FLUSH_AT] if n % FLUSH_AT else [])
    finally:
        await store.close()
        await client.aclose()
