"""Issue 4 with real processes: service replicas on a real Redis, the ERP simulator on
loopback. Invariants 1 (no oversell, at the ERP too), 2 (nothing accepted lost, exactly once
at the ERP through outages and kill -9) and 5 (the ERP never sees more than ATP_ERP_RATE)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .procs import ADMIN, ErpSimProc, ServiceProc
from .test_replicas import reserve

SKUS = [f"SKU-{i:06d}" for i in range(1, 11)]


@pytest.fixture
def erp_sims() -> Iterator[list[ErpSimProc]]:
    started: list[ErpSimProc] = []
    yield started
    for sim in started:
        sim.stop()


async def admin(http: aiohttp.ClientSession, erp: ErpSimProc, method: str, path: str,
                body: Any = None) -> Any:  # fmt: skip
    async with http.request(method, erp.url + path, json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def start_stack(
    http: aiohttp.ClientSession, sims: list[ErpSimProc], services: Any, tmp_path: Path,
    replicas: int, rate: float, erp_rate: float = 1000, on_hand: int = 1000, **env: str,
) -> tuple[ErpSimProc, list[ServiceProc]]:  # fmt: skip
    """Replicas pointed at the ERP simulator, which publishes its events to replica 0."""
    erp = ErpSimProc([], log=tmp_path / f"erp-{len(sims)}.log")
    svc_env = {"ATP_ERP_URL": erp.url, "ATP_ERP_RATE": str(rate), "ATP_ERP_TIMEOUT": "2", **env}
    svcs = [services(**svc_env) for _ in range(replicas)]
    erp.args = ["--rate", str(erp_rate), "--burst", "1", "--latency-ms", "5",
                "--latency-p99-ms", "20", "--publish-url", svcs[0].url,
                "--publish-key", "test-admin"]  # fmt: skip
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
