"""The HTTP server: aiohttp's, with its own error answers turned into problem JSON.

aiohttp answers some requests before any handler runs: a request line or header over its
limit (8190 bytes), a malformed request line or header, or a handler timeout. It writes
``text/plain`` for those; :class:`ProblemHandler` writes RFC 9457 problem JSON instead, with
the same status, the ``Server`` and ``X-Request-ID`` headers every other answer carries, and a
fixed detail that never quotes the request (an oversized header may hold a bearer secret).

aiohttp has no public hook for this (aio-libs/aiohttp#3287), so :class:`ProblemRunner` makes
its server build :class:`ProblemHandler` connections; ``tests/test_schemathesis.py`` checks the
answer on a real ``serve`` process, so an aiohttp upgrade that bypasses this fails a test.

:class:`ProblemRunner` also puts :class:`HotRoutes` in front of the application's router: the
lookups and reservation creates checkout sends at peak go straight to their handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from ..errors import AtpError, BadRequest, PayloadTooLarge
from ..trace import new_request_id
from .endpoint import REQUEST_ID, SERVER, SERVER_NAME

PROBLEM_JSON = "application/problem+json"
_ERRORS: dict[int, type[AtpError]] = {400: BadRequest, 413: PayloadTooLarge}


def parser_problem(status: int, exc: BaseException | None) -> AtpError:
    """The problem for an answer aiohttp gives itself, by status; never the request's bytes."""
    if isinstance(exc, LineTooLong):
        detail = "a request line or header is longer than the 8190 bytes allowed"
    elif status == 400:
        detail = "malformed HTTP request"
    elif status == 504:
        detail = "the request took too long"
    else:
        detail = ""
    error = _ERRORS.get(status, AtpError)(detail)
    error.status = status
    return error


class ProblemHandler(RequestHandler):
    """One connection; aiohttp's own error answers are problem JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's version logs the error (logs.ParserErrors strips the quoted bytes) and
        # raises when a response was already under way; its text answer is not used.
        super().handle_error(request, status, exc, message)
        error = parser_problem(status, exc)
        body = {
            "type": error.type,
            "title": error.title,
            "status": status,
            "detail": error.detail,
            "instance": request.path,
        }
        response = web.Response(body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON)
        response.headers[SERVER] = SERVER_NAME
        response.headers[REQUEST_ID] = new_request_id()
        response.force_close()
        return response


class ProblemServer(web.Server):
    """aiohttp's server, making :class:`ProblemHandler` connections (as ``Server.__call__``
    makes ``RequestHandler`` ones)."""

    def __call__(self) -> RequestHandler:
        return ProblemHandler(self, loop=self._loop, **self._kwargs)


ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class HotRoutes:
    """Routes dispatched ahead of aiohttp's router, to the route the router would pick.

    ``Application._handle`` resolves every request by walking the path's prefixes through
    the router's index, with two coroutines per step, then builds its match info, checks for
    ``Expect`` and middlewares: 3.0 µs for ``POST /v1/reservations`` and 4.0 µs for
    ``GET /v1/availability/{sku}``, measured in-process on a slow day of this box, where the
    same match info built here cost 0.6 µs. ``benchmarks/cpu_split.py``'s ``no-hot-routes``
    variant measures the difference in the whole service.

    Only what is certain to resolve to the hot route is taken: the exact method (HEAD and
    the rest go the long way), no ``Expect`` header (aiohttp's 100-continue handling), and
    for a ``{name}`` segment a value with no ``%``, ``{`` or ``}`` (what the router would
    unquote or refuse). Everything else, misses included, goes to the router, so 404, 405
    and every other answer are the router's own. The handler sees the same request as
    through the router: ``match_info``, ``request.app`` and response signals included
    (``tests/test_hot_routes.py`` compares the two on edge-case paths).
    """

    def __init__(self) -> None:
        self.exact: dict[tuple[str, str], web.AbstractRoute] = {}
        # (method, path up to the last "/") -> (parameter name, route)
        self.last_segment: dict[tuple[str, str], tuple[str, web.AbstractRoute]] = {}

    def add(self, method: str, path: str, route: web.AbstractRoute) -> None:
        """``path`` is the route's own: static, or with one ``{name}`` as its last segment."""
        head, slash, last = path.rpartition("/")
        name = last[1:-1]
        if "{" not in path:
            self.exact[(method, path)] = route
        elif slash and "{" not in head and last == f"{{{name}}}" and name.isidentifier():
            self.last_segment[(method, head)] = (name, route)
        else:
            raise ValueError(f"hot routes are static or end in one {{name}}; got {path!r}")

    def match(self, request: web.BaseRequest) -> web.UrlMappingMatchInfo | None:
        """The match info the router would give ``request``, when certain; else None."""
        if request.headers.get(hdrs.EXPECT) is not None:
            return None
        method = request.method
        path = request.rel_url.path_safe
        route = self.exact.get((method, path))
        if route is not None:
            return web.UrlMappingMatchInfo({}, route)
        head, _, value = path.rpartition("/")
        hit = self.last_segment.get((method, head))
        if hit is None or not value or "%" in value or "{" in value or "}" in value:
            return None
        return web.UrlMappingMatchInfo({hit[0]: value}, hit[1])

    def dispatcher(self, app: web.Application, fallback: ServerHandler) -> ServerHandler:
        """The server's request handler: hot routes here, the rest to ``fallback``."""
        match = self.match

        async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
            info = match(request)
            if info is None:
                return await fallback(request)
            info.add_app(app)
            info.freeze()
            request = cast(web.Request, request)  # the app's request factory makes these
            request._match_info = info
            return await info.handler(request)

        return dispatch


HOT_ROUTES = web.AppKey("atp.hot_routes", HotRoutes)


class ProblemRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`ProblemServer`, with the app's
    :class:`HotRoutes` (under :data:`HOT_ROUTES`, if any) ahead of its router."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer  # same object and state; only __call__ differs
        hot = self.app.get(HOT_ROUTES)
        if hot is not None:
            server.request_handler = hot.dispatcher(self.app, server.request_handler)
        return server
