"""Property tests for the decoders (atp_service/decode.py): untrusted JSON in, a typed request
or a BadRequest out, never anything else.

- any JSON value, and any near-valid body (a valid one with fields replaced by arbitrary JSON,
  dropped or added), gives a result or a :class:`BadRequest` whose ``errors`` name a pointer;
- valid bodies round-trip: every field comes out as it went in (defaults for absent or null
  optional fields);
- every bound of contract.md s2/s3 is enforced at its edge: the last value in is taken, the
  first value out is refused with the field's pointer.

Inputs go through ``orjson`` first, as they do in the service, so only JSON values reach the
decoders. ``tests/fuzz/fuzz_decoders.py`` drives the same decoders with atheris, and
:func:`test_atheris_fuzz_target` runs it briefly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atp_service import decode
from atp_service.config import PRIORITIES
from atp_service.errors import BadRequest
from atp_service.inventory import MAX_QTY, MAX_SEQ, Adjustment, Snapshot
from atp_service.reservation import Line

from .json_forms import WRITERS

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# strategies

ID_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
identifiers = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(ID_FIRST),
    st.text(ID_FIRST + "._:-", max_size=63),
)
timestamps = st.datetimes().map(lambda t: t.isoformat() + "Z")
quantities = st.integers(1, MAX_QTY)
figures = st.integers(0, MAX_QTY)
deltas = st.integers(-MAX_QTY, MAX_QTY)
seqs = st.integers(0, MAX_SEQ - 1)
holds = st.integers(1, decode.MAX_HOLD_SECONDS)

FIELD_NAMES = [
    "event_id", "type", "sku", "location", "seq", "on_hand", "allocated", "safety_stock",
    "on_hand_delta", "allocated_delta", "reason", "occurred_at", "reservation_id", "priority",
    "lines", "hold_seconds", "qty", "group", "items", "events",
]  # fmt: skip
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson parses
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | identifiers
    | timestamps
    | st.sampled_from(["snapshot", "adjustment", *PRIORITIES, "", "0", "1e3"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=10), inner, max_size=8)
    ),
    max_leaves=30,
)


def snapshot_of(sku: str, loc: str, seq: int, oh: int, al: int, ss: int, eid: str, ts: str) -> Any:
    return {"event_id": eid, "type": "snapshot", "sku": sku, "location": loc, "seq": seq,
            "on_hand": oh, "allocated": al, "safety_stock": ss, "occurred_at": ts}  # fmt: skip


snapshots = st.builds(
    snapshot_of, identifiers, identifiers, seqs, figures, figures, figures, identifiers, timestamps
)


@st.composite
def adjustments(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "event_id": draw(identifiers), "type": "adjustment", "sku": draw(identifiers),
        "location": draw(identifiers), "seq": draw(seqs), "occurred_at": draw(timestamps),
    }  # fmt: skip
    for name, strategy in (
        ("on_hand_delta", deltas),
        ("allocated_delta", deltas),
        ("reason", st.text(max_size=200)),
    ):
        if draw(st.booleans()):
            raw[name] = draw(strategy)
    return raw


lines = st.fixed_dictionaries({"sku": identifiers, "location": identifiers, "qty": quantities})


@st.composite
def reservations(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reservation_id": draw(identifiers),
        "priority": draw(st.sampled_from(PRIORITIES)),
        "lines": draw(st.lists(lines, min_size=1, max_size=decode.MAX_LINES)),
    }
    hold = draw(st.sampled_from(["absent", "null", "value"]))
    if hold != "absent":
        body["hold_seconds"] = None if hold == "null" else draw(holds)
    return body


@st.composite
def batch_items(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"sku": draw(identifiers)}
    where = draw(st.sampled_from(["location", "group", None]))
    for name in ("location", "group"):
        if name == where:
            item[name] = draw(identifiers)
        elif draw(st.booleans()):
            item[name] = None  # null is the same as absent
    qty = draw(st.sampled_from(["absent", "null", "value"]))
    if qty != "absent":
        item["qty"] = None if qty == "null" else draw(quantities)  # null is the same as absent
    return item


batches = st.fixed_dictionaries(
    {"items": st.lists(batch_items(), min_size=1, max_size=decode.MAX_BATCH_ITEMS)}
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid body with a few fields, anywhere in it, replaced, dropped or added."""
    body = draw(valid)
    containers = [body]
    for value in body.values():
        if isinstance(value, list):
            containers += [x for x in value if isinstance(x, dict)]
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(containers))
        own = st.sampled_from(sorted(target)) if target else st.nothing()  # emptied by a drop
        name = draw(own | st.sampled_from(FIELD_NAMES))
        action = draw(st.sampled_from(["replace", "drop"]))
        if action == "drop":
            target.pop(name, None)
        else:
            target[name] = draw(json_values)
    return body


