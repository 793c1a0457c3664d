"""The OpenAPI 3.0.3 document served at ``/openapi.json`` (and exported to ``docs/openapi.json``).

Plain dicts, built once at start-up. The document must import into Salesforce External
Services without manual mapping (contract.md s2), so it keeps to what that importer handles
well: OpenAPI 3.0.x, JSON, an ``operationId`` per operation, no ``not``, no composition
(``oneOf`` / ``anyOf`` / ``allOf``: the event is one object schema holding the union of the
snapshot and adjustment fields), no 3.1-only keyword, no GET with a body, every schema named
under ``components.schemas``, shallow nesting and short alphanumeric component names. Error
responses list both ``application/problem+json`` and ``application/json``: the service sends
the latter to clients whose ``Accept`` names ``application/json`` but not problem+json.

Limits come from the decoders (:mod:`atp_service.decode`) and the domain constants, so the
document cannot drift from the validation rules; ``tests/test_openapi.py`` checks the rest
(routes, examples, live responses) against the running code.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .config import PRIORITIES
from .decode import ID_RE, MAX_BATCH_ITEMS, MAX_EVENTS, MAX_HOLD_SECONDS, MAX_LINES
from .errors import (
    PROBLEM_BASE,
    AtpError,
    BadRequest,
    Forbidden,
    InsufficientStock,
    NotCommittable,
    NotFound,
    PayloadTooLarge,
    Throttled,
    Unauthorized,
    Unavailable,
    UnknownGroup,
    UnsupportedMediaType,
)
from .http.endpoint import MAX_BODY
from .inventory import MAX_QTY, MAX_SEQ

Json = dict[str, Any]

ID_PATTERN = f"^{ID_RE.pattern}$"
RESERVATION_STATUSES = ["held", "confirmed", "rejected", "released", "expired"]
STOCK_STATUSES = ["in_stock", "low_stock", "out_of_stock"]
PROBLEM_TYPES = "application/problem+json"
JSON = "application/json"

# ---------------------------------------------------------------------------------------------
# Small schema builders (inline primitives; objects are named components referenced by $ref)


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _id(description: str, example: str) -> Json:
    return {
        "type": "string",
        "pattern": ID_PATTERN,
        "minLength": 1,
        "maxLength": 64,
        "description": description,
        "example": example,
    }


def _int(
    description: str,
    example: int,
    lo: int | None = None,
    hi: int | None = None,
    fmt: str = "int64",
) -> Json:
    schema: Json = {"type": "integer", "format": fmt, "description": description}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    schema["example"] = example
    return schema


def _qty(description: str, example: int) -> Json:
    return _int(description, example, 1, MAX_QTY, "int32")


def _seq(description: str, example: int) -> Json:
    return _int(description, example, 0, MAX_SEQ - 1)


def _str(description: str, example: str, **extra: Any) -> Json:
    return {"type": "string", "description": description, **extra, "example": example}


def _time(description: str, example: str) -> Json:
    return _str(description, example, format="date-time")


def _enum(description: str, values: list[str], example: str) -> Json:
    return {"type": "string", "enum": values, "description": description, "example": example}


def _bool(description: str, example: bool) -> Json:
    return {"type": "boolean", "description": description, "example": example}


def _number(description: str, example: float, nullable: bool = False) -> Json:
    schema: Json = {"type": "number", "format": "double", "minimum": 0, "description": description}
    if nullable:
        schema["nullable"] = True
    schema["example"] = example
    return schema


def _nullable(schema: Json) -> Json:
    """``schema`` that also takes null (OpenAPI 3.0 ``nullable``): for optional request fields,
    where clients such as Salesforce External Services send null for a field they leave unset,
    and the service reads null as absent."""
    return {**schema, "nullable": True}


def _array(item: Json, description: str, lo: int | None = None, hi: int | None = None) -> Json:
    schema: Json = {"type": "array", "description": description, "items": item}
    if lo is not None:
        schema["minItems"] = lo
    if hi is not None:
        schema["maxItems"] = hi
    return schema


def _object(
    description: str, properties: Json, required: list[str], example: Json, **extra: Any
) -> Json:
    return {
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
        **extra,
        "example": example,
    }


# ---------------------------------------------------------------------------------------------
# Examples (each one also validates against its schema: tests/test_openapi.py)

T0 = "2026-11-22T10:05:00.000Z"
T_EXPIRES = "2026-11-22T10:20:00.000Z"

EX_LOCATION = {
    "location": "DC1", "atp": 93, "on_hand": 100, "allocated": 5, "safety_stock": 2,
    "pending": 0, "seq": 10, "status": "in_stock",
}  # fmt: skip
EX_LOCATION_LOW = {
    "location": "ST1", "atp": 3, "on_hand": 4, "allocated": 0, "safety_stock": 1,
    "pending": 0, "seq": 7, "status": "low_stock",
}  # fmt: skip
EX_AVAILABILITY = {
    "sku": "S1", "total_atp": 96, "stale": False, "locations": [EX_LOCATION, EX_LOCATION_LOW],
}  # fmt: skip
EX_BATCH_ITEM = {"sku": "S1", "location": "DC1", "qty": 2}
EX_BATCH = {"items": [EX_BATCH_ITEM, {"sku": "S1", "group": "EAST", "qty": 10}, {"sku": "S9"}]}
EX_BATCH_RESULT_ITEM = {
    "sku": "S1", "location": "DC1", "atp": 93, "available": True, "status": "in_stock",
}  # fmt: skip
EX_BATCH_RESULT = {
    "items": [
        EX_BATCH_RESULT_ITEM,
        {"sku": "S1", "group": "EAST", "atp": 96, "available": True, "status": "in_stock"},
        {"sku": "S9", "atp": 0, "available": False, "status": "unknown"},
    ],
    "stale": False,
}
EX_NEW_LINE = {"sku": "S1", "location": "DC1", "qty": 2}
EX_NEW_RESERVATION = {
    "reservation_id": "cart-1042", "priority": "checkout", "lines": [EX_NEW_LINE],
    "hold_seconds": 900,
}  # fmt: skip
EX_RESERVED_LINE = {"sku": "S1", "location": "DC1", "qty": 2}
EX_RESERVATION = {
    "reservation_id": "cart-1042", "status": "held", "priority": "checkout",
    "lines": [EX_RESERVED_LINE], "created_at": T0, "updated_at": T0, "hold_seconds": 900,
    "committed": False, "expires_at": T_EXPIRES,
}  # fmt: skip
EX_COMMITTED = {
    **EX_RESERVATION, "status": "confirmed", "committed": True,
    "updated_at": "2026-11-22T10:07:12.250Z",
}  # fmt: skip
EX_RELEASED = {**EX_RESERVATION, "status": "released", "updated_at": "2026-11-22T10:09:30.000Z"}
EX_SNAPSHOT = {
    "event_id": "e-1", "type": "snapshot", "sku": "S1", "location": "DC1", "seq": 10,
    "on_hand": 100, "allocated": 5, "safety_stock": 2, "occurred_at": "2026-11-22T10:00:00Z",
}  # fmt: skip
EX_ADJUSTMENT = {
    "event_id": "e-2", "type": "adjustment", "sku": "S1", "location": "DC1", "seq": 11,
    "on_hand_delta": -3, "allocated_delta": 0, "reason": "sale",
    "occurred_at": "2026-11-22T10:00:01Z",
}  # fmt: skip
EX_EVENTS = {"events": [EX_SNAPSHOT, EX_ADJUSTMENT]}
EX_REJECTED = {"index": 2, "reason": "/on_hand: must be an integer"}
EX_EVENT_RESULT = {"applied": 2, "duplicates": 0, "buffered": 0, "rejected": [EX_REJECTED]}
EX_SHORT_LINE = {"sku": "S1", "location": "DC1", "requested": 120, "atp": 93}
EX_FIELD_ERROR = {"pointer": "/lines/0/qty", "detail": "must be between 1 and 1000000000"}
EX_HEALTH = {"status": "ok"}
EX_READY = {"status": "ready", "keys": 125000}
EX_METRICS = (
    "# HELP atp_cache_keys (sku, location) keys in this replica's cache\n"
    "# TYPE atp_cache_keys gauge\n"
    "atp_cache_keys 125000.0\n"
)
EX_STATUS_QUEUE = {"length": 12, "oldest_seconds": 0.8}
EX_STATUS: Json = {
    "status": "ok",
    "reasons": [],
    "generated_at": "2026-11-22T10:05:00Z",
    "replica": {"id": "atp-7f9c:1", "version": "0.1.0", "started_at": "2026-11-22T08:00:00Z",
                "uptime_seconds": 7500.2},
    "cache": {"keys": 125000, "ready": True, "fresh": True, "age_seconds": 0.12},
    "feed": {"topic": "erp.inventory.v1", "lag": 3, "joined": True, "event_age_seconds": 0.4,
             "broker_reachable": True, "last_error": None},
    "erp": {"mode": "erp", "rate": 50.0, "breaker": "closed",
            "queues": {"checkout": EX_STATUS_QUEUE, "sales": {"length": 40, "oldest_seconds": 2.5},
                       "background": {"length": 0, "oldest_seconds": 0.0}},
            "inflight": 4},
    "replicas_seen": 3,
    "groups": {"EAST": ["DC1", "ST1"]},
    "low_stock": 5,
}  # fmt: skip
EX_DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "ATP service", "version": "1.0.0"},
    "paths": {},
}


def _problem_example(error: type[AtpError], detail: str, instance: str, **extra: Any) -> Json:
    return {
        "type": error().type,
        "title": error.title,
        "status": error.status,
        "detail": detail,
        "instance": instance,
        **extra,
    }


EX_PROBLEM = _problem_example(
    BadRequest, "/lines/0/qty: must be between 1 and 1000000000", "/v1/reservations",
    errors=[EX_FIELD_ERROR],
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Component schemas

_SKU = "Stock-keeping unit."
_LOC = "Location (warehouse, store) identifier."


def _schemas() -> Json:
    atp_figure = "Available to promise: max(0, on_hand - allocated - safety_stock - pending)."
    return {
        "LocationAtp": _object(
            "Availability of one SKU at one location.",
            {
                "location": _id(_LOC, "DC1"),
                "atp": _int(atp_figure, 93, 0),
                "on_hand": _int(
                    "On hand as last reported by the ERP (may be negative after "
                    "an adjustment the ERP sent).",
                    100,
                ),
                "allocated": _int("Allocated in the ERP.", 5),
                "safety_stock": _int("Safety stock kept back.", 2, 0),
                "pending": _int(
                    "Quantity of this service's held or confirmed reservations "
                    "that no applied ERP event reflects yet.",
                    0,
                    0,
                ),
                "seq": _seq("The ERP sequence number last applied for this key.", 10),
                "status": _enum(
                    "`low_stock` when 0 < atp <= ATP_LOW_STOCK (default 5).",
                    STOCK_STATUSES,
                    "in_stock",
                ),
            },
            ["location", "atp", "on_hand", "allocated", "safety_stock", "pending", "seq", "status"],
            EX_LOCATION,
        ),
        "Availability": _object(
            "Availability of one SKU at the selected locations.",
            {
                "sku": _id(_SKU, "S1"),
                "total_atp": _int("Sum of `atp` over `locations`.", 96, 0),
                "stale": _bool(
                    "True when this replica knows it is behind the shared state or "
                    "a key waits behind an ERP sequence gap.",
                    False,
                ),
                "locations": _array(_ref("LocationAtp"), "One entry per selected location."),
            },
            ["sku", "total_atp", "stale", "locations"],
            EX_AVAILABILITY,
        ),
        "BatchQueryItem": _object(
            "One lookup: a SKU at one `location`, at a location `group`, or (neither given) at "
            "all its locations. Give `location` or `group`, not both; null is the same as "
            "absent. Unknown fields are rejected (400).",
            {
                "sku": _id(_SKU, "S1"),
                "location": _nullable(_id(_LOC, "DC1")),
                "group": _nullable(
                    _id("Location group (ATP_LOCATION_GROUPS); an unknown group is 400.", "EAST")
                ),
                "qty": _nullable(
                    _qty("Quantity wanted; `available` is atp >= qty (null: 1).", 2)
                    | {"default": 1}
                ),
            },
            ["sku"],
            EX_BATCH_ITEM,
            additionalProperties=False,
        ),
        "BatchQuery": _object(
            "Batch availability lookup.",
            {
                "items": _array(
                    _ref("BatchQueryItem"), "The lookups, answered in order.", 1, MAX_BATCH_ITEMS
                )
            },
            ["items"],
            EX_BATCH,
            additionalProperties=False,
        ),
        "BatchResultItem": _object(
            "Answer to one lookup, echoing its `location` or `group` when one was given. An "
            "unknown SKU, or a known SKU at an unknown location, reads atp 0, status `unknown`.",
            {
                "sku": _id(_SKU, "S1"),
                "location": _id(_LOC, "DC1"),
                "group": _id("Location group, when the lookup named one.", "EAST"),
                "atp": _int(atp_figure + " Summed over the group or all locations.", 93, 0),
                "available": _bool("atp >= the requested qty.", True),
                "status": _enum(
                    "Stock status; `unknown` for an unknown SKU or location.",
                    [*STOCK_STATUSES, "unknown"],
                    "in_stock",
                ),
            },
            ["sku", "atp", "available", "status"],
            EX_BATCH_RESULT_ITEM,
        ),
        "BatchResult": _object(
            "Batch availability answer.",
            {
                "items": _array(
                    _ref("BatchResultItem"), "One answer per lookup, in order.", hi=MAX_BATCH_ITEMS
                ),
                "stale": _bool("True when any answer may be behind the shared state.", False),
            },
            ["items", "stale"],
            EX_BATCH_RESULT,
        ),
        "NewLine": _object(
            "One line to reserve. Unknown fields are rejected (400).",
            {
                "sku": _id(_SKU, "S1"),
                "location": _id(_LOC, "DC1"),
                "qty": _qty(
                    "Quantity to reserve. Repeated (sku, location) lines are summed; "
                    "the sum is also at most 10^9.",
                    2,
                ),
            },
            ["sku", "location", "qty"],
            EX_NEW_LINE,
            additionalProperties=False,
        ),
        "NewReservation": _object(
            "A reservation: all lines are held or none. Without `hold_seconds` it goes to the "
            "ERP at once; with it, it is a cart hold that expires unless committed. Unknown "
            "fields are rejected (400).",
            {
                "reservation_id": _id("Client-chosen id; the idempotency key.", "cart-1042"),
                "priority": _enum(
                    "ERP queue priority; lower priorities are throttled first.",
                    list(PRIORITIES),
                    "checkout",
                ),
                "lines": _array(_ref("NewLine"), "Lines to hold.", 1, MAX_LINES),
                "hold_seconds": _nullable(
                    _int(
                        "Cart hold: counted at once, not sent to the ERP, expired after this "
                        "many seconds unless committed. Null is the same as absent.",
                        900,
                        1,
                        MAX_HOLD_SECONDS,
                        "int32",
                    )
                ),
            },
            ["reservation_id", "priority", "lines"],
            EX_NEW_RESERVATION,
            additionalProperties=False,
        ),
        "ReservedLine": _object(
            "One (sku, location) line of a reservation, quantities of repeated lines summed.",
            {
                "sku": _id(_SKU, "S1"),
                "location": _id(_LOC, "DC1"),
                "qty": _qty("Quantity held.", 2),
                "erp_seq": _seq(
                    "Seq of the ERP event that carries the allocation (once the ERP confirmed).", 12
                ),
            },
            ["sku", "location", "qty"],
            EX_RESERVED_LINE,
        ),
        "Reservation": _object(
            "Current state of a reservation. `held`: counted (a cart hold, or waiting for the "
            "ERP); `confirmed`: the ERP accepted (standalone: confirmed locally); `rejected`: "
            "the ERP refused, stock returned; `released`: cancelled by the client; `expired`: "
            "a cart hold that timed out.",
            {
                "reservation_id": _id("The client's reservation id.", "cart-1042"),
                "status": _enum("Reservation status.", RESERVATION_STATUSES, "held"),
                "priority": _enum("ERP queue priority.", list(PRIORITIES), "checkout"),
                "lines": _array(
                    _ref("ReservedLine"), "One line per (sku, location).", 1, MAX_LINES
                ),
                "created_at": _time("When the reservation was accepted.", T0),
                "updated_at": _time("Last status change.", T0),
                "hold_seconds": _int(
                    "Cart holds only: the hold duration.", 900, 1, MAX_HOLD_SECONDS, "int32"
                ),
                "committed": _bool("Cart holds only: whether it was committed.", False),
                "expires_at": _time(
                    "Cart holds only: when an uncommitted hold expires.", T_EXPIRES
                ),
                "reason": _str("The ERP's reason, when rejected.", "credit hold"),
            },
            ["reservation_id", "status", "priority", "lines", "created_at", "updated_at"],
            EX_RESERVATION,
        ),
        "Event": _object(
            "One ERP inventory event (contract section 3). `snapshot` replaces the key's "
            "figures and requires `on_hand`, `allocated` and `safety_stock` (each 0..10^9); "
            "`adjustment` applies `on_hand_delta` / `allocated_delta` (default 0) and takes an "
            "optional `reason`. Exactly-once is by (sku, location, seq). Unknown extra fields "
            "are ignored. An invalid event is not a 400: it is answered in `rejected`.",
            {
                "event_id": _id("Event id, for tracing.", "e-1"),
                "type": _enum("Event kind.", ["snapshot", "adjustment"], "snapshot"),
                "sku": _id(_SKU, "S1"),
                "location": _id(_LOC, "DC1"),
                "seq": _seq("The ERP's per-(sku, location) sequence number.", 10),
                "on_hand": _int("snapshot: on hand.", 100, 0, MAX_QTY),
                "allocated": _int("snapshot: allocated.", 5, 0, MAX_QTY),
                "safety_stock": _int("snapshot: safety stock.", 2, 0, MAX_QTY),
                "on_hand_delta": _int("adjustment: change of on hand.", -3, -MAX_QTY, MAX_QTY),
                "allocated_delta": _int("adjustment: change of allocated.", 0, -MAX_QTY, MAX_QTY),
                "reason": _str("adjustment: the ERP's reason.", "sale", maxLength=200),
                "occurred_at": _time(
                    "When the ERP recorded the event (RFC 3339).", "2026-11-22T10:00:00Z"
                )
                | {"maxLength": 40},
            },
            ["event_id", "type", "sku", "location", "seq", "occurred_at"],
            EX_SNAPSHOT,
        ),
        "EventBatch": _object(
            "ERP inventory events to apply. Unknown top-level fields are rejected (400).",
            {"events": _array(_ref("Event"), "The events, in any order.", 1, MAX_EVENTS)},
            ["events"],
            EX_EVENTS,
            additionalProperties=False,
        ),
        "RejectedEvent": _object(
            "An event that was not applied because it is invalid.",
            {
                "index": _int("Position of the event in `events`.", 2, 0, MAX_EVENTS - 1, "int32"),
                "reason": _str("Why it was refused.", "/on_hand: must be an integer"),
            },
            ["index", "reason"],
            EX_REJECTED,
        ),
        "EventResult": _object(
            "What happened to the pushed events.",
            {
                "applied": _int("Events applied.", 2, 0, MAX_EVENTS, "int32"),
                "duplicates": _int(
                    "Events at or below the key's seq (already applied).", 0, 0, MAX_EVENTS, "int32"
                ),
                "buffered": _int(
                    "Adjustments held back by a sequence gap, not yet applied.",
                    0,
                    0,
                    MAX_EVENTS,
                    "int32",
                ),
                "rejected": _array(_ref("RejectedEvent"), "Invalid events.", hi=MAX_EVENTS),
            },
            ["applied", "duplicates", "buffered", "rejected"],
            EX_EVENT_RESULT,
        ),
        "ShortLine": _object(
            "A line that cannot be held, with its ATP at decision time (0 for an unknown sku "
            "or location).",
            {
                "sku": _id(_SKU, "S1"),
                "location": _id(_LOC, "DC1"),
                "requested": _qty("Quantity requested (repeated lines summed).", 120),
                "atp": _int("ATP at decision time.", 93, 0),
            },
            ["sku", "location", "requested", "atp"],
            EX_SHORT_LINE,
        ),
        "FieldError": _object(
            "One invalid field of the request body.",
            {
                "pointer": _str("JSON Pointer (RFC 6901) to the field.", "/lines/0/qty"),
                "detail": _str("What is wrong with it.", "must be between 1 and 1000000000"),
            },
            ["pointer", "detail"],
            EX_FIELD_ERROR,
        ),
        "Problem": _object(
            "RFC 9457 problem details. `type` is " + PROBLEM_BASE + "<slug>, slug one of "
            "invalid-request, unknown-group, unauthorized, forbidden, not-found, "
            "method-not-allowed, insufficient-stock, idempotency-conflict, not-committable, "
            "hold-quota-exceeded, payload-too-large, unsupported-media-type, throttled, "
            "unavailable, internal.",
            {
                "type": _str("Problem type URI.", EX_PROBLEM["type"], format="uri"),
                "title": _str("Short summary of the problem type.", EX_PROBLEM["title"]),
                "status": _int("The HTTP status code.", 400, 400, 599, "int32"),
                "detail": _str("Explanation of this occurrence.", EX_PROBLEM["detail"]),
                "instance": _str("The request path.", "/v1/reservations", format="uri-reference"),
                "lines": _array(
                    _ref("ShortLine"),
                    "insufficient-stock only: the lines that cannot be held.",
                    hi=MAX_LINES,
                ),
                "errors": _array(
                    _ref("FieldError"), "invalid-request only (body errors): the invalid field."
                ),
                "held": _int(
                    "hold-quota-exceeded only: units this API key holds in uncommitted cart holds.",
                    8,
                    0,
                    None,
                    "int64",
                ),
                "quota": _int(
                    "hold-quota-exceeded only: the most units it may hold (ATP_HOLD_QUOTA, or "
                    "its key's own hold_quota).",
                    10,
                    1,
                    None,
                    "int64",
                ),
                "reservation_status": _enum(
                    "not-committable only: the reservation's current status.",
                    ["released", "expired", "rejected"],
                    "released",
                ),
            },
            ["type", "title", "status", "detail", "instance"],
            EX_PROBLEM,
        ),
        "Health": _object(
            "Liveness.",
            {"status": _enum("Always `ok`.", ["ok"], "ok")},
            ["status"],
            EX_HEALTH,
        ),
        "Readiness": _object(
            "Readiness.",
            {
                "status": _enum("Always `ready` (not ready is a 503 problem).", ["ready"], "ready"),
                "keys": _int("(sku, location) keys in this replica's cache.", 125000, 0),
            },
            ["status", "keys"],
            EX_READY,
        ),
        "MetricsText": _str("Prometheus text exposition format 0.0.4.", EX_METRICS),
        "OpenApiDoc": _object(
            "This OpenAPI 3.0.3 document.",
            {
                "openapi": _str("OpenAPI version.", "3.0.3"),
                "info": {
                    "type": "object",
                    "description": "API metadata.",
                    "additionalProperties": True,
                },
                "paths": {
                    "type": "object",
                    "description": "The operations.",
                    "additionalProperties": True,
                },
            },
            ["openapi", "info", "paths"],
            EX_DOCUMENT,
            additionalProperties=True,
        ),
        **_status_schemas(),
    }


def _status_schemas() -> Json:
    """The ``GET /v1/status`` summary. Figures read from Redis are null when Redis did not
    answer in time (the summary then says ``degraded``)."""
    unread = " Null when Redis did not answer in time."
    return {
        "Status": _object(
            "Business-level summary of this replica and the service around it.",
            {
                "status": _enum(
                    "`degraded` when Redis did not answer, the cache is cold or behind, the "
                    "Kafka feed is behind or away, or this replica's ERP breaker is not closed.",
                    ["ok", "degraded"],
                    "ok",
                ),
                "reasons": _array(
                    _str("One reason.", "cache is warming up"), "Why it is degraded (empty: ok)."
                ),
                "generated_at": _time("When this summary was made.", "2026-11-22T10:05:00Z"),
                "replica": _ref("StatusReplica"),
                "cache": _ref("StatusCache"),
                "feed": _ref("StatusFeed"),
                "erp": _ref("StatusErp"),
                "replicas_seen": _int(
                    "Replicas whose heartbeat Redis saw in the last 10 s." + unread, 3, 0
                )
                | {"nullable": True},
                "groups": {
                    "type": "object",
                    "description": "Configured location groups (ATP_LOCATION_GROUPS): name -> "
                    "locations.",
                    "additionalProperties": _array(_id(_LOC, "DC1"), "The group's locations."),
                    "example": {"EAST": ["DC1", "ST1"]},
                },
                "low_stock": _int("ATP at or below which a location reads `low_stock`.", 5, 0),
            },
            [
                "status",
                "reasons",
                "generated_at",
                "replica",
                "cache",
                "feed",
                "erp",
                "replicas_seen",
                "groups",
                "low_stock",
            ],
            EX_STATUS,
        ),
        "StatusReplica": _object(
            "The replica that answered.",
            {
                "id": _str("Replica id (host:pid).", "atp-7f9c:1"),
                "version": _str("Service version.", "0.1.0"),
                "started_at": _time("When the replica started.", "2026-11-22T08:00:00Z"),
                "uptime_seconds": _number("Seconds since start.", 7500.2),
            },
            ["id", "version", "started_at", "uptime_seconds"],
            EX_STATUS["replica"],
        ),
        "StatusCache": _object(
            "This replica's in-memory cache of the shared state.",
            {
                "keys": _int("(sku, location) keys cached.", 125000, 0),
                "ready": _bool("The first full load is done.", True),
                "fresh": _bool("The change stream was read within ATP_STALE_AFTER.", True),
                "age_seconds": _number(
                    "Seconds since the last successful read of the change stream (null "
                    "before the first).",
                    0.12,
                    nullable=True,
                ),
            },
            ["keys", "ready", "fresh", "age_seconds"],
            EX_STATUS["cache"],
        ),
        "StatusFeed": _object(
            "This replica's Kafka consumer; null when ATP_KAFKA_BOOTSTRAP is unset.",
            {
                "topic": _str("The ERP inventory topic.", "erp.inventory.v1"),
                "lag": _int("Records between the consumer and the partition ends.", 3, 0),
                "joined": _bool("The consumer has its partitions.", True),
                "event_age_seconds": _number(
                    "Age of the newest applied record (null before the first).",
                    0.4,
                    nullable=True,
                ),
                "broker_reachable": _bool(
                    "The broker answered within ATP_KAFKA_UNREACHABLE_AFTER.", True
                ),
                "last_error": _str(
                    "Why the consumer's last connection failed (a refused SASL login, an "
                    "untrusted certificate, the broker away); null once one has started since.",
                    "KafkaConnectionError: Unable to bootstrap from [('10.0.0.7', 9093)]",
                    nullable=True,
                ),
            },
            ["topic", "lag", "joined", "event_age_seconds", "broker_reachable", "last_error"],
            EX_STATUS["feed"],
            nullable=True,
        ),
        "StatusErp": _object(
            "The ERP side: mode, pace, this replica's breaker and the shared outbox.",
            {
                "mode": _enum(
                    "`standalone`: no ATP_ERP_URL, reservations are confirmed locally.",
                    ["standalone", "erp"],
                    "erp",
                ),
                "rate": _number("ATP_ERP_RATE: most ERP calls per second, all replicas.", 50.0),
                "breaker": _enum(
                    "This replica's ERP circuit breaker.",
                    ["closed", "open", "half_open"],
                    "closed",
                ),
                "queues": _ref("StatusQueues"),
                "inflight": _int("ERP calls in flight (all replicas)." + unread, 4, 0)
                | {"nullable": True},
            },
            ["mode", "rate", "breaker", "queues", "inflight"],
            EX_STATUS["erp"],
        ),
        "StatusQueues": _object(
            "The ERP outbox per priority (all replicas)." + unread,
            {p: _ref("StatusQueue") for p in PRIORITIES},
            list(PRIORITIES),
            EX_STATUS["erp"]["queues"],
            nullable=True,
        ),
        "StatusQueue": _object(
            "One priority's ERP outbox.",
            {
                "length": _int("Entries waiting.", 12, 0),
                "oldest_seconds": _number("Age of the oldest waiting entry (0 if none).", 0.8),
            },
            ["length", "oldest_seconds"],
            EX_STATUS_QUEUE,
        ),
    }


# ---------------------------------------------------------------------------------------------
# Responses and operations


def _content(schema: str, example: Any, media: tuple[str, ...] = (JSON,)) -> Json:
    return {m: {"schema": _ref(schema), "example": copy.deepcopy(example)} for m in media}


def _ok(description: str, schema: str, example: Any, media: str = JSON) -> Json:
    return {"description": description, "content": _content(schema, example, (media,))}


def _retry_after() -> Json:
    return {
        "Retry-After": {
            "description": "Whole seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "integer", "format": "int32", "minimum": 1, "example": 1},
        }
    }


def _problem(
    error: type[AtpError], description: str, detail: str, instance: str, **extra: Any
) -> Json:
    """An error response: the same problem body as problem+json or (Salesforce) plain JSON."""
    response: Json = {
        "description": description + " Sent as application/json when the request's Accept "
        "names application/json but not application/problem+json.",
        "content": _content(
            "Problem",
            _problem_example(error, detail, instance, **extra),
            (PROBLEM_TYPES, JSON),
        ),
    }
    if error.status in (429, 503):
        response["headers"] = _retry_after()
    if error.status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "The bearer challenge.",
                "required": True,
                "schema": {"type": "string", "example": 'Bearer realm="atp-service"'},
            }
        }
    return response


def _auth_errors(instance: str, scope: str) -> Json:
    return {
        "401": _problem(Unauthorized, "Missing or unknown API key.", "unknown API key",
                        instance),
        "403": _problem(Forbidden, f"The API key lacks the `{scope}` scope.",
                        f"this key lacks the {scope} scope", instance),
    }  # fmt: skip


def _body_errors(instance: str) -> Json:
    return {
        "413": _problem(PayloadTooLarge, f"Request body over {MAX_BODY} bytes.",
                        f"request bodies are limited to {MAX_BODY} bytes", instance),
        "415": _problem(UnsupportedMediaType, "The body's Content-Type is not JSON.",
                        "got 'text/plain'; send application/json", instance),
    }  # fmt: skip


def _unavailable(instance: str, why: str) -> Json:
    return {"503": _problem(Unavailable, why, "shared state unreachable", instance)}


def _rid_param() -> Json:
    return {
        "name": "reservation_id",
        "in": "path",
        "required": True,
        "description": "The client's reservation id.",
        "schema": _id("Reservation id.", "cart-1042"),
        "example": "cart-1042",
    }


# Operations whose writes carry the caller's trace to the ERP (http/endpoint.py TRACED).
TRACED_OPS = frozenset({"createReservation", "releaseReservation"})


def _header_param(name: str, description: str, example: str) -> Json:
    """An optional request header: what it carries and what a bad value does."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "example": example},
    }


