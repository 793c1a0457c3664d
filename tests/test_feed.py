"""Issue 3 with a real Kafka-protocol broker and real redis-server: ordered, exactly-once
effect, DLQ, crash and rebalance safety, freshness while the broker is away."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from dataclasses import asdict
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from atp_service import keys
from atp_service.inventory import RECORD_FORMAT, KeyState

from .kafka import Broker
from .procs import ADMIN, RedisProc, ServiceProc
from .test_inventory import truthful_log

TOPIC = "erp.inventory.v1"


def feed_env(redis_proc: RedisProc, broker: Broker, **extra: str) -> dict[str, str]:
    return {"ATP_REDIS_URL": redis_proc.url, "ATP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ATP_KAFKA_TOPIC": TOPIC, "ATP_KAFKA_GROUP": "atp-test", **extra}  # fmt: skip


History = tuple[list[dict[str, Any]], dict[str, KeyState]]


def as_events(log: list[Any], sku: str, loc: str) -> list[dict[str, Any]]:
    return [asdict(e) | {"sku": sku, "location": loc} for e in log]


def noisy_history(n_keys: int, per_key: int, seed: int) -> History:
    """Each key's truthful event log, with ~10% redeliveries, in a globally shuffled order
    (so events of one key arrive out of seq order too)."""
    rng = random.Random(seed)
    truths: dict[str, KeyState] = {}
    events: list[dict[str, Any]] = []
    for k in range(n_keys):
        log, truth = truthful_log(rng, per_key - 1)
        sku, loc = f"SKU{k // 4}", f"L{k % 4}"
        truths[f"{sku}|{loc}"] = truth
        events += as_events(log, sku, loc)
    events += rng.sample(events, len(events) // 10)
    rng.shuffle(events)
    return events, truths


async def state_matches(redis_url: str, truths: dict[str, KeyState]) -> tuple[bool, int]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        records = await client.hgetall(keys.INV)
    finally:
        await client.aclose()
    good = 0
    for key, truth in truths.items():
        raw = records.get(key.encode())
        if raw is None:
            continue
        on_hand, allocated, safety, seq, pending, *_ = struct.unpack(RECORD_FORMAT, raw)
        if (on_hand, allocated, safety, seq, pending) == (
            truth.on_hand, truth.allocated, truth.safety_stock, truth.seq, 0
        ):  # fmt: skip
            good += 1
    return good == len(truths), good


async def wait_for_state(redis_url: str, truths: dict[str, KeyState], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok, good = await state_matches(redis_url, truths)
        if ok:
            return
        assert time.monotonic() < deadline, f"{good}/{len(truths)} keys right after {timeout}s"
        await asyncio.sleep(0.25)


async def test_20000_noisy_events_end_in_the_in_order_state(
    redis_proc: RedisProc, broker: Broker, services
) -> None:  # type: ignore[no-untyped-def]
    events, truths = noisy_history(2000, 10, seed=3)
    assert len(events) >= 20_000
    services(**feed_env(redis_proc, broker))
    await broker.produce(TOPIC, events)
    await wait_for_state(redis_proc.url, truths, 60)
    # Redelivering the whole topic again (a new group replays from the earliest offset)
    # changes nothing.
    services(**feed_env(redis_proc, broker, ATP_KAFKA_GROUP="replayer"))
    await broker.produce(TOPIC, events[:5000])
    await asyncio.sleep(3)
    assert (await state_matches(redis_proc.url, truths))[0]


async def _dlq_records(broker: Broker, n: int, timeout: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(TOPIC + ".dlq", bootstrap_servers=broker.bootstrap,
                                group_id="dlq-reader", auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += records
    finally:
        await consumer.stop()
    return out


async def test_poison_messages_go_to_the_dlq_and_consumption_goes_on(
    redis_proc: RedisProc, broker: Broker, services, http: aiohttp.ClientSession
) -> None:  # type: ignore[no-untyped-def]
    svc = services(**feed_env(redis_proc, broker))
    bad_snapshot = {"event_id": "b1", "type": "snapshot", "sku": "P", "location": "DC1",
                    "seq": 1, "on_hand": -5, "allocated": 0, "safety_stock": 0,
                    "occurred_at": "2026-11-22T10:00:00Z"}  # fmt: skip
    unknown_type = {**bad_snapshot, "type": "teleport", "on_hand": 5}
    await broker.produce(TOPIC, [bad_snapshot, unknown_type], raw=[b"{not json", b"[1, 2]"])
    good = {**bad_snapshot, "event_id": "g1", "on_hand": 7}
    await broker.produce(TOPIC, [good])
    dead = await _dlq_records(broker, 4)
    assert len(dead) == 4
    reasons = {dict(r.headers)["dlq.reason"].decode() for r in dead}
    assert any("JSON" in r for r in reasons)
    assert any("/on_hand" in r for r in reasons)
    assert any("/type" in r for r in reasons)
    for r in dead:
        h = dict(r.headers)
        assert h["dlq.source.topic"] == TOPIC.encode()
        assert int(h["dlq.source.offset"]) >= 0 and int(h["dlq.source.partition"]) in range(4)
    assert {r.value for r in dead} >= {b"{not json", b"[1, 2]"}  # the original bytes
    deadline = time.monotonic() + 20
    while True:
        async with http.get(svc.url + "/v1/availability/P", headers=ADMIN) as resp:
            if resp.status == 200:
                assert (await resp.json())["total_atp"] == 7
                break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def _kill_mid_run(
    redis_proc: RedisProc, victim: ServiceProc, truths: dict[str, KeyState]
) -> None:
    deadline = time.monotonic() + 30
    while (await state_matches(redis_proc.url, truths))[1] < len(truths) // 10:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    victim.kill9()


async def test_kill9_of_the_consumer_mid_batch_and_restart(
    redis_proc: RedisProc, broker: Broker, services
) -> None:  # type: ignore[no-untyped-def]
    events, truths = noisy_history(2000, 10, seed=5)
    svc = services(**feed_env(redis_proc, broker))
    await broker.produce(TOPIC, events)
    await _kill_mid_run(redis_proc, svc, truths)
    assert not (await state_matches(redis_proc.url, truths))[0]  # it really was mid-run
    services(**feed_env(redis_proc, broker))  # restarts from the last committed offsets
    await wait_for_state(redis_proc.url, truths, 60)


async def test_two_consumers_in_a_group_one_killed_mid_run(
    redis_proc: RedisProc, broker: Broker, services
) -> None:  # type: ignore[no-untyped-def]
    events, truths = noisy_history(2000, 10, seed=9)
    a = services(**feed_env(redis_proc, broker))
    services(**feed_env(redis_proc, broker))
    await asyncio.sleep(1)
    await broker.produce(TOPIC, events)
    await _kill_mid_run(redis_proc, a, truths)
    await wait_for_state(redis_proc.url, truths, 90)  # the survivor takes over a's partitions


async def test_broker_down_lookups_answer_and_turn_stale_then_catch_up(
    redis_proc: RedisProc, broker: Broker, services, http: aiohttp.ClientSession
) -> None:  # type: ignore[no-untyped-def]
    svc = services(**feed_env(redis_proc, broker, ATP_KAFKA_UNREACHABLE_AFTER="1"))
    first = as_events(truthful_log(random.Random(1), 5)[0], "B", "DC1")
    await broker.produce(TOPIC, first)

    async def lookup() -> dict[str, Any]:
        async with http.get(svc.url + "/v1/availability/B", headers=ADMIN) as resp:
            assert resp.status == 200
            return await resp.json()  # type: ignore[no-any-return]

    deadline = time.monotonic() + 20
    while True:  # applied and fresh (joined, within the lag bound)
        try:
            body = await lookup()
            if not body["stale"]:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    broker.stop()
    stopped = time.monotonic()
    while not (await lookup())["stale"]:
        assert time.monotonic() - stopped < 5, "stale did not turn true within the bound"
        await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    for _ in range(50):
        await lookup()  # still answering, from memory
    assert (time.perf_counter() - t0) / 50 < 0.05
    # The broker returns (empty: this broker keeps its log in memory); the ERP re-publishes.
    broker.start()
    await broker.create_topic(TOPIC, 4)
    events, truth = truthful_log(random.Random(2), 8)
    later = [e | {"seq": e["seq"] + 1000} for e in as_events(events, "B", "DC1")]
    await broker.produce(TOPIC, later)
    deadline = time.monotonic() + 30
    while True:
        body = await lookup()
        if not body["stale"] and body["locations"][0]["seq"] == truth.seq + 1000:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)
    assert body["locations"][0]["on_hand"] == truth.on_hand
