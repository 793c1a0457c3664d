"""Security properties of the HTTP edge (docs/security.md): keys kept only as digests and
never compared as secrets, every route behind the one scope check unless deliberately open,
size limits, no internals in responses, and no key or body in any log line."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from atp_service.app import create_app
from atp_service.config import Settings
from atp_service.errors import PROBLEM_BASE
from atp_service.http.endpoint import MAX_BODY, SERVER_NAME, Auth
from atp_service.ledger import Ledger

from .procs import ServiceProc, snapshot
from .test_auth import bearer, serve
from .test_bad_input import assert_problem

SECRET = "Zq9-secret-Kx7-very-distinctive"  # a key's secret; must never reach a log
OPEN_ROUTES = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/ui/stock", "/ui/static/{name}"}
# Words that name our internals or a runtime's: none belongs in a response to a client.
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|atp_service|aiohttp|redis\.|RuntimeError|KeyError|"
    r"Exception|ConnectionError|hunter2|10\.9\.8\.7",
)


# --- keys: stored as digests, looked up by digest ---------------------------------------------


def test_settings_and_auth_hold_digests_only() -> None:
    hashed = hashlib.sha256(b"second-secret").hexdigest()
    settings = Settings.from_env({"ATP_API_KEYS": f"{SECRET}:*;sha256={hashed}:admin"})
    assert SECRET not in repr(settings)
    auth = Auth(settings.api_keys)
    assert SECRET not in repr(vars(auth))
    assert set(auth.by_digest) == {hashlib.sha256(SECRET.encode()).hexdigest(), hashed}
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in auth.by_digest)
    assert [k.name for k in settings.api_keys] == ["key1", "key2"]  # what logs may show


def test_lookup_is_by_digest_not_by_comparing_secrets() -> None:
    """The presented secret is hashed and the digest looked up: no code path compares a
    presented secret with a stored one character by character (what a timing attack needs);
    a lookup time can at most reveal something about a digest, which SHA-256 makes useless."""
    settings = Settings.from_env({"ATP_API_KEYS": f"{SECRET}:availability:read"})
    auth = Auth(settings.api_keys)

    class Digests(dict[str, Any]):
        seen: list[str] = []

        def get(self, digest: str, default: Any = None) -> Any:
            self.seen.append(digest)
            return super().get(digest, default)

    auth.by_digest = Digests(auth.by_digest)
    request = _FakeRequest({"Authorization": f"Bearer {SECRET}"})
    assert auth.check(request, "availability:read").name == "key1"  # type: ignore[arg-type]
    assert Digests.seen == [hashlib.sha256(SECRET.encode()).hexdigest()]


class _FakeRequest:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


# --- one scope check, derived from the router ---------------------------------------------------


def _settings() -> Settings:
    return Settings.from_env({"ATP_API_KEYS": "k:*", "ATP_REDIS_URL": "redis://127.0.0.1:1/0"})


def test_every_route_goes_through_the_endpoint_wrapper() -> None:
    """Scopes are checked in one place: every handler on the router is ``endpoint``'s wrapper,
    whose scope comes from the one route table in app.py."""
    app = create_app(_settings())
    for route in app.router.routes():
        assert route.handler.__qualname__ == "endpoint.<locals>.wrapped", route


async def test_only_the_deliberately_open_routes_answer_without_a_key(redis_proc: Any) -> None:
    """Every route on the router, found from the router itself (so a route added later is
    covered): without a key, or with an unknown one, each answers 401 unless it is one of the
    deliberately open routes; the catch-all and the per-resource 405 routes answer no data."""
    fill = {"{sku}": "S1", "{reservation_id}": "r-sec", "{name}": "x", "{tail:.*}": "nope"}
    open_seen: set[str] = set()
    async with serve(redis_proc.url) as client:
        routes = [r for r in client.app.router.routes() if r.resource is not None]
        assert len(routes) >= 14
        for route in routes:
            assert route.resource is not None
            canonical = route.resource.canonical
            path = canonical
            for pattern, value in fill.items():
                path = path.replace(pattern, value)
            method = "PATCH" if route.method == "*" else route.method
            for headers in ({}, bearer("not-a-key")):
                response = await client.request(method, path, headers=headers)
                await response.read()
                if route.method == "*" or canonical == "/{tail:.*}":
                    assert response.status in (404, 405), (method, canonical)
                elif response.status != 401:
                    open_seen.add(canonical)
    assert open_seen == OPEN_ROUTES, "a route answers without a key but is not meant to"


# --- limits -------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(redis_proc: Any) -> None:
    async with serve(redis_proc.url) as client:
        body = io.BytesIO(b'{"events": [' + b" " * MAX_BODY + b"]}")
        response = await client.post(
            "/v1/events", data=body,
            headers={**bearer("test-admin"), "Content-Type": "application/json"},
        )  # fmt: skip
        await assert_problem(response, 413, "payload-too-large")


def raw_request(port: int, head: bytes) -> bytes:
    """Send raw request bytes; all the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"X-Big: " + b"a" * 9000 + b"\r\n", id="one-header-over-8190-bytes"),
        pytest.param(b"Authorization: Bearer " + b"a" * 9000 + b"\r\n", id="huge-authorization"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(200)), id="200-headers"),
    ],
)
async def test_oversize_headers_are_refused_with_4xx(redis_proc: Any, extra: bytes) -> None:
    async with serve(redis_proc.url) as client:
        port = client.server.port
        assert port is not None
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"
        answer = await asyncio.to_thread(raw_request, port, head)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
        # and the service goes on serving
        response = await client.get("/healthz")
        assert response.status == 200


# --- no internals in responses ----------------------------------------------------------------


