"""The Kafka broker away while ERP events flow: frozen (SIGSTOP) for a few seconds, or killed and
restarted empty (this broker keeps its log in memory, so the consumer's committed offset no
longer exists). Lookups keep answering from memory and say ``stale`` while the broker is away;
afterwards every key ends in exactly the state of its in-order history (redelivered events
included: no duplicate effect)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ..kafka import Broker
from ..procs import RedisProc, snapshot
from ..test_feed import TOPIC, feed_env, noisy_history, state_matches
from .load import Seen, lookups
from .report import FaultRecord


async def _fresh(http: aiohttp.ClientSession, svc: Any, sku: str, timeout: float) -> None:
    """Wait until ``sku`` is known and not stale (the group joined, within the lag bound)."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"{svc.url}/v1/availability/{sku}",
                            headers={"Authorization": "Bearer test-admin"}) as r:  # fmt: skip
            if r.status == 200 and not (await r.json())["stale"]:
                return
        assert time.monotonic() < deadline, f"{sku} not fresh within {timeout}s"
        await asyncio.sleep(0.1)


async def _wait_exact(redis_url: str, truths: Any, timeout: float, rec: FaultRecord) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok, good = await state_matches(redis_url, truths)
        if ok:
            rec.mark("recovered")
            rec.count(keys_exact=good, keys=len(truths), lost=0)
            return
        if time.monotonic() > deadline:
            rec.count(keys_exact=good, keys=len(truths), lost=len(truths) - good)
            raise AssertionError(f"{good}/{len(truths)} keys exact after {timeout}s")
        await asyncio.sleep(0.1)


async def _produce_paced(producer: AIOKafkaProducer, events: list[dict[str, Any]],
                         seconds: float) -> list[Any]:  # fmt: skip
    """Send ``events`` evenly over ``seconds``; returns the delivery futures."""
    sent = []
    chunk = max(1, len(events) // int(seconds * 20))
    for i in range(0, len(events), chunk):
        for ev in events[i : i + chunk]:
            key = f"{ev['sku']}|{ev['location']}".encode()
            sent.append(await producer.send(TOPIC, orjson.dumps(ev), key=key))
        await asyncio.sleep(0.05)
    return sent


async def test_broker_paused_while_events_flow(
    redis_proc: RedisProc, broker: Broker, services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("Kafka broker frozen (SIGSTOP 4 s) while ERP events flow")
    svc = services(**feed_env(redis_proc, broker, ATP_KAFKA_UNREACHABLE_AFTER="1"))
    events, truths = noisy_history(40, 60, seed=11)  # ~2600 events, ~10% redelivered
    await broker.produce(TOPIC, [snapshot("WARM", "L0", 1, 10)])
    await _fresh(http, svc, "WARM", 30)  # the broker's first group join takes ~5 s
    seen = Seen()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False,
                                linger_ms=5, request_timeout_ms=60_000)  # fmt: skip
    await producer.start()
    try:

        async def chaos() -> None:
            await asyncio.sleep(2.0)
            broker.pause()
            rec.mark("start")
            await asyncio.sleep(4.0)
            broker.resume()
            rec.mark("end")

        until = time.monotonic() + 9
        sent, *_ = await asyncio.gather(
            _produce_paced(producer, events, 7),
            lookups(http, svc, "WARM", rec, seen, until),
            chaos(),
        )
        await asyncio.gather(*sent)
    finally:
        broker.resume()
        await producer.stop()
    await _wait_exact(redis_proc.url, truths, 30, rec)
    start, end = rec.marks["start"], rec.marks["end"]
    assert any(start < t <= end + 0.5 for t in seen.stale_at), "stale never turned true"
    stale_after = min(t for t in seen.stale_at if t > start) - start
    rec.note(f"lookups said stale {stale_after:.2f} s after the broker froze (bound: 1 s + poll)")
    assert stale_after < 3.0
    fresh = [t for t in seen.fresh_at if t > end]
    if fresh:
        rec.note(f"lookups fresh again {min(fresh) - end:.2f} s after the broker resumed")
    rec.note("events were produced evenly over 7 s, the last ~1 s of them after the resume")
    during = sorted(ms for t, ms, _ in rec.samples["lookup"] if rec.phase_of(t) == "during")
    assert len(during) > 50 and during[int(len(during) * 0.99)] < 100  # from memory
    await _fresh(http, svc, "WARM", 15)  # and fresh again once caught up


@pytest.mark.slow
async def test_broker_restarted_empty_while_events_flow(
    redis_proc: RedisProc, broker: Broker, services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    """Before the restart each partition holds ~300 records and the group has committed them;
    after it the topic starts again at offset 0 with ~100: the committed offset is past the
    end of the new log. The consumer must start over from the new log's beginning."""
    rec = fault_report("Kafka broker killed and restarted empty (committed offsets gone)")
    svc = services(**feed_env(redis_proc, broker, ATP_KAFKA_UNREACHABLE_AFTER="1"))
    rng = random.Random(5)
    events, truths = noisy_history(40, 40, seed=12)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for ev in sorted(events, key=lambda e: e["seq"]):
        by_key.setdefault(f"{ev['sku']}|{ev['location']}", []).append(ev)
    before, after = [], []
    for log in by_key.values():
        unique = list({e["seq"]: e for e in log}.values())
        cut = len(unique) * 3 // 4  # the last quarter of each key's history comes after
        before += unique[:cut]
        after += unique[cut:]
    after += rng.sample(after, len(after) // 10)  # redeliveries after the restart too
    rng.shuffle(before)
    rng.shuffle(after)
    sku = before[0]["sku"]
    await broker.produce(TOPIC, before)
    await _fresh(http, svc, sku, 30)
    await asyncio.sleep(1.5)  # the group commits what it applied
    seen = Seen()

    async def chaos() -> None:
        await asyncio.sleep(1.0)
        broker.stop()
        rec.mark("start")
        await asyncio.sleep(3.0)
        broker.start()
        await broker.create_topic(TOPIC, 4)
        await broker.create_topic(TOPIC + ".dlq", 1)
        rec.mark("end")
        await broker.produce(TOPIC, after)  # the ERP publishes on

    await asyncio.gather(lookups(http, svc, sku, rec, seen, time.monotonic() + 8), chaos())
    await _wait_exact(redis_proc.url, truths, 40, rec)
    assert any(t > rec.marks["start"] for t in seen.stale_at), "stale never turned true"
    during = sorted(ms for t, ms, _ in rec.samples["lookup"] if rec.phase_of(t) == "during")
    assert during and during[int(len(during) * 0.99)] < 100
    await _fresh(http, svc, sku, 20)