def as_json(value: Any) -> Any:
    """What the service's decoders see: the value after a trip through JSON."""
    return orjson.loads(orjson.dumps(value))


DECODERS: dict[str, Callable[[Any], Any]] = {
    "event": decode.event,
    "reservation_request": decode.reservation_request,
    "availability_items": decode.availability_items,
    "events_envelope": decode.events_envelope,
}


def decode_or_problem(decoder: Callable[[Any], Any], value: Any) -> Any:
    """The decoder's result, or its BadRequest (checked to be a well-formed problem)."""
    try:
        return decoder(value)
    except BadRequest as exc:
        assert exc.status == 400 and exc.detail
        for error in exc.extra.get("errors", []):
            assert error["pointer"].startswith("/") and error["detail"], exc.extra
        return exc


def refused_at(decoder: Callable[[Any], Any], value: Any, pointer: str) -> None:
    with pytest.raises(BadRequest) as info:
        decoder(as_json(value))
    assert info.value.extra["errors"][0]["pointer"] == pointer, info.value.extra


# ---------------------------------------------------------------------------------------------
# anything in: a result or a BadRequest


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(value=json_values)
def test_any_json_value(name: str, value: Any) -> None:
    decode_or_problem(DECODERS[name], as_json(value))


@FAST
@given(
    body=mutated(snapshots)
    | mutated(adjustments())
    | mutated(reservations())
    | mutated(batches)
    | mutated(st.fixed_dictionaries({"events": st.lists(snapshots, min_size=1, max_size=5)}))
)
def test_near_valid_bodies(body: Any) -> None:
    body = as_json(body)
    for decoder in DECODERS.values():
        decode_or_problem(decoder, body)


@FAST
@given(value=json_values | identifiers)
def test_is_identifier_agrees_with_identifier(value: Any) -> None:
    value = as_json(value)
    accepted = not isinstance(decode_or_problem(lambda v: decode.identifier(v, "/x"), value),
                              BadRequest)  # fmt: skip
    assert decode.is_identifier(value) is accepted


# ---------------------------------------------------------------------------------------------
# valid in: the same out


@FAST
@given(raw=snapshots)
def test_snapshot_round_trips(raw: dict[str, Any]) -> None:
    assert decode.event(as_json(raw)) == Snapshot(
        raw["event_id"], raw["sku"], raw["location"], raw["seq"], raw["on_hand"],
        raw["allocated"], raw["safety_stock"], raw["occurred_at"],
    )  # fmt: skip


@FAST
@given(raw=adjustments(), extra=st.dictionaries(st.text(max_size=10), json_values, max_size=3))
def test_adjustment_round_trips_and_tolerates_extra_fields(
    raw: dict[str, Any], extra: dict[str, Any]
) -> None:
    expected = Adjustment(
        raw["event_id"], raw["sku"], raw["location"], raw["seq"], raw.get("on_hand_delta", 0),
        raw.get("allocated_delta", 0), raw.get("reason", ""), raw["occurred_at"],
    )  # fmt: skip
    assert decode.event(as_json(raw)) == expected
    # an event may carry fields the contract does not name (the ERP may add some)
    assert decode.event(as_json({**extra, **raw})) == expected


