"""Malformed requests: each gets a precise 4xx RFC 9457 problem and changes no state.

Inventory and three reservations are seeded first; before and after every bad request the
whole Redis keyspace is fingerprinted (TYPE + DUMP of every key, length and last id of the
change stream) and the lookup answers are read back, so a request that writes anything, even
a no-op XADD on the change stream, fails its case.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from atp_service import keys
from atp_service.app import SERVICE
from atp_service.errors import PROBLEM_BASE

from .conftest import start_app
from .procs import ADMIN, adjustment, snapshot

PROBLEM = "application/problem+json"
MAX_BODY = 8 * 1024 * 1024
_UNSET: Any = object()
LOOKED_UP = ("S1", "S2")


# --- request bodies -----------------------------------------------------------------------


def res_body(**fields: Any) -> dict[str, Any]:
    """A valid reservation body (S1 at DC1 has 8 to promise) with ``fields`` replaced;
    a field given as ``_UNSET`` is removed."""
    body: dict[str, Any] = {
        "reservation_id": "r-new",
        "priority": "checkout",
        "lines": [{"sku": "S1", "location": "DC1", "qty": 1}],
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _UNSET}


def res_line(**fields: Any) -> dict[str, Any]:
    """A reservation body whose single line has ``fields`` replaced (``_UNSET`` removes)."""
    line: dict[str, Any] = {"sku": "S1", "location": "DC1", "qty": 1}
    line.update(fields)
    return res_body(lines=[{k: v for k, v in line.items() if v is not _UNSET}])


def batch_item(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"sku": "S1", "location": "DC1", "qty": 1}
    item.update(fields)
    return {"items": [{k: v for k, v in item.items() if v is not _UNSET}]}


# --- cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    slug: str  # the problem type is PROBLEM_BASE + slug
    detail: str = ""  # a substring the problem's detail must hold
    json: Any = _UNSET  # sent as JSON with Content-Type application/json
    raw: bytes | None = None  # sent as is, with content_type
    content_type: str | None = "application/json"
    oversize: str = ""  # "length": 8 MiB + 1 with Content-Length; "chunked": no length
    allow: str | None = None  # expected Allow header (405)
    expect: dict[str, Any] = field(default_factory=dict)  # exact values of body members

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


R, B, E = "/v1/reservations", "/v1/availability", "/v1/events"
A65 = "A" * 65
BAD_IDS = [("empty", ""), ("65-chars", A65), ("slash", "S/1"), ("space", "S 1"),
           ("unicode", "Sé"), ("leading-dot", ".S1")]  # fmt: skip
ID_RULE = "must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
RANGE = "must be between 1 and 1000000000"
BAD_QTY = [("zero", 0, RANGE), ("negative", -1, RANGE), ("float-2.0", 2.0, "must be an integer"),
           ("float-2.5", 2.5, "must be an integer"), ("huge", 10**9 + 1, RANGE),
           ("bool", True, "must be an integer"), ("string", "2", "must be an integer"),
           ("null", None, "must be an integer")]  # fmt: skip

CASES: list[Case] = [
    # --- body framing (POST /v1/reservations)
    Case("res-bad-json", "POST", R, 400, "invalid-request", "not valid JSON",
         raw=b'{"reservation_id": "r-new", '),
    Case("res-trailing-garbage", "POST", R, 400, "invalid-request", "not valid JSON",
         raw=b'{"reservation_id": "r-new"} x'),
    Case("res-invalid-utf8", "POST", R, 400, "invalid-request", "not valid JSON",
         raw=b'{"reservation_id": "r\xff"}'),
    Case("res-nan", "POST", R, 400, "invalid-request", "not valid JSON",
         raw=b'{"reservation_id": NaN}'),
    Case("res-too-deep", "POST", R, 400, "invalid-request", "not valid JSON",
         raw=b"[" * 2000 + b"]" * 2000),
    Case("res-empty-body", "POST", R, 400, "invalid-request", "empty", raw=b""),
    Case("res-array", "POST", R, 400, "invalid-request", "/: must be a JSON object", json=[]),
    Case("res-string", "POST", R, 400, "invalid-request", "/: must be a JSON object",
         json="r-new"),
    Case("res-number", "POST", R, 400, "invalid-request", "/: must be a JSON object", json=42),
    Case("res-null", "POST", R, 400, "invalid-request", "/: must be a JSON object", json=None),
    Case("res-text-plain", "POST", R, 415, "unsupported-media-type", "text/plain",
         raw=orjson.dumps(res_body()), content_type="text/plain"),
    Case("res-form", "POST", R, 415, "unsupported-media-type", "x-www-form-urlencoded",
         raw=b"reservation_id=r-new", content_type="application/x-www-form-urlencoded"),
    Case("res-oversize", "POST", R, 413, "payload-too-large", "8388608", oversize="length"),
    # --- reservation fields
    Case("res-id-missing", "POST", R, 400, "invalid-request",
         "/reservation_id: must be a string identifier", json=res_body(reservation_id=_UNSET)),
    Case("res-id-int", "POST", R, 400, "invalid-request",
         "/reservation_id: must be a string identifier", json=res_body(reservation_id=7)),
    *[Case(f"res-id-{name}", "POST", R, 400, "invalid-request", "/reservation_id: " + ID_RULE,
           json=res_body(reservation_id=value)) for name, value in BAD_IDS],
    Case("res-priority-missing", "POST", R, 400, "invalid-request", "/priority: must be one of",
         json=res_body(priority=_UNSET)),
    Case("res-priority-unknown", "POST", R, 400, "invalid-request", "/priority: must be one of",
         json=res_body(priority="urgent")),
    Case("res-priority-int", "POST", R, 400, "invalid-request", "/priority: must be one of",
         json=res_body(priority=1)),
    Case("res-priority-list", "POST", R, 400, "invalid-request", "/priority: must be one of",
         json=res_body(priority=["checkout"])),
    Case("res-lines-missing", "POST", R, 400, "invalid-request", "/lines: must be an array",
         json=res_body(lines=_UNSET)),
    Case("res-lines-object", "POST", R, 400, "invalid-request", "/lines: must be an array",
         json=res_body(lines={"sku": "S1", "location": "DC1", "qty": 1})),
    Case("res-lines-empty", "POST", R, 400, "invalid-request", "/lines: must not be empty",
         json=res_body(lines=[])),
    Case("res-lines-101", "POST", R, 400, "invalid-request", "/lines: holds 101 items",
         json=res_body(lines=[{"sku": f"S{i}", "location": "DC1", "qty": 1}
                              for i in range(101)])),
    Case("res-line-string", "POST", R, 400, "invalid-request",
         "/lines/0: must be a JSON object", json=res_body(lines=["S1|DC1"])),
    Case("res-line-sku-missing", "POST", R, 400, "invalid-request",
         "/lines/0/sku: must be a string identifier", json=res_line(sku=_UNSET)),
    Case("res-line-sku-int", "POST", R, 400, "invalid-request",
         "/lines/0/sku: must be a string identifier", json=res_line(sku=1)),
    *[Case(f"res-line-sku-{name}", "POST", R, 400, "invalid-request", "/lines/0/sku: " + ID_RULE,
           json=res_line(sku=value)) for name, value in BAD_IDS],
    Case("res-line-location-missing", "POST", R, 400, "invalid-request",
         "/lines/0/location: must be a string identifier", json=res_line(location=_UNSET)),
    Case("res-line-location-list", "POST", R, 400, "invalid-request",
         "/lines/0/location: must be a string identifier", json=res_line(location=["DC1"])),
    *[Case(f"res-line-location-{name}", "POST", R, 400, "invalid-request",
           "/lines/0/location: " + ID_RULE, json=res_line(location=value))
      for name, value in BAD_IDS],
    Case("res-qty-missing", "POST", R, 400, "invalid-request",
         "/lines/0/qty: must be an integer", json=res_line(qty=_UNSET)),
    *[Case(f"res-qty-{name}", "POST", R, 400, "invalid-request", "/lines/0/qty: " + detail,
           json=res_line(qty=value)) for name, value, detail in BAD_QTY],
    Case("res-qty-summed-over-max", "POST", R, 400, "invalid-request",
         "/lines: summed quantity for S1|DC1 exceeds 1000000000",
         json=res_body(lines=[{"sku": "S1", "location": "DC1", "qty": 600_000_000}] * 2)),
    Case("res-hold-zero", "POST", R, 400, "invalid-request",
         "/hold_seconds: must be between 1 and 14400", json=res_body(hold_seconds=0)),
    Case("res-hold-14401", "POST", R, 400, "invalid-request",
         "/hold_seconds: must be between 1 and 14400", json=res_body(hold_seconds=14401)),
    Case("res-hold-negative", "POST", R, 400, "invalid-request",
         "/hold_seconds: must be between 1 and 14400", json=res_body(hold_seconds=-60)),
    Case("res-hold-float", "POST", R, 400, "invalid-request",
         "/hold_seconds: must be an integer", json=res_body(hold_seconds=60.0)),
    Case("res-hold-string", "POST", R, 400, "invalid-request",
         "/hold_seconds: must be an integer", json=res_body(hold_seconds="60")),
    Case("res-hold-bool", "POST", R, 400, "invalid-request",
         "/hold_seconds: must be an integer", json=res_body(hold_seconds=True)),
    Case("res-extra-field", "POST", R, 400, "invalid-request", "/note: unknown field",
         json=res_body(note="hi")),
    Case("res-line-extra-field", "POST", R, 400, "invalid-request",
         "/lines/0/price: unknown field", json=res_line(price=3)),
    # --- valid requests that are refused: they must not change anything either
    Case("res-insufficient-stock", "POST", R, 409, "insufficient-stock", "3 of 4 lines",
         json=res_body(lines=[{"sku": "S1", "location": "DC1", "qty": 9},
                              {"sku": "S2", "location": "DC1", "qty": 1},
                              {"sku": "S9", "location": "DC1", "qty": 1},
                              {"sku": "S1", "location": "DC9", "qty": 1}]),
         expect={"lines": [{"sku": "S1", "location": "DC1", "requested": 9, "atp": 8},
                           {"sku": "S9", "location": "DC1", "requested": 1, "atp": 0},
                           {"sku": "S1", "location": "DC9", "requested": 1, "atp": 0}]}),
    Case("res-insufficient-summed", "POST", R, 409, "insufficient-stock", "1 of 1 lines",
         json=res_body(lines=[{"sku": "S1", "location": "DC1", "qty": 5}] * 2),
         expect={"lines": [{"sku": "S1", "location": "DC1", "requested": 10, "atp": 8}]}),
    Case("res-idempotency-conflict", "POST", R, 409, "idempotency-conflict", "r-conf",
         json=res_body(reservation_id="r-conf",
                       lines=[{"sku": "S1", "location": "DC1", "qty": 3}])),
    # --- batch lookup
    Case("batch-bad-json", "POST", B, 400, "invalid-request", "not valid JSON", raw=b'{"items":'),
    Case("batch-empty-body", "POST", B, 400, "invalid-request", "empty", raw=b""),
    Case("batch-array", "POST", B, 400, "invalid-request", "/: must be a JSON object",
         json=[{"sku": "S1"}]),
    Case("batch-text-plain", "POST", B, 415, "unsupported-media-type", "text/plain",
         raw=b'{"items": [{"sku": "S1"}]}', content_type="text/plain"),
    Case("batch-oversize-chunked", "POST", B, 413, "payload-too-large", "8388608",
         oversize="chunked"),
    Case("batch-items-missing", "POST", B, 400, "invalid-request", "/items: must be an array",
         json={}),
    Case("batch-items-string", "POST", B, 400, "invalid-request", "/items: must be an array",
         json={"items": "S1"}),
    Case("batch-items-empty", "POST", B, 400, "invalid-request", "/items: must not be empty",
         json={"items": []}),
    Case("batch-items-1001", "POST", B, 400, "invalid-request", "/items: holds 1001 items",
         json={"items": [{"sku": "S1"}] * 1001}),
    Case("batch-extra-field", "POST", B, 400, "invalid-request", "/stale: unknown field",
         json={"items": [{"sku": "S1"}], "stale": False}),
    Case("batch-item-number", "POST", B, 400, "invalid-request", "/items/0: must be a JSON object",
         json={"items": [1]}),
    Case("batch-item-sku-missing", "POST", B, 400, "invalid-request",
         "/items/0/sku: must be a string identifier", json=batch_item(sku=_UNSET)),
    *[Case(f"batch-item-sku-{name}", "POST", B, 400, "invalid-request", "/items/0/sku: " + ID_RULE,
           json=batch_item(sku=value)) for name, value in BAD_IDS],
    Case("batch-item-location-int", "POST", B, 400, "invalid-request",
         "/items/0/location: must be a string identifier", json=batch_item(location=1)),
    Case("batch-item-location-space", "POST", B, 400, "invalid-request",
         "/items/0/location: " + ID_RULE, json=batch_item(location="DC 1")),
    Case("batch-item-group-bool", "POST", B, 400, "invalid-request",
         "/items/0/group: must be a string identifier",
         json=batch_item(location=_UNSET, group=True)),
    Case("batch-item-location-and-group", "POST", B, 400, "invalid-request",
         "/items/0: give location or group, not both", json=batch_item(group="EAST")),
    Case("batch-unknown-group", "POST", B, 400, "unknown-group", "'NOPE'",
         json={"items": [{"sku": "S1", "group": "EAST"}, {"sku": "S1", "group": "NOPE"}]}),
    *[Case(f"batch-item-qty-{name}", "POST", B, 400, "invalid-request", "/items/0/qty: " + detail,
           json=batch_item(qty=value)) for name, value, detail in BAD_QTY
      if value is not None],  # a batch item's qty null reads as absent (1); a line's is refused
    Case("batch-item-extra-field", "POST", B, 400, "invalid-request",
         "/items/0/priority: unknown field", json=batch_item(priority="checkout")),
    # --- single lookup: path and query
    Case("get-sku-65-chars", "GET", B + "/" + A65, 400, "invalid-request", "sku " + ID_RULE),
    Case("get-sku-slash", "GET", B + "/S1%2Fx", 400, "invalid-request", "sku " + ID_RULE),
    Case("get-sku-space", "GET", B + "/S%201", 400, "invalid-request", "sku " + ID_RULE),
    Case("get-sku-unicode", "GET", B + "/S%C3%A9", 400, "invalid-request", "sku " + ID_RULE),
    Case("get-sku-leading-dot", "GET", B + "/.S1", 400, "invalid-request", "sku " + ID_RULE),
    Case("get-sku-unknown", "GET", B + "/S9", 404, "not-found", "unknown sku 'S9'"),
    Case("get-group-unknown", "GET", B + "/S1?group=NOPE", 400, "unknown-group", "'NOPE'"),
    Case("get-group-unknown-with-known", "GET", B + "/S1?group=EAST&group=NOPE", 400,
         "unknown-group", "'NOPE'"),
    Case("get-location-empty", "GET", B + "/S1?location=", 400, "invalid-request",
         "location '' is not a valid identifier"),
    Case("get-location-space", "GET", B + "/S1?location=DC%201", 400, "invalid-request",
         "location 'DC 1' is not a valid identifier"),
    Case("get-location-slash", "GET", B + "/S1?location=DC1&location=DC%2F1", 400,
         "invalid-request", "location 'DC/1' is not a valid identifier"),
    Case("get-location-65-chars", "GET", B + "/S1?location=" + A65, 400, "invalid-request",
         "is not a valid identifier"),
    Case("get-unknown-query", "GET", B + "/S1?loc=DC1", 400, "invalid-request",
         "unknown query parameter 'loc'"),
    # --- events envelope
    Case("events-bad-json", "POST", E, 400, "invalid-request", "not valid JSON",
         raw=b'{"events": [}'),
    Case("events-empty-body", "POST", E, 400, "invalid-request", "empty", raw=b""),
    Case("events-array", "POST", E, 400, "invalid-request", "/: must be a JSON object",
         json=[snapshot("S1", "DC1", 99, 1)]),
    Case("events-missing", "POST", E, 400, "invalid-request", "/events: must be an array",
         json={}),
    Case("events-object", "POST", E, 400, "invalid-request", "/events: must be an array",
         json={"events": snapshot("S1", "DC1", 99, 1)}),
    Case("events-empty", "POST", E, 400, "invalid-request", "/events: must not be empty",
         json={"events": []}),
    Case("events-5001", "POST", E, 400, "invalid-request", "/events: holds 5001 items",
         json={"events": [snapshot("S1", "DC1", 100 + i, 1) for i in range(5001)]}),
    Case("events-extra-field", "POST", E, 400, "invalid-request", "/source: unknown field",
         json={"events": [snapshot("S1", "DC1", 99, 1)], "source": "erp"}),
    Case("events-text-plain", "POST", E, 415, "unsupported-media-type", "text/plain",
         raw=orjson.dumps({"events": [snapshot("S1", "DC1", 99, 1)]}),
         content_type="text/plain"),
    Case("events-oversize", "POST", E, 413, "payload-too-large", "8388608", oversize="length"),
    # --- reservation id in the path; unknown and terminal reservations
    Case("res-get-leading-dot", "GET", R + "/.r1", 400, "invalid-request",
         "reservation_id " + ID_RULE),
    Case("res-get-65-chars", "GET", R + "/" + A65, 400, "invalid-request",
         "reservation_id " + ID_RULE),
    Case("res-get-space", "GET", R + "/r%201", 400, "invalid-request", "reservation_id " + ID_RULE),
    Case("res-commit-unicode", "POST", R + "/r%C3%A9/commit", 400, "invalid-request",
         "reservation_id " + ID_RULE, content_type=None),
    Case("res-delete-slash", "DELETE", R + "/r%2F1", 400, "invalid-request",
         "reservation_id " + ID_RULE),
    Case("res-get-unknown", "GET", R + "/r-none", 404, "not-found", "r-none"),
    Case("res-commit-unknown", "POST", R + "/r-none/commit", 404, "not-found", "r-none",
         content_type=None),
    Case("res-delete-unknown", "DELETE", R + "/r-none", 404, "not-found", "r-none"),
    Case("res-commit-released", "POST", R + "/r-rel/commit", 409, "not-committable", "released",
         content_type=None),
    # --- routing
    Case("route-unknown", "GET", "/v1/nope", 404, "not-found", "no such resource"),
    Case("route-root", "GET", "/", 404, "not-found", "no such resource"),
    Case("route-v2", "POST", "/v2/reservations", 404, "not-found", "no such resource",
         json=res_body()),
    Case("route-empty-sku", "GET", B + "/", 404, "not-found", "no such resource"),
    Case("route-commit-extra-segment", "POST", R + "/r-conf/commit/now", 404, "not-found",
         "no such resource", content_type=None),
    Case("method-put-batch", "PUT", B, 405, "method-not-allowed", "PUT", json={"items": []},
         allow="POST"),
    Case("method-post-lookup", "POST", B + "/S1", 405, "method-not-allowed", "POST",
         json={}, allow="GET, HEAD"),
    Case("method-get-reservations", "GET", R, 405, "method-not-allowed", "GET", allow="POST"),
    Case("method-patch-reservation", "PATCH", R + "/r-conf", 405, "method-not-allowed", "PATCH",
         json={"priority": "sales"}, allow="DELETE, GET, HEAD"),
    Case("method-get-commit", "GET", R + "/r-conf/commit", 405, "method-not-allowed", "GET",
         allow="POST"),
    Case("method-delete-events", "DELETE", E, 405, "method-not-allowed", "DELETE", allow="POST"),
    Case("method-post-healthz", "POST", "/healthz", 405, "method-not-allowed", "POST",
         allow="GET, HEAD", content_type=None),
]  # fmt: skip


# --- the app -------------------------------------------------------------------------------


async def close_app(
    client: TestClient,  # type: ignore[type-arg]
    closing: asyncio.Future[None] | None = None,
) -> None:
    """``client.close()`` (or waits for ``closing``, a close under way), cancelling the app's
    background tasks again while it waits.

    Used by test_shutdown_survives_a_swallowed_cancel to clean up even if shutdown hangs.
    """
    tasks = client.app[SERVICE].tasks
    if closing is None:
        closing = asyncio.ensure_future(client.close())
    while not (await asyncio.wait({closing}, timeout=0.5))[0]:
        for task in tasks:
            task.cancel()
    await closing


# --- helpers ------------------------------------------------------------------------------


async def _chunks(total: int) -> AsyncIterator[bytes]:
    block = b" " * (1024 * 1024)
    while total > 0:
        yield block[:total]
        total -= len(block)


async def fire(client: Any, case: Case) -> ClientResponse:
    headers = dict(ADMIN)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    data: Any = None
    if case.oversize == "length":
        data = io.BytesIO(b" " * (MAX_BODY + 1))
    elif case.oversize == "chunked":
        data = _chunks(MAX_BODY + 1)
    elif case.json is not _UNSET:
        data = orjson.dumps(case.json)
    elif case.raw is not None:
        data = case.raw
    if isinstance(data, bytes) and len(data) > 512 * 1024:
        data = io.BytesIO(data)  # aiohttp warns about large raw bytes bodies
    response: ClientResponse = await client.request(
        case.method, case.path, headers=headers, data=data
    )
    await response.read()
    return response


async def assert_problem(
    response: ClientResponse, status: int, slug: str, content_type: str = PROBLEM
) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == content_type, text
    body = orjson.loads(text)
    assert isinstance(body, dict), text
    assert body["type"] == PROBLEM_BASE + slug, text
    assert body["status"] == status, text
    assert isinstance(body["title"], str) and body["title"], text
    assert isinstance(body["detail"], str) and body["detail"], text
    return body


async def fingerprint(url: str) -> dict[bytes, tuple[Any, ...]]:
    """Every key's type and DUMP; for the change stream its length and last entry id (a DUMP
    of a stream also holds consumer-group read state, which readers change)."""
    redis = Redis.from_url(url)
    try:
        out: dict[bytes, tuple[Any, ...]] = {}
        async for key in redis.scan_iter(count=1000):
            kind = await redis.type(key)
            if key == keys.CHANGES.encode():
                last = await redis.xrevrange(key, count=1)
                out[key] = (kind, await redis.xlen(key), last[0][0] if last else None)
            else:
                out[key] = (kind, await redis.dump(key))
        return out
    finally:
        await redis.aclose()


async def lookups(client: Any) -> list[Any]:
    out = []
    for sku in LOOKED_UP:
        r = await client.get(f"/v1/availability/{sku}", headers=ADMIN)
        assert r.status == 200, await r.text()
        out.append(await r.json())
    return out


async def _ok(response: ClientResponse, status: int = 200) -> Any:
    text = await response.text()
    assert response.status == status, text
    return orjson.loads(text)


@pytest.fixture
async def seeded(app_client: Any) -> list[Any]:
    """S1: DC1 10 (2 reserved by r-conf), ST1 3, DC2 0; S2: DC1 100-5-2 (3 held by r-hold);
    r-rel was released. Returns the lookup answers for S1 and S2."""
    events = [snapshot("S1", "DC1", 1, 10), snapshot("S1", "ST1", 1, 3),
              snapshot("S1", "DC2", 4, 0), snapshot("S2", "DC1", 7, 100, 5, 2)]  # fmt: skip
    body = await _ok(await app_client.post(E, json={"events": events}, headers=ADMIN))
    assert body == {"applied": 4, "duplicates": 0, "buffered": 0, "rejected": []}
    for rid, line, extra in [
        ("r-conf", {"sku": "S1", "location": "DC1", "qty": 2}, {}),
        ("r-hold", {"sku": "S2", "location": "DC1", "qty": 3}, {"hold_seconds": 14400}),
        ("r-rel", {"sku": "S1", "location": "ST1", "qty": 1}, {}),
    ]:
        json = {"reservation_id": rid, "priority": "sales", "lines": [line], **extra}
        await _ok(await app_client.post(R, json=json, headers=ADMIN), 201)
    released = await _ok(await app_client.delete(R + "/r-rel", headers=ADMIN))
    assert released["status"] == "released"
    answers = await lookups(app_client)
    atp = [{loc["location"]: loc["atp"] for loc in a["locations"]} for a in answers]
    assert atp == [{"DC1": 8, "ST1": 3, "DC2": 0}, {"DC1": 90}]
    return answers


def test_enough_cases() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c.param() for c in CASES])
async def test_bad_request_is_a_problem_and_changes_nothing(
    app_client: Any, redis_proc: Any, seeded: list[Any], case: Case
) -> None:
    before = await fingerprint(redis_proc.url)
    assert before, "the seeded state is visible in Redis"
    response = await fire(app_client, case)
    body = await assert_problem(response, case.status, case.slug)
    assert case.detail in body["detail"], body
    for name, value in case.expect.items():
        assert body[name] == value, body
    if case.allow is not None:
        assert response.headers.get("Allow") == case.allow
    else:
        assert "Allow" not in response.headers
    assert await fingerprint(redis_proc.url) == before
    assert await lookups(app_client) == seeded


async def test_all_bad_requests_in_a_row_change_nothing(
    app_client: Any, redis_proc: Any, seeded: list[Any]
) -> None:
    before = await fingerprint(redis_proc.url)
    statuses = {}
    for case in CASES:
        response = await fire(app_client, case)
        statuses[case.id] = response.status
        assert response.content_type == PROBLEM, case.id
    assert statuses == {c.id: c.status for c in CASES}
    assert await fingerprint(redis_proc.url) == before
    assert await lookups(app_client) == seeded


async def test_head_is_served_where_get_is(app_client: Any) -> None:
    response = await app_client.head("/healthz")
    assert response.status == 200


async def test_shutdown_survives_a_swallowed_cancel(redis_proc: Any) -> None:
    client = await start_app(redis_proc.url)
    svc = client.app[SERVICE]
    entered = asyncio.Event()
    swallowed = False

    async def expire_due(limit: int = 500) -> int:
        """Swallows the first cancel, as asyncio.wait_for in redis-py may."""
        nonlocal swallowed
        entered.set()
        if not swallowed:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed = True
        return 0

    svc.ledger.expire_due = expire_due  # type: ignore[method-assign]
    await asyncio.wait_for(entered.wait(), 5)
    closing = asyncio.ensure_future(client.close())
    done, _ = await asyncio.wait({closing}, timeout=3)
    await close_app(client, closing)  # clean up either way: cancels the tasks again
    assert swallowed
    assert done, "shutdown still waiting for a background task 3 s after its cancel"


# --- content negotiation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, PROBLEM),
        ("application/json", "application/json"),
        ("application/json, text/plain", "application/json"),
        ("application/problem+json", PROBLEM),
        ("application/problem+json, application/json", PROBLEM),
        ("application/json;q=0.5, application/problem+json", PROBLEM),
        ("*/*", PROBLEM),
        ("text/html", PROBLEM),
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("POST", R, 400, "invalid-request"),
        ("GET", "/v1/nope", 404, "not-found"),
        ("GET", R, 405, "method-not-allowed"),
        ("GET", B + "/S1", 401, "unauthorized"),
    ],
)
async def test_problem_content_type_follows_accept(
    app_client: Any, accept: str | None, content_type: str, method: str, path: str,
    status: int, slug: str,
) -> None:  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if status != 401:
        headers.update(ADMIN)
    if accept is not None:
        headers["Accept"] = accept
    response = await app_client.request(
        method, path, headers=headers, data=b"[]" if method == "POST" else None,
        skip_auto_headers=["Accept"],
    )  # fmt: skip
    if accept is None:
        assert "Accept" not in response.request_info.headers
    body = await assert_problem(response, status, slug, content_type)
    assert body["instance"] == path


# --- events: invalid events in a valid envelope are answered in `rejected` ------------------


async def test_invalid_events_are_rejected_and_valid_ones_applied(
    app_client: Any, seeded: list[Any]
) -> None:
    def bad(**fields: Any) -> dict[str, Any]:
        ev = snapshot("S5", "DC1", 1, 10)
        ev.update(fields)
        return {k: v for k, v in ev.items() if v is not _UNSET}

    events: list[Any] = [
        snapshot("S3", "DC1", 1, 7),  # 0 good
        bad(on_hand=-1),  # 1
        "not an event",  # 2
        adjustment("S1", "DC1", 2, on_hand_delta=-1),  # 3 good: DC1 seq 1 -> 2
        bad(allocated=-5),  # 4
        bad(safety_stock=-1),  # 5
        bad(type="bogus"),  # 6
        bad(seq=1.0),  # 7
        bad(sku="S/5"),  # 8
        bad(occurred_at="yesterday"),  # 9
        snapshot("S3", "DC2", 3, 4, allocated=1),  # 10 good
        bad(event_id=_UNSET),  # 11
        bad(on_hand=True),  # 12
        bad(seq=2**53),  # 13
        [],  # 14
        {**adjustment("S5", "DC1", 2), "on_hand_delta": 10**9 + 1},  # 15
        bad(location=""),  # 16
        bad(on_hand=10**9 + 1),  # 17
    ]
    negative = "must be between 0 and 1000000000"  # a snapshot field below 0
    reasons = {1: "/on_hand: " + negative, 2: "/: must be a JSON object",
               4: "/allocated: " + negative, 5: "/safety_stock: " + negative, 6: "/type",
               7: "/seq: must be an integer", 8: "/sku",
               9: "/occurred_at", 11: "/event_id", 12: "/on_hand: must be an integer",
               13: "/seq: must be between", 14: "/: must be a JSON object",
               15: "/on_hand_delta", 16: "/location", 17: "/on_hand: must be between"}  # fmt: skip
    body = await _ok(await app_client.post(E, json={"events": events}, headers=ADMIN))
    assert (body["applied"], body["duplicates"], body["buffered"]) == (3, 0, 0), body
    assert [r["index"] for r in body["rejected"]] == sorted(reasons), body
    for rejected in body["rejected"]:
        assert set(rejected) == {"index", "reason"}
        assert rejected["reason"].startswith(reasons[rejected["index"]]), rejected

    s3 = await _ok(await app_client.get(B + "/S3", headers=ADMIN))
    assert {x["location"]: (x["on_hand"], x["allocated"], x["seq"]) for x in s3["locations"]} == {
        "DC1": (7, 0, 1), "DC2": (4, 1, 3)
    }  # fmt: skip
    s1 = await _ok(await app_client.get(B + "/S1?location=DC1", headers=ADMIN))
    assert s1["locations"][0]["on_hand"] == 9 and s1["locations"][0]["seq"] == 2
    assert s1["locations"][0]["atp"] == 7  # 9 on hand - 2 reserved by r-conf
    not_applied = await app_client.get(B + "/S5", headers=ADMIN)
    await assert_problem(not_applied, 404, "not-found")


async def test_only_invalid_events_is_still_200(app_client: Any, redis_proc: Any) -> None:
    before = await fingerprint(redis_proc.url)
    events = [snapshot("S1", "DC1", 1, -3), {"type": "snapshot"}]
    body = await _ok(await app_client.post(E, json={"events": events}, headers=ADMIN))
    assert body["applied"] == 0 and body["duplicates"] == 0 and body["buffered"] == 0
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert body["rejected"][0]["reason"].startswith("/on_hand: must be between 0 and")
    assert await fingerprint(redis_proc.url) == before
