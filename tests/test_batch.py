"""Batch lookups agree with single lookups, item by item, and follow every change at once
(whole-sku totals are memoised per sku until any of its rows changes)."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atp_service import decode
from atp_service.cache import Cache
from atp_service.decode import Item
from atp_service.errors import AtpError
from atp_service.http.availability import Availability
from atp_service.inventory import (
    ALLOCATED,
    FLAG_GAP,
    FLAGS,
    ON_HAND,
    PENDING,
    RECORD_FORMAT,
    SAFETY,
    VER,
)

from .json_forms import WRITERS
from .procs import ADMIN, adjustment, snapshot

# ATP_LOCATION_GROUPS in tests/conftest.py: EAST=DC1,ST1;WEST=DC2
ITEMS: list[dict[str, Any]] = [
    {"sku": "A"}, {"sku": "A", "location": "DC1", "qty": 3}, {"sku": "A", "group": "EAST"},
    {"sku": "A", "group": "WEST"}, {"sku": "A", "location": "NOPE"}, {"sku": "B", "qty": 50},
    {"sku": "B", "location": "DC2", "qty": 1}, {"sku": "GONE"}, {"sku": "GONE", "group": "EAST"},
]  # fmt: skip
GROUPS = {"EAST": {"DC1", "ST1"}, "WEST": {"DC2"}}


async def _push(client: Any, *events: dict[str, object]) -> None:
    r = await client.post("/v1/events", json={"events": list(events)}, headers=ADMIN)
    assert r.status == 200, await r.text()
    assert not (await r.json())["rejected"]


async def _expected(client: Any, item: dict[str, Any]) -> dict[str, Any]:
    """What the item's answer must be, from GET /v1/availability/{sku}."""
    r = await client.get(f"/v1/availability/{item['sku']}", headers=ADMIN)
    locs = (
        {x["location"]: x["atp"] for x in (await r.json())["locations"]} if r.status == 200 else {}
    )
    if "location" in item:
        picked = [locs[item["location"]]] if item["location"] in locs else []
    elif "group" in item:
        picked = [atp for loc, atp in locs.items() if loc in GROUPS[item["group"]]]
    else:
        picked = list(locs.values())
    want = {k: item[k] for k in ("sku", "location", "group") if k in item}
    if not picked:
        return want | {"atp": 0, "available": False, "status": "unknown"}
    atp = sum(picked)
    status = "out_of_stock" if atp <= 0 else "low_stock" if atp <= 5 else "in_stock"
    return want | {"atp": atp, "available": atp >= item.get("qty", 1), "status": status}


async def _check(client: Any) -> dict[str, Any]:
    """ITEMS twice, against single lookups: answered by the encoded path
    (Availability.batch_bytes), which makes and memoises each item's answer the first time
    and takes all of them from its memo the second."""
    first: dict[str, Any] = {}
    for _ in range(2):
        r = await client.post("/v1/availability", json={"items": ITEMS}, headers=ADMIN)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert body["items"] == [await _expected(client, item) for item in ITEMS]
        first = first or body
        assert body == first
    return first


async def test_batch_agrees_with_single_lookups_through_changes(app_client: Any) -> None:
    c = app_client
    await _push(c, snapshot("A", "DC1", 1, 10), snapshot("A", "ST1", 1, 4),
                snapshot("A", "DC2", 1, 7), snapshot("B", "DC2", 1, 40))  # fmt: skip
    first = await _check(c)
    assert first["items"][0]["atp"] == 21 and first["stale"] is False
    # a reservation through this replica: the memoised whole-sku total must not be served
    r = await c.post("/v1/reservations", headers=ADMIN, json={
        "reservation_id": "b-1", "priority": "checkout",
        "lines": [{"sku": "A", "location": "DC2", "qty": 5}]})  # fmt: skip
    assert r.status == 201, await r.text()
    assert (await _check(c))["items"][0]["atp"] == 16
    # an ERP event, and a new location of a known sku
    await _push(c, adjustment("A", "DC1", 2, on_hand_delta=-8), snapshot("A", "ST9", 1, 3))
    assert (await _check(c))["items"][0]["atp"] == 2 + 4 + 2 + 3
    # a seq gap marks the answer stale, and the whole-sku memo carries that too
    await _push(c, adjustment("A", "DC1", 9, on_hand_delta=1))
    assert (await _check(c))["stale"] is True
    await _push(c, snapshot("A", "DC1", 10, 2))  # a snapshot closes the gap
    assert (await _check(c))["stale"] is False
    # a release gives the stock back
    assert (await c.delete("/v1/reservations/b-1", headers=ADMIN)).status == 200
    assert (await _check(c))["items"][0]["atp"] == 2 + 4 + 7 + 3
    # /metrics shows how full both memos are: A and B read whole (single lookups; GONE is a
    # 404), and the batch's items, all distinct
    text = await (await c.get("/metrics")).text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    assert float(samples["atp_lookup_memo_entries"]) == 2
    assert float(samples["atp_batch_memo_entries"]) == len(ITEMS)


