"""The Redis implementation of the event rules (lua/apply_events.lua) agrees with the pure
model on noisy logs: duplicates, reorderings and redeliveries, in random batches."""

from __future__ import annotations

import random
import struct
from dataclasses import asdict

import redis.asyncio as aioredis

from atp_service import keys
from atp_service.cache import Cache
from atp_service.ingest import Ingest
from atp_service.inventory import FLAG_SNAPSHOT, RECORD_FORMAT
from atp_service.metrics import Metrics
from atp_service.store import Store, connect

from .procs import RedisProc
from .test_inventory import truthful_log


def as_json(ev: object) -> dict[str, object]:
    return dict(asdict(ev))  # type: ignore[call-overload]


async def test_noisy_event_logs_end_in_the_in_order_state(redis_proc: RedisProc) -> None:
    client = connect(redis_proc.url)
    store = Store(client, redis_proc.url)
    try:
        await _check_noisy_logs(client, store)
    finally:
        await store.close()
        await client.aclose()


async def _check_noisy_logs(client: aioredis.Redis, store: Store) -> None:
    rng = random.Random(7)
    cache = Cache()
    ingest = Ingest(store, cache, Metrics())
    truths = {}
    stream: list[dict[str, object]] = []
    for k in range(300):
        events, truth = truthful_log(rng, rng.randrange(0, 30))
        sku, loc = f"SKU{k % 100}", f"L{k // 100}"
        raw = [as_json(e) | {"sku": sku, "location": loc} for e in events]
        truths[f"{sku}|{loc}"] = truth
        stream += raw + [rng.choice(raw) for _ in range(rng.randrange(0, 5))]
    rng.shuffle(stream)
    for start in range(0, len(stream), 997):
        result = await ingest.apply(stream[start : start + 997], "test")
        assert result.rejected == []
    records = await client.hgetall(keys.INV)
    assert len(records) == len(truths)
    for key, truth in truths.items():
        on_hand, allocated, safety, seq, pending, _ver, flags, _ = struct.unpack(
            RECORD_FORMAT, records[key.encode()]
        )
        assert (on_hand, allocated, safety, seq, pending) == (
            truth.on_hand, truth.allocated, truth.safety_stock, truth.seq, 0,
        ), key  # fmt: skip
        assert flags == FLAG_SNAPSHOT  # no gap left
        # the replica's cache got the same record from the script replies
        sku, loc = key.split("|")
        assert cache.row(cache.by_sku[sku][loc])[:4] == [on_hand, allocated, safety, seq]
    assert await client.zcard(keys.BUF) == 0
    # Replaying the whole stream again changes nothing.
    again = await ingest.apply(stream[:3000], "test")
    assert again.applied == 0 and again.buffered == 0
    assert await client.hgetall(keys.INV) == records


async def test_a_gap_reads_stale_until_it_closes(app_client) -> None:  # type: ignore[no-untyped-def]
    from .procs import ADMIN, adjustment, snapshot

    async def push(*events: dict[str, object]) -> dict[str, object]:
        r = await app_client.post("/v1/events", json={"events": list(events)}, headers=ADMIN)
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]

    assert (await push(snapshot("G", "DC1", 5, 50)))["applied"] == 1
    assert (await push(adjustment("G", "DC1", 7, -10)))["buffered"] == 1
    body = await (await app_client.get("/v1/availability/G", headers=ADMIN)).json()
    assert body["stale"] is True
    assert body["locations"][0]["atp"] == 50  # never applied out of order
    assert (await push(adjustment("G", "DC1", 6, -1)))["applied"] == 2
    body = await (await app_client.get("/v1/availability/G", headers=ADMIN)).json()
    assert body["stale"] is False
    assert body["locations"][0]["atp"] == 39
    assert body["locations"][0]["seq"] == 7
    # An adjustment for a key with no snapshot waits for it and is not visible.
    assert (await push(adjustment("H", "DC1", 2, 5)))["buffered"] == 1
    assert (await app_client.get("/v1/availability/H", headers=ADMIN)).status == 404
    assert (await push(snapshot("H", "DC1", 1, 10)))["applied"] == 2
    body = await (await app_client.get("/v1/availability/H", headers=ADMIN)).json()
    assert body["total_atp"] == 15
