"""The simulated ERP's HTTP API (contract.md s4) and the app factory.

Every call to the three ERP endpoints goes through the same gate, in this order: recorded,
rate-limited (429 + ``Retry-After``), authenticated when ``--token`` is set (401), outage (503
at once), hang, latency, error rate (503),
then the endpoint itself, then ``hang_after_apply``. Bodies are JSON; every answer carries a
``status`` and, when refused, a ``reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from . import admin, schema
from .calls import GAVE_UP
from .config import SimConfig
from .ledger import Confirmed, Conflict, Rejected
from .publisher import Sink
from .ratelimit import retry_after
from .replies import MAX_BODY, SIM, read_json, respond
from .schema import BadBody
from .simulator import Clock, Simulator, build, stock_view

HOLD_POLL = 0.02  # seconds between checks of a held call: is hang still on, is the client there?
ACTIVITY_TICK = 0.01
SINK_CLOSE_TIMEOUT = 5.0

# (HTTP status, body, outcome for the call log)
Answer = tuple[int, dict[str, Any], str]
Endpoint = Callable[[web.Request, Simulator], Awaitable[Answer]]


class _ClientGone(Exception):
    """The client closed the connection while its call was held."""


def create_sim_app(
    config: SimConfig,
    *,
    clock: Clock = time.monotonic,
    wall: Clock = time.time,
    sinks: list[Sink] | None = None,
) -> web.Application:
    """The simulator as an aiohttp app; ``sinks`` replaces the ones ``config`` names."""
    sim = build(config, clock, wall, sinks)
    app = web.Application(client_max_size=MAX_BODY)
    app[SIM] = sim
    app.router.add_post("/reservations", _gated(reserve))
    app.router.add_delete("/reservations/{reservation_id}", _gated(cancel))
    app.router.add_get("/inventory/{sku}/{location}", _gated(inventory))
    app.router.add_get("/healthz", healthz)
    admin.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_let_go)
    return app


async def reserve(request: web.Request, sim: Simulator) -> Answer:
    key = request.headers.get("Idempotency-Key")
    if not key:
        return _refusal(400, "invalid", "the Idempotency-Key header is required")
    try:
        body = schema.reservation(await read_json(request))
    except BadBody as exc:
        return _refusal(400, "invalid", str(exc))
    if body.reservation_id != key:
        return _refusal(400, "invalid", "the Idempotency-Key header must equal reservation_id")
    refusal = "simulated refusal" if sim.faults.reject_all else None
    result = sim.ledger.reserve(body.reservation_id, body.priority, body.lines, refusal)
    replay = "_replay" if getattr(result, "replay", False) else ""
    if isinstance(result, Conflict):
        return _refusal(422, "conflict", result.reason)
    if isinstance(result, Rejected):
        short = [
            {"sku": s.sku, "location": s.location, "requested": s.requested, "free": s.free}
            for s in result.shortfalls
        ]
        answer = {"status": "rejected", "reason": result.reason, "lines": short}
        return 409, answer, "rejected" + replay
    assert isinstance(result, Confirmed)
    sim.emit(result.changes)
    reservation = result.reservation
    lines = [
        {"sku": line.sku, "location": line.location, "qty": line.qty, "erp_seq": seq}
        for line, seq in zip(reservation.lines, reservation.erp_seqs, strict=True)
    ]
    return 200, {"status": "confirmed", "lines": lines}, "confirmed" + replay


async def cancel(request: web.Request, sim: Simulator) -> Answer:
    reservation_id = request.match_info["reservation_id"]
    result = sim.ledger.cancel(reservation_id)
    if result is None:
        return _refusal(404, "not_found", f"unknown reservation {reservation_id}")
    reservation, changes = result
    sim.emit(changes)
    answer = {"status": reservation.status, "reservation_id": reservation_id}
    return 200, answer, "deallocated" if changes else "no_change"


async def inventory(request: web.Request, sim: Simulator) -> Answer:
    sku, location = request.match_info["sku"], request.match_info["location"]
    stock = sim.ledger.get(sku, location)
    if stock is None:
        return _refusal(404, "not_found", f"unknown sku/location {sku}@{location}")
    return 200, stock_view(sku, location, stock), "found"


async def healthz(request: web.Request) -> web.Response:
    return respond(200, {"status": "ok"})


def _refusal(status: int, kind: str, reason: str) -> Answer:
    return status, {"status": kind, "reason": reason}, kind


def _gated(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        sim = request.app[SIM]
        key = request.headers.get("Idempotency-Key")
        reservation_id = request.match_info.get("reservation_id", key)
        sent = request.headers
        call = sim.calls.start(
            request.method, request.path, key, reservation_id,
            sent.get("X-Request-ID"), sent.get("traceparent"),
        )  # fmt: skip
        status, outcome = GAVE_UP, "abandoned"  # unless answered below
        try:
            early = await _gate(request, sim)
            if early is not None:
                (status, body, outcome), headers = early
                return respond(status, body, headers)
            status, body, outcome = await endpoint(request, sim)
            if sim.faults.hang_after_apply:
                decided = (status, body)
                status, outcome = GAVE_UP, outcome + "_reply_lost"  # if the client leaves
                await _hold(request, sim, lambda: sim.faults.hang_after_apply)
                if sim.closing:
                    status, body = 503, {"status": "unavailable", "reason": "shutting down"}
                else:
                    (status, body), outcome = decided, outcome.removesuffix("_reply_lost")
            return respond(status, body)
        except _ClientGone:
            return respond(GAVE_UP, {"status": "abandoned"})
        finally:
            sim.calls.finish(call, status, outcome)

    return handle


async def _gate(
    request: web.Request, sim: Simulator
) -> tuple[Answer, dict[str, str] | None] | None:
    """An early answer (throttled, outage, error), or None to go on; holds a hung call."""
    wait = sim.bucket.take()
    if wait > 0:
        headers = {"Retry-After": str(retry_after(wait))}
        return (429, {"status": "throttled"}, "throttled"), headers
    token = sim.config.token
    if token is not None and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
    ):
        answer = _refusal(401, "unauthorized", "missing or wrong bearer token")
        return answer, {"WWW-Authenticate": 'Bearer realm="erp"'}
    faults = sim.faults
    if faults.outage:
        return _refusal(503, "unavailable", "simulated outage"), None
    if faults.hang:
        await _hold(request, sim, lambda: sim.faults.hang)
        if sim.closing:
            return _refusal(503, "unavailable", "shutting down"), None
    delay = faults.latency.sample(sim.rng)
    if delay > 0:
        await asyncio.sleep(delay)
    if faults.error_rate > 0 and sim.rng.random() < faults.error_rate:
        return _refusal(503, "unavailable", "simulated error"), None
    return None


async def _hold(request: web.Request, sim: Simulator, held: Callable[[], bool]) -> None:
    """Wait while ``held()``; raise _ClientGone if the client leaves first.

    Polled, because aiohttp does not cancel a handler whose client disconnected.
    """
    while held() and not sim.closing:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _ClientGone
        await asyncio.sleep(HOLD_POLL)


async def _let_go(app: web.Application) -> None:
    """On shutdown, answer held calls now rather than making the server wait for them."""
    app[SIM].closing = True


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIM]
    for sink in sim.sinks:
        await sink.start()
    task = asyncio.create_task(_activity(sim), name="erpsim-activity")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for sink in sim.sinks:
        await sink.close(SINK_CLOSE_TIMEOUT)


async def _activity(sim: Simulator) -> None:
    """Background sales and receipts at the current storm rates."""
    last = sim.clock()
    while True:
        if sim.activity.idle:
            sim.storm_changed.clear()
            await sim.storm_changed.wait()
            last = sim.clock()
            continue
        await asyncio.sleep(ACTIVITY_TICK)
        now = sim.clock()
        sim.emit(sim.activity.step(now - last))
        last = now
