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
from ..test_gateway import (
    SKUS,
    admin,
    all_status,
    assert_erp_consistent,
    line,
    lookup_ok,
    start_stack,
    wait_for,
)
from ..test_replicas import reserve


async def breaker_state(http: aiohttp.ClientSession, svc: ServiceProc) -> int:
    async with http.get(svc.url + "/metrics") as r:
        text = await r.text()
    match = re.search(r"^atp_erp_breaker_state (\S+)$", text, re.M)
    assert match, "breaker gauge missing"
    return int(float(match.group(1)))


async def test_calls_that_time_out_after_taking_effect_allocate_once(
    services,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    erp_sims: list[ErpSimProc],
    fault_report,
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("ERP applies each call, then hangs before answering (timeout 0.5 s)")
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    ATP_ERP_TIMEOUT="0.5")  # fmt: skip
    await admin(http, erp, "POST", "/admin/faults", {"hang_after_apply": True})
    rec.mark("start")
    ids = [f"p{i}" for i in range(4)]  # fewer than the breaker's threshold
    for i, rid in enumerate(ids):
        async with rec.timed("reserve"):
            assert (await reserve(http, svc, rid, line(i)))[0] == 201
    await asyncio.sleep(1.0)  # applied at the ERP, answers lost: the service retries
    await admin(http, erp, "DELETE", "/admin/faults")
    rec.mark("end")
    await wait_for(lambda: all_status(http, svc, ids, "confirmed"), 20, 0.25)
    rec.mark("recovered")
    ledger = await assert_erp_consistent(http, erp, ids)  # replays with the same key
    calls = [ledger["reservations"][rid]["calls"] for rid in ids]
    assert all(c >= 2 for c in calls)
    rec.count(accepted=len(ids), erp_calls=sum(calls), erp_allocations=len(ids), lost=0)
    rec.note(
        "recovered = every reservation confirmed; each was called >= 2 times at the ERP "
        "(the same Idempotency-Key) and allocated once"
    )


async def test_erp_hang_opens_the_breaker_then_recovers(
    services,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    erp_sims: list[ErpSimProc],
    fault_report,
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("ERP hangs (no answers; timeout 0.5 s): breaker opens, half-open probe, "
                       "recovery")  # fmt: skip
    erp, (svc,) = await start_stack(http, erp_sims, services, tmp_path, replicas=1, rate=50,
                                    ATP_ERP_TIMEOUT="0.5")  # fmt: skip
    for _ in range(50):
        async with rec.timed("lookup"):
            assert await lookup_ok(http, svc, SKUS[0])
    await admin(http, erp, "POST", "/admin/faults", {"hang": True})
    rec.mark("start")
    ids = [f"h{i}" for i in range(12)]
    for i, rid in enumerate(ids):
        async with rec.timed("reserve"):
            assert (await reserve(http, svc, rid, line(i)))[0] == 201
    await wait_for(lambda: _is(http, svc, 2), 20)  # open after consecutive timeouts
    rec.note(f"breaker open {time.monotonic() - rec.marks['start']:.2f} s after the ERP hung")
    for _ in range(50):
        async with rec.timed("lookup"):
            assert await lookup_ok(http, svc, SKUS[0])
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
    rec.mark("end")
    await wait_for(lambda: all_status(http, svc, ids, "confirmed"), 40, 0.5)
    rec.mark("recovered")
    await wait_for(lambda: _is(http, svc, 0), 10)  # a probe succeeded: closed again
    for _ in range(50):
        async with rec.timed("lookup"):
            assert await lookup_ok(http, svc, SKUS[0])
    ledger = await assert_erp_consistent(http, erp, ids)
    rec.count(accepted=len(ids), calls_while_open=len(probes),
              erp_allocations=sum(ledger["reservations"][r]["allocations"] for r in ids),
              lost=0)  # fmt: skip
    rec.note("recovered = every reservation confirmed after the ERP answered again")


async def _is(http: aiohttp.ClientSession, svc: ServiceProc, state: int) -> bool:
    return await breaker_state(http, svc) == state


async def _calls(http: aiohttp.ClientSession, erp: ErpSimProc) -> list[object]:
    calls = await admin(http, erp, "GET", "/admin/calls")
    return calls if isinstance(calls, list) else calls["calls"]  # type: ignore[no-any-return]
