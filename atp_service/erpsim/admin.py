"""The operator API under ``/admin``: faults, stock, storms, and what the ERP saw and did.

No auth (the simulator binds to 127.0.0.1 by default); admin calls are not rate-limited,
not faulted and not recorded. Bad bodies are 400 ``{"status": "invalid", "reason"}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import schema
from .ledger import Reservation
from .replies import SIM, invalid, read_json, respond
from .schema import BadBody
from .simulator import Simulator, stock_view

MAX_RATE = 1_000_000.0
DEFAULT_EVENT_LIMIT = 10_000


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/admin/faults", get_faults)
    router.add_post("/admin/faults", set_faults)
    router.add_delete("/admin/faults", clear_faults)
    router.add_post("/admin/stock", set_stock)
    router.add_get("/admin/ledger", ledger)
    router.add_get("/admin/calls", calls)
    router.add_get("/admin/calls/stats", call_stats)
    router.add_post("/admin/reset-calls", reset_calls)
    router.add_get("/admin/events", events)
    router.add_get("/admin/storm", get_storm)
    router.add_post("/admin/storm", set_storm)
    router.add_get("/admin/rate", get_rate)
    router.add_post("/admin/rate", set_rate)
    router.add_get("/admin/status", status)


async def get_faults(request: web.Request) -> web.Response:
    return respond(200, request.app[SIM].faults.view())


async def set_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    try:
        sim.faults.update(await read_json(request))
    except BadBody as exc:
        return invalid(exc)
    return respond(200, sim.faults.view())


async def clear_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    sim.faults.clear(sim.config.latency)
    return respond(200, sim.faults.view())


async def set_stock(request: web.Request) -> web.Response:
    """Set figures (bumping seq); one snapshot event per item."""
    sim = request.app[SIM]
    try:
        items = schema.stock_items(await read_json(request))
    except BadBody as exc:
        return invalid(exc)
    count = sim.set_stock(items)
    views = []
    for item in items:
        stock = sim.ledger.stock[(item.sku, item.location)]
        views.append(stock_view(item.sku, item.location, stock))
    return respond(200, {"items": views, "events": count})


async def ledger(request: web.Request) -> web.Response:
    """Every key (``?sku=`` filters; ``?keys=0`` leaves them out), reservation and oversell."""
    sim = request.app[SIM]
    sku = request.query.get("sku")
    with_keys = request.query.get("keys", "1") not in ("0", "false", "no")
    keys = [
        stock_view(s, loc, stock)
        for (s, loc), stock in sim.ledger.stock.items()
        if with_keys and (sku is None or s == sku)
    ]
    reservations = {rid: _reservation_view(r, sim) for rid, r in sim.ledger.reservations.items()}
    oversold = [stock_view(s, loc, sim.ledger.stock[(s, loc)]) for s, loc in sim.ledger.oversold()]
    return respond(
        200,
        {"keys": keys, "reservations": reservations, "oversold": oversold, "counts": sim.counts()},
    )


async def calls(request: web.Request) -> web.Response:
    """Recorded ERP calls, oldest first; ``?since=N`` only those numbered above N."""
    try:
        since = _query_int(request, "since", 0)
    except BadBody as exc:
        return invalid(exc)
    return respond(200, request.app[SIM].calls.since(since))


async def call_stats(request: web.Request) -> web.Response:
    """Counts by status and outcome, and the most calls seen in any ``?window=`` seconds."""
    raw = request.query.get("window", "1")
    try:
        window = float(raw)
        if not 0 < window <= 3600:
            raise ValueError
    except ValueError:
        return invalid(BadBody("window must be a number of seconds in (0, 3600]"))
    return respond(200, request.app[SIM].calls.stats(window))


async def reset_calls(request: web.Request) -> web.Response:
    return respond(200, {"cleared": request.app[SIM].calls.reset()})


async def events(request: web.Request) -> web.Response:
    """Events from position ``?since=N`` (0 = the first), optionally for one ``sku`` /
    ``location``, at most ``?limit=``; ``next`` is the cursor for the following call."""
    sim = request.app[SIM]
    try:
        since = _query_int(request, "since", 0)
        limit = _query_int(request, "limit", DEFAULT_EVENT_LIMIT)
    except BadBody as exc:
        return invalid(exc)
    sku, location = request.query.get("sku"), request.query.get("location")
    found: list[dict[str, Any]] = []
    cursor = max(since, sim.events.first)
    for event in sim.events.since(since):
        if len(found) >= limit:
            break
        cursor += 1
        if (sku is None or event["sku"] == sku) and (
            location is None or event["location"] == location
        ):
            found.append(event)
    return respond(200, {"events": found, "next": cursor, "first": sim.events.first})


async def get_storm(request: web.Request) -> web.Response:
    return respond(200, _storm_view(request.app[SIM]))


async def set_storm(request: web.Request) -> web.Response:
    """Change the background sales / receipts rates (events per second) at run time."""
    sim = request.app[SIM]
    try:
        body = schema.obj(await read_json(request), "")
        schema.no_extra(body, frozenset({"sales_rate", "receipts_rate"}), "")
        sales, receipts = (
            schema.number(body[name], "/" + name, 0, MAX_RATE) if name in body else None
            for name in ("sales_rate", "receipts_rate")
        )
    except BadBody as exc:
        return invalid(exc)
    sim.activity.set_rates(sales, receipts)
    sim.storm_changed.set()
    return respond(200, _storm_view(sim))


async def get_rate(request: web.Request) -> web.Response:
    return respond(200, _rate_view(request.app[SIM]))


async def set_rate(request: web.Request) -> web.Response:
    """Change the ERP's rate limit at run time: ``{"rate"?, "burst"?}``."""
    sim = request.app[SIM]
    try:
        body = schema.obj(await read_json(request), "")
        schema.no_extra(body, frozenset({"rate", "burst"}), "")
        rate = schema.number(body.get("rate", sim.bucket.rate), "/rate", 1e-6, MAX_RATE)
        burst = schema.number(body.get("burst", sim.bucket.burst), "/burst", 1, MAX_RATE)
    except BadBody as exc:
        return invalid(exc)
    sim.bucket.reconfigure(rate, burst)
    return respond(200, _rate_view(sim))


