"""The OpenAPI document: a valid 3.0.3 document that Salesforce External Services can import,
whose examples hold, which lists exactly the app's routes, and which matches what the running
service answers (every live body is validated against the documented schema of its status,
with undocumented fields refused, so code and document cannot drift apart silently)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from atp_service.app import create_app
from atp_service.config import Settings
from atp_service.openapi import document, render

from .conftest import ServiceServer
from .procs import ADMIN, KEYS, snapshot

ROOT = Path(__file__).resolve().parent.parent
DOC = document()
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
FORBIDDEN = {
    "not", "const", "prefixItems", "$defs", "unevaluatedProperties", "oneOf", "anyOf", "allOf",
    "examples", "if", "then", "else", "dependentRequired", "dependentSchemas", "$schema",
    "contentMediaType", "patternProperties",
}  # fmt: skip
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
# The stock page and its assets are HTML for people, not part of the JSON API: documenting
# text/html operations would give External Services operations it cannot import.
UI_ROUTES = {("GET", "/ui/stock"), ("GET", "/ui/static/{name}")}
SCOPES = ("availability:read", "reservations:write", "events:write", "admin")
READ = {"Authorization": "Bearer test-read"}

# ---------------------------------------------------------------------------------------------
# helpers


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def inline(schema: Any, doc: dict[str, Any] = DOC, seen: tuple[str, ...] = ()) -> Any:
    """A copy of ``schema`` with every local ``$ref`` replaced by its target."""
    if isinstance(schema, list):
        return [inline(x, doc, seen) for x in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        assert ref not in seen, f"recursive $ref {ref}"
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        return inline(target, doc, (*seen, ref))
    return {k: (v if k == "example" else inline(v, doc, seen)) for k, v in schema.items()}


def children(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from schema.get("properties", {}).values()
    if isinstance(schema.get("items"), dict):
        yield schema["items"]
    if isinstance(schema.get("additionalProperties"), dict):
        yield schema["additionalProperties"]


def subschemas(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield schema
    for child in children(schema):
        yield from subschemas(child)


def depth(schema: dict[str, Any]) -> int:
    return 1 + max((depth(c) for c in children(schema)), default=0)


def strict(schema: Any) -> Any:
    """Refuse undocumented fields: objects with ``properties`` get additionalProperties false."""
    if isinstance(schema, dict):
        out = {k: (v if k == "example" else strict(v)) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


def nullable(schema: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` in draft 4 terms: null joins the allowed types."""
    if isinstance(schema, dict):
        out = {k: (v if k == "example" else nullable(v)) for k, v in schema.items()}
        if out.pop("nullable", False):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(schema, list):
        return [nullable(x) for x in schema]
    return schema