def _request_id_param() -> Json:
    return _header_param(
        "X-Request-ID",
        "Your id for this request, echoed in the X-Request-ID response header and logged; a "
        "value that is not a sane token (1-128 of A-Z a-z 0-9 . _ : / + = @ -, starting "
        "alphanumeric) is replaced by a fresh random id.",
        "chk-7f3a9c",
    )


def _traceparent_param() -> Json:
    return _header_param(
        "traceparent",
        "W3C Trace Context parent. Saved with the reservation; its ERP calls carry the same "
        "trace id. A malformed value is ignored and a new trace started.",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )


def _request_id_header() -> Json:
    return {
        "X-Request-ID": {
            "description": "The request's id: yours if you sent a sane one, else a new one.",
            "required": True,
            "schema": {"type": "string", "example": "chk-7f3a9c"},
        }
    }


def _op(
    op_id: str,
    tag: str,
    summary: str,
    description: str,
    scope: str | None,
    responses: Json,
    *,
    body: tuple[str, Any, str] | None = None,
    parameters: list[Json] | None = None,
) -> Json:
    if scope is None:
        description += " Public: no API key needed."
    else:
        description += f" Requires an API key with the `{scope}` scope (or `*`)."
    op: Json = {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
    }
    parameters = [*(parameters or ()), _request_id_param()]
    if op_id in TRACED_OPS:
        parameters.append(_traceparent_param())
    op["parameters"] = parameters
    if body is not None:
        schema, example, body_description = body
        op["requestBody"] = {
            "required": True,
            "description": body_description,
            "content": _content(schema, example),
        }
    for response in responses.values():
        response["headers"] = {**response.get("headers", {}), **_request_id_header()}
    op["responses"] = dict(sorted(responses.items()))
    if scope is None:
        op["security"] = []
    return op


