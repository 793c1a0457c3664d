"""The one bootstrap place: builds every resource from Settings and wires the routes.

Resources live on the application (``SERVICE`` key), open in ``cleanup_ctx`` and close with
it; background tasks (change-stream tailer, hold expiry) start there and are cancelled and
awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from .cache import Cache
from .config import ApiKey, Settings
from .embedded import EmbeddedRedis
from .erp import HttpTransport
from .errors import Unavailable
from .feed import Feed
from .gateway import Gateway
from .http.availability import Availability
from .http.endpoint import (
    MAX_BODY,
    AccessLog,
    Auth,
    endpoint,
    json_response,
    method_not_allowed,
    not_found,
)
from .http.reservations import Reservations
from .http.server import HOT_ROUTES, HotRoutes
from .http.ui import Ui
from .ingest import Ingest
from .ledger import Ledger
from .metrics import Metrics
from .openapi import document as openapi_document
from .status import Status
from .store import Store, connect
from .tailer import Tailer

log = logging.getLogger("atp.app")


@dataclass
class Service:
    settings: Settings
    metrics: Metrics
    cache: Cache
    store: Store
    tailer: Tailer
    ledger: Ledger
    ingest: Ingest
    embedded: EmbeddedRedis | None
    gateway: Gateway | None = None
    feed: Feed | None = None
    transport: HttpTransport | None = None
    status: Status | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


SERVICE = web.AppKey("service", Service)
RouteHandler = Callable[[web.Request, ApiKey | None], Awaitable[web.StreamResponse]]


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> web.Application:
    embedded = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir, settings.embedded_fsync)
        url = embedded.url
    client = connect(url)
    metrics = Metrics()
    cache = Cache()
    store = Store(client, url)
    # The tailer blocks in XREAD: its own connection, with a timeout longer than the block.
    tailer = Tailer(
        connect(url, max_connections=2, socket_timeout=5), url, cache, settings.stale_after
    )
    gap_window_ms = int(settings.gap_window * 1000) if settings.erp_url else -1
    svc = Service(
        settings=settings,
        metrics=metrics,
        cache=cache,
        store=store,
        tailer=tailer,
        ledger=Ledger(store, cache, settings, clock=clock),
        ingest=Ingest(store, cache, metrics, gap_window_ms=gap_window_ms, clock=clock),
        embedded=embedded,
    )
    if settings.erp_url:
        svc.transport = HttpTransport(settings.erp_url, settings.erp_timeout, settings.erp_token)
        svc.gateway = Gateway(
            store, cache, svc.transport, settings, metrics, svc.ingest, clock=clock
        )
    if settings.kafka_bootstrap:
        svc.feed = Feed(
            settings.kafka_bootstrap, settings.kafka_topic, settings.kafka_group, svc.ingest,
            metrics, lag_bound=settings.kafka_lag_bound,
            unreachable_after=settings.kafka_unreachable_after, security=settings.kafka_security,
        )  # fmt: skip
    svc.status = Status(store.client, settings, tailer, cache, svc.feed, svc.gateway, metrics)
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICE] = svc
    _routes(app, svc)
    metrics.live(
        lambda: {
            "atp_cache_keys": ("(sku, location) keys in this replica's cache", len(cache)),
            "atp_cache_bytes": ("Bytes of this replica's record array", cache.nbytes()),
            "atp_cache_ready": ("1 once the cache is warm", float(tailer.ready)),
            "atp_cache_fresh": ("1 while the change stream is being read", float(tailer.fresh)),
            "atp_change_entries_applied": ("Change-stream entries applied", tailer.applied),
            "atp_cache_reloads": ("Full reloads after falling behind the stream", tailer.reloads),
            "atp_cache_warmup_seconds": (
                "Seconds the last full cache load took",
                tailer.warm_seconds,
            ),
        }
    )
    app.cleanup_ctx.append(_lifecycle)
    return app


# What checkout calls at peak: dispatched ahead of aiohttp's router (http/server.HotRoutes).
HOT = frozenset({"availability.get", "availability.batch", "reservations.create"})


def _routes(app: web.Application, svc: Service) -> None:
    auth = Auth(svc.settings.api_keys)
    access = AccessLog() if svc.settings.access_log else None
    tailer = svc.tailer
    feed = svc.feed

    def fresh() -> bool:
        return tailer.fresh and (feed is None or feed.fresh)

    lookups = Availability(svc.cache, svc.settings.location_groups, svc.settings.low_stock, fresh)
    svc.metrics.live(
        lambda: {
            "atp_lookup_memo_entries": (
                "Encoded single-sku answers kept (cleared at 100,000; ~0.8 KB each)",
                len(lookups.memo),
            ),
            "atp_batch_memo_entries": (
                "Encoded batch items kept (cleared at 100,000; ~0.5 KB each)",
                len(lookups.encoded),
            ),
        }
    )
    res = Reservations(svc.ledger, svc.ingest, svc.metrics)

    def ready_first(handler: RouteHandler) -> RouteHandler:
        async def guarded(request: web.Request, key: ApiKey | None) -> web.StreamResponse:
            if not tailer.ready:
                raise Unavailable("cache is warming up", retry_after=1)
            return await handler(request, key)

        return guarded

    async def healthz(_r: web.Request, _k: ApiKey | None) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(_r: web.Request, _k: ApiKey | None) -> web.Response:
        if not tailer.ready:
            raise Unavailable("cache is warming up", retry_after=1)
        if not tailer.fresh:
            raise Unavailable("Redis is unreachable", retry_after=1)
        return json_response({"status": "ready", "keys": len(svc.cache)})

    async def metrics(_r: web.Request, _k: ApiKey | None) -> web.Response:
        body = generate_latest(svc.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    summary = svc.status
    assert summary is not None  # create_app builds it

    async def status(_r: web.Request, _k: ApiKey | None) -> web.Response:
        return json_response(await summary.summary())

    ui = Ui()
    spec = openapi_document()

    async def openapi(_r: web.Request, _k: ApiKey | None) -> web.Response:
        return json_response(spec)

    table: list[tuple[str, str, str, str | None, RouteHandler]] = [
        ("GET", "/v1/availability/{sku}", "availability.get", "availability:read",
         ready_first(lookups.one)),
        ("POST", "/v1/availability", "availability.batch", "availability:read",
         ready_first(lookups.batch)),
        ("POST", "/v1/reservations", "reservations.create", "reservations:write", res.create),
        ("GET", "/v1/reservations/{reservation_id}", "reservations.get", "reservations:write",
         res.get),
        ("POST", "/v1/reservations/{reservation_id}/commit", "reservations.commit",
         "reservations:write", res.commit),
        ("DELETE", "/v1/reservations/{reservation_id}", "reservations.release",
         "reservations:write", res.release),
        ("POST", "/v1/events", "events.push", "events:write", res.events),
        ("GET", "/v1/status", "status", "availability:read", status),
        ("GET", "/ui/stock", "ui.page", None, ui.page),
        ("GET", "/ui/static/{name}", "ui.static", None, ui.asset),
        ("GET", "/healthz", "healthz", None, healthz),
        ("GET", "/readyz", "readyz", None, readyz),
        ("GET", "/metrics", "metrics", None, metrics),
        ("GET", "/openapi.json", "openapi", None, openapi),
    ]  # fmt: skip
    hot = app[HOT_ROUTES] = HotRoutes()
    by_path: dict[str, list[tuple[str, str, str | None, RouteHandler]]] = {}
    for method, path, name, scope, handler in table:
        by_path.setdefault(path, []).append((method, name, scope, handler))
    for path, routes in by_path.items():
        resource = app.router.add_resource(path)
        methods = {method for method, *_ in routes}
        for method, name, scope, handler in routes:
            wrapped = endpoint(name, scope, auth, svc.metrics, handler, access)
            route = resource.add_route(method, wrapped)
            if name in HOT:
                hot.add(method, path, route)
            if method == "GET":  # RFC 9110: HEAD wherever GET (aiohttp sends no body)
                resource.add_route("HEAD", wrapped)
                methods.add("HEAD")
        refuse = method_not_allowed(tuple(sorted(methods)))
        resource.add_route("*", endpoint("other", None, auth, svc.metrics, refuse, access))
    app.router.add_route(
        "*", "/{tail:.*}", endpoint("other", None, auth, svc.metrics, not_found, access)
    )


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until every task has ended: on Python 3.11 a cancel that lands as redis-py's
    ``wait_for`` completes can be swallowed, and a single cancel would then hang shutdown."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarted, never lost
    silently (a dead gateway would strand the outbox)."""
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s crashed; restarting in 1 s", name)
            await asyncio.sleep(1.0)


