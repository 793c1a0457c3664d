"""The ERP simulator (``atp-service erp-sim``): pure ledger and token bucket, then the HTTP API
in process, the HTTP event publisher against a small receiver, and one real process."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from atp_service import decode
from atp_service.cli import main as cli_main
from atp_service.erpsim import SimConfig, SimConfigError, catalogue, config, create_sim_app, schema
from atp_service.erpsim.activity import Activity
from atp_service.erpsim.faults import Latency
from atp_service.erpsim.ledger import Confirmed, Conflict, Ledger, Line, Rejected
from atp_service.erpsim.publisher import backoff
from atp_service.erpsim.ratelimit import TokenBucket, retry_after
from atp_service.erpsim.replies import SIM

from .procs import free_port, wait_until

Event = dict[str, Any]
MakeSim = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cfg(**overrides: Any) -> SimConfig:
    """Fast defaults for tests: no latency, no practical rate limit, reproducible."""
    base: dict[str, Any] = {
        "latency_ms": 0, "latency_p99_ms": 0, "rate": 100_000, "burst": 100_000, "random_seed": 7,
        "skus": 2, "locations": 2, "on_hand": 10,
    }  # fmt: skip
    return SimConfig(**{**base, **overrides})


def body(rid: str, *lines: tuple[str, str, int], priority: str = "checkout") -> dict[str, Any]:
    return {
        "reservation_id": rid,
        "priority": priority,
        "lines": [{"sku": s, "location": loc, "qty": q} for s, loc, q in lines],
    }


A = ("SKU-000001", "LOC-01")
B = ("SKU-000002", "LOC-02")


async def reserve(client: TestClient, rid: str, *lines: tuple[str, str, int], **kw: Any) -> Any:  # type: ignore[type-arg]
    return await client.post(
        "/reservations", json=body(rid, *lines), headers={"Idempotency-Key": rid}, **kw
    )


def assert_consecutive(events: list[Event]) -> None:
    """Per key, seqs run 1, 2, 3... with no gap or repeat."""
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in events:
        seqs[(event["sku"], event["location"])].append(event["seq"])
    for key, run in seqs.items():
        assert run == list(range(1, len(run) + 1)), key


def replay(events: list[Event]) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """The ledger rebuilt from its events alone (every event valid for the service)."""
    state: dict[tuple[str, str], tuple[int, int, int, int]] = {}
    for event in events:
        decode.event(event)  # the service's own decoder accepts it
        key = (event["sku"], event["location"])
        if event["type"] == "snapshot":
            state[key] = (event["on_hand"], event["allocated"], event["safety_stock"], event["seq"])
        else:
            on_hand, allocated, safety, seq = state[key]
            assert event["seq"] == seq + 1
            state[key] = (
                on_hand + event["on_hand_delta"], allocated + event["allocated_delta"],
                safety, event["seq"],
            )  # fmt: skip
    return state


def ledger_state(client: TestClient) -> dict[tuple[str, str], tuple[int, int, int, int]]:  # type: ignore[type-arg]
    stock = client.server.app[SIM].ledger.stock
    return {k: (s.on_hand, s.allocated, s.safety_stock, s.seq) for k, s in stock.items()}


async def all_events(client: TestClient) -> list[Event]:  # type: ignore[type-arg]
    r = await client.get("/admin/events", params={"since": "0", "limit": "1000000"})
    return list((await r.json())["events"])


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    clients: list[TestClient] = []  # type: ignore[type-arg]

    async def make(config: SimConfig | None = None, **kwargs: Any) -> TestClient:  # type: ignore[type-arg]
        client = TestClient(TestServer(create_sim_app(config or cfg(), **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await client.close()


# --- pure: ledger, token bucket, latency, activity, config, seed files ---------------------


def test_ledger_allocates_all_lines_or_none_and_sums_repeated_lines() -> None:
    ledger = Ledger()
    ledger.set_stock("S1", "L1", 10, safety_stock=2)
    ledger.set_stock("S2", "L1", 3)
    short = ledger.reserve("r1", "checkout", [Line("S1", "L1", 5), Line("S2", "L1", 4)])
    assert isinstance(short, Rejected) and "S2@L1" in short.reason
    unknown = ledger.reserve("r2", "checkout", [Line("S1", "L1", 1), Line("S9", "L1", 1)])
    assert isinstance(unknown, Rejected) and "unknown" in unknown.reason
    assert (ledger.stock[("S1", "L1")].allocated, ledger.stock[("S1", "L1")].seq) == (0, 1)
    ok = ledger.reserve(
        "r3", "sales", [Line("S1", "L1", 5), Line("S2", "L1", 1), Line("S1", "L1", 3)]
    )
    assert isinstance(ok, Confirmed)
    assert [(c.sku, c.allocated_delta, c.seq, c.reason) for c in ok.changes] == [
        ("S1", 8, 2, "reservation:r3"), ("S2", 1, 2, "reservation:r3"),
    ]  # fmt: skip
    assert ok.reservation.erp_seqs == (2, 2)
    # free is on_hand - allocated - safety_stock: 10 - 8 - 2 = 0
    assert isinstance(ledger.reserve("r4", "sales", [Line("S1", "L1", 1)]), Rejected)


def test_ledger_replays_by_key_and_cancels_once() -> None:
    ledger = Ledger()
    ledger.set_stock("S1", "L1", 10)
    first = ledger.reserve("r1", "checkout", [Line("S1", "L1", 4)])
    again = ledger.reserve("r1", "checkout", [Line("S1", "L1", 4)])
    assert isinstance(first, Confirmed) and isinstance(again, Confirmed)
    assert again.replay and again.changes == () and again.reservation.erp_seqs == (2,)
    assert isinstance(ledger.reserve("r1", "checkout", [Line("S1", "L1", 5)]), Conflict)
    assert isinstance(ledger.reserve("r1", "sales", [Line("S1", "L1", 4)]), Conflict)
    assert ledger.reservations["r1"].allocations == 1
    assert ledger.stock[("S1", "L1")].allocated == 4
    cancelled = ledger.cancel("r1")
    assert cancelled is not None and [c.allocated_delta for c in cancelled[1]] == [-4]
    assert cancelled[1][0].reason == "cancel:r1" and cancelled[1][0].seq == 3
    twice = ledger.cancel("r1")
    assert twice is not None and twice[1] == ()
    assert ledger.stock[("S1", "L1")].allocated == 0 and ledger.stock[("S1", "L1")].seq == 3
    assert ledger.cancel("nope") is None
    after = ledger.reserve("r1", "checkout", [Line("S1", "L1", 4)])
    assert isinstance(after, Rejected) and "cancelled" in after.reason


def test_ledger_sells_only_unallocated_stock() -> None:
    ledger = Ledger()
    ledger.set_stock("S1", "L1", 5, allocated=3)
    sale = ledger.sale("S1", "L1", 4)
    assert sale is not None and sale.on_hand_delta == -2 and sale.seq == 2
    assert ledger.sale("S1", "L1", 1) is None
    receipt = ledger.receipt("S1", "L1", 12)
    assert (receipt.on_hand_delta, receipt.on_hand, receipt.seq) == (12, 15, 3)
    assert ledger.oversold() == []
    ledger.set_stock("S1", "L1", 1)  # an operator can oversell by hand; the ledger reports it
    assert ledger.oversold() == [("S1", "L1")]


def test_token_bucket_with_an_injected_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock)
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(0.1)
    clock.now += 0.05
    assert bucket.take() == pytest.approx(0.05)
    clock.now += 0.05
    assert bucket.take() == 0
    clock.now += 10  # a long idle spell never banks more than the burst
    assert bucket.take() == 0 and bucket.take() > 0
    burst = TokenBucket(rate=2, burst=3, clock=clock)
    assert [burst.take() == 0 for _ in range(4)] == [True, True, True, False]
    # 10 calls/s evenly spaced at exactly 1/rate all pass (no float-rounding refusals)
    even = TokenBucket(rate=10, burst=1, clock=clock)
    for _ in range(100):
        assert even.take() == 0
        clock.now += 0.1
    assert (retry_after(0.001), retry_after(1.0), retry_after(1.2)) == (1, 1, 2)


def test_latency_is_lognormal_fitted_to_median_and_p99() -> None:
    rng = random.Random(3)
    samples = sorted(Latency(20, 80).sample(rng) for _ in range(20_000))
    assert samples[10_000] * 1000 == pytest.approx(20, rel=0.05)
    assert samples[19_800] * 1000 == pytest.approx(80, rel=0.1)
    assert Latency(0, 0).sample(rng) == 0 and Latency(5, 5).sample(rng) == 0.005
    with pytest.raises(ValueError):
        Latency(50, 10)
    assert backoff(1, 0.1, 5, lambda: 0.0) == 0.05 and backoff(20, 0.1, 5, lambda: 1.0) == 5


def test_activity_sells_free_stock_on_skewed_keys() -> None:
    ledger = Ledger()
    for i in range(50):
        ledger.set_stock(f"S{i}", "L1", 20, allocated=5)
    activity = Activity(ledger, random.Random(1), sales_rate=2000, receipts_rate=200, skew=1.2)
    changes = [c for _ in range(10) for c in activity.step(0.1)]
    assert activity.counts.sales + activity.counts.skipped_sales == 2000
    assert activity.counts.receipts == 200
    assert all(s.on_hand >= s.allocated for s in ledger.stock.values())
    hits: dict[str, int] = defaultdict(int)
    for change in changes:
        hits[change.sku] += 1
    assert max(hits.values()) > 5 * (len(changes) / 50)  # a hot key, far above the mean


def test_config_from_cli_and_environment() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    env = {"ERPSIM_RATE": "12.5", "ERPSIM_PORT": "9001", "ERPSIM_HOST": "", "ERPSIM_SKEW": "2"}
    got = config.from_args(
        parser.parse_args(["--port", "9002", "--catalogue", "30", "x", "4"]), env
    )
    assert (got.rate, got.port, got.host, got.skus, got.locations, got.skew) == (
        12.5, 9002, "127.0.0.1", 30, 4, 2.0,
    )  # fmt: skip
    got = config.from_args(parser.parse_args(["--latency-ms", "50"]), {})
    assert (got.latency_ms, got.latency_p99_ms) == (50, 200)
    got = config.from_args(parser.parse_args(["--publish-url", "http://h:1/"]), {})
    assert got.events_url == "http://h:1/v1/events"
    for argv, env in [
        (["--rate", "fast"], {}),
        ([], {"ERPSIM_BURST": "0.5"}),
        (["--catalogue", "10x2", "--skus", "3"], {}),
        (["--latency-ms", "50", "--latency-p99-ms", "10"], {}),
        (["--publish-url", "ftp://x"], {}),
    ]:
        with pytest.raises(SimConfigError):
            config.from_args(parser.parse_args(argv), env)
    assert cli_main(["erp-sim", "--rate", "fast"]) == 2


def test_identifier_rule_is_the_services() -> None:
    assert schema.ID_RE.pattern == decode.ID_RE.pattern


def test_seed_files_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "stock.jsonl"
    jsonl.write_text(
        '# our test store\n{"sku": "A1", "location": "ST1", "on_hand": 4, "colour": "red"}\n\n'
        '{"sku": "A2", "location": "ST1", "on_hand": 9, "allocated": 1, "safety_stock": 2}\n'
    )
    items = catalogue.load(jsonl)
    assert [(i.sku, i.on_hand, i.allocated, i.safety_stock) for i in items] == [
        ("A1", 4, None, None), ("A2", 9, 1, 2),
    ]  # fmt: skip
    csv_file = tmp_path / "stock.csv"
    csv_file.write_text("sku,location,on_hand,safety_stock,name\nB1,DC1,7,1,Widget\nB2,DC1,0,,\n")
    assert [(i.sku, i.on_hand, i.safety_stock) for i in catalogue.load(csv_file)] == [
        ("B1", 7, 1), ("B2", 0, None),
    ]  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sku": "A1", "location": "ST1", "on_hand": 1}\n{"sku": "A 2"}\n')
    with pytest.raises(schema.BadBody, match=r"bad\.jsonl:2"):
        catalogue.load(bad)


# --- the ERP API in process -----------------------------------------------------------------


async def test_allocation_answers_erp_seq_of_the_published_event(make_sim: MakeSim) -> None:
    client = await make_sim(cfg(safety_stock=1))
    r = await reserve(client, "r1", (*A, 3), (*B, 2), (*A, 1))
    assert r.status == 200
    got = await r.json()
    assert got == {
        "status": "confirmed",
        "lines": [
            {"sku": A[0], "location": A[1], "qty": 4, "erp_seq": 2},
            {"sku": B[0], "location": B[1], "qty": 2, "erp_seq": 2},
        ],
    }
    r = await client.get(f"/inventory/{A[0]}/{A[1]}")
    assert await r.json() == {
        "sku": A[0], "location": A[1], "on_hand": 10, "allocated": 4, "safety_stock": 1, "seq": 2,
    }  # fmt: skip
    assert (await client.get("/inventory/SKU-000001/NOWHERE")).status == 404
    events = await all_events(client)
    assert [e["type"] for e in events] == ["snapshot"] * 4 + ["adjustment"] * 2
    allocation = next(e for e in events if e["sku"] == A[0] and e["seq"] == 2)
    assert allocation["allocated_delta"] == 4 and allocation["reason"] == "reservation:r1"
    assert allocation["on_hand_delta"] == 0 and allocation["occurred_at"].endswith("Z")
    assert len({e["event_id"] for e in events}) == len(events)
    assert_consecutive(events)
    assert replay(events) == ledger_state(client)


async def test_all_or_nothing_and_bad_requests(make_sim: MakeSim) -> None:
    client = await make_sim()
    r = await reserve(client, "r1", (*A, 5), (*B, 11))
    assert r.status == 409
    got = await r.json()
    assert got["status"] == "rejected" and "insufficient stock" in got["reason"]
    assert got["lines"] == [{"sku": B[0], "location": B[1], "requested": 11, "free": 10}]
    r = await reserve(client, "r2", (*A, 1), ("NOPE", "LOC-01", 1))
    assert r.status == 409 and "unknown" in (await r.json())["reason"]
    ledger = await (await client.get("/admin/ledger")).json()
    assert all(k["allocated"] == 0 and k["seq"] == 1 for k in ledger["keys"])
    assert ledger["reservations"]["r1"]["status"] == "rejected"
    r = await client.post("/reservations", json=body("r3", (*A, 1)))
    assert r.status == 400 and "Idempotency-Key" in (await r.json())["reason"]
    r = await client.post(
        "/reservations", json=body("r3", (*A, 1)), headers={"Idempotency-Key": "x"}
    )
    assert r.status == 400
    r = await client.post("/reservations", data=b"{", headers={"Idempotency-Key": "r3"})
    assert r.status == 400 and (await r.json())["status"] == "invalid"
    r = await reserve(client, "r1", (*A, 5), (*B, 11))  # a replay of a refusal is the same refusal
    assert r.status == 409


async def test_twenty_concurrent_identical_posts_allocate_once(make_sim: MakeSim) -> None:
    client = await make_sim(cfg(latency_ms=5, latency_p99_ms=20))
    answers = await asyncio.gather(*(reserve(client, "r1", (*A, 3)) for _ in range(20)))
    bodies = [await r.json() for r in answers]
    assert {r.status for r in answers} == {200}
    assert all(b == bodies[0] for b in bodies) and bodies[0]["lines"][0]["erp_seq"] == 2
    ledger = await (await client.get("/admin/ledger")).json()
    assert ledger["reservations"]["r1"]["allocations"] == 1
    assert ledger["reservations"]["r1"]["calls"] == 20
    assert (
        next(k for k in ledger["keys"] if k["sku"] == A[0] and k["location"] == A[1])["allocated"]
        == 3
    )
    assert len(await all_events(client)) == 5
    r = await reserve(client, "r1", (*A, 4))
    assert r.status == 422 and (await r.json())["status"] == "conflict"


async def test_delete_twice_deallocates_once(make_sim: MakeSim) -> None:
    client = await make_sim()
    assert (await reserve(client, "r1", (*A, 6))).status == 200
    for _ in range(2):
        r = await client.delete("/reservations/r1")
        assert r.status == 200 and (await r.json())["status"] == "cancelled"
    assert (await client.delete("/reservations/unknown")).status == 404
    stock = await (await client.get(f"/inventory/{A[0]}/{A[1]}")).json()
    assert (stock["allocated"], stock["seq"]) == (0, 3)
    events = [e for e in await all_events(client) if e["type"] == "adjustment"]
    assert [(e["allocated_delta"], e["reason"]) for e in events] == [
        (6, "reservation:r1"), (-6, "cancel:r1"),
    ]  # fmt: skip
    r = await reserve(client, "r1", (*A, 6))  # the key of a cancelled reservation allocates no more
    assert r.status == 409 and "cancelled" in (await r.json())["reason"]
    assert (await (await client.get("/admin/ledger")).json())["counts"]["allocated"] == 0


async def test_rate_limit_429_with_retry_after(make_sim: MakeSim) -> None:
    clock = FakeClock()
    client = await make_sim(cfg(rate=2, burst=1), clock=clock)
    assert (await client.get(f"/inventory/{A[0]}/{A[1]}")).status == 200
    for call in (
        client.get(f"/inventory/{A[0]}/{A[1]}"),
        reserve(client, "r1", (*A, 1)),
        client.delete("/reservations/r1"),
    ):
        r = await call
        assert r.status == 429 and r.headers["Retry-After"] == "1"
        assert await r.json() == {"status": "throttled"}
    clock.now += 0.5
    assert (await reserve(client, "r1", (*A, 1))).status == 200
    assert (await client.post("/admin/rate", json={"rate": 0.2})).status == 200
    r = await client.get(f"/inventory/{A[0]}/{A[1]}")
    assert r.status == 429 and r.headers["Retry-After"] == "5"
    calls = await (await client.get("/admin/calls")).json()
    assert [(c["method"], c["status"]) for c in calls] == [
        ("GET", 200), ("GET", 429), ("POST", 429), ("DELETE", 429), ("POST", 200), ("GET", 429),
    ]  # fmt: skip
    assert calls[2]["idempotency_key"] == "r1" and calls[0]["monotonic"] == 1000.0
    assert all(c["wall"] > 1.7e9 for c in calls)
    stats = await (await client.get("/admin/calls/stats")).json()
    assert stats["by_status"] == {"200": 2, "429": 4} and stats["max_accepted_in_window"] == 2
    assert (await (await client.post("/admin/reset-calls")).json()) == {"cleared": 6}
    assert await (await client.get("/admin/calls")).json() == []


async def test_a_token_is_required_of_every_erp_call_when_set(make_sim: MakeSim) -> None:
    client = await make_sim(cfg(token="erp-secret"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "erp-secret"}):
        for call in (
            client.get(f"/inventory/{A[0]}/{A[1]}", headers=headers),
            client.post("/reservations", json=body("r1", (*A, 1)),
                        headers={"Idempotency-Key": "r1", **headers}),
            client.delete("/reservations/r1", headers=headers),
        ):  # fmt: skip
            r = await call
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["status"] == "unauthorized"
    good = {"Authorization": "Bearer erp-secret"}
    r = await client.post("/reservations", json=body("r1", (*A, 1)),
                          headers={"Idempotency-Key": "r1", **good})  # fmt: skip
    assert r.status == 200
    assert (await client.get(f"/inventory/{A[0]}/{A[1]}", headers=good)).status == 200
    ledger = await (await client.get("/admin/ledger")).json()  # nothing refused took effect
    assert list(ledger["reservations"]) == ["r1"]
    stats = await (await client.get("/admin/calls/stats")).json()
    assert stats["by_status"] == {"401": 9, "200": 2}  # every call recorded and counted
    assert "erp-secret" not in repr(cfg(token="erp-secret"))


async def test_outage_error_rate_and_reject_all(make_sim: MakeSim) -> None:
    client = await make_sim()
    assert (await reserve(client, "before", (*A, 1))).status == 200
    r = await client.post("/admin/faults", json={"outage": True})
    assert (await r.json())["outage"] is True
    r = await reserve(client, "r1", (*A, 1))
    assert r.status == 503 and (await r.json())["reason"] == "simulated outage"
    assert (await client.get(f"/inventory/{A[0]}/{A[1]}")).status == 503
    await client.post("/admin/faults", json={"outage": False, "error_rate": 1.0})
    assert (await reserve(client, "r1", (*A, 1))).status == 503
    await client.post("/admin/faults", json={"error_rate": 0.5})
    statuses = [(await client.get(f"/inventory/{A[0]}/{A[1]}")).status for _ in range(60)]
    assert 10 < statuses.count(503) < 50 and set(statuses) == {200, 503}
    await client.post("/admin/faults", json={"error_rate": 0, "reject_all": True})
    r = await reserve(client, "r1", (*A, 1))
    assert r.status == 409 and await r.json() == {
        "status": "rejected", "reason": "simulated refusal", "lines": [],
    }  # fmt: skip
    assert (await reserve(client, "before", (*A, 1))).status == 200  # decided stays decided
    await client.delete("/admin/faults")
    assert (await reserve(client, "r1", (*A, 1))).status == 409  # a refusal is for good
    assert (await reserve(client, "r2", (*A, 1))).status == 200
    assert (await client.post("/admin/faults", json={"error_rate": 2})).status == 400
    assert (await client.post("/admin/faults", json={"hang": "yes"})).status == 400
    faults = await (await client.get("/admin/faults")).json()
    assert faults["error_rate"] == 0 and faults["reject_all"] is False
    ledger = await (await client.get("/admin/ledger")).json()
    assert ledger["counts"]["allocated"] == 2 and ledger["reservations"]["r1"]["calls"] == 4


async def test_hang_until_released_or_the_client_gives_up(make_sim: MakeSim) -> None:
    client = await make_sim()
    await client.post("/admin/faults", json={"hang": True})
    with pytest.raises(asyncio.TimeoutError):
        await reserve(client, "gone", (*A, 2), timeout=aiohttp.ClientTimeout(total=0.2))
    pending = asyncio.create_task(reserve(client, "r1", (*A, 1)))
    await asyncio.sleep(0.2)
    assert not pending.done()
    await client.post("/admin/faults", json={"hang": False})
    r = await asyncio.wait_for(pending, 5)
    assert r.status == 200
    calls = await (await client.get("/admin/calls")).json()
    gone = next(c for c in calls if c["idempotency_key"] == "gone")
    assert (gone["status"], gone["outcome"]) == (499, "abandoned")
    ledger = await (await client.get("/admin/ledger")).json()
    assert "gone" not in ledger["reservations"] and ledger["counts"]["allocated"] == 1

    # hang_after_apply: the call takes effect, its answer never comes; a retry learns the outcome
    await client.post("/admin/faults", json={"hang_after_apply": True})
    with pytest.raises(asyncio.TimeoutError):
        await reserve(client, "r2", (*A, 2), timeout=aiohttp.ClientTimeout(total=0.2))
    await client.post("/admin/faults", json={"hang_after_apply": False})
    r = await reserve(client, "r2", (*A, 2))
    assert r.status == 200 and (await r.json())["lines"][0]["erp_seq"] == 3
    calls = await (await client.get("/admin/calls")).json()
    assert [c["outcome"] for c in calls if c["idempotency_key"] == "r2"] == [
        "confirmed_reply_lost", "confirmed_replay",
    ]  # fmt: skip


async def test_no_oversell_under_200_competing_reservations(make_sim: MakeSim) -> None:
    client = await make_sim(cfg(skus=1, locations=1, on_hand=50, latency_ms=2, latency_p99_ms=10))
    answers = await asyncio.gather(*(reserve(client, f"r{i}", (*A, 1 + i % 2)) for i in range(200)))
    confirmed = [r for r in answers if r.status == 200]
    assert {r.status for r in answers} == {200, 409}
    ledger = await (await client.get("/admin/ledger")).json()
    assert ledger["oversold"] == []
    (key,) = ledger["keys"]
    allocated = sum(
        r["lines"][0]["qty"] for r in ledger["reservations"].values() if r["status"] == "allocated"
    )
    assert key["allocated"] == allocated and 49 <= allocated <= 50
    assert len(confirmed) == sum(
        r["status"] == "allocated" for r in ledger["reservations"].values()
    )
    assert max(r["allocations"] for r in ledger["reservations"].values()) == 1
    events = await all_events(client)
    assert_consecutive(events)
    assert replay(events) == ledger_state(client)


async def test_admin_stock_storm_and_events_replay_the_ledger(make_sim: MakeSim) -> None:
    client = await make_sim(cfg(skus=20, locations=3, on_hand=30))
    r = await client.post(
        "/admin/stock",
        json={"items": [{"sku": "NEW-1", "location": "DC9", "on_hand": 8, "safety_stock": 3},
                        {"sku": A[0], "location": A[1], "on_hand": 5}]},
    )  # fmt: skip
    got = await r.json()
    assert got["events"] == 2 and got["items"][1] == {
        "sku": A[0], "location": A[1], "on_hand": 5, "allocated": 0, "safety_stock": 0, "seq": 2,
    }  # fmt: skip
    assert (await client.post("/admin/stock", json={"items": [{"sku": "x"}]})).status == 400
    for i in range(10):
        await reserve(client, f"r{i}", (*A, 1), ("SKU-000003", "LOC-02", 2))
    storm = await client.post("/admin/storm", json={"sales_rate": 3000, "receipts_rate": 300})
    assert (await storm.json())["sales_rate"] == 3000
    await asyncio.sleep(0.3)
    await client.post("/admin/storm", json={"sales_rate": 0, "receipts_rate": 0})
    ledger = await (await client.get("/admin/ledger")).json()
    assert ledger["counts"]["sales"] > 100 and ledger["counts"]["receipts"] > 10
    assert ledger["oversold"] == []
    events = await all_events(client)
    reasons = {e.get("reason") for e in events}
    assert {"sale", "receipt", "reservation:r0"} <= reasons
    assert_consecutive(events)
    assert replay(events) == ledger_state(client)
    page = await (await client.get("/admin/events", params={"since": "5", "limit": "3"})).json()
    assert [e["event_id"] for e in page["events"]] == [e["event_id"] for e in events[5:8]]
    assert page["next"] == 8
    one = await (await client.get("/admin/events", params={"sku": "NEW-1"})).json()
    assert one["events"][0]["type"] == "snapshot"  # then the storm's sales and receipts
    assert {e["sku"] for e in one["events"]} == {"NEW-1"}


# --- the HTTP publisher ---------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TestServer, list[list[Event]], list[str]]]:
    """A stand-in for the service's POST /v1/events: down for its first two calls."""
    batches: list[list[Event]] = []
    auths: list[str] = []

    async def events(request: web.Request) -> web.Response:
        auths.append(request.headers.get("Authorization", ""))
        if len(auths) <= 2:
            return web.json_response({"title": "down"}, status=503)
        got = (await request.json())["events"]
        batches.append(got)
        return web.json_response(
            {"applied": len(got), "duplicates": 0, "buffered": 0, "rejected": []}
        )

    app = web.Application()
    app.router.add_post("/v1/events", events)
    server = TestServer(app)
    await server.start_server()
    yield server, batches, auths
    await server.close()


