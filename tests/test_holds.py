"""Cart holds: counted at once, expired on time with stock returned, committed into a normal
reservation; release and commit are idempotent and keep terminal states."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atp_service import decode, keys
from atp_service.cache import Cache
from atp_service.ingest import Ingest
from atp_service.ledger import Ledger
from atp_service.metrics import Metrics
from atp_service.reservation import Line, ReservationRequest
from atp_service.store import OUTBOX_KEYS, SCRIPTS, Store, connect
from atp_service.trace import Context
from atp_service.wire import pack

from .conftest import settings_for
from .procs import ADMIN, RedisProc, snapshot

LINE = [{"sku": "C", "location": "DC1", "qty": 3}]


async def _setup(client: Any, on_hand: int = 10) -> None:
    r = await client.post("/v1/events", json={"events": [snapshot("C", "DC1", 1, on_hand)]},
                          headers=ADMIN)  # fmt: skip
    assert r.status == 200


async def _atp(client: Any) -> int:
    r = await client.get("/v1/availability/C", headers=ADMIN)
    return int((await r.json())["total_atp"])


async def _hold(client: Any, rid: str, seconds: int = 1, lines: Any = LINE) -> dict[str, Any]:
    r = await client.post(
        "/v1/reservations",
        json={"reservation_id": rid, "priority": "sales", "lines": lines, "hold_seconds": seconds},
        headers=ADMIN,
    )
    assert r.status == 201, await r.text()
    return await r.json()  # type: ignore[no-any-return]


async def _state(client: Any, rid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/reservations/{rid}", headers=ADMIN)
    assert r.status == 200
    return await r.json()  # type: ignore[no-any-return]


async def test_hold_expires_on_time_and_returns_stock(app_client) -> None:  # type: ignore[no-untyped-def]
    await _setup(app_client)
    started = time.monotonic()
    body = await _hold(app_client, "h1", seconds=1)
    assert body["status"] == "held" and body["committed"] is False
    assert await _atp(app_client) == 7
    await asyncio.sleep(0.8)
    assert (await _state(app_client, "h1"))["status"] == "held"  # not early
    while (await _state(app_client, "h1"))["status"] != "expired":
        assert time.monotonic() - started < 1.5, "hold was not expired within 0.5 s of its time"
        await asyncio.sleep(0.02)
    assert await _atp(app_client) == 10
    # An expired hold keeps its status on release and cannot be committed.
    r = await app_client.delete("/v1/reservations/h1", headers=ADMIN)
    assert r.status == 200 and (await r.json())["status"] == "expired"
    r = await app_client.post("/v1/reservations/h1/commit", headers=ADMIN)
    assert r.status == 409 and (await r.json())["type"].endswith("/not-committable")
    assert await _atp(app_client) == 10


async def test_commit_turns_a_hold_into_a_normal_reservation(app_client) -> None:  # type: ignore[no-untyped-def]
    await _setup(app_client)
    await _hold(app_client, "h2", seconds=1)
    r = await app_client.post("/v1/reservations/h2/commit", headers=ADMIN)
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "confirmed" and body["committed"] is True  # standalone mode
    r = await app_client.post("/v1/reservations/h2/commit", headers=ADMIN)  # idempotent
    assert r.status == 200 and (await r.json())["status"] == "confirmed"
    await asyncio.sleep(1.3)
    assert (await _state(app_client, "h2"))["status"] == "confirmed"  # never expires now
    assert await _atp(app_client) == 7
    # Releasing it returns the stock, once.
    for _ in range(2):
        r = await app_client.delete("/v1/reservations/h2", headers=ADMIN)
        assert r.status == 200 and (await r.json())["status"] == "released"
    assert await _atp(app_client) == 10
    r = await app_client.post("/v1/reservations/h2/commit", headers=ADMIN)
    assert r.status == 409


async def test_holds_count_against_stock_at_once(app_client) -> None:  # type: ignore[no-untyped-def]
    await _setup(app_client, on_hand=5)
    await _hold(app_client, "h3", seconds=60)
    r = await app_client.post(
        "/v1/reservations",
        json={"reservation_id": "o1", "priority": "checkout",
              "lines": [{"sku": "C", "location": "DC1", "qty": 3}]},
        headers=ADMIN,
    )  # fmt: skip
    assert r.status == 409
    body = await r.json()
    assert body["lines"] == [{"sku": "C", "location": "DC1", "requested": 3, "atp": 2}]
    r = await app_client.delete("/v1/reservations/h3", headers=ADMIN)
    assert (await r.json())["status"] == "released"
    assert await _atp(app_client) == 5


async def test_all_lines_or_none(app_client) -> None:  # type: ignore[no-untyped-def]
    await _setup(app_client, on_hand=5)
    lines = [
        {"sku": "C", "location": "DC1", "qty": 2},
        {"sku": "C", "location": "NOWHERE", "qty": 1},
        {"sku": "C", "location": "DC1", "qty": 4},  # summed with the first: 6 > 5
    ]
    r = await app_client.post(
        "/v1/reservations",
        json={"reservation_id": "m1", "priority": "checkout", "lines": lines},
        headers=ADMIN,
    )
    assert r.status == 409
    short = (await r.json())["lines"]
    assert short == [
        {"sku": "C", "location": "DC1", "requested": 6, "atp": 5},
        {"sku": "C", "location": "NOWHERE", "requested": 1, "atp": 0},
    ]
    assert await _atp(app_client) == 5
    r = await app_client.get("/v1/reservations/m1", headers=ADMIN)
    assert r.status == 404  # nothing half-written


async def test_finished_reservations_are_kept_for_the_retention_then_deleted(
    redis_proc: Any,
) -> None:
    import redis.asyncio as redis
    from aiohttp.test_utils import TestClient

    from atp_service.app import create_app

    from .conftest import ServiceServer, settings_for

    app = create_app(settings_for(redis_proc.url, ATP_RESERVATION_RETENTION="1"))
    async with TestClient(ServiceServer(app)) as client, redis.from_url(redis_proc.url) as db:
        for _ in range(500):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.01)
        await _setup(client, on_hand=20)
        await _hold(client, "kept", seconds=60)
        await _hold(client, "gone", seconds=60)
        await _hold(client, "lapse", seconds=1)
        r = await client.post("/v1/reservations/kept/commit", headers=ADMIN)
        assert r.status == 200 and (await r.json())["status"] == "confirmed"
        r = await client.delete("/v1/reservations/gone", headers=ADMIN)
        assert (await r.json())["status"] == "released"
        assert await db.pttl("atp:res:kept") == -1  # confirmed: kept until released
        assert await db.pttl("atp:res:gone") == -1 or 0 < await db.pttl("atp:res:gone") <= 1000
        assert (await _state(client, "gone"))["status"] == "released"  # readable meanwhile
        deadline = time.monotonic() + 5
        while await db.exists("atp:res:gone", "atp:res:lapse"):  # expired, then deleted too
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        r = await client.get("/v1/reservations/gone", headers=ADMIN)
        assert r.status == 404
        assert (await _state(client, "kept"))["status"] == "confirmed"
        assert await _atp(client) == 17  # only the confirmed one still holds stock


@pytest.mark.parametrize("erp", [False, True], ids=["standalone", "erp"])
@pytest.mark.parametrize(
    "body",
    [
        {"priority": "checkout", "lines": [{"sku": "C", "location": "DC1", "qty": 1}]},
        {"priority": "sales", "hold_seconds": 30,
         "lines": [{"sku": "C", "location": "DC1", "qty": 2}]},
        {"priority": "background", "lines": [{"sku": "C", "location": "DC1", "qty": 1},
                                             {"sku": "D", "location": "DC1", "qty": 2},
                                             {"sku": "C", "location": "DC1", "qty": 3}]},
    ],
    ids=["plain", "hold", "summed"],
)  # fmt: skip
async def test_create_answer_is_the_stored_reservation(
    redis_proc: RedisProc, body: dict[str, Any], erp: bool
) -> None:
    """A create's answer is built from the request (reserve.lua does not send the fields back):
    it must be exactly what a replay and a read of the stored reservation answer."""
    overrides = {"ATP_ERP_URL": "http://127.0.0.1:9"} if erp else {}
    settings = settings_for(redis_proc.url, **overrides)
    client = connect(redis_proc.url)
    store = Store(client, redis_proc.url)
    cache = Cache()
    ledger = Ledger(store, cache, settings)
    ingest = Ingest(store, cache, Metrics())
    try:
        await store.load_scripts()
        await ingest.apply([snapshot("C", "DC1", 1, 10), snapshot("D", "DC1", 1, 10)], "http")
        req = decode.reservation_request({"reservation_id": "same", **body})
        created, answer = await ledger.reserve(req, "owner-1")
        replayed, again = await ledger.reserve(req, "owner-1")
        assert (created, replayed) == (True, False)
        assert answer == again == await ledger.get("same", "owner-1")
        assert answer["status"] == ("held" if erp or "hold_seconds" in body else "confirmed")
    finally:
        await store.close()
        await client.aclose()


# reserve_command builds reserve.lua's call from one bytes template; pack() of the same
# arguments, in the order reserve.lua reads them, is the reference.
_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    rid=_ids,
    priority=st.sampled_from(["checkout", "sales", "background"]),
    hold=st.one_of(st.none(), st.integers(1, 86400)),
    lines=st.lists(st.tuples(_ids, _ids, st.integers(1, 10**6)), min_size=1, max_size=5),
    erp=st.booleans(),
    traced=st.booleans(),
    owner=st.sampled_from(["", "0123456789abcdef"]),
    now=st.integers(0, 2**45),
    quota=st.sampled_from([0, 1, 10**12]),
)
def test_reserve_command_is_the_packed_call(
    rid: str, priority: str, hold: int | None, lines: list[tuple[str, str, int]],
    erp: bool, traced: bool, owner: str, now: int, quota: int,
) -> None:  # fmt: skip
    def line_json(x: Line) -> bytes:
        return orjson.dumps({"sku": x.sku, "location": x.location, "qty": x.qty})

    overrides = {"ATP_ERP_URL": "http://127.0.0.1:9"} if erp else {}
    overrides["ATP_HOLD_QUOTA"] = str(quota)
    ledger = Ledger(None, Cache(), settings_for("redis://127.0.0.1:1", **overrides))  # type: ignore[arg-type]
    req = ReservationRequest(rid, priority, tuple(Line(*x) for x in lines), hold)
    trace = Context.of("req-1", None) if traced else None
    budget = ledger.max_backlog[priority] if erp else -1
    expected = pack(
        "EVALSHA", SCRIPTS["reserve"].sha, 8, keys.reservation(rid), keys.INV, keys.CHANGES,
        keys.EXPIRY, *OUTBOX_KEYS, keys.HELD, rid, req.fingerprint(), priority, hold or 0, now,
        "erp" if erp else "standalone", budget, keys.CHANGES_MAXLEN, owner,
        trace.request_id if trace else "", trace.traceparent if trace else "", quota,
        *(a for x in req.lines for a in (x.key, x.qty, line_json(x))),
    )  # fmt: skip
    assert ledger.reserve_command(req, owner, trace, now, budget) == expected
