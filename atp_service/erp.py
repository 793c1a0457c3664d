"""The ERP reservation API as seen from the service (contract.md s4).

``Transport`` is the one-method I/O interface (tests may swap it); ``HttpTransport`` is the
aiohttp implementation. ``classify`` is pure: it maps an ERP reply to what the gateway does.
Every call carries ``Idempotency-Key`` (the reservation id) and the caller's request id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from .inventory import MAX_SEQ


@dataclass(frozen=True, slots=True)
class Reply:
    """status 0 = no answer (timeout, connection refused or reset)."""

    status: int
    body: Any = None
    retry_after: float | None = None


class Transport(Protocol):
    async def send(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> Reply: ...


class HttpTransport:
    def __init__(self, base_url: str, timeout: float, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None
        # ATP_ERP_TOKEN: on every call, as a session default header (never logged).
        self.auth = {"Authorization": f"Bearer {token}"} if token else None

    async def send(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> Reply:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=self.timeout, json_serialize=lambda o: orjson.dumps(o).decode(),
                headers=self.auth,
            )  # fmt: skip
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, headers=headers
            ) as resp:
                raw = await resp.read()
                try:
                    parsed = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    parsed = None
                return Reply(resp.status, parsed, _retry_after(resp.headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError, OSError):
            return Reply(0)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: treated as no hint


# 4xx answers about the call, not about the reservation: our credential refused (401, 403;
# a rotated ATP_ERP_TOKEN), a proxy's login (407), the request timed out (408), sent too early
# (425). Retried with backoff and counted by the breaker, like a 5xx: taking them as the
# contract's "other 4xx = permanent refusal" would reject every reservation (and drop every
# cancel) for as long as the credential is wrong. A refusal of the reservation itself is 409.
ABOUT_THE_CALL = frozenset({401, 403, 407, 408, 425})

Kind = Literal["confirmed", "rejected", "retry", "done", "throttled"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    data: Any = None  # confirmed: lines; rejected: reason; throttled: seconds
    transient: bool = False  # counts as a failure for the breaker


def classify(entry: str, reply: Reply, lines: list[dict[str, Any]] | None = None) -> Outcome:
    """What an ERP reply means for an outbox entry ('r:' reserve, 'c:' cancel, 'g:' resync);
    ``lines`` are the lines sent with a reserve call (each needs its erp_seq back)."""
    if entry.startswith("r:") and not lines:
        raise ValueError("a reserve reply is classified against the lines that were sent")
    status = reply.status
    if status == 0 or status >= 500 or status in ABOUT_THE_CALL:
        return Outcome("retry", transient=True)
    if status == 429:
        return Outcome("throttled", reply.retry_after if reply.retry_after is not None else 1.0)
    if entry.startswith("c:"):
        return Outcome("done")  # 200, 404: no longer allocated; other 4xx: nothing to retry
    if status == 200:
        confirmed = _confirmed_lines(reply.body, lines or [])
        if confirmed is None:
            return Outcome("retry", transient=True)  # a malformed success: ask again
        return Outcome("confirmed", confirmed)
    body = reply.body if isinstance(reply.body, dict) else {}
    reason = body.get("reason") if isinstance(body.get("reason"), str) else None
    return Outcome("rejected", (reason or f"ERP refused with HTTP {status}")[:500])


def _confirmed_lines(body: Any, sent: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The confirmed lines with a valid erp_seq for every line sent, or None."""
    if not isinstance(body, dict) or body.get("status") != "confirmed":
        return None
    got = body.get("lines")
    if not isinstance(got, list):
        return None
    seqs: dict[tuple[str, str], int] = {}
    for line in got:
        if not isinstance(line, dict):
            return None
        seq = line.get("erp_seq")
        if type(seq) is not int or not 0 <= seq < MAX_SEQ:
            return None
        seqs[(line.get("sku"), line.get("location"))] = seq  # type: ignore[index]
    out = []
    for line in sent:
        seq = seqs.get((line["sku"], line["location"]))
        if seq is None:
            return None
        out.append({"sku": line["sku"], "location": line["location"], "erp_seq": str(seq)})
    return out