async def test_an_unknown_group_is_refused_even_for_an_unknown_sku(app_client: Any) -> None:
    r = await app_client.post(
        "/v1/availability", json={"items": [{"sku": "GONE", "group": "NORTH"}]}, headers=ADMIN
    )
    assert r.status == 400
    assert (await r.json())["type"].endswith("/unknown-group")


# The batch answer against a plain model, on the cache directly: the one-pass reader of raw
# records must agree with the row view (cache.rows) for locations, groups and whole skus,
# including clipping at 0, seq-gap staleness, unknown skus and locations, and every status.
_GROUPS = {"G1": ("L0", "L2"), "G2": ("L3", "L9")}
_records = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(0, 3),  # sku, location
        st.integers(-5, 30), st.integers(0, 10), st.integers(0, 5), st.integers(0, 10),
        st.sampled_from([0, FLAG_GAP]),
    ),
    max_size=20,
)  # fmt: skip
_items = st.lists(
    st.tuples(
        st.sampled_from(["S0", "S1", "S2", "S3", "S9"]),
        st.sampled_from([None, "L0", "L1", "L3", "L9"]),
        st.sampled_from([None, "G1", "G2"]),
        st.integers(1, 12),
    ).map(lambda t: (t[0], t[1], None if t[1] is not None else t[2], t[3])),
    min_size=1,
    max_size=12,
)


def _record(cache: Cache, ver: int, rec: tuple[int, ...]) -> None:
    s, loc, on_hand, allocated, safety, pending, flags = rec
    values = [0] * 8
    values[ON_HAND], values[ALLOCATED], values[SAFETY] = on_hand, allocated, safety
    values[PENDING], values[FLAGS], values[VER] = pending, flags, ver
    cache.apply(f"S{s}|L{loc}", struct.pack(RECORD_FORMAT, *values))


@settings(max_examples=300, deadline=None)
@given(records=_records, items=_items, fresh=st.booleans())
def test_batch_answer_matches_a_model(
    records: list[tuple[int, ...]], items: list[Item], fresh: bool
) -> None:
    cache = Cache(capacity=2)  # small: the array grows while records arrive
    for ver, rec in enumerate(records, 1):
        _record(cache, ver, rec)
    lookups = Availability(cache, _GROUPS, 5, lambda: fresh)
    for _ in range(2):  # the second time through the whole-sku memo
        got = lookups.answer(items)
        want_items, stale = [], not fresh
        for sku, loc, group, qty in items:
            locs = cache.locations(sku) or {}
            names = [loc] if loc else _GROUPS[group] if group else list(locs)
            rows = [cache.row(locs[n]) for n in names if n in locs]
            item: dict[str, Any] = {"sku": sku}
            item.update({"location": loc} if loc else {"group": group} if group else {})
            if not rows:
                item.update(atp=0, available=False, status="unknown")
            else:
                atp = sum(max(r[ON_HAND] - r[ALLOCATED] - r[SAFETY] - r[PENDING], 0) for r in rows)
                stale = stale or any(r[FLAGS] & FLAG_GAP for r in rows)
                status = "out_of_stock" if atp <= 0 else "low_stock" if atp <= 5 else "in_stock"
                item.update(atp=atp, available=atp >= qty, status=status)
            want_items.append(item)
        assert got == {"items": want_items, "stale": stale}


