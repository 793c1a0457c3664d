"""Issue 6: a request's id and W3C trace reach the ERP. Unit tests of :mod:`atp_service.trace`,
then end to end with real processes: the ERP simulator records the ``X-Request-ID`` and
``traceparent`` of every call, and the access log names the same trace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from atp_service.trace import Context, parse_traceparent, trace_id

from .procs import ADMIN, ErpSimProc, ServiceProc, adjustment
from .test_gateway import SKUS, all_status, erp_calls, line, start_stack, wait_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
TP_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.mark.parametrize(
    "value, parsed",
    [
        (TRACEPARENT, (TRACE, PARENT, "01")),
        (f" 00-{TRACE}-{PARENT}-00 ", (TRACE, PARENT, "00")),  # OWS around the value
        (f"00-{TRACE}-{PARENT}-09", (TRACE, PARENT, "09")),  # unknown flags are kept
        (f"01-{TRACE}-{PARENT}-01-future", (TRACE, PARENT, "01")),  # a later version: prefix
        (f"01-{TRACE}-{PARENT}-01", (TRACE, PARENT, "01")),
        (f"ff-{TRACE}-{PARENT}-01", None),  # version ff is invalid
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 is exactly 55 characters
        (f"01-{TRACE}-{PARENT}-01x", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (TRACEPARENT.upper(), None),  # lowercase hex only
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        (f"0-{TRACE}-{PARENT}-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_traceparent_is_validated(value: str | None, parsed: tuple[str, str, str] | None) -> None:
    assert parse_traceparent(value) == parsed
    assert trace_id(value) == (parsed[0] if parsed else None)


def test_a_callers_trace_is_kept_and_each_outgoing_call_gets_a_new_parent() -> None:
    ctx = Context.of("abc", f"01-{TRACE}-{PARENT}-01-future")
    assert ctx == Context("abc", TRACEPARENT)  # normalised to version 00
    assert ctx.trace_id == TRACE
    calls = [ctx.outgoing() for _ in range(100)]
    assert {c["X-Request-ID"] for c in calls} == {"abc"}
    parsed = [TP_RE.fullmatch(c["traceparent"]) for c in calls]
    assert all(m and m[1] == TRACE and m[3] == "01" for m in parsed)
    spans = {m[2] for m in parsed if m}
    assert len(spans) == 100 and PARENT not in spans


def test_without_a_valid_traceparent_a_trace_is_started() -> None:
    contexts = [Context.of("r", bad) for bad in (None, "garbage", f"00-{'0' * 32}-{PARENT}-01")]
    for ctx in contexts:
        m = TP_RE.fullmatch(ctx.traceparent)
        assert m and m[1] != "0" * 32 and m[3] == "01"  # sampled: ask the ERP to record it
    assert len({c.trace_id for c in contexts}) == 3


def test_a_stored_context_is_read_back_or_replaced() -> None:
    assert Context.stored(b"abc", TRACEPARENT.encode()) == Context("abc", TRACEPARENT)
    old = Context.stored(None, None)  # saved before tracing existed
    assert re.fullmatch(r"[0-9a-f]{16}", old.request_id) and TP_RE.fullmatch(old.traceparent)
    assert Context.stored(b"bad id", None).request_id != "bad id"
    one, two = Context.background(), Context.background()
    assert one.request_id != two.request_id and one.trace_id != two.trace_id


async def create(
    http: aiohttp.ClientSession, svc: ServiceProc, rid: str, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    body = {"reservation_id": rid, "priority": "checkout", "lines": line(0)}
    async with http.post(svc.url + "/v1/reservations", json=body, headers=ADMIN | headers) as r:
        assert r.status == 201, await r.text()
        return r


def calls_for(calls: list[dict[str, Any]], method: str, rid: str) -> list[dict[str, Any]]:
    return [c for c in calls if c["method"] == method and c["reservation_id"] == rid]


def access_lines(svc: ServiceProc) -> list[dict[str, Any]]:
    assert svc.log is not None
    text = svc.log.read_text()
    return [orjson.loads(x) for x in text.splitlines() if '"atp.access"' in x]


async def test_request_id_and_trace_reach_the_erp_end_to_end(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(
        http, erp_sims, services, tmp_path, replicas=1, rate=50, ATP_ACCESS_LOG="1"
    )
    # The caller's id and trace.
    r = await create(http, svc, "t-1", {"X-Request-ID": "abc", "traceparent": TRACEPARENT})
    assert r.headers["X-Request-ID"] == "abc"
    # No id, no trace: both are made here, and still reach the ERP.
    r = await create(http, svc, "t-2", {"traceparent": "00-not-a-trace"})
    made_rid = r.headers["X-Request-ID"]
    # A replay under another request id is the same reservation: the first trace stays.
    body = {"reservation_id": "t-1", "priority": "checkout", "lines": line(0)}
    replay = {"X-Request-ID": "again", "traceparent": f"00-{'1' * 32}-{PARENT}-01"}
    async with http.post(svc.url + "/v1/reservations", json=body, headers=ADMIN | replay) as r:
        assert r.status == 200
    await wait_for(lambda: all_status(http, svc, ["t-1", "t-2"], "confirmed"), 20)

    calls = await erp_calls(http, erp)
    (first,) = calls_for(calls, "POST", "t-1")
    assert first["request_id"] == "abc"
    m = TP_RE.fullmatch(first["traceparent"])
    assert m and m[1] == TRACE and m[2] != PARENT and m[3] == "01", first
    (second,) = calls_for(calls, "POST", "t-2")
    assert second["request_id"] == made_rid
    m2 = TP_RE.fullmatch(second["traceparent"])
    assert m2 and m2[1] != TRACE, second

    # The access log line of each create names the trace the ERP saw.
    logged = {x["request_id"]: x for x in access_lines(svc) if x["route"] == "reservations.create"}
    assert logged["abc"]["trace_id"] == TRACE
    assert logged[made_rid]["trace_id"] == m2[1]
    assert logged["again"]["trace_id"] == "1" * 32  # the replay's own trace, in its log line

    # Releasing a confirmed reservation cancels it at the ERP, in the release request's trace.
    release_trace = "c" * 32
    release = {"X-Request-ID": "rel-1", "traceparent": f"00-{release_trace}-{PARENT}-01"}
    async with http.delete(svc.url + "/v1/reservations/t-1", headers=ADMIN | release) as r:
        assert r.status == 200
    # One released without a trace of its own gets the id made for its DELETE.
    async with http.delete(svc.url + "/v1/reservations/t-2", headers=ADMIN) as r:
        assert r.status == 200
        release_rid = r.headers["X-Request-ID"]

    async def cancelled() -> bool:
        return bool(calls_for(await erp_calls(http, erp), "DELETE", "t-1"))

    await wait_for(cancelled, 20)
    await wait_for(lambda: _has_call(http, erp, "DELETE", "t-2"), 20)
    calls = await erp_calls(http, erp)
    (cancel,) = calls_for(calls, "DELETE", "t-1")
    assert cancel["request_id"] == "rel-1"
    mc = TP_RE.fullmatch(cancel["traceparent"])
    assert mc and mc[1] == release_trace and mc[2] != PARENT
    (cancel2,) = calls_for(calls, "DELETE", "t-2")
    assert cancel2["request_id"] == release_rid
    mc2 = TP_RE.fullmatch(cancel2["traceparent"])
    assert mc2 and mc2[1] not in (TRACE, m2[1], release_trace)


async def _has_call(http: Any, erp: ErpSimProc, method: str, rid: str) -> bool:
    return bool(calls_for(await erp_calls(http, erp), method, rid))


async def test_a_gap_resync_carries_an_id_of_its_own(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc]
) -> None:  # type: ignore[no-untyped-def]
    erp, (svc,) = await start_stack(
        http, erp_sims, services, tmp_path, replicas=1, rate=50, ATP_GAP_WINDOW="0.2"
    )
    sku = SKUS[3]
    async with http.get(f"{svc.url}/v1/availability/{sku}", headers=ADMIN) as r:
        seq = (await r.json())["locations"][0]["seq"]
    gap = {"events": [adjustment(sku, "DC1", seq + 5, on_hand_delta=-1)]}
    async with http.post(svc.url + "/v1/events", json=gap, headers=ADMIN) as r:
        assert r.status == 200 and (await r.json())["buffered"] == 1

    async def resynced() -> list[dict[str, Any]]:
        calls = await erp_calls(http, erp)
        return [c for c in calls if c["method"] == "GET" and sku in c["path"]]

    await wait_for(resynced, 20)
    gets = await resynced()
    for call in gets:
        assert re.fullmatch(r"[0-9a-f]{16}", call["request_id"]), call
        assert TP_RE.fullmatch(call["traceparent"]), call
