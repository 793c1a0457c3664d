"""The hot routes (http/server.HotRoutes) dispatched ahead of aiohttp's router: they take a
request only when the router would give it the same route with the same match, and the answer
is the same either way."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from multidict import CIMultiDict

from atp_service.app import create_app
from atp_service.http.server import HOT_ROUTES, HotRoutes

from .conftest import settings_for
from .procs import ADMIN, snapshot

A = "/v1/availability"
R = "/v1/reservations"
TAKEN = [
    ("GET", f"{A}/SKU-1"),
    ("GET", f"{A}/SKU-1?location=DC1&group=EAST"),
    ("GET", f"{A}/no-such.sku:9"),
    ("GET", f"{A}/bad!"),  # not an identifier: the handler's 400, on the same route
    ("POST", A),
    ("POST", f"{A}?x=1"),
    ("POST", R),
]
LEFT = [
    ("HEAD", f"{A}/SKU-1"),  # HEAD is routed by aiohttp
    ("GET", f"{A}/"),
    ("GET", f"{A}/a%2Fb"),  # the router unquotes %2F in a match: not here
    ("GET", f"{A}/a%25b"),
    ("GET", f"{A}/a/b"),
    ("GET", f"{A}/%7Bx%7D"),  # {x}: the router's pattern refuses braces
    ("GET", A),
    ("PUT", A),
    ("POST", f"{A}/"),
    ("POST", f"{A}/SKU-1"),
    ("DELETE", f"{A}/SKU-1"),
    ("GET", R),
    ("PUT", R),
    ("POST", f"{R}/"),
    ("POST", f"{R}/r1/commit"),
    ("GET", f"{R}/r1"),
    ("DELETE", f"{R}/r1"),
    ("GET", "/V1/availability/SKU-1"),
    ("GET", f"/{A}/SKU-1"),
    ("GET", "/healthz"),
    ("GET", "/nowhere"),
]


@pytest.fixture
def app() -> web.Application:
    """The service's app, routes only (nothing is started, so no Redis is needed)."""
    application = create_app(settings_for("redis://127.0.0.1:1/0"))
    application.freeze()
    return application


@pytest.mark.parametrize(("method", "path"), TAKEN + LEFT)
async def test_a_hot_match_is_the_routers_match(app: web.Application, method: str, path: str):
    request = make_mocked_request(method, path, app=app)
    hot = app[HOT_ROUTES].match(request)
    routed = await app.router.resolve(request)
    if (method, path) in TAKEN:
        assert hot is not None, "a hot route went the long way"
        assert hot.route is routed.route
        assert dict(hot) == dict(routed)
    else:
        assert hot is None


async def test_expect_goes_to_the_router(app: web.Application):
    headers = CIMultiDict({"Expect": "100-continue"})
    request = make_mocked_request("POST", R, headers=headers, app=app)
    assert app[HOT_ROUTES].match(request) is None


def test_only_static_paths_or_one_last_parameter_can_be_hot():
    hot = HotRoutes()
    route: Any = object()
    hot.add("GET", "/a/{b}", route)
    hot.add("POST", "/a", route)
    for bad in ("/a/{b}/c", "/{a}/{b}", "/a/{b:\\d+}", "/a/x{b}"):
        with pytest.raises(ValueError):
            hot.add("GET", bad, route)


async def test_the_server_dispatches_hot_routes(app_client: TestClient):  # type: ignore[type-arg]
    handler = app_client.server.runner.server.request_handler  # type: ignore[union-attr]
    assert handler.__qualname__ == "HotRoutes.dispatcher.<locals>.dispatch"


def _answer(response: Any, body: bytes) -> tuple[int, bytes, str | None, str | None]:
    return (
        response.status,
        body,
        response.headers.get("Content-Type"),
        response.headers.get("Server"),
    )


async def test_hot_and_routed_answers_are_the_same(app_client: TestClient):  # type: ignore[type-arg]
    """Each request twice, once hot and once through the router (an ``Expect`` header sends
    it there): same status, body and headers."""
    events = [snapshot("SKU-1", "DC1", 1, 10), snapshot("SKU-1", "ST1", 1, 4)]
    assert (await app_client.post("/v1/events", json={"events": events}, headers=ADMIN)).ok
    line = {"sku": "SKU-1", "location": "DC1", "qty": 2}
    hold = {"reservation_id": "hot-1", "priority": "checkout", "lines": [line]}
    first = await app_client.post(R, json=hold, headers=ADMIN)
    assert first.status == 201
    cases: list[tuple[str, str, Any]] = [
        ("GET", f"{A}/SKU-1", None),
        ("GET", f"{A}/SKU-1?group=EAST", None),
        ("GET", f"{A}/SKU-404", None),
        ("GET", f"{A}/SKU-1?bogus=1", None),
        ("POST", A, {"items": [{"sku": "SKU-1"}, {"sku": "SKU-1", "group": "EAST", "qty": 3}]}),
        ("POST", A, {"items": []}),
        ("POST", R, hold),  # a replay: 200, the stored reservation
        ("POST", R, {**hold, "priority": "sales"}),  # 409 idempotency-conflict
        ("POST", R, {"reservation_id": "hot-2", "lines": []}),  # 400
    ]
    for method, path, body in cases:
        data = None if body is None else orjson.dumps(body)
        answers = []
        for extra in ({}, {"Expect": "100-continue"}):
            headers = {**ADMIN, "Content-Type": "application/json", **extra}
            async with app_client.request(method, path, data=data, headers=headers) as resp:
                answers.append(_answer(resp, await resp.read()))
        assert answers[0] == answers[1], (method, path)
        assert answers[0][0] < 500