# The encoded path (Availability.batch_bytes, from the raw body) against the general one
# (orjson, decode, answer), through changes of the records between calls (its memo must follow
# every one), on bodies that are valid or carry one bad item, written as JSON in several ways.
_raw_item = st.fixed_dictionaries(
    {"sku": st.sampled_from(["S0", "S1", "S2", "S9"])},
    optional={
        "location": st.sampled_from([None, "L0", "L1", "L3", "L9"]),
        "group": st.sampled_from([None, "G1", "G2"]),
        "qty": st.sampled_from([None, 1, 2, 7, 12, 40]),
    },
).map(  # valid: a group only without a location (_bad_item has both)
    lambda item: {k: v for k, v in item.items() if k != "group" or item.get("location") is None}
)
_bad_item = st.sampled_from([
    {"sku": "bad id"}, {"sku": "S0", "location": "L 0"}, {"sku": 7}, {"sku": "S0", "qty": 0},
    {"sku": "S0", "qty": True}, {"sku": "S0", "qty": 1.0}, {"sku": "S0", "qty": 10**10},
    {"sku": "S0", "colour": "red"}, {"sku": "S0", "group": "G7"}, {"sku": "S0", "group": "g 1"},
    {"sku": "S0", "location": "L0", "group": "G1"}, {"sku": "S0", "location": 3}, "S0",
    {"sku": ["S0"]}, {"sku": {"S0": 1}}, {"sku": "S0", "location": ["L0"]}, {"sku": None},
    {"sku": "S0", "group": 5}, {"sku": True}, {"location": "L0"}, {"sku": "S0", "qty": -1},
    {"sku": "S0", "qty": 2.5}, {"sku": ""}, {"sku": "S0", "location": ""}, {"sku": "S" * 65},
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    phases=st.lists(_records, min_size=1, max_size=4),
    items=st.lists(_raw_item, min_size=1, max_size=12),
    bad=st.none() | st.tuples(st.integers(0, 11), _bad_item),
    writer=st.sampled_from(sorted(WRITERS)),
    fresh=st.booleans(),
)
def test_encoded_batch_equals_the_general_answer(
    phases: list[list[tuple[int, ...]]],
    items: list[Any],
    bad: tuple[int, Any] | None,
    writer: str,
    fresh: bool,
) -> None:
    if bad is not None:
        items = [*items]
        items.insert(bad[0] % (len(items) + 1), bad[1])
    raw = WRITERS[writer]({"items": items})
    cache = Cache(capacity=2)
    lookups = Availability(cache, _GROUPS, 5, lambda: fresh)
    ver = 0
    for records in phases:  # records change between answers: the memo must follow
        for rec in records:
            ver += 1
            _record(cache, ver, rec)
        try:
            want = orjson.dumps(lookups.answer(decode.availability_items(orjson.loads(raw))))
        except AtpError:
            want = None
        # the same bytes for every valid body, None (then the general path's error) for the
        # rest; the second time from the memo. msgspec type-checks every occurrence of a
        # repeated key, so a body whose decoy "items" is a string goes the general way.
        for _ in range(2):
            got = lookups.batch_bytes(raw)
            assert got == want or (writer == "duplicate" and got is None)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"items":[{"sku":"S0","sku":"S1"}]}',  # duplicate keys: the last one, as orjson
        b'{"items":[{"sku":"S9"}],"items":[{"sku":"S0","location":"L0"}]}',
        b'{"items":[{"sku":"S0","qty":1e0}]}',  # a float, however written: 400
        b'{"items":[{"sku":"S0","qty":-0}]}',
        b'{"items":[{"sku":"S0","qty":null,"location":null,"group":null}]}',
        b'\xef\xbb\xbf{"items":[{"sku":"S0"}]}',  # a byte-order mark: 400
        b'{"items":[{"sku":"S0"}]} {}',  # trailing data: 400
        b'{"items":[]}',
        b'{"items":[{"sku":"S0"}],"more":1}',
        b'[{"sku":"S0"}]',
        b'{"items":[{"sku":"S\\u0030","location":"\\u004c0"}]}',
    ],
)
def test_encoded_batch_reads_json_as_orjson_does(raw: bytes) -> None:
    cache = Cache()
    _record(cache, 1, (0, 0, 9, 0, 0, 0, 0))
    lookups = Availability(cache, _GROUPS, 5, lambda: True)
    try:
        want = orjson.dumps(lookups.answer(decode.availability_items(orjson.loads(raw))))
    except (AtpError, orjson.JSONDecodeError):
        want = None
    assert lookups.batch_bytes(raw) == want