async def test_an_internal_error_is_a_bare_500_problem(
    redis_proc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot reach redis://10.9.8.7:6379 with password hunter2")

    monkeypatch.setattr(Ledger, "get", broken)
    async with serve(redis_proc.url) as client:
        response = await client.get("/v1/reservations/r-1", headers=bearer("test-admin"))
        body = await assert_problem(response, 500, "internal")
        text = orjson.dumps(body).decode()
        assert not INTERNALS.search(text), text
        assert body["detail"] == "unexpected error; it was logged"
        assert response.headers["Server"] == SERVER_NAME


async def test_redis_down_is_a_503_without_internals(redis_proc: Any) -> None:
    async with serve(redis_proc.url) as client:
        redis_proc.kill9()
        response = await client.post(
            "/v1/reservations", headers=bearer("test-admin"),
            json={"reservation_id": "r-down", "priority": "checkout",
                  "lines": [{"sku": "S1", "location": "DC1", "qty": 1}]},
        )  # fmt: skip
        text = await response.text()
        assert response.status == 503, text
        assert not INTERNALS.search(text), text


REPRESENTATIVE: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
    ("GET", "/v1/availability/S1", None, {}, 401),
    ("GET", "/v1/availability/S1", None, bearer("test-write"), 403),
    ("GET", "/v1/availability/NOPE", None, bearer("test-admin"), 404),
    ("GET", "/no/such/path", None, {}, 404),
    ("PUT", "/v1/availability/S1", None, bearer("test-admin"), 405),
    ("POST", "/v1/events", b"{not json", bearer("test-admin"), 400),
    ("POST", "/v1/events", b'{"events": 7}', bearer("test-admin"), 400),
    ("POST", "/v1/events", b"\xff\xfe", bearer("test-admin"), 400),
    ("POST", "/v1/reservations", b'{"reservation_id": "../x", "lines": []}',
     bearer("test-admin"), 400),
    ("POST", "/v1/availability", b'{"items": [{"sku": "S1", "qty": 1e999}]}',
     bearer("test-admin"), 400),
    ("POST", "/v1/events", b"{}", {**bearer("test-admin"), "Content-Type": "text/plain"}, 415),
]  # fmt: skip


async def test_error_bodies_name_no_internals(redis_proc: Any) -> None:
    async with serve(redis_proc.url) as client:
        for method, path, body, headers, status in REPRESENTATIVE:
            if body is not None:
                headers = {"Content-Type": "application/json", **headers}
            response = await client.request(method, path, data=body, headers=headers)
            text = await response.text()
            assert response.status == status, (method, path, text)
            assert response.content_type == "application/problem+json", text
            assert not INTERNALS.search(text), (method, path, text)
            assert response.headers["Server"] == SERVER_NAME
            assert orjson.loads(text)["type"].startswith(PROBLEM_BASE)


# --- logs ---------------------------------------------------------------------------------


def _send(url: str, method: str, path: str, body: bytes | None, key: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def test_logs_hold_no_key_and_no_body(services: Callable[..., ServiceProc], tmp_path: Path) -> None:
    """A replica with the access log on and debug logging: every kind of request with a real
    secret, near-miss secrets and distinctive bodies; no log line holds any of them."""
    near_miss = SECRET + "-wrong"
    marker = "BODYMARK-7f3a"
    proc = services(
        ATP_API_KEYS=f"{SECRET}:*;reader-{SECRET}:availability:read",
        ATP_ACCESS_LOG="1", ATP_LOG_LEVEL="debug",
    )  # fmt: skip
    url = proc.url
    event = snapshot("S1", "DC1", 1, 50, event_id=f"e-{marker}")
    sent = [
        ("POST", "/v1/events", orjson.dumps({"events": [event]}), SECRET, 200),
        ("POST", "/v1/events", orjson.dumps({"events": [{**event, "on_hand": marker}]}),
         SECRET, 200),  # rejected in the answer, reason and all
        ("POST", "/v1/events", f'{{"events": [{marker}'.encode(), SECRET, 400),
        ("POST", "/v1/reservations", orjson.dumps({
            "reservation_id": "r-log", "priority": "checkout",
            "lines": [{"sku": "S1", "location": "DC1", "qty": 1, "note": marker}]}), SECRET, None),
        ("POST", "/v1/reservations", orjson.dumps({
            "reservation_id": "r-log2", "priority": marker,
            "lines": [{"sku": "S1", "location": "DC1", "qty": 1}]}), SECRET, 400),
        ("GET", "/v1/availability/S1", None, SECRET, 200),
        ("GET", "/v1/availability/S1", None, f"reader-{SECRET}", 200),
        ("GET", "/v1/availability/S1", None, near_miss, 401),
        ("POST", "/v1/events", orjson.dumps({"events": [event]}), f"reader-{SECRET}", 403),
        ("GET", "/v1/availability/S1", None, None, 401),
    ]  # fmt: skip
    for method, path, body, key, status in sent:
        got = _send(url, method, path, body, key)
        assert status is None or got == status, (method, path, got)
    # an oversized Authorization header carrying the secret: aiohttp's parser refuses it
    huge = b"Authorization: Bearer " + SECRET.encode() + b"a" * 9000 + b"\r\n"
    answer = raw_request(proc.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n")
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer[:20]
    proc.stop()
    assert proc.log is not None
    log = proc.log.read_text()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "atp.access"]
    assert len(access) >= len(sent)
    assert {line["key"] for line in access} >= {"key1", "key2", None}
    parser = [line for line in lines if line.get("logger") == "aiohttp.server"]
    assert parser and all(line["level"] == "warning" and "exc" not in line for line in parser)
    for needle in (SECRET, near_miss, marker, "Bearer "):
        assert needle not in log, needle
