"""The OpenAPI document against every Salesforce External Services limit that docs/salesforce.md
lists (section 4), one test per row, walking the whole document, plus a check that the guide
and the document agree (operation names, the test names the guide cites)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atp_service.openapi import document

ROOT = Path(__file__).resolve().parent.parent
DOC = document()
GUIDE = (ROOT / "docs" / "salesforce.md").read_text(encoding="utf-8")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
JSON = "application/json"
PROBLEM = "application/problem+json"
# Media types External Services reads: requests (OpenAPI 2.0 and 3.0 Support) and responses
# (Operation Output Parameters).
REQUEST_TYPES = {JSON, "application/x-www-form-urlencoded", "text/plain"}
RESPONSE_TYPES = {JSON, "application/octet-stream", "application/x-www-form-urlencoded",
                  "text/plain"}  # fmt: skip
# Supported data types (Schema Definitions), as OpenAPI (type, format) pairs.
TYPES = {
    ("integer", "int32"), ("integer", "int64"), ("number", "double"), ("number", "float"),
    ("boolean", None), ("string", None), ("string", "date-time"), ("string", "date"),
    ("string", "byte"), ("string", "binary"),
    # formats External Services has no type for are read as plain strings
    ("string", "uri"), ("string", "uri-reference"),
    ("object", None), ("array", None),
}  # fmt: skip
MAX_NAME = 40  # leaves 40 of the 80 characters of a derived developer name for the registration
MAX_DESCRIPTION = 1333
MAX_DEPTH = 6


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    target: dict[str, Any] = DOC["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return target


def walk(schema: dict[str, Any], seen: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Every schema reachable from ``schema`` (refs followed, each component once per path)."""
    yield schema
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref not in seen, f"recursive {ref}"
        yield from walk(resolve(schema), (*seen, ref))
        return
    for child in schema.get("properties", {}).values():
        yield from walk(child, seen)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], seen)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], seen)


def all_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, schema in DOC["components"]["schemas"].items():
        yield from ((f"components.{name}", s) for s in walk(schema))
    for path, method, op in operations():
        where = f"{method.upper()} {path}"
        for param in op.get("parameters", []):
            yield from ((f"{where} param", s) for s in walk(param["schema"]))
        for media in op.get("requestBody", {}).get("content", {}).values():
            yield from ((f"{where} body", s) for s in walk(media["schema"]))
        for status, response in op["responses"].items():
            for media in response.get("content", {}).values():
                yield from ((f"{where} {status}", s) for s in walk(media["schema"]))
            for header in response.get("headers", {}).values():
                yield from ((f"{where} {status} header", s) for s in walk(header["schema"]))


def depth(schema: dict[str, Any]) -> int:
    schema = resolve(schema)
    kids = list(schema.get("properties", {}).values())
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            kids.append(schema[key])
    return 1 + max((depth(k) for k in kids), default=0)


