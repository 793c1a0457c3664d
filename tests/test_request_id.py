"""X-Request-ID on every response (problems included), the caller's own kept when sane, and the
opt-in JSON access log (ATP_ACCESS_LOG=1) that names the key but never shows its secret."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient

from atp_service.config import ConfigError, Settings
from atp_service.trace import new_request_id, trace_id

from .conftest import start_app
from .procs import ADMIN, RedisProc, snapshot

READ = {"Authorization": "Bearer test-read"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
async def logged_client(redis_proc: RedisProc) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    client = await start_app(redis_proc.url, ATP_ACCESS_LOG="1")
    yield client
    await client.close()


def test_generated_ids_are_short_random_hex() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def test_trace_id_from_traceparent() -> None:
    assert trace_id(TRACEPARENT) == TRACE
    assert trace_id(None) is None
    assert trace_id("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None  # all-zero: invalid
    assert trace_id("garbage") is None
    assert trace_id(TRACEPARENT.upper()) is None  # the spec says lowercase hex


def test_access_log_setting() -> None:
    assert Settings.from_env({}).access_log is False
    assert Settings.from_env({"ATP_ACCESS_LOG": ""}).access_log is False
    assert Settings.from_env({"ATP_ACCESS_LOG": "1"}).access_log is True
    assert Settings.from_env({"ATP_ACCESS_LOG": "0"}).access_log is False
    with pytest.raises(ConfigError, match="ATP_ACCESS_LOG"):
        Settings.from_env({"ATP_ACCESS_LOG": "maybe"})


async def test_every_response_carries_a_request_id(app_client: TestClient) -> None:  # type: ignore[type-arg]
    c = app_client
    r = await c.post("/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]}, headers=ADMIN)
    assert r.status == 200
    answers = [
        await c.get("/v1/availability/S1", headers=READ),  # the memoised hot path
        await c.get("/v1/availability/S1"),  # 401 problem
        await c.get("/v1/availability/NOPE", headers=READ),  # 404 problem
        await c.put("/v1/availability/S1", headers=READ),  # 405 problem
        await c.get("/no/such/path"),  # catch-all 404
        await c.post(
            "/v1/availability", data=b"{", headers=READ | {"Content-Type": "application/json"}
        ),  # 400 problem
        await c.get("/v1/status", headers=READ),
        await c.get("/ui/stock"),
        await c.head("/healthz"),
    ]
    ids = [r.headers.get("X-Request-ID") for r in answers]
    assert [r.status for r in answers] == [200, 401, 404, 405, 404, 400, 200, 200, 200]
    assert all(i is not None and re.fullmatch(r"[0-9a-f]{16}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "sent, kept",
    [
        ("checkout-7f3a9c.42", True),
        ("a" * 128, True),
        ("b:c/d+e=f@g_h", True),
        ("a" * 129, False),  # too long
        ("has space", False),
        ('quote"d', False),
        ("-leading-dash", False),
        ("ünicode", False),
    ],
)
async def test_callers_request_id_is_kept_only_when_sane(
    app_client: TestClient,  # type: ignore[type-arg]
    sent: str,
    kept: bool,
) -> None:
    r = await app_client.get("/v1/availability/NOPE", headers=READ | {"X-Request-ID": sent})
    assert r.status == 404
    rid = r.headers["X-Request-ID"]
    assert (rid == sent) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{16}", rid)


async def test_access_log_is_one_json_line_per_request(
    logged_client: TestClient,  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = logged_client
    capsys.readouterr()
    r = await c.post("/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]}, headers=ADMIN)
    assert r.status == 200
    r = await c.get(
        "/v1/availability/S1", headers=READ | {"X-Request-ID": "rep-42", "traceparent": TRACEPARENT}
    )
    assert r.status == 200
    r = await c.get("/v1/availability/S1", headers={"Authorization": "Bearer wrong-secret"})
    assert r.status == 401
    lines = [orjson.loads(x) for x in capsys.readouterr().err.splitlines() if '"atp.access"' in x]
    assert len(lines) == 3, lines
    push, lookup, refused = lines
    assert push["method"] == "POST" and push["route"] == "events.push" and push["key"] == "key1"
    assert lookup == {
        "ts": lookup["ts"], "level": "info", "logger": "atp.access", "method": "GET",
        "route": "availability.get", "path": "/v1/availability/S1", "status": 200,
        "duration_ms": lookup["duration_ms"], "request_id": "rep-42", "trace_id": TRACE,
        "key": "key2",
    }  # fmt: skip
    assert 0 <= lookup["duration_ms"] < 1000
    assert refused["status"] == 401 and refused["key"] is None and refused["trace_id"] is None
    assert re.fullmatch(r"[0-9a-f]{16}", refused["request_id"])
    text = orjson.dumps(lines).decode()
    for secret in ("test-admin", "test-read", "wrong-secret", "on_hand"):
        assert secret not in text  # neither keys nor bodies are logged


async def test_no_access_log_by_default(
    app_client: TestClient,  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert (await app_client.get("/healthz")).status == 200
    assert '"atp.access"' not in capsys.readouterr().err