def check(schema: dict[str, Any], instance: Any, refuse_extra: bool = False) -> None:
    """Validate with jsonschema; the OpenAPI 3.0 schema subset used here is draft 4."""
    resolved = nullable(inline(schema))
    if refuse_extra:
        resolved = strict(resolved)
    jsonschema.Draft4Validator.check_schema(resolved)
    validator = jsonschema.Draft4Validator(
        resolved, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    validator.validate(instance)


def all_schemas(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object of the document (before $ref resolution), with where it sits."""
    for name, schema in doc["components"]["schemas"].items():
        for sub in subschemas(schema):
            yield f"components.schemas.{name}", sub
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        for param in op.get("parameters", []):
            yield from ((f"{where} param {param['name']}", s) for s in subschemas(param["schema"]))
        for media, obj in op.get("requestBody", {}).get("content", {}).items():
            yield f"{where} body {media}", obj["schema"]
        for status, response in op["responses"].items():
            for media, obj in response.get("content", {}).items():
                yield f"{where} {status} {media}", obj["schema"]
            for name, header in response.get("headers", {}).items():
                yield f"{where} {status} header {name}", header["schema"]


def keys_outside_examples(node: Any, parent: str = "") -> Iterator[tuple[str, str]]:
    """(parent key, key) of every mapping key, not looking inside example values."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield parent, key
            if key != "example":
                yield from keys_outside_examples(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from keys_outside_examples(value, parent)


# ---------------------------------------------------------------------------------------------
# the document itself


def test_document_is_valid_openapi_30() -> None:
    validate(DOC)
    assert DOC["openapi"].startswith("3.0")
    assert DOC["info"]["title"] == "ATP service"
    assert DOC["info"]["version"] == "1.0.0"
    assert DOC["info"]["description"]
    assert DOC["servers"] == [{"url": "/"}]
    assert json.loads(json.dumps(DOC)) == DOC  # plain JSON values only
    assert document() == DOC and document() is not DOC


def test_external_services_compatibility() -> None:
    ids = [op["operationId"] for _, _, op in operations(DOC)]
    assert len(ids) == len(set(ids)), ids
    for path, method, op in operations(DOC):
        where = f"{method.upper()} {path}"
        assert re.fullmatch(r"[a-z][A-Za-z0-9]{2,39}", op["operationId"]), where
        assert op["summary"] and op["description"] and op["tags"], where
        if method in ("get", "delete", "head"):
            assert "requestBody" not in op, where
    for parent, key in keys_outside_examples(DOC):
        if parent != "properties":  # a property may be named anything
            assert key not in FORBIDDEN, f"forbidden keyword {key!r} under {parent!r}"
    for where, schema in all_schemas(DOC):
        if "type" in schema:
            assert isinstance(schema["type"], str), where
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(schema.get(bound, False), bool), where
        assert "$ref" not in schema or len(schema) == 1, f"$ref with siblings at {where}"
    for name, schema in DOC["components"]["schemas"].items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,38}", name), name
        assert depth(inline(schema)) <= 6, name


def test_bodies_and_responses_are_named_schemas_with_both_problem_types() -> None:
    names = set(DOC["components"]["schemas"])
    for path, method, op in operations(DOC):
        where = f"{method.upper()} {path}"
        media_objects = list(op.get("requestBody", {}).get("content", {}).values())
        for status, response in op["responses"].items():
            assert response.get("content"), f"{where} {status} has no content"
            media_objects += response["content"].values()
            if int(status) >= 400:
                assert set(response["content"]) == {"application/problem+json",
                                                    "application/json"}, where  # fmt: skip
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"] is True, where
        for obj in media_objects:
            ref = obj["schema"].get("$ref", "")
            assert ref.startswith("#/components/schemas/"), where
            assert ref.rsplit("/", 1)[1] in names, where


def test_security() -> None:
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": DOC["components"]["securitySchemes"]["bearerAuth"]["description"],
    }  # fmt: skip
    assert DOC["security"] == [{"bearerAuth": []}]
    for path, method, op in operations(DOC):
        if path in PUBLIC:
            assert op["security"] == [], path
            assert not {"401", "403"} & set(op["responses"]), path
        else:
            assert "security" not in op or op["security"] == [{"bearerAuth": []}], path
            assert any(f"`{scope}`" in op["description"] for scope in SCOPES), path
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"


def test_every_example_is_present_and_valid() -> None:
    for path, method, op in operations(DOC):
        where = f"{method.upper()} {path}"
        for media, obj in op.get("requestBody", {}).get("content", {}).items():
            assert "example" in obj, f"{where} body {media}"
            check(obj["schema"], obj["example"])
        for param in op.get("parameters", []):
            if "example" in param:
                check(param["schema"], param["example"])
        for status, response in op["responses"].items():
            for media, obj in response.get("content", {}).items():
                assert "example" in obj, f"{where} {status} {media}"
                check(obj["schema"], obj["example"], refuse_extra=True)
                if "Problem" in obj["schema"]["$ref"]:
                    assert obj["example"]["status"] == int(status), f"{where} {status}"
    checked = 0
    for _where, schema in all_schemas(DOC):
        if "example" in schema and "$ref" not in schema:
            check(schema, schema["example"], refuse_extra=True)
            checked += 1
    assert checked > 50


def test_paths_match_route_table() -> None:
    app = create_app(
        Settings.from_env({"ATP_REDIS_URL": "redis://127.0.0.1:1/0", "ATP_API_KEYS": "k:*"})
    )
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("*", "HEAD") and route.resource is not None
    }
    documented = {(method.upper(), path) for path, method, _ in operations(DOC)}
    assert documented == routes - UI_ROUTES
    assert routes >= UI_ROUTES


def test_committed_copy_is_current() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert json.loads(committed) == DOC, "run scripts/export-openapi"
    assert committed == render(), "run scripts/export-openapi"


# ---------------------------------------------------------------------------------------------
# the live service answers as documented


