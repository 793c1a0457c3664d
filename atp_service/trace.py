"""Request ids and W3C Trace Context (https://www.w3.org/TR/trace-context/) for one request.

Pure: no I/O. A reservation carries the :class:`Context` of the request that created it into
the ERP calls made for it (``X-Request-ID`` and a ``traceparent`` with the same trace id and a
fresh parent id per call), so one trace id links the caller, the access log and the ERP.
The service records no spans of its own; it keeps the trace connected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from random import getrandbits

# A caller's request id is kept when it is a plain token of at most 128 characters (no spaces,
# quotes or control characters: it is echoed in a header, written to logs and sent to the ERP).
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
# version-traceid-parentid-flags, lowercase hex. Version 00 is exactly these 55 characters; a
# later version (not ff) may append "-..." fields, which a version-00 reader ignores.
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
SAMPLED = "01"  # flags of a trace this service starts: ask downstream to record it


def new_request_id() -> str:
    """16 hex characters (64 random bits): unique enough to find one request in the logs."""
    return getrandbits(64).to_bytes(8).hex()


def new_span_id() -> str:
    span = getrandbits(64).to_bytes(8).hex()
    return span if span != _ZERO_SPAN else "0000000000000001"


def new_trace_id() -> str:
    trace = getrandbits(128).to_bytes(16).hex()
    return trace if trace != _ZERO_TRACE else "0" * 31 + "1"


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid ``traceparent`` header, else None.

    Valid: two hex digits of version other than ``ff``; version ``00`` is exactly 55
    characters, a higher version may go on after a ``-``; trace id 32 and parent id 16
    lowercase hex digits, neither all zero; flags two hex digits."""
    if value is None:
        return None
    value = value.strip(" \t")
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace, parent, flags = match.groups()
    if version == "ff" or trace == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    return trace, parent, flags


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when absent or malformed."""
    parsed = parse_traceparent(traceparent)
    return parsed[0] if parsed else None


@dataclass(slots=True)  # not frozen: see reservation.Line (built once per traced request)
class Context:
    """Who asked: the request id and the trace (version 00, normalised) a request belongs to."""

    request_id: str
    traceparent: str

    @classmethod
    def of(cls, request_id: str, traceparent: str | None) -> Context:
        """The caller's trace when its ``traceparent`` is valid, else a new one started here."""
        parsed = parse_traceparent(traceparent)
        if parsed is None:
            ids = getrandbits(192).to_bytes(24).hex()  # trace and span ids in one draw
            trace, span = ids[:32], ids[32:]
            if trace == _ZERO_TRACE or span == _ZERO_SPAN:  # 2**-64: as likely as never
                trace, span = new_trace_id(), new_span_id()
            return cls(request_id, f"00-{trace}-{span}-{SAMPLED}")
        trace, parent, flags = parsed
        return cls(request_id, f"00-{trace}-{parent}-{flags}")

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    def outgoing(self) -> dict[str, str]:
        """Headers for one outgoing call: same request id and trace, a new parent (span) id."""
        tp = self.traceparent
        return {
            "X-Request-ID": self.request_id,
            "traceparent": f"{tp[:36]}{new_span_id()}{tp[52:]}",
        }

    @classmethod
    def stored(cls, request_id: bytes | None, traceparent: bytes | None) -> Context:
        """The context saved with a reservation; a new one for entries saved without it (before
        tracing, or by a caller that had none)."""
        rid = request_id.decode() if request_id else ""
        if REQUEST_ID_RE.fullmatch(rid) is None:
            rid = new_request_id()
        return cls.of(rid, traceparent.decode() if traceparent else None)

    @classmethod
    def background(cls) -> Context:
        """A call the service makes on its own (a gap resync): a new id and a new trace."""
        return cls.of(new_request_id(), None)
