"""The HTTP server: aiohttp's, with its own error answers turned into problem JSON.

aiohttp answers some requests before any handler runs: a request line or header over its
limit (8190 bytes), a malformed request line or header, or a handler timeout. It writes
``text/plain`` for those; :class:`ProblemHandler` writes RFC 9457 problem JSON instead, with
the same status, the ``Server`` and ``X-Request-ID`` headers every other answer carries, and a
fixed detail that never quotes the request (an oversized header may hold a bearer secret).

aiohttp has no public hook for this (aio-libs/aiohttp#3287), so :class:`ProblemRunner` makes
its server build :class:`ProblemHandler` connections; ``tests/test_schemathesis.py`` checks the
answer on a real ``serve`` process, so an aiohttp upgrade that bypasses this fails a test.
"""

from __future__ import annotations

import orjson
from aiohttp import web
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


class ProblemRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`ProblemServer`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer  # same object and state; only __call__ differs
        return server