async def conforms(
    r: ClientResponse, method: str, path: str, status: int, problem: str | None = None
) -> Any:
    """Assert the live response has ``status`` and matches the documented response for it
    (media type, required headers, body schema without undocumented fields); return the body."""
    text = await r.text()
    assert r.status == status, f"{method} {path}: {r.status} {text}"
    op = DOC["paths"][path][method.lower()]
    documented = op["responses"].get(str(r.status))
    assert documented is not None, f"{method} {path} answered undocumented {r.status}"
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in r.headers, f"{method} {path} {status}: no {name} header"
            value: Any = r.headers[name]
            if header["schema"]["type"] == "integer":
                value = int(value)
            check(header["schema"], value)
    assert r.content_type in documented["content"], f"{method} {path}: {r.content_type}"
    body: Any = text if r.content_type.startswith("text/") else json.loads(text)
    check(documented["content"][r.content_type]["schema"], body, refuse_extra=True)
    if problem is not None:
        assert body["type"].endswith("/" + problem), body
        assert body["instance"] == r.url.path, body
    return body


AV = "/v1/availability/{sku}"
BATCH = "/v1/availability"
RES = "/v1/reservations"
ONE = "/v1/reservations/{reservation_id}"
COMMIT = "/v1/reservations/{reservation_id}/commit"
EVENTS = "/v1/events"
STATUS = "/v1/status"


def reservation(rid: str, qty: int = 2, **extra: Any) -> dict[str, Any]:
    return {"reservation_id": rid, "priority": "checkout",
            "lines": [{"sku": "S1", "location": "DC1", "qty": qty}], **extra}  # fmt: skip