@FAST
@given(body=reservations())
def test_reservation_round_trips(body: dict[str, Any]) -> None:
    totals: dict[tuple[str, str], int] = {}
    for line in body["lines"]:
        key = (line["sku"], line["location"])
        totals[key] = totals.get(key, 0) + line["qty"]
    result = decode_or_problem(decode.reservation_request, as_json(body))
    if any(total > MAX_QTY for total in totals.values()):
        assert isinstance(result, BadRequest)  # repeated lines are summed; so is the bound
        assert result.extra["errors"][0]["pointer"] == "/lines"
        return
    assert result.reservation_id == body["reservation_id"]
    assert result.priority == body["priority"]
    assert result.hold_seconds == body.get("hold_seconds")
    assert result.raw_lines == tuple(Line(x["sku"], x["location"], x["qty"]) for x in body["lines"])
    assert {(x.sku, x.location): x.qty for x in result.lines} == totals


@FAST
@given(body=batches)
def test_batch_round_trips(body: dict[str, Any]) -> None:
    expected = [
        (x["sku"], x.get("location"), x.get("group"), x.get("qty") or 1) for x in body["items"]
    ]
    assert decode.availability_items(as_json(body)) == expected


@FAST
@given(events=st.lists(json_values, min_size=1, max_size=20))
def test_envelope_passes_events_through(events: list[Any]) -> None:
    # the envelope holds anything: each event is judged on its own (and answered in `rejected`)
    assert decode.events_envelope(as_json({"events": events})) == as_json(events)


# ---------------------------------------------------------------------------------------------
# bounds, at their edges

SNAPSHOT = snapshot_of("S1", "DC1", 10, 100, 5, 2, "e-1", "2026-11-22T10:00:00Z")
ADJUSTMENT = {**SNAPSHOT, "type": "adjustment", "on_hand_delta": -3, "allocated_delta": 0}
for _name in ("on_hand", "allocated", "safety_stock"):
    del ADJUSTMENT[_name]
LINE = {"sku": "S1", "location": "DC1", "qty": 1}
RESERVATION = {"reservation_id": "r-1", "priority": "checkout", "lines": [LINE]}

# (decoder, body, pointer, where the value goes, lowest and highest value taken)


def _at(name: str, *path: str | int) -> Callable[[Any, Any], Any]:
    def put(body: Any, value: Any) -> Any:
        body = orjson.loads(orjson.dumps(body))
        target = body
        for step in path:
            target = target[step]
        target[name] = value
        return body

    return put


INT_BOUNDS = [
    (decode.event, SNAPSHOT, "/seq", _at("seq"), 0, MAX_SEQ - 1),
    *[(decode.event, SNAPSHOT, f"/{n}", _at(n), 0, MAX_QTY)
      for n in ("on_hand", "allocated", "safety_stock")],
    *[(decode.event, ADJUSTMENT, f"/{n}", _at(n), -MAX_QTY, MAX_QTY)
      for n in ("on_hand_delta", "allocated_delta")],
    (decode.event, ADJUSTMENT, "/seq", _at("seq"), 0, MAX_SEQ - 1),
    (decode.reservation_request, RESERVATION, "/lines/0/qty", _at("qty", "lines", 0), 1, MAX_QTY),
    (decode.reservation_request, RESERVATION, "/hold_seconds", _at("hold_seconds"), 1,
     decode.MAX_HOLD_SECONDS),
    (decode.availability_items, {"items": [{"sku": "S1"}]}, "/items/0/qty",
     _at("qty", "items", 0), 1, MAX_QTY),
]  # fmt: skip


@pytest.mark.parametrize(("decoder", "body", "pointer", "put", "lo", "hi"), INT_BOUNDS)
def test_integer_bounds(
    decoder: Callable[[Any], Any], body: Any, pointer: str, put: Callable[[Any, Any], Any],
    lo: int, hi: int,
) -> None:  # fmt: skip
    for good in (lo, hi):
        decoder(as_json(put(body, good)))
    for bad in (lo - 1, hi + 1, True, False, float(lo), str(lo), [lo]):
        refused_at(decoder, put(body, bad), pointer)