async def test_http_publisher_delivers_every_event_in_order(
    receiver: tuple[TestServer, list[list[Event]], list[str]], make_sim: MakeSim
) -> None:
    server, batches, auths = receiver
    url = str(server.make_url("/")).rstrip("/")
    client = await make_sim(cfg(skus=400, locations=3, publish_url=url, publish_key="k-events"))
    for i in range(30):
        await reserve(client, f"r{i}", (f"SKU-{i + 1:06d}", "LOC-01", 2))
    await client.delete("/reservations/r3")
    sim = client.server.app[SIM]

    def delivered() -> int:
        return sum(len(b) for b in batches)

    for _ in range(500):
        if delivered() >= sim.events.next:
            break
        await asyncio.sleep(0.01)
    published = await all_events(client)
    assert [e for b in batches for e in b] == published  # all of them, once, in order
    assert len(published) == 1200 + 31 and max(len(b) for b in batches) <= 500
    assert set(auths) == {"Bearer k-events"} and len(auths) >= 5
    status = await (await client.get("/admin/status")).json()
    (sink,) = status["sinks"]
    assert sink["delivered"] == len(published) and sink["failures"] == 2 and sink["queued"] == 0


# --- a real process -------------------------------------------------------------------------


def test_erp_sim_command_runs_as_a_process(tmp_path: Path) -> None:
    port = free_port()
    script = Path(sys.executable).with_name("atp-service")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "atp_service.cli"]
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"sku": "OWN-1", "location": "STORE-7", "on_hand": 12, "safety_stock": 2}\n')
    env = {
        **os.environ,
        "ERPSIM_ON_HAND": "7",
        "ERPSIM_LATENCY_MS": "1",
        "ERPSIM_RATE": "500",
        "ERPSIM_BURST": "20",
    }
    log = tmp_path / "erpsim.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "erp-sim", "--port", str(port), "--catalogue", "3x2", "--seed-file",
             str(seed)], env=env, stdout=out, stderr=out,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def call(method: str, path: str, payload: object = None, key: str | None = None) -> Any:
        data = None if payload is None else orjson.dumps(payload)
        request = urllib.request.Request(base + path, data=data, method=method)
        if key:
            request.add_header("Idempotency-Key", key)
        with urllib.request.urlopen(request, timeout=5) as r:
            return orjson.loads(r.read())

    try:
        wait_until(lambda: proc.poll() is None and call("GET", "/healthz")["status"] == "ok", 15)
        assert call("GET", "/inventory/SKU-000003/LOC-02")["on_hand"] == 7
        assert call("GET", "/inventory/OWN-1/STORE-7")["safety_stock"] == 2
        got = call("POST", "/reservations", body("p1", ("OWN-1", "STORE-7", 10)), key="p1")
        assert got["lines"][0]["erp_seq"] == 2
        counts = call("GET", "/admin/ledger?keys=0")["counts"]
        assert (counts["keys"], counts["events"], counts["allocated"]) == (7, 8, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(10)
    assert returncode == 0, log.read_text()
    assert "erp-sim listening" in log.read_text()