async def test_live_responses_match_document(app_client: TestClient) -> None:  # type: ignore[type-arg]
    c = app_client
    bad_event = {k: v for k, v in snapshot("S2", "DC1", 1, 5).items() if k != "on_hand"}
    events = [snapshot("S1", "DC1", 1, 100, 5, 2), snapshot("S1", "ST1", 1, 4), bad_event]
    r = await c.post("/v1/events", json={"events": events}, headers=ADMIN)
    body = await conforms(r, "POST", EVENTS, 200)
    assert body["applied"] == 2 and [x["index"] for x in body["rejected"]] == [2]
    r = await c.post("/v1/events", json={"events": []}, headers=ADMIN)
    await conforms(r, "POST", EVENTS, 400, "invalid-request")

    # lookups
    body = await conforms(await c.get("/v1/availability/S1", headers=READ), "GET", AV, 200)
    assert body["total_atp"] == 93 + 4
    assert {x["status"] for x in body["locations"]} == {"in_stock", "low_stock"}
    r = await c.get("/v1/availability/S1", params=[("location", "DC1"), ("group", "EAST")],
                    headers=READ)  # fmt: skip
    await conforms(r, "GET", AV, 200)
    r = await c.get("/v1/availability/S1?group=NORTH", headers=READ)
    await conforms(r, "GET", AV, 400, "unknown-group")
    r = await c.get("/v1/availability/S1?warehouse=DC1", headers=READ)
    await conforms(r, "GET", AV, 400, "invalid-request")
    await conforms(await c.get("/v1/availability/NOPE", headers=READ), "GET", AV, 404)
    await conforms(await c.get("/v1/availability/S1"), "GET", AV, 401, "unauthorized")
    r = await c.get("/v1/availability/S1", headers={"Authorization": "Bearer test-events"})
    await conforms(r, "GET", AV, 403, "forbidden")

    items = [{"sku": "S1", "location": "DC1", "qty": 2}, {"sku": "S1", "group": "EAST"},
             {"sku": "S1"}, {"sku": "S9", "qty": 1}, {"sku": "S1", "location": "XX"}]  # fmt: skip
    r = await c.post("/v1/availability", json={"items": items}, headers=READ)
    body = await conforms(r, "POST", BATCH, 200)
    assert [x["status"] for x in body["items"]] == [
        "in_stock", "in_stock", "in_stock", "unknown", "unknown",
    ]  # fmt: skip
    r = await c.post("/v1/availability", json={"items": [{"sku": "S1", "qty": 0}]}, headers=READ)
    body = await conforms(r, "POST", BATCH, 400, "invalid-request")
    assert body["errors"][0]["pointer"] == "/items/0/qty"
    r = await c.post("/v1/availability", json={"items": [{"sku": "S1", "group": "NORTH"}]},
                     headers=READ)  # fmt: skip
    await conforms(r, "POST", BATCH, 400, "unknown-group")
    r = await c.post(
        "/v1/availability", data=b"sku=S1", headers=READ | {"Content-Type": "text/plain"}
    )
    await conforms(r, "POST", BATCH, 415, "unsupported-media-type")
    r = await c.post("/v1/availability", data=io.BytesIO(b"{" * (8 * 1024 * 1024 + 1)),
                     headers=READ | {"Content-Type": "application/json"})  # fmt: skip
    await conforms(r, "POST", BATCH, 413, "payload-too-large")

    # a cart hold: create, replay, read, commit, release
    hold = reservation("cart-1", hold_seconds=600)
    body = await conforms(
        await c.post("/v1/reservations", json=hold, headers=ADMIN), "POST", RES, 201
    )
    assert body["status"] == "held" and body["hold_seconds"] == 600
    await conforms(await c.post("/v1/reservations", json=hold, headers=ADMIN), "POST", RES, 200)
    await conforms(await c.get("/v1/reservations/cart-1", headers=ADMIN), "GET", ONE, 200)
    r = await c.post("/v1/reservations/cart-1/commit", headers=ADMIN)
    assert (await conforms(r, "POST", COMMIT, 200))["status"] == "confirmed"
    r = await c.delete("/v1/reservations/cart-1", headers=ADMIN)
    assert (await conforms(r, "DELETE", ONE, 200))["status"] == "released"
    r = await c.delete("/v1/reservations/cart-1", headers=ADMIN)
    assert (await conforms(r, "DELETE", ONE, 200))["status"] == "released"

    # a direct reservation (standalone: confirmed at once), then the refusals
    r = await c.post("/v1/reservations", json=reservation("order-1", 3), headers=ADMIN)
    assert (await conforms(r, "POST", RES, 201))["status"] == "confirmed"
    r = await c.post("/v1/reservations", json=reservation("order-1", 4), headers=ADMIN)
    await conforms(r, "POST", RES, 409, "idempotency-conflict")
    short = reservation("order-2", 1000)
    short["lines"].append({"sku": "S1", "location": "ZZ", "qty": 1})
    r = await c.post("/v1/reservations", json=short, headers=ADMIN)
    body = await conforms(r, "POST", RES, 409, "insufficient-stock")
    assert body["lines"] == [
        {"sku": "S1", "location": "DC1", "requested": 1000, "atp": 90},
        {"sku": "S1", "location": "ZZ", "requested": 1, "atp": 0},
    ]
    bad = reservation("order-3", 0)
    body = await conforms(await c.post("/v1/reservations", json=bad, headers=ADMIN), "POST", RES,
                          400, "invalid-request")  # fmt: skip
    assert body["errors"] == [{"pointer": "/lines/0/qty", "detail": body["errors"][0]["detail"]}]
    r = await c.post("/v1/reservations", json=reservation("r-9"), headers=READ)
    await conforms(r, "POST", RES, 403, "forbidden")
    r = await c.post(
        "/v1/reservations",
        json=reservation("r-9"),
        headers={"Authorization": "Bearer nope", "Accept": "application/json"},
    )
    assert r.content_type == "application/json"  # Salesforce External Services
    await conforms(r, "POST", RES, 401, "unauthorized")
    await conforms(await c.get("/v1/reservations/nope", headers=ADMIN), "GET", ONE, 404)
    await conforms(await c.get("/v1/reservations/-x", headers=ADMIN), "GET", ONE, 400)
    await conforms(await c.delete("/v1/reservations/nope", headers=ADMIN), "DELETE", ONE, 404)
    r = await c.post("/v1/reservations/nope/commit", headers=ADMIN)
    await conforms(r, "POST", COMMIT, 404, "not-found")

    # operations
    body = await conforms(await c.get("/v1/status", headers=READ), "GET", STATUS, 200)
    assert body["status"] == "ok" and body["reasons"] == [], body
    assert body["feed"] is None and body["erp"]["mode"] == "standalone"
    assert body["erp"]["queues"]["checkout"] == {"length": 0, "oldest_seconds": 0.0}
    assert body["groups"] == {"EAST": ["DC1", "ST1"], "WEST": ["DC2"]}
    assert body["cache"]["keys"] == 2 and body["cache"]["ready"] and body["cache"]["fresh"]
    assert body["replicas_seen"] in (0, 1)  # the first heartbeat may not have landed yet
    await conforms(await c.get("/v1/status"), "GET", STATUS, 401, "unauthorized")
    r = await c.get("/v1/status", headers={"Authorization": "Bearer test-events"})
    await conforms(r, "GET", STATUS, 403, "forbidden")
    await conforms(await c.get("/healthz"), "GET", "/healthz", 200)
    await conforms(await c.get("/readyz"), "GET", "/readyz", 200)
    await conforms(await c.get("/metrics"), "GET", "/metrics", 200)
    r = await c.get("/openapi.json")
    assert await conforms(r, "GET", "/openapi.json", 200) == DOC


