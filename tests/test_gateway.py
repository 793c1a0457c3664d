"""Issue 4 with real processes: service replicas on a real Redis, the ERP simulator on
loopback. Invariants 1 (no oversell, at the ERP too), 2 (nothing accepted lost, exactly once
at the ERP through outages and kill -9) and 5 (the ERP never sees more than ATP_ERP_RATE)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis

from .procs import ADMIN, ErpSimProc, RedisProc, ServiceProc
from .test_replicas import reserve

SKUS = [f"SKU-{i:06d}" for i in range(1, 11)]


async def admin(http: aiohttp.ClientSession, erp: ErpSimProc, method: str, path: str,
                body: Any = None) -> Any:  # fmt: skip
    async with http.request(method, erp.url + path, json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def start_stack(
    http: aiohttp.ClientSession, sims: list[ErpSimProc], services: Any, tmp_path: Path,
    replicas: int, rate: float, erp_rate: float = 1000, on_hand: int = 1000,
    erp_args: tuple[str, ...] = (), **env: str,
) -> tuple[ErpSimProc, list[ServiceProc]]:  # fmt: skip
    """Replicas pointed at the ERP simulator, which publishes its events to replica 0."""
    erp = ErpSimProc([], log=tmp_path / f"erp-{len(sims)}.log")
    svc_env = {"ATP_ERP_URL": erp.url, "ATP_ERP_RATE": str(rate), "ATP_ERP_TIMEOUT": "2", **env}
    svcs = [services(**svc_env) for _ in range(replicas)]
    erp.args = ["--rate", str(erp_rate), "--burst", "1", "--latency-ms", "5",
                "--latency-p99-ms", "20", "--publish-url", svcs[0].url,
                "--publish-key", "test-admin", *erp_args]  # fmt: skip
    sims.append(erp.start())
    stock = [{"sku": s, "location": "DC1", "on_hand": on_hand} for s in SKUS]
    await admin(http, erp, "POST", "/admin/stock", {"items": stock})
    for svc in svcs:  # every replica sees the snapshots (published to replica 0)
        await wait_for(lambda svc=svc: lookup_ok(http, svc, SKUS[-1]), 20)
    return erp, svcs


async def lookup_ok(http: aiohttp.ClientSession, svc: ServiceProc, sku: str) -> bool:
    async with http.get(f"{svc.url}/v1/availability/{sku}", headers=ADMIN) as r:
        return r.status == 200


async def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s"
        await asyncio.sleep(interval)


async def statuses(http: aiohttp.ClientSession, svc: ServiceProc, ids: list[str]) -> dict[str, str]:
    async def one(rid: str) -> tuple[str, str]:
        async with http.get(f"{svc.url}/v1/reservations/{rid}", headers=ADMIN) as r:
            return rid, (await r.json())["status"]

    return dict(await asyncio.gather(*(one(rid) for rid in ids)))


async def all_status(http: aiohttp.ClientSession, svc: ServiceProc, ids: list[str],
                     wanted: str) -> bool:  # fmt: skip
    return set((await statuses(http, svc, ids)).values()) == {wanted}


def line(i: int, qty: int = 1) -> list[dict[str, Any]]:
    return [{"sku": SKUS[i % len(SKUS)], "location": "DC1", "qty": qty}]


async def assert_erp_consistent(http: aiohttp.ClientSession, erp: ErpSimProc,
                                ids: list[str]) -> dict[str, Any]:  # fmt: skip
    ledger = await admin(http, erp, "GET", "/admin/ledger")
    assert ledger["oversold"] == []
    for rid in ids:
        assert ledger["reservations"][rid]["allocations"] == 1, rid
    return ledger  # type: ignore[no-any-return]


async def test_three_replicas_never_exceed_the_erp_rate(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, svcs = await start_stack(http, erp_sims, services, tmp_path, replicas=3, rate=20)
    ids = [f"b{i}" for i in range(200)]
    results = await asyncio.gather(
        *(reserve(http, svcs[i % 3], rid, line(i)) for i, rid in enumerate(ids))
    )
    assert {s for s, _ in results} == {201}
    assert {b["status"] for _, b in results} == {"held"}  # promised now, confirmed later
    started = time.monotonic()
    await wait_for(lambda: all_status(http, svcs[1], ids, "confirmed"), 40, 0.5)
    took = time.monotonic() - started
    stats = await admin(http, erp, "GET", "/admin/calls/stats?window=1")
    assert stats["max_in_window"] <= 20, stats
    assert took >= 200 / 20 * 0.8  # paced, not bursted
    await assert_erp_consistent(http, erp, ids)

    # Settlement: once the ERP's allocation events are applied, nothing is pending any more
    # and the ATP is what the ERP says (counted once, not twice).
    seen: list[Any] = []

    async def settled() -> bool:
        async with http.get(f"{svcs[2].url}/v1/availability/{SKUS[0]}", headers=ADMIN) as r:
            loc = (await r.json())["locations"][0]
        seen.append(loc)
        return bool(loc["pending"] == 0 and loc["allocated"] == 20 and loc["atp"] == 980)

    try:
        await wait_for(settled, 20)
    except AssertionError:
        raise AssertionError(f"not settled: {seen[-1]}") from None


async def erp_calls(http: aiohttp.ClientSession, erp: ErpSimProc) -> list[dict[str, Any]]:
    calls = await admin(http, erp, "GET", "/admin/calls")
    return calls if isinstance(calls, list) else calls["calls"]  # type: ignore[no-any-return]


async def test_checkout_overtakes_a_waiting_sales_backlog(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=5)
    sales = [f"s{i}" for i in range(30)]
    for rid in sales:
        status, _ = await reserve(http, svc, rid, line(0), priority="sales")
        assert status == 201
    await asyncio.sleep(1.0)  # a few sales have gone; most wait (5 calls/s)
    checkout = [f"c{i}" for i in range(8)]
    results = await asyncio.gather(*(reserve(http, svc, rid, line(1)) for rid in checkout))
    assert {s for s, _ in results} == {201}
    await wait_for(lambda: all_status(http, svc, sales + checkout, "confirmed"), 30, 0.5)
    order = [c["idempotency_key"] for c in await erp_calls(http, erp) if c["method"] == "POST"]
    first_c, last_c = order.index("c0"), max(order.index(c) for c in checkout)
    between = [rid for rid in order[first_c:last_c] if rid.startswith("s")]
    assert len(between) <= 1, order  # at most one sales call already claimed when they came
    assert any(rid.startswith("s") for rid in order[last_c:])  # sales really were waiting
    await assert_erp_consistent(http, erp, sales + checkout)


async def test_erp_outage_then_kill9_of_every_replica_loses_nothing(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, svcs = await start_stack(http, erp_sims, services, tmp_path, replicas=2, rate=20)
    await admin(http, erp, "POST", "/admin/faults", {"outage": True})
    outage_started = time.monotonic()
    ids = [f"o{i}" for i in range(50)]
    results = await asyncio.gather(
        *(reserve(http, svcs[i % 2], rid, line(i, qty=3)) for i, rid in enumerate(ids))
    )
    assert {s for s, _ in results} == {201}  # held at once, ERP or not
    await asyncio.sleep(10)
    async with http.get(svcs[0].url + "/readyz") as r:
        assert r.status == 200  # an ERP outage does not make the service unready
    assert set((await statuses(http, svcs[0], ids)).values()) == {"held"}
    for svc in svcs:
        svc.kill9()
    again = [services(**svc.env) for svc in svcs]
    await asyncio.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))  # 30 s of outage
    await admin(http, erp, "DELETE", "/admin/faults")
    await wait_for(lambda: all_status(http, again[1], ids, "confirmed"), 40, 0.5)
    ledger = await assert_erp_consistent(http, erp, ids)  # each allocated exactly once
    allocated = {k["sku"]: k["allocated"] for k in ledger["keys"]}
    assert sum(allocated.values()) == 50 * 3
    stats = await admin(http, erp, "GET", "/admin/calls/stats?window=1")
    assert stats["max_in_window"] <= 20


async def test_erp_rejection_returns_the_stock(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc], redis_proc: RedisProc
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    on_hand=10)  # fmt: skip
    await admin(http, erp, "POST", "/admin/faults", {"reject_all": True})
    status, body = await reserve(http, svc, "x1", line(0, qty=4))
    assert status == 201 and body["status"] == "held"

    async def atp() -> int:
        async with http.get(f"{svc.url}/v1/availability/{SKUS[0]}", headers=ADMIN) as r:
            return int((await r.json())["total_atp"])

    assert await atp() == 6
    await wait_for(lambda: all_status(http, svc, ["x1"], "rejected"), 10)
    async with http.get(f"{svc.url}/v1/reservations/x1", headers=ADMIN) as r:
        assert (await r.json())["reason"] == "simulated refusal"
    assert await atp() == 10
    async with http.post(f"{svc.url}/v1/reservations/x1/commit", headers=ADMIN) as r:
        assert r.status == 409
    async with http.delete(f"{svc.url}/v1/reservations/x1", headers=ADMIN) as r:
        assert (await r.json())["status"] == "rejected"
    async with redis.from_url(redis_proc.url) as client:  # finished: kept for the retention
        assert await _ttl_set(client, "atp:res:x1")
    await assert_erp_consistent(http, erp, [])


async def test_a_refused_erp_token_holds_reservations_until_the_right_one_confirms_them(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    """The ERP rotated its token: its 401s must not reject the reservations taken meanwhile
    (nor return their stock); restarted with the new ATP_ERP_TOKEN, the service confirms
    each exactly once."""
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    on_hand=10, erp_args=("--token", "new-token"),
                                    ATP_ERP_TOKEN="old-token")  # fmt: skip
    ids = [f"t{i}" for i in range(4)]
    for rid in ids:
        status, body = await reserve(http, svc, rid, line(0, qty=2))
        assert status == 201 and body["status"] == "held", body
    await wait_for(lambda: _answered(http, erp, "401", 5), 20)  # 5 failures open the breaker
    assert set((await statuses(http, svc, ids)).values()) == {"held"}
    async with http.get(f"{svc.url}/v1/availability/{SKUS[0]}", headers=ADMIN) as r:
        assert (await r.json())["total_atp"] == 10 - 8  # the stock stays held
    async with http.get(f"{svc.url}/v1/status", headers=ADMIN) as r:
        assert (await r.json())["erp"]["breaker"] != "closed"  # 401s count as failures
    svc.stop()
    fixed = services(**{**svc.env, "ATP_ERP_TOKEN": "new-token"})
    await wait_for(lambda: all_status(http, fixed, ids, "confirmed"), 40, 0.5)
    ledger = await assert_erp_consistent(http, erp, ids)  # each allocated exactly once
    assert {k["sku"]: k["allocated"] for k in ledger["keys"]}[SKUS[0]] == 8


async def _answered(http: aiohttp.ClientSession, erp: ErpSimProc, status: str, n: int) -> bool:
    stats = await admin(http, erp, "GET", "/admin/calls/stats")
    return int(stats["by_status"].get(status, 0)) >= n


async def _ttl_set(client: Any, record: str) -> bool:
    ttl = await client.pttl(record)
    return bool(0 < ttl <= 7 * 86400 * 1000)


async def test_releasing_a_confirmed_reservation_cancels_it_at_the_erp(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc], redis_proc: RedisProc
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    on_hand=10)  # fmt: skip
    status, _ = await reserve(http, svc, "d1", line(0, qty=4))
    assert status == 201
    await wait_for(lambda: all_status(http, svc, ["d1"], "confirmed"), 10)
    record = "atp:res:d1"
    async with redis.from_url(redis_proc.url) as client:
        assert await client.pttl(record) == -1  # confirmed: kept
        await admin(http, erp, "POST", "/admin/faults", {"outage": True})
        async with http.delete(f"{svc.url}/v1/reservations/d1", headers=ADMIN) as r:
            assert (await r.json())["status"] == "released"
        await asyncio.sleep(0.5)
        assert await client.pttl(record) == -1  # released, but its ERP cancel is still due
        await admin(http, erp, "DELETE", "/admin/faults")

    async def cancelled() -> bool:
        ledger = await admin(http, erp, "GET", f"/admin/ledger?sku={SKUS[0]}")
        return bool(ledger["reservations"]["d1"]["status"] == "cancelled")

    await wait_for(cancelled, 15)
    async with redis.from_url(redis_proc.url) as client:  # cancel answered: retention starts
        await wait_for(lambda: _ttl_set(client, record), 5)

    async def back_to_ten() -> bool:  # the ERP's cancel event is applied: all stock is back
        async with http.get(f"{svc.url}/v1/availability/{SKUS[0]}", headers=ADMIN) as r:
            loc = (await r.json())["locations"][0]
        return bool(loc["atp"] == 10 and loc["allocated"] == 0 and loc["pending"] == 0)

    await wait_for(back_to_ten, 10)
    await assert_erp_consistent(http, erp, ["d1"])


async def test_overload_refuses_background_then_sales_and_keeps_checkout(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    budgets = {"ATP_ERP_BUDGETS": "checkout=60,sales=8,background=3"}
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=10,
                                    erp_rate=10, on_hand=10**6, **budgets)  # fmt: skip
    prios = ("checkout", "sales", "background")
    outcomes: dict[str, list[tuple[float, int, dict[str, Any]]]] = {p: [] for p in prios}
    retry_after: list[int] = []
    lookup_times: list[float] = []

    async def offer(i: int, started: float) -> None:
        prio = prios[i % 3]
        body = {"reservation_id": f"{prio[0]}{i}", "priority": prio, "lines": line(i)}
        async with http.post(svc.url + "/v1/reservations", json=body, headers=ADMIN) as r:
            outcomes[prio].append((time.monotonic() - started, r.status, await r.json()))
            if r.status == 429:
                retry_after.append(int(r.headers["Retry-After"]))

    async def lookups(until: float) -> None:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            async with http.get(f"{svc.url}/v1/availability/{SKUS[3]}", headers=ADMIN) as r:
                assert r.status == 200
            lookup_times.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)

    started = time.monotonic()
    watcher = asyncio.create_task(lookups(started + 20))
    tasks = []
    for i in range(2000):  # 100 reservations/s for 20 s: 10x the ERP rate
        tasks.append(asyncio.create_task(offer(i, started)))
        await asyncio.sleep(max(0.0, started + (i + 1) / 100 - time.monotonic()))
    await asyncio.gather(*tasks, watcher)

    def first_refusal(prio: str) -> float:
        return min((t for t, s, _ in outcomes[prio] if s == 429), default=float("inf"))

    assert {s for _, s, _ in outcomes["checkout"]} == {201}  # checkout keeps being accepted
    assert first_refusal("background") < first_refusal("sales") < float("inf")
    for prio in ("sales", "background"):
        refused = [b for _, s, b in outcomes[prio] if s == 429]
        assert refused and all(b["type"].endswith("/throttled") for b in refused)
        assert {s for _, s, _ in outcomes[prio]} <= {201, 429}
    assert retry_after and min(retry_after) >= 1
    assert sorted(lookup_times)[int(len(lookup_times) * 0.99)] < 0.05  # lookups stay fast
    accepted = [b["reservation_id"] for p in prios for _, s, b in outcomes[p] if s == 201]
    assert len(accepted) > 600
    # Nothing accepted is lost: restart with a faster ERP and drain everything.
    svc.stop()
    await admin(http, erp, "POST", "/admin/rate", {"rate": 1000, "burst": 1})
    fast = services(**{**svc.env, "ATP_ERP_RATE": "400"})
    await wait_for(lambda: all_status(http, fast, accepted, "confirmed"), 60, 1.0)
    await assert_erp_consistent(http, erp, accepted)