def keys_outside_examples(node: Any, parent: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield parent, key
            if key != "example":
                yield from keys_outside_examples(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from keys_outside_examples(value, parent)


# ---------------------------------------------------------------------------------------------


def test_openapi_30_json_document() -> None:
    assert re.fullmatch(r"3\.0\.\d+", DOC["openapi"])
    assert json.loads(json.dumps(DOC)) == DOC
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert committed == DOC
    served = DOC["paths"]["/openapi.json"]["get"]["responses"]["200"]["content"]
    assert set(served) == {JSON}


def test_within_system_limits() -> None:
    assert len(json.dumps(DOC)) < 10_000_000
    ops = list(operations())
    objects = DOC["components"]["schemas"]
    properties = sum(len(s.get("properties", {})) for _, s in all_schemas())
    assert len(ops) <= 3000 and len(objects) <= 3000 and properties <= 400_000
    # what the guide claims
    assert len(ops) == 12 and len(objects) == 28, (len(ops), len(objects))
    unique_properties = sum(len(s.get("properties", {})) for s in objects.values())
    assert unique_properties < 200, unique_properties
    assert len(json.dumps(DOC)) < 100_000


def test_no_composition_keywords() -> None:
    refused = {"not", "allOf", "oneOf", "anyOf", "discriminator"}
    for parent, key in keys_outside_examples(DOC):
        if parent != "properties":  # a property may be named anything
            assert key not in refused, f"{key} under {parent}"


def test_no_get_bodies() -> None:
    for path, method, op in operations():
        if method in ("get", "delete", "head"):
            assert "requestBody" not in op, f"{method} {path}"


def test_parameters_are_named() -> None:
    for path, method, op in operations():
        for param in op.get("parameters", []):
            assert param.get("name") and param.get("in") in ("path", "query", "header")
            assert "schema" in param, (method, path, param["name"])
            if param["in"] == "path":
                assert param["required"] is True and "{" + param["name"] + "}" in path


def test_media_types() -> None:
    for path, method, op in operations():
        for media in op.get("requestBody", {}).get("content", {}):
            assert media in REQUEST_TYPES and media == JSON, f"{method} {path} body {media}"
        for status, response in op["responses"].items():
            content = set(response.get("content", {}))
            assert content, f"{method} {path} {status} has no body"
            assert content - {PROBLEM} <= RESPONSE_TYPES, (method, path, status, content)
            if PROBLEM in content:  # an error: the same body is offered as plain JSON too
                assert JSON in content and int(status) >= 400, (method, path, status)
                assert response["content"][PROBLEM]["schema"] == response["content"][JSON]["schema"]


def test_every_operation_has_a_json_2xx() -> None:
    for path, method, op in operations():
        ok = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert ok, f"{method} {path} documents no 2xx"
        for status, response in ok.items():
            media = JSON if op["operationId"] != "getMetrics" else "text/plain"
            assert set(response["content"]) == {media}, (op["operationId"], status)
            assert "$ref" in response["content"][media]["schema"], op["operationId"]


def test_supported_data_types() -> None:
    for where, schema in all_schemas():
        if "$ref" in schema:
            continue
        kind = schema.get("type")
        assert isinstance(kind, str), f"{where}: every schema has one type"
        assert (kind, schema.get("format")) in TYPES, (where, kind, schema.get("format"))
        if "enum" in schema:
            assert kind == "string" and all(isinstance(v, str) for v in schema["enum"]), where
        if kind == "array":
            assert isinstance(schema.get("items"), dict), where
        add = schema.get("additionalProperties")
        # a map (a dict), or a plain object that is open (true) or closed (false: a request
        # body whose unknown fields the service refuses; no map, so no Map type in Apex)
        assert add is None or isinstance(add, bool | dict), where


def test_nesting() -> None:
    for where, schema in all_schemas():
        if schema.get("type") == "array":
            assert resolve(schema["items"]).get("type") != "array", f"{where}: List<List<T>>"
    for name, schema in DOC["components"]["schemas"].items():
        assert depth(schema) <= MAX_DEPTH, (name, depth(schema))
    for path, method, op in operations():
        bodies = [m["schema"] for m in op.get("requestBody", {}).get("content", {}).values()]
        bodies += [m["schema"] for r in op["responses"].values() for m in r["content"].values()]
        for schema in bodies:
            assert set(schema) == {"$ref"}, f"{method} {path}: inline body schema"


def test_names() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))
    for op_id in ids:
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", op_id) and len(op_id) <= MAX_NAME, op_id
    for name in DOC["components"]["schemas"]:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name) and len(name) <= MAX_NAME, name
    encoded_keywords = set()
    for where, schema in all_schemas():
        for prop in schema.get("properties", {}):
            assert re.fullmatch(r"[a-z][a-z0-9_]*", prop) and len(prop) <= MAX_NAME, (where, prop)
            assert "__" not in prop and not prop.endswith("_"), (where, prop)
            if prop in ("type", "group"):
                encoded_keywords.add(prop)
    for path, _, op in operations():
        for param in op.get("parameters", []):
            # header names keep their HTTP spelling; the importer encodes "-" as x2d
            name_re = r"[A-Za-z][A-Za-z0-9-]*" if param["in"] == "header" else r"[a-z][a-z0-9_]*"
            assert re.fullmatch(name_re, param["name"]), (path, param["name"])
            if param["in"] == "header":
                assert param["required"] is False, (path, param["name"])
                assert f"`{param['name'].replace('-', 'x2d')}`" in GUIDE, param["name"]
    assert encoded_keywords == {"type", "group"}
    for word in encoded_keywords:  # the guide tells Apex users about the z0 prefix
        assert f"`z0{word}`" in GUIDE, word


def test_description_lengths() -> None:
    lengths: list[tuple[int, str]] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "description" and isinstance(value, str):
                    lengths.append((len(value), where))
                elif key != "example":
                    visit(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}/{i}")

    visit(DOC, "")
    assert len(lengths) > 100
    too_long = [w for n, w in lengths if n > MAX_DESCRIPTION]
    assert not too_long, too_long


def test_outcomes_are_in_bodies() -> None:
    with_headers = 0
    for path, method, op in operations():
        for status, response in op["responses"].items():
            # X-Request-ID is on every response: a correlation id, not an outcome
            if not set(response.get("headers", {})) - {"X-Request-ID"}:
                continue
            # Retry-After, WWW-Authenticate: detail for other clients; a flow reads the body
            with_headers += 1
            schema = response["content"][JSON]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
            assert {"type", "status", "detail"} <= set(resolve(schema)["required"])
    assert with_headers > 10


def test_guide_matches_the_document() -> None:
    ids = {op["operationId"] for _, _, op in operations()}
    for op_id in re.findall(r"\*\*(\w+)\*\*", GUIDE):
        if op_id[0].islower() and op_id not in ("off", "on"):
            assert op_id in ids, op_id
    for op_id in ("getAvailability", "checkAvailabilityBatch", "createReservation",
                  "getReservation", "commitReservation", "releaseReservation"):  # fmt: skip
        assert f"`{op_id}`" in GUIDE, op_id
    cited = set(re.findall(r"`(test_\w+)`", GUIDE))
    here = {name for name in globals() if name.startswith("test_")}
    assert cited and cited <= here, cited - here
    for label in re.findall(r"\]\[([\w-]+)\]", GUIDE):
        assert re.search(rf"^\[{re.escape(label)}\]: https://", GUIDE, re.M), label
    hold = DOC["components"]["schemas"]["NewReservation"]["properties"]["hold_seconds"]
    assert hold["maximum"] == 14400 and "14400 (4 h)" in GUIDE
