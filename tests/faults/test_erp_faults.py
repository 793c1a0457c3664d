"""The ERP hangs: calls time out, the circuit breaker opens (no calls while open), a single
half-open probe follows, and when the ERP recovers every reservation is confirmed, each
allocated exactly once, including calls that timed out after the ERP had applied them."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp

from ..procs import ErpSimProc, ServiceProc
from ..test_gateway import admin, all_status, assert_erp_consistent, line, start_stack, wait_for
from ..test_replicas import reserve


async def breaker_state(http: aiohttp.ClientSession, svc: ServiceProc) -> int:
    async with http.get(svc.url + "/metrics") as r:
        text = await r.text()
    match = re.search(r"^atp_erp_breaker_state (\S+)$", text, re.M)
    assert match, "breaker gauge missing"
    return int(float(match.group(1)))


async def test_calls_that_time_out_after_taking_effect_allocate_once(
    services, http: aiohttp.ClientSession, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    ATP_ERP_TIMEOUT="0.5")  # fmt: skip
    await admin(http, erp, "POST", "/admin/faults", {"hang_after_apply": True})
    ids = [f"p{i}" for i in range(4)]  # fewer than the breaker's threshold
    for i, rid in enumerate(ids):
        assert (await reserve(http, svc, rid, line(i)))[0] == 201
    await asyncio.sleep(1.0)  # applied at the ERP, answers lost: the service retries
    await admin(http, erp, "DELETE", "/admin/faults")
    await wait_for(lambda: all_status(http, svc, ids, "confirmed"), 20, 0.25)
    ledger = await assert_erp_consistent(http, erp, ids)  # replays with the same key
    assert all(ledger["reservations"][rid]["calls"] >= 2 for rid in ids)


async def test_erp_hang_opens_the_breaker_then_recovers(
    services, http: aiohttp.ClientSession, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    ATP_ERP_TIMEOUT="0.5")  # fmt: skip
    await admin(http, erp, "POST", "/admin/faults", {"hang": True})
    ids = [f"h{i}" for i in range(12)]
    for i, rid in enumerate(ids):
        assert (await reserve(http, svc, rid, line(i)))[0] == 201
    await wait_for(lambda: _is(http, svc, 2), 20)  # open after consecutive timeouts
    await admin(http, erp, "POST", "/admin/reset-calls")
    await asyncio.sleep(1.5)
    probes = await _calls(http, erp)
    assert len(probes) <= 1, probes  # open: nothing, or the single half-open probe
    t0 = time.perf_counter()
    async with http.get(svc.url + "/v1/availability/SKU-000001",
                        headers={"Authorization": "Bearer test-admin"}) as r:  # fmt: skip
        assert r.status == 200
    assert time.perf_counter() - t0 < 0.1  # lookups unaffected
    async with http.get(svc.url + "/readyz") as r:
        assert r.status == 200  # an ERP outage is not the service's unreadiness
    await admin(http, erp, "DELETE", "/admin/faults")  # the ERP recovers
    await wait_for(lambda: all_status(http, svc, ids, "confirmed"), 40, 0.5)
    await wait_for(lambda: _is(http, svc, 0), 10)  # a probe succeeded: closed again
    await assert_erp_consistent(http, erp, ids)


async def _is(http: aiohttp.ClientSession, svc: ServiceProc, state: int) -> bool:
    return await breaker_state(http, svc) == state


async def _calls(http: aiohttp.ClientSession, erp: ErpSimProc) -> list[object]:
    calls = await admin(http, erp, "GET", "/admin/calls")
    return calls if isinstance(calls, list) else calls["calls"]  # type: ignore[no-any-return]
