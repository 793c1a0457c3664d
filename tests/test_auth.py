"""Bearer-key auth on every route (401 / 403 / open routes) and ATP_API_KEYS parsing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from atp_service.config import SCOPES, ApiKey, ConfigError, Settings, parse_api_keys

from .procs import ADMIN, snapshot
from .test_bad_input import assert_problem, close_app, fingerprint, start_app

READ, WRITE, EVENTS = "availability:read", "reservations:write", "events:write"
KEY_SCOPE = {"test-read": READ, "test-write": WRITE, "test-events": EVENTS}
WWW_AUTHENTICATE = 'Bearer realm="atp-service"'


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# (route id, method, path, JSON body, scope, status when allowed). Every body is valid, so a
# route that skipped its auth check would answer its success status, not 401/403.
ROUTES: list[tuple[str, str, str, Any, str, int]] = [
    ("lookup", "GET", "/v1/availability/S1", None, READ, 200),
    ("batch", "POST", "/v1/availability", {"items": [{"sku": "S1"}]}, READ, 200),
    ("reserve", "POST", "/v1/reservations",
     {"reservation_id": "r-auth", "priority": "checkout",
      "lines": [{"sku": "S1", "location": "DC1", "qty": 1}]}, WRITE, 201),
    ("get", "GET", "/v1/reservations/r-seed", None, WRITE, 200),
    ("commit", "POST", "/v1/reservations/r-seed/commit", None, WRITE, 200),
    ("release", "DELETE", "/v1/reservations/r-seed", None, WRITE, 200),
    ("events", "POST", "/v1/events", {"events": [snapshot("S1", "DC1", 50, 20)]}, EVENTS, 200),
]  # fmt: skip
ROUTE_PARAMS = [pytest.param(*r[1:], id=r[0]) for r in ROUTES]

UNAUTHENTICATED = [
    pytest.param(None, id="no-header"),
    pytest.param("Basic dGVzdC1hZG1pbjo=", id="basic-scheme"),
    pytest.param("Token test-admin", id="token-scheme"),
    pytest.param("test-admin", id="no-scheme"),
    pytest.param("Bearer", id="bearer-without-key"),
    pytest.param("Bearer unknown-key", id="unknown-key"),
    pytest.param("Bearer test-admin-2", id="key-with-suffix"),
    pytest.param("Bearer test-admi", id="key-prefix"),
    pytest.param("Bearer " + sha256("test-admin"), id="digest-of-key"),
    pytest.param("Bearer sha256=" + sha256("test-admin"), id="stored-form-of-key"),
    pytest.param("Bearer Test-Admin", id="key-case-differs"),
]


async def call(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    data = None if body is None else orjson.dumps(body)
    if data is not None:
        headers = {**headers, "Content-Type": "application/json"}
    response = await client.request(method, path, data=data, headers=headers)
    await response.read()
    return response


@contextlib.asynccontextmanager
async def serve(redis_url: str, **env: str) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    client = await start_app(redis_url, **env)
    try:
        yield client
    finally:
        await close_app(client)


@pytest.fixture
async def service(redis_proc: Any) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """The app with the test keys (tests.procs.KEYS), closed with close_app."""
    async with serve(redis_proc.url) as client:
        yield client


@pytest.fixture
async def seeded(service: Any) -> Any:
    """S1 at DC1 with 10 on hand, and reservation r-seed (a cart hold of test-write's)
    holding 2 of it."""
    r = await service.post(
        "/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]}, headers=ADMIN
    )
    assert r.status == 200, await r.text()
    r = await service.post(
        "/v1/reservations",
        json={"reservation_id": "r-seed", "priority": "sales", "hold_seconds": 14400,
              "lines": [{"sku": "S1", "location": "DC1", "qty": 2}]},
        headers={"Authorization": "Bearer test-write"},  # owned by the writer key
    )  # fmt: skip
    assert r.status == 201, await r.text()
    return service


# --- 401 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", UNAUTHENTICATED)
@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ROUTE_PARAMS)
async def test_missing_or_unknown_key_is_401(
    seeded: Any, redis_proc: Any, authorization: str | None, method: str, path: str, body: Any,
    scope: str, ok: int,
) -> None:  # fmt: skip
    before = await fingerprint(redis_proc.url)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await call(seeded, method, path, body, headers)
    await assert_problem(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate") == WWW_AUTHENTICATE
    assert await fingerprint(redis_proc.url) == before


async def _raw_request(client: Any, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    header_block, _, payload = raw.partition(b"\r\n\r\n")
    status = int(header_block.split(b" ", 2)[1])
    return status, header_block, payload


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ROUTE_PARAMS)
async def test_key_that_is_not_utf8_is_401(
    seeded: Any, redis_proc: Any, method: str, path: str, body: Any, scope: str, ok: int
) -> None:
    """Header bytes that are not UTF-8 reach the digest as surrogates; that was a 500."""
    before = await fingerprint(redis_proc.url)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n".encode()
        + b"Authorization: Bearer test-\xff\xfeadmin\r\n"
    )
    status, headers, payload = await _raw_request(
        seeded, head, b"" if body is None else orjson.dumps(body)
    )
    assert status == 401, payload
    assert b"\r\nContent-Type: application/problem+json" in headers
    assert orjson.loads(payload)["type"].endswith("/unauthorized")
    assert await fingerprint(redis_proc.url) == before


# --- 403 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(KEY_SCOPE))
@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ROUTE_PARAMS)
async def test_each_key_reaches_only_its_scope(
    seeded: Any, redis_proc: Any, key: str, method: str, path: str, body: Any, scope: str,
    ok: int,
) -> None:  # fmt: skip
    if KEY_SCOPE[key] == scope:
        response = await call(seeded, method, path, body, bearer(key))
        assert response.status == ok, await response.text()
        return
    before = await fingerprint(redis_proc.url)
    response = await call(seeded, method, path, body, bearer(key))
    problem = await assert_problem(response, 403, "forbidden")
    assert scope in problem["detail"]
    assert "WWW-Authenticate" not in response.headers
    assert await fingerprint(redis_proc.url) == before


# --- keys that reach their routes -----------------------------------------------------------


async def test_star_key_reaches_every_route(seeded: Any) -> None:
    for _name, method, path, body, _scope, ok in ROUTES:
        response = await call(seeded, method, path, body, ADMIN)
        assert response.status == ok, (path, await response.text())
    r = await seeded.get("/v1/reservations/r-seed", headers=ADMIN)
    assert (await r.json())["status"] == "released"
    r = await seeded.get("/v1/availability/S1", headers=ADMIN)
    assert (await r.json())["locations"][0]["on_hand"] == 20  # the events call was applied


@pytest.mark.parametrize(
    "authorization",
    ["bearer test-read", "BEARER test-read", "Bearer   test-read  ", "bEaReR test-read"],
)
async def test_bearer_scheme_is_case_insensitive(seeded: Any, authorization: str) -> None:
    r = await seeded.get("/v1/availability/S1", headers={"Authorization": authorization})
    assert r.status == 200, await r.text()
    assert (await r.json())["total_atp"] == 8


OPEN = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer unknown-key"}, id="unknown-key"),
    pytest.param({"Authorization": "Basic x"}, id="basic-scheme"),
    pytest.param(bearer("test-read"), id="scoped-key"),
]


@pytest.mark.parametrize("headers", OPEN)
async def test_open_routes_need_no_key(service: Any, headers: dict[str, str]) -> None:
    r = await service.get("/healthz", headers=headers)
    assert r.status == 200 and await r.json() == {"status": "ok"}
    r = await service.get("/readyz", headers=headers)
    assert r.status == 200 and (await r.json())["status"] == "ready"
    r = await service.get("/metrics", headers=headers)
    assert r.status == 200 and r.content_type == "text/plain"
    assert "atp_cache_ready 1.0" in await r.text()
    r = await service.get("/openapi.json", headers=headers)
    assert r.status == 200 and r.content_type == "application/json"
    assert (await r.json())["openapi"].startswith("3.0.")


# --- ATP_API_KEYS parsing -------------------------------------------------------------------


def test_parse_plain_and_star_keys() -> None:
    keys = parse_api_keys(" a:availability:read , events:write ;; b:* ; c:admin;")
    assert len(keys) == 3
    a, b, c = keys
    assert a == ApiKey(sha256("a"), frozenset({READ, EVENTS}), "key1")
    assert a.allows(READ) and a.allows(EVENTS) and not a.allows(WRITE)
    assert b.digest == sha256("b") and b.scopes == SCOPES
    assert c.scopes == frozenset({"admin"}) and not c.allows(READ)


def test_parse_a_key_quota() -> None:
    a, b, c = parse_api_keys(f"a:{WRITE},hold_quota=7;b:hold_quota=0,*;c:{WRITE}")
    assert a == ApiKey(sha256("a"), frozenset({WRITE}), "key1", 7)
    assert b.hold_quota == 0 and b.scopes == SCOPES
    assert c.hold_quota is None


def test_parse_stored_hash_form() -> None:
    digest = sha256("s3cret-value")
    (lower,) = parse_api_keys(f"sha256={digest}:{READ}")
    (upper,) = parse_api_keys(f"sha256={digest.upper()}:{READ}")
    assert lower.digest == upper.digest == digest
    assert lower.scopes == frozenset({READ})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "holds no key"),
        ("  ", "holds no key"),
        (";;", "holds no key"),
        ("secret", "entry 1: expected secret:scope"),
        ("a:*;secret", "entry 2: expected secret:scope"),
        ("secret:", "entry 1: expected secret:scope"),
        (":*", "entry 1: expected secret:scope"),
        ("a:bogus", "entry 1: unknown scope 'bogus'"),
        ("a:availability:read,bogus", "unknown scope 'bogus'"),
        ("a:availability:write", "unknown scope 'availability:write'"),
        ("a:read", "unknown scope 'read'"),
        ("a:availability:read,", "unknown scope ''"),
        ("a:b:*", "unknown scope 'b:*'"),
        ("a:ADMIN", "unknown scope 'ADMIN'"),
        ("sha256=abc:*", "bad sha256 digest"),
        ("sha256=" + "g" * 64 + ":*", "bad sha256 digest"),
        ("sha256=" + "a" * 65 + ":*", "bad sha256 digest"),
        ("sha256=:*", "bad sha256 digest"),
        ("a:*,hold_quota=x", "entry 1 hold_quota='x' is not an integer"),
        ("a:*,hold_quota=-1", "entry 1 hold_quota=-1 is outside"),
        ("a:*,hold_quota=", "entry 1 hold_quota='' is not an integer"),
        ("a:*,hold_quota=1,hold_quota=2", "entry 1: hold_quota given twice"),
        ("a:hold_quota=5", "entry 1: no scope"),
        ("a:*,quota=5", "unknown scope 'quota=5'"),
    ],
)
def test_parse_bad_keys_raise(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match="ATP_API_KEYS") as info:
        parse_api_keys(raw)
    assert message in str(info.value)


@pytest.mark.parametrize("raw", ["a:bogus", "nocolon", ";", "sha256=xyz:*"])
def test_settings_reject_bad_keys(raw: str) -> None:
    with pytest.raises(ConfigError, match="ATP_API_KEYS"):
        Settings.from_env({"ATP_API_KEYS": raw})


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_empty_keys_mean_a_dev_key(raw: str | None) -> None:
    settings = Settings.from_env({} if raw is None else {"ATP_API_KEYS": raw})
    assert settings.dev_key is not None and len(settings.dev_key) > 20
    (key,) = settings.api_keys
    assert key.digest == sha256(settings.dev_key) and key.scopes == SCOPES


def test_configured_keys_mean_no_dev_key() -> None:
    settings = Settings.from_env({"ATP_API_KEYS": "a:*"})
    assert settings.dev_key is None
    assert settings.api_keys == parse_api_keys("a:*")


def test_empty_variables_mean_unset() -> None:
    names = ["ATP_HTTP_HOST", "ATP_HTTP_PORT", "ATP_REDIS_URL", "ATP_DATA_DIR",
             "ATP_EMBEDDED_FSYNC", "ATP_KAFKA_BOOTSTRAP", "ATP_KAFKA_TOPIC", "ATP_KAFKA_GROUP",
             "ATP_ERP_URL", "ATP_ERP_RATE", "ATP_LOCATION_GROUPS", "ATP_LOW_STOCK",
             "ATP_EXPIRY_INTERVAL", "ATP_STALE_AFTER", "ATP_LOG_LEVEL"]  # fmt: skip
    empty = Settings.from_env({"ATP_API_KEYS": "a:*", **dict.fromkeys(names, "")})
    blank = Settings.from_env({"ATP_API_KEYS": "a:*", **dict.fromkeys(names, " ")})
    unset = Settings.from_env({"ATP_API_KEYS": "a:*"})
    assert empty == blank == unset
    assert unset.redis_url is None and unset.erp_url is None and unset.kafka_bootstrap is None
    assert (unset.http_port, unset.low_stock, unset.erp_rate) == (8080, 5, 50.0)
    assert unset.location_groups == {}


# --- stored-hash keys over HTTP --------------------------------------------------------------


async def test_stored_hash_key_is_accepted_over_http(redis_proc: Any) -> None:
    keys = (
        f"sha256={sha256('s3cret-value')}:{READ};"
        f"sha256={sha256('upper-value').upper()}:{WRITE},{READ};"
        f"feeder:{EVENTS};ops:admin"
    )
    async with serve(redis_proc.url, ATP_API_KEYS=keys) as client:
        r = await client.post(
            "/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]},
            headers=bearer("feeder"),
        )  # fmt: skip
        assert r.status == 200 and (await r.json())["applied"] == 1
        r = await client.get("/v1/availability/S1", headers=bearer("s3cret-value"))
        assert r.status == 200 and (await r.json())["total_atp"] == 10
        # the scopes of a stored-hash key still apply
        r = await client.post(
            "/v1/events", json={"events": [snapshot("S1", "DC1", 2, 0)]},
            headers=bearer("s3cret-value"),
        )  # fmt: skip
        await assert_problem(r, 403, "forbidden")
        # neither the stored form nor the bare digest is itself a key
        for secret in (f"sha256={sha256('s3cret-value')}", sha256("s3cret-value")):
            r = await client.get("/v1/availability/S1", headers=bearer(secret))
            await assert_problem(r, 401, "unauthorized")
        # an upper-case stored digest matches too
        r = await client.post(
            "/v1/reservations",
            json={"reservation_id": "r1", "priority": "checkout",
                  "lines": [{"sku": "S1", "location": "DC1", "qty": 4}]},
            headers=bearer("upper-value"),
        )  # fmt: skip
        assert r.status == 201, await r.text()
        r = await client.get("/v1/availability/S1", headers=bearer("upper-value"))
        assert r.status == 200 and (await r.json())["total_atp"] == 6
        # the test keys of the default configuration are not configured here
        r = await client.get("/v1/availability/S1", headers=ADMIN)
        await assert_problem(r, 401, "unauthorized")


async def test_admin_scope_alone_reaches_no_data_route(redis_proc: Any) -> None:
    async with serve(redis_proc.url, ATP_API_KEYS="ops:admin;all:*") as client:
        for _name, method, path, body, scope, _ok in ROUTES:
            response = await call(client, method, path, body, bearer("ops"))
            problem = await assert_problem(response, 403, "forbidden")
            assert scope in problem["detail"]


async def test_reservation_ids_are_scoped_to_the_calling_key(redis_proc: Any) -> None:
    """Another caller's reservation id reads as unknown and cannot be reused or changed;
    an admin key sees every reservation."""
    keys_ = (
        "alice:reservations:write,events:write;bob:reservations:write;ops:admin,reservations:write"
    )
    client = await start_app(redis_proc.url, ATP_API_KEYS=keys_)
    try:
        alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
        r = await client.post("/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]},
                              headers=alice)  # fmt: skip
        assert r.status == 200
        body = {"reservation_id": "shared-id", "priority": "checkout",
                "lines": [{"sku": "S1", "location": "DC1", "qty": 1}]}  # fmt: skip
        assert (await client.post("/v1/reservations", json=body, headers=alice)).status == 201
        r = await client.post("/v1/reservations", json=body, headers=bob)
        await assert_problem(r, 409, "idempotency-conflict")
        for method, path in (("GET", "/v1/reservations/shared-id"),
                             ("POST", "/v1/reservations/shared-id/commit"),
                             ("DELETE", "/v1/reservations/shared-id")):  # fmt: skip
            await assert_problem(await client.request(method, path, headers=bob), 404,
                                 "not-found")  # fmt: skip
        r = await client.get("/v1/reservations/shared-id", headers={"Authorization": "Bearer ops"})
        assert r.status == 200 and (await r.json())["status"] == "confirmed"
        r = await client.get("/v1/reservations/shared-id", headers=alice)
        assert r.status == 200
    finally:
        await close_app(client)
