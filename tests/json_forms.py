"""One JSON value written several ways a client or an ERP may write it, for tests that feed
raw bytes to a decoder and compare it with ``orjson.loads`` and the general path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson


def escaped(value: Any) -> bytes:
    """JSON with every character of every string written as a \\uXXXX escape."""

    def enc(v: Any) -> str:
        if isinstance(v, str):
            return '"' + "".join(f"\\u{ord(ch):04x}" for ch in v) + '"'
        if isinstance(v, dict):
            return "{" + ",".join(f"{enc(k)}:{enc(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        return orjson.dumps(v).decode()

    return enc(value).encode()


def with_duplicate(value: Any) -> bytes:
    """JSON of an object with its first key written twice: a decoy value first, then the
    real one (the parsers here keep the last)."""
    raw = orjson.dumps(value)
    if not isinstance(value, dict) or not value:
        return raw
    return b"{" + orjson.dumps(next(iter(value))) + b':"decoy",' + raw[1:]


WRITERS: dict[str, Callable[[Any], bytes]] = {
    "orjson": orjson.dumps,
    "indented": lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2),
    "escaped": escaped,
    "duplicate": with_duplicate,
}