@pytest.mark.parametrize(
    ("decoder", "body", "name", "cap"),
    [
        (decode.reservation_request, RESERVATION, "lines", decode.MAX_LINES),
        (decode.availability_items, {"items": [{"sku": "S1"}]}, "items", decode.MAX_BATCH_ITEMS),
        (decode.events_envelope, {"events": [SNAPSHOT]}, "events", decode.MAX_EVENTS),
    ],
)
def test_list_bounds(decoder: Callable[[Any], Any], body: Any, name: str, cap: int) -> None:
    one = body[name][0]
    decoder(as_json({**body, name: [one] * cap}))
    for bad in ([], [one] * (cap + 1), one, None):
        refused_at(decoder, {**body, name: bad}, f"/{name}")


def test_identifier_bounds() -> None:
    longest = "A" + "b" * 63
    assert decode.is_identifier(longest)
    places: list[tuple[Callable[[Any], Any], Callable[[Any, Any], Any], str]] = [
        *[(decode.event, _at(n), f"/{n}") for n in ("event_id", "sku", "location")],
        (decode.reservation_request, _at("reservation_id"), "/reservation_id"),
        (decode.reservation_request, _at("sku", "lines", 0), "/lines/0/sku"),
        (decode.reservation_request, _at("location", "lines", 0), "/lines/0/location"),
        (decode.availability_items, _at("sku", "items", 0), "/items/0/sku"),
        (decode.availability_items, _at("location", "items", 0), "/items/0/location"),
        (decode.availability_items, _at("group", "items", 0), "/items/0/group"),
    ]
    bodies = {decode.event: SNAPSHOT, decode.reservation_request: RESERVATION,
              decode.availability_items: {"items": [{"sku": "S1"}]}}  # fmt: skip
    for decoder, put, pointer in places:
        decoder(as_json(put(bodies[decoder], longest)))
        for bad in (longest + "c", "", "-a", "a/b", "a b", "é", 7, ["a"]):
            refused_at(decoder, put(bodies[decoder], bad), pointer)


def test_other_bounds() -> None:
    decode.event(as_json({**ADJUSTMENT, "reason": "x" * 200}))
    refused_at(decode.event, {**ADJUSTMENT, "reason": "x" * 201}, "/reason")
    refused_at(decode.event, {**SNAPSHOT, "occurred_at": "2026-11-22T10:00:00" + "0" * 30},
               "/occurred_at")  # fmt: skip
    refused_at(decode.event, {**SNAPSHOT, "type": "delta"}, "/type")
    refused_at(decode.reservation_request, {**RESERVATION, "priority": "urgent"}, "/priority")
    half = {**LINE, "qty": MAX_QTY // 2 + 1}
    refused_at(decode.reservation_request, {**RESERVATION, "lines": [half, half]}, "/lines")
    both = {"sku": "S1", "location": "DC1", "group": "EAST"}
    refused_at(decode.availability_items, {"items": [both]}, "/items/0")
    for decoder, body in ((decode.reservation_request, RESERVATION),
                          (decode.availability_items, {"items": [{"sku": "S1"}]}),
                          (decode.events_envelope, {"events": [SNAPSHOT]})):  # fmt: skip
        refused_at(decoder, {**body, "note": "x"}, "/note")


# ---------------------------------------------------------------------------------------------
# the fast path for ingestion, where there is one, agrees with decode.event


@pytest.mark.skipif(not hasattr(decode, "event_arg"), reason="no decode.event_arg fast path")
@FAST
@given(raw=mutated(snapshots) | mutated(adjustments()) | snapshots | adjustments() | json_values)
def test_event_arg_agrees_with_event(raw: Any) -> None:
    raw = as_json(raw)
    slow = decode_or_problem(decode.event, raw)
    fast = decode_or_problem(decode.event_arg, raw)
    if isinstance(slow, BadRequest):
        assert isinstance(fast, BadRequest) and fast.extra == slow.extra, (fast, slow)
    else:
        assert not isinstance(fast, BadRequest), fast
        assert fast[0] == f"{slow.sku}|{slow.location}" and fast[1] == slow.seq, (fast, slow)


def _arg_or_problem(decoder: Callable[[Any], Any], value: Any) -> Any:
    try:
        return decoder(value)
    except BadRequest as exc:
        return ("problem", exc.detail, exc.extra)


def _orjson_then_event_arg(value: bytes | None) -> tuple[str, int, str]:
    """What decode.event_arg_json must equal: orjson, then decode.event_arg."""
    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc.msg}") from None
    return decode.event_arg(parsed)


