"""JSON replies, request bodies and the app key shared by the ERP and admin endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from .schema import BadBody, parse_json
from .simulator import Simulator

SIM = web.AppKey("erpsim", Simulator)
MAX_BODY = 8 * 1024 * 1024


def respond(status: int, body: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def invalid(exc: BadBody) -> web.Response:
    return respond(400, {"status": "invalid", "reason": str(exc)})


async def read_json(request: web.Request) -> Any:
    """The body as JSON; raises BadBody when it is not."""
    raw = await request.read()
    if not raw:
        raise BadBody("a JSON body is required")
    return parse_json(raw)