async def _expiry_loop(svc: Service) -> None:
    while True:
        try:
            await svc.ledger.expire_due()
        except (RedisError, OSError, Unavailable) as exc:
            log.debug("hold expiry skipped: %s", exc.__class__.__name__)
        await asyncio.sleep(svc.settings.expiry_interval)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICE]
    if svc.embedded is not None:
        await svc.embedded.start()
        log.info("embedded redis-server with AOF under %s", svc.embedded.data_dir)
    with contextlib.suppress(RedisError, OSError):
        await svc.store.load_scripts()
        await _warn_if_not_durable(svc)
    loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("tailer", svc.tailer.run),
        ("expiry", lambda: _expiry_loop(svc)),
    ]
    if svc.feed is not None:
        loops.append(("feed", svc.feed.run))
    if svc.gateway is not None:
        loops += [("gateway", svc.gateway.run), ("gateway-stats", svc.gateway.stats_loop)]
    if svc.status is not None:
        loops.append(("heartbeat", svc.status.run))
    svc.tasks = [asyncio.create_task(_supervised(name, run), name=name) for name, run in loops]
    yield
    await _cancel_all(svc.tasks)
    if svc.gateway is not None:
        await svc.gateway.close()
    if svc.transport is not None:
        await svc.transport.close()
    await svc.store.close()
    await svc.store.client.aclose()
    await svc.tailer.client.aclose()
    await svc.tailer.close()
    if svc.embedded is not None:
        await svc.embedded.stop()


async def _warn_if_not_durable(svc: Service) -> None:
    try:
        conf: dict[bytes, bytes] = await svc.store.client.config_get("appendonly")
    except RedisError:
        return  # managed Redis may forbid CONFIG; its operator owns persistence
    if conf.get(b"appendonly") == b"no":
        log.warning(
            "Redis has appendonly=no: accepted reservations would not survive a Redis restart"
        )