@FAST
@given(
    raw=mutated(snapshots) | mutated(adjustments()) | snapshots | adjustments() | json_values,
    writer=st.sampled_from(sorted(WRITERS)),
)
def test_event_arg_json_agrees_with_event_arg(raw: Any, writer: str) -> None:
    """The Kafka feed's decoder, from a record's bytes (msgspec first), against orjson and
    decode.event_arg: the same (key, seq, argument), or the same problem."""
    value = WRITERS[writer](raw)
    want = _arg_or_problem(_orjson_then_event_arg, value)
    assert _arg_or_problem(decode.event_arg_json, value) == want


_EVENT_OK = (
    b'{"type":"snapshot","event_id":"e","sku":"S","location":"L","seq":1,'
    b'"occurred_at":"2026-11-22T10:00:00Z","on_hand":1,"allocated":0,"safety_stock":0}'
)


@pytest.mark.parametrize(
    "value",
    [
        None,  # a tombstone
        _EVENT_OK,
        b"",
        b"{not json",
        b"[" * 1_500 + b"]" * 1_500,  # nested past orjson's limit
        _EVENT_OK[:-1] + b',"deep":' + b"[" * 1_100 + b"]" * 1_100 + b"}",  # orjson: too deep
        _EVENT_OK.replace(b'"event_id":"e"', b'"event_id":"e 1"'),  # each check of the fast path
        _EVENT_OK.replace(b'"sku":"S"', b'"sku":"S/1"'),
        _EVENT_OK.replace(b'"location":"L"', b'"location":""'),
        _EVENT_OK.replace(b"2026-11-22T10:00:00Z", b"2026-13-22T10:00:00Z"),
        _EVENT_OK.replace(b'"on_hand":1', b'"on_hand":-1'),
        b'\xef\xbb\xbf{"type":"snapshot"}',
        b'{"type":"snapshot","type":"adjustment","event_id":"e","sku":"S","location":"L",'
        b'"seq":1,"occurred_at":"2026-11-22T10:00:00Z","on_hand":1,"allocated":0,'
        b'"safety_stock":0}',
        b'{"type":"adjustment","event_id":"e","sku":"S","location":"L","seq":1,'
        b'"occurred_at":"2026-11-22T10:00:00Z","on_hand_delta":1.0}',
        b'{"type":"adjustment","event_id":"e","sku":"S","location":"L","seq":true,'
        b'"occurred_at":"2026-11-22T10:00:00Z"}',
        b'{"type":"adjustment","event_id":"e","sku":"S","location":"L","seq":1,'
        b'"occurred_at":"2026-11-22T10:00:00Z","reason":"' + "é".encode() * 201 + b'"}',
    ],
)
def test_event_arg_json_reads_json_as_orjson_does(value: bytes | None) -> None:
    want = _arg_or_problem(_orjson_then_event_arg, value)
    assert _arg_or_problem(decode.event_arg_json, value) == want