async def status(request: web.Request) -> web.Response:
    """Settings (no secrets), faults, rates, sinks and counts at a glance."""
    sim = request.app[SIM]
    config = sim.config
    return respond(
        200,
        {
            "listen": f"http://{config.host}:{config.port}",
            "faults": sim.faults.view(),
            "rate": _rate_view(sim),
            "storm": _storm_view(sim),
            "sinks": [sink.stats() for sink in sim.sinks],
            "counts": sim.counts(),
        },
    )


def _reservation_view(reservation: Reservation, sim: Simulator) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [
        {"sku": line.sku, "location": line.location, "qty": line.qty} for line in reservation.lines
    ]
    for line, seq in zip(lines, reservation.erp_seqs, strict=False):
        line["erp_seq"] = seq
    view: dict[str, Any] = {
        "status": reservation.status,
        "priority": reservation.priority,
        "lines": lines,
        "allocations": reservation.allocations,
        "calls": sim.calls.per_reservation[reservation.reservation_id],
    }
    if reservation.reason:
        view["reason"] = reservation.reason
    return view


def _storm_view(sim: Simulator) -> dict[str, Any]:
    activity = sim.activity
    return {
        "sales_rate": activity.sales_rate,
        "receipts_rate": activity.receipts_rate,
        "skew": activity.skew,
    }


def _rate_view(sim: Simulator) -> dict[str, float]:
    return {"rate": sim.bucket.rate, "burst": sim.bucket.burst}


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadBody(f"{name} must be an integer") from None
    if value < 0:
        raise BadBody(f"{name} must be >= 0")
    return value