async def test_live_not_committable(app_client: TestClient) -> None:  # type: ignore[type-arg]
    c = app_client
    r = await c.post("/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]}, headers=ADMIN)
    assert r.status == 200
    r = await c.post("/v1/reservations", json=reservation("cart-2", hold_seconds=60), headers=ADMIN)
    await conforms(r, "POST", RES, 201)
    await conforms(await c.delete("/v1/reservations/cart-2", headers=ADMIN), "DELETE", ONE, 200)
    r = await c.post("/v1/reservations/cart-2/commit", headers=ADMIN)
    await conforms(r, "POST", COMMIT, 409, "not-committable")


async def test_live_unavailable_before_ready() -> None:
    """With Redis unreachable the cache never warms: readiness and lookups are 503 problems
    with Retry-After, as documented."""
    settings = Settings.from_env({"ATP_REDIS_URL": "redis://127.0.0.1:1/0", "ATP_API_KEYS": KEYS})
    client = TestClient(ServiceServer(create_app(settings)))
    await client.start_server()
    try:
        await conforms(await client.get("/readyz"), "GET", "/readyz", 503, "unavailable")
        await conforms(await client.get("/healthz"), "GET", "/healthz", 200)
        body = await conforms(await client.get("/v1/status", headers=READ), "GET", STATUS, 200)
        assert body["status"] == "degraded" and body["replicas_seen"] is None, body
        assert body["erp"]["queues"] is None and body["erp"]["inflight"] is None
        assert body["cache"] == {"keys": 0, "ready": False, "fresh": False, "age_seconds": None}
        r = await client.get("/v1/availability/S1", headers=READ)
        await conforms(r, "GET", AV, 503, "unavailable")
        r = await client.post("/v1/availability", json={"items": [{"sku": "S1"}]},
                              headers=READ | {"Accept": "application/json"})  # fmt: skip
        assert r.content_type == "application/json"
        await conforms(r, "POST", BATCH, 503, "unavailable")
        r = await client.post("/v1/reservations", json=reservation("r-1"), headers=ADMIN)
        await conforms(r, "POST", RES, 503, "unavailable")
        r = await client.post("/v1/reservations/r-1/commit", headers=ADMIN)
        await conforms(r, "POST", COMMIT, 503, "unavailable")
        r = await client.delete("/v1/reservations/r-1", headers=ADMIN)
        await conforms(r, "DELETE", ONE, 503, "unavailable")
        r = await client.post("/v1/events", json={"events": [snapshot("S1", "DC1", 1, 5)]},
                              headers=ADMIN)  # fmt: skip
        await conforms(r, "POST", EVENTS, 503, "unavailable")
    finally:
        await client.close()


async def test_live_get_reservation_unavailable() -> None:
    settings = Settings.from_env({"ATP_REDIS_URL": "redis://127.0.0.1:1/0", "ATP_API_KEYS": KEYS})
    client = TestClient(ServiceServer(create_app(settings)))
    await client.start_server()
    try:
        r = await client.get("/v1/reservations/r-1", headers=ADMIN)
        await conforms(r, "GET", ONE, 503, "unavailable")
    finally:
        await client.close()


@pytest.mark.parametrize("path", sorted(DOC["paths"]))
def test_documented_paths_use_documented_parameters(path: str) -> None:
    for name in re.findall(r"{([^}]+)}", path):
        for method in DOC["paths"][path]:
            params = DOC["paths"][path][method].get("parameters", [])
            assert any(p["name"] == name and p["in"] == "path" for p in params), (path, method)


def test_trace_headers_are_documented_where_they_are_read() -> None:
    from atp_service.http.endpoint import TRACED
    from atp_service.openapi import TRACED_OPS

    by_op = {op["operationId"]: op for _, _, op in operations(DOC)}
    traced = {i for i, op in by_op.items()
              if any(p["name"] == "traceparent" for p in op["parameters"])}  # fmt: skip
    assert traced == TRACED_OPS == {"createReservation", "releaseReservation"}
    assert {"reservations.create", "reservations.release"} == TRACED
    for op in by_op.values():
        assert any(p["name"] == "X-Request-ID" for p in op["parameters"])
        for response in op["responses"].values():
            assert "X-Request-ID" in response["headers"]