def test_event_arg_json_falls_back_when_msgspec_recurses_too_deep() -> None:
    """msgspec raises RecursionError (not DecodeError) past Python's recursion limit, which
    a deep stack (the feed's) lowers; orjson has its own limit (1,024) and reads this."""
    value = _EVENT_OK[:-1] + b',"deep":' + b"[" * 200 + b"]" * 200 + b"}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150)
    try:
        with pytest.raises(RecursionError):
            msgspec.json.decode(value)
        got = decode.event_arg_json(value)
    finally:
        sys.setrecursionlimit(limit)
    assert got == ("S|L", 1, "s1|1|0|0")


# ---------------------------------------------------------------------------------------------
# the atheris target, briefly (a longer run: see tests/fuzz/fuzz_decoders.py)

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
FUZZ_RUNS = 500_000
FUZZ_SECONDS = 10
FUZZ_SEED = 20261122


@pytest.mark.skipif(sys.platform != "linux", reason="atheris is installed on Linux only")
def test_atheris_fuzz_target(tmp_path: Path) -> None:
    """The atheris target in a subprocess for a bounded number of inputs from the seed corpus;
    a crash (an exception other than BadRequest) fails with the input that caused it."""
    found = tmp_path / "corpus"  # libFuzzer writes new inputs to the first corpus directory
    found.mkdir()
    command = [
        sys.executable, str(FUZZ_DIR / "fuzz_decoders.py"), f"-runs={FUZZ_RUNS}",
        f"-max_total_time={FUZZ_SECONDS}", f"-seed={FUZZ_SEED}", "-max_len=4096",
        f"-artifact_prefix={tmp_path}/", str(found), str(FUZZ_DIR / "corpus"),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60
    )
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert done.returncode == 0 and not crashes, done.stderr[-4000:]
    assert re.search(r"^Done \d+ runs", done.stderr, re.M), done.stderr[-2000:]


def assert_answers_as(decoder: Any, body: Any, checked: Any) -> None:
    """``decoder`` (a public one, fast path first) answers ``body`` exactly as the checked
    path did: the same value, or a BadRequest with the same details."""
    public = decode_or_problem(decoder, body)
    if isinstance(checked, BadRequest):
        assert isinstance(public, BadRequest) and public.extra == checked.extra
    else:
        assert public == checked


# the reservation fast path accepts only what the checked path accepts, with the same result
@FAST
@given(body=reservations() | mutated(reservations()) | json_values)
def test_reservation_fast_path_agrees_with_the_checked_path(body: Any) -> None:
    body = as_json(body)
    fast = decode._reservation_fast(body)
    checked = decode_or_problem(decode._reservation_checked, body)
    if fast is not None:
        assert fast == checked and fast.lines == checked.lines, (fast, checked)
    # and the public decoder answers exactly as the checked path, error details included
    assert_answers_as(decode.reservation_request, body, checked)


def test_reservation_fast_path_takes_the_common_bodies() -> None:
    assert decode._reservation_fast(RESERVATION) == decode._reservation_checked(RESERVATION)
    held = {**RESERVATION, "hold_seconds": 900, "lines": [LINE, {**LINE, "sku": "S2"}]}
    assert decode._reservation_fast(held) == decode._reservation_checked(held)


@FAST
@given(body=batches | mutated(batches) | json_values)
def test_batch_fast_path_agrees_with_the_checked_path(body: Any) -> None:
    body = as_json(body)
    fast = decode._items_fast(body)
    checked = decode_or_problem(decode._items_checked, body)
    if fast is not None:
        assert fast == checked, (fast, checked)
    assert_answers_as(decode.availability_items, body, checked)


def test_batch_fast_path_takes_the_common_bodies() -> None:
    body = {"items": [{"sku": "S1"}, {"sku": "S1", "location": "DC1", "qty": 2},
                      {"sku": "S2", "group": "EAST", "qty": None}]}  # fmt: skip
    assert decode._items_fast(body) == decode._items_checked(body) == [
        ("S1", None, None, 1), ("S1", "DC1", None, 2), ("S2", None, "EAST", 1),
    ]  # fmt: skip