def _paths() -> Json:
    read, write, events = "availability:read", "reservations:write", "events:write"
    warming = "The cache of this replica is still warming up."
    redis_down = "The shared state (Redis) is unreachable."
    av_one, av_batch = "/v1/availability/S1", "/v1/availability"
    res, res_one, res_commit = (
        "/v1/reservations",
        "/v1/reservations/cart-1042",
        "/v1/reservations/cart-1042/commit",
    )
    id_rule = f"Identifiers match {ID_PATTERN}."
    return {
        "/v1/availability/{sku}": {
            "get": _op(
                "getAvailability",
                "Availability",
                "Availability of one SKU",
                "ATP of one SKU per location, from this replica's memory. Filter with repeated "
                "`location` and/or `group` parameters (their union); no filter returns every "
                "location known for the SKU. Any other query parameter is a 400. " + id_rule,
                read,
                {
                    "200": _ok("The SKU's availability.", "Availability", EX_AVAILABILITY),
                    "400": _problem(
                        UnknownGroup,
                        "Invalid sku or location, unknown query "
                        "parameter (invalid-request), or unknown location group "
                        "(unknown-group).",
                        "unknown location group 'NORTH'",
                        av_one,
                    ),
                    **_auth_errors(av_one, read),
                    "404": _problem(NotFound, "Unknown SKU.", "unknown sku 'S1'", av_one),
                    **_unavailable(av_one, warming),
                },
                parameters=[
                    {
                        "name": "sku",
                        "in": "path",
                        "required": True,
                        "description": _SKU,
                        "schema": _id(_SKU, "S1"),
                        "example": "S1",
                    },
                    {
                        "name": "location",
                        "in": "query",
                        "required": False,
                        "style": "form",
                        "explode": True,
                        "description": "Only these locations (repeatable).",
                        "schema": _array(_id(_LOC, "DC1"), "Locations."),
                        "example": ["DC1"],
                    },
                    {
                        "name": "group",
                        "in": "query",
                        "required": False,
                        "style": "form",
                        "explode": True,
                        "description": "Only the locations of these groups "
                        "(ATP_LOCATION_GROUPS; repeatable). An unknown group is 400.",
                        "schema": _array(_id("Location group.", "EAST"), "Groups."),
                        "example": ["EAST"],
                    },
                ],
            ),
        },
        "/v1/availability": {
            "post": _op(
                "checkAvailabilityBatch",
                "Availability",
                "Availability of many SKUs",
                f"Up to {MAX_BATCH_ITEMS} lookups in one call, answered in order from this "
                "replica's memory. An unknown SKU, or a known SKU at an unknown location, is "
                "not an error: it reads atp 0, status `unknown`. `qty` defaults to 1. An "
                "unknown group is a 400. " + id_rule,
                read,
                {
                    "200": _ok("One answer per lookup.", "BatchResult", EX_BATCH_RESULT),
                    "400": _problem(
                        BadRequest,
                        "Malformed body (invalid-request, with "
                        "`errors`) or unknown group (unknown-group).",
                        "/items/0/qty: must be an integer",
                        av_batch,
                        errors=[{"pointer": "/items/0/qty", "detail": "must be an integer"}],
                    ),
                    **_auth_errors(av_batch, read),
                    **_body_errors(av_batch),
                    **_unavailable(av_batch, warming),
                },
                body=("BatchQuery", EX_BATCH, "The lookups."),
            ),
        },
        "/v1/reservations": {
            "post": _op(
                "createReservation",
                "Reservations",
                "Reserve stock",
                f"Holds all lines (at most {MAX_LINES}) or none, checked atomically against "
                "the shared state. Without `hold_seconds` the reservation goes to the ERP at "
                "once (standalone: confirmed locally); with it (1-14400) it is a cart hold, "
                "counted at once and expired after that many seconds unless committed. 201 "
                "once durable. The same id with the same body again is 200 with the current "
                "state; with another body, 409 idempotency-conflict. A short request is 409 "
                "insufficient-stock listing only the short lines; stock is checked before the "
                "ERP budget (429). With a hold quota set (ATP_HOLD_QUOTA, or the key's own "
                "hold_quota in ATP_API_KEYS), a cart hold that would take its "
                "API key's units in uncommitted cart holds past the quota is 409 "
                "hold-quota-exceeded (with `held` and `quota`); committing, releasing or "
                "expiring a hold gives its units back. " + id_rule,
                write,
                {
                    "200": _ok(
                        "Replay of an existing reservation (same id, same body): its "
                        "current state.",
                        "Reservation",
                        EX_RESERVATION,
                    ),
                    "201": _ok("Created and durable.", "Reservation", EX_RESERVATION),
                    "400": _problem(
                        BadRequest,
                        "Malformed body.",
                        EX_PROBLEM["detail"],
                        res,
                        errors=[EX_FIELD_ERROR],
                    ),
                    **_auth_errors(res, write),
                    "409": _problem(
                        InsufficientStock,
                        "insufficient-stock (with `lines`), "
                        "idempotency-conflict (same id, another body) or "
                        "hold-quota-exceeded (with `held` and `quota`).",
                        "1 of 1 lines cannot be held",
                        res,
                        lines=[EX_SHORT_LINE],
                    ),
                    **_body_errors(res),
                    "429": _problem(
                        Throttled,
                        "This priority's ERP backlog is over its "
                        "budget; retry after `Retry-After` seconds.",
                        "background backlog is over budget",
                        res,
                    ),
                    **_unavailable(res, redis_down),
                },
                body=("NewReservation", EX_NEW_RESERVATION, "The reservation."),
            ),
        },
        "/v1/reservations/{reservation_id}": {
            "get": _op(
                "getReservation",
                "Reservations",
                "Read a reservation",
                "The current state of a reservation.",
                write,
                {
                    "200": _ok("Current state.", "Reservation", EX_RESERVATION),
                    "400": _problem(
                        BadRequest,
                        "Invalid reservation id.",
                        "reservation_id must match " + ID_RE.pattern,
                        res_one,
                    ),
                    **_auth_errors(res_one, write),
                    "404": _problem(
                        NotFound, "Unknown reservation.", "reservation cart-1042 not found", res_one
                    ),
                    **_unavailable(res_one, redis_down),
                },
                parameters=[_rid_param()],
            ),
            "delete": _op(
                "releaseReservation",
                "Reservations",
                "Release a reservation",
                "Cancels a reservation and returns its stock (idempotent): 200 `released`. A "
                "confirmed one is also cancelled at the ERP; an expired or rejected one keeps "
                "its status (200).",
                write,
                {
                    "200": _ok("State after the release.", "Reservation", EX_RELEASED),
                    "400": _problem(
                        BadRequest,
                        "Invalid reservation id.",
                        "reservation_id must match " + ID_RE.pattern,
                        res_one,
                    ),
                    **_auth_errors(res_one, write),
                    "404": _problem(
                        NotFound, "Unknown reservation.", "reservation cart-1042 not found", res_one
                    ),
                    **_unavailable(res_one, redis_down),
                },
                parameters=[_rid_param()],
            ),
        },
        "/v1/reservations/{reservation_id}/commit": {
            "post": _op(
                "commitReservation",
                "Reservations",
                "Commit a cart hold",
                "Sends a cart hold to the ERP before it expires (idempotent; no body). "
                "Standalone, it is confirmed at once; with an ERP it reads `held` until the ERP "
                "answers. Never refused for queue budget. 409 not-committable when released, "
                "expired or rejected.",
                write,
                {
                    "200": _ok("State after the commit.", "Reservation", EX_COMMITTED),
                    "400": _problem(
                        BadRequest,
                        "Invalid reservation id.",
                        "reservation_id must match " + ID_RE.pattern,
                        res_commit,
                    ),
                    **_auth_errors(res_commit, write),
                    "404": _problem(
                        NotFound,
                        "Unknown reservation.",
                        "reservation cart-1042 not found",
                        res_commit,
                    ),
                    "409": _problem(
                        NotCommittable,
                        "Released, expired or rejected.",
                        "reservation cart-1042 is expired",
                        res_commit,
                    ),
                    **_unavailable(res_commit, redis_down),
                },
                parameters=[_rid_param()],
            ),
        },
        "/v1/events": {
            "post": _op(
                "pushEvents",
                "Events",
                "Push ERP inventory events",
                f"Applies up to {MAX_EVENTS} ERP inventory events (the same events as the "
                "Kafka topic). Exactly-once by (sku, location, seq); out-of-order adjustments "
                "are buffered until the gap closes. Invalid events are answered in `rejected` "
                "(not a 400) and the rest are applied.",
                events,
                {
                    "200": _ok(
                        "Counts of applied, duplicate and buffered events, and the invalid ones.",
                        "EventResult",
                        EX_EVENT_RESULT,
                    ),
                    "400": _problem(
                        BadRequest,
                        "Malformed envelope.",
                        "/events: must not be empty",
                        "/v1/events",
                        errors=[{"pointer": "/events", "detail": "must not be empty"}],
                    ),
                    **_auth_errors("/v1/events", events),
                    **_body_errors("/v1/events"),
                    **_unavailable("/v1/events", redis_down),
                },
                body=("EventBatch", EX_EVENTS, "The events."),
            ),
        },
        "/v1/status": {
            "get": _op(
                "getStatus",
                "Operations",
                "Service status summary",
                "A summary for people and the stock page: this replica (cache freshness, "
                "data age), the Kafka feed, the ERP side (mode, breaker, outbox per priority), "
                "the replicas seen in the last 10 s and the configured location groups. Never "
                "a 503: when Redis does not answer within 0.5 s it says what this replica "
                "knows, with `status` `degraded` and the Redis figures null.",
                read,
                {
                    "200": _ok("The summary.", "Status", EX_STATUS),
                    **_auth_errors("/v1/status", read),
                },
            ),
        },
        "/healthz": {
            "get": _op(
                "getHealth",
                "Operations",
                "Liveness",
                "200 while the process is up.",
                None,
                {"200": _ok("Up.", "Health", EX_HEALTH)},
            ),
        },
        "/readyz": {
            "get": _op(
                "getReadiness",
                "Operations",
                "Readiness",
                "200 only when this replica's cache is warm and Redis is reachable, else 503.",
                None,
                {
                    "200": _ok("Ready.", "Readiness", EX_READY),
                    **_unavailable("/readyz", "Cache warming up or Redis unreachable."),
                },
            ),
        },
        "/metrics": {
            "get": _op(
                "getMetrics",
                "Operations",
                "Prometheus metrics",
                "Metrics in the Prometheus text exposition format.",
                None,
                {"200": _ok("Metrics.", "MetricsText", EX_METRICS, "text/plain")},
            ),
        },
        "/openapi.json": {
            "get": _op(
                "getOpenApi",
                "Operations",
                "This API description",
                "This OpenAPI 3.0.3 document (importable into Salesforce External Services).",
                None,
                {"200": _ok("The document.", "OpenApiDoc", EX_DOCUMENT)},
            ),
        },
    }


INFO_DESCRIPTION = f"""\
Available-to-promise (ATP) inventory in front of a rate-limited ERP: availability lookups \
served from memory, all-or-nothing reservations checked atomically against shared state, and \
ERP inventory event ingestion.

Auth: `Authorization: Bearer <key>`. Scopes: `availability:read` (lookups), \
`reservations:write` (create, read, commit, release reservations), `events:write` \
(`POST /v1/events`), `admin` (operator endpoints); `*` is all. A missing or unknown key is \
401, a key without the scope 403. `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are \
public.

Errors are RFC 9457 problem details (`application/problem+json`; `application/json` for \
clients whose Accept names application/json but not problem+json). Identifiers (sku, \
location, reservation_id, event_id) match `{ID_PATTERN}`; quantities are integers, qty 1 to \
10^9; 0 <= seq < 2^53. Request bodies up to 8 MiB (larger is 413). An unexpected server error \
is a 500 problem; an unsupported method on a known path is a 405 problem with `Allow`."""


def document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document (a fresh dict on every call)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "ATP service", "version": "1.0.0", "description": INFO_DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "Availability", "description": "Available-to-promise lookups."},
            {"name": "Reservations", "description": "All-or-nothing stock reservations."},
            {"name": "Events", "description": "ERP inventory event ingestion."},
            {"name": "Operations", "description": "Health, readiness, metrics, this document."},
        ],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from ATP_API_KEYS, sent as a bearer token.",
                }
            },
            "schemas": _schemas(),
        },
    }


def render() -> str:
    """The document as committed in ``docs/openapi.json``: sorted keys, 2-space indent."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
