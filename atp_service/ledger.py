"""Reservations against the shared state: hold, read, commit, release, expire.

Thin translation between domain requests and the ``reserve`` / ``transition`` scripts; the
cache is updated from the script's own reply, so this replica reflects its write at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import RedisError

from . import keys
from .cache import Cache
from .config import Settings
from .errors import (
    HoldQuotaExceeded,
    IdempotencyConflict,
    InsufficientStock,
    NotCommittable,
    NotFound,
    Throttled,
    Unavailable,
)
from .reservation import ReservationRequest
from .store import OUTBOX_KEYS, SCRIPTS, Store
from .trace import Context
from .wire import bulk

Clock = Callable[[], float]


_second: list[Any] = [None, ""]  # memo: the last whole second, formatted


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds; the date-time part is formatted once per second."""
    sec, milli = divmod(ms, 1000)
    if _second[0] != sec:
        _second[:] = [sec, datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{milli:03d}Z"


def _split_reply(reply: list[bytes]) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """[tag, f1, v1, ..., '', key, record, ...] -> (fields, [(key, record)])"""
    fields: dict[str, str] = {}
    i, n = 1, len(reply)
    while i < n and reply[i] != b"":
        fields[reply[i].decode()] = reply[i + 1].decode()
        i += 2
    i += 1
    records = [(reply[j].decode(), reply[j + 1]) for j in range(i, n - 1, 2)]
    return fields, records


def view(fields: dict[str, str]) -> dict[str, Any]:
    """The public JSON shape of a stored reservation."""
    out: dict[str, Any] = {
        "reservation_id": fields["id"],
        "status": fields["status"],
        "priority": fields["priority"],
        "lines": [
            {"sku": x["sku"], "location": x["location"], "qty": x["qty"]}
            | ({"erp_seq": int(x["erp_seq"])} if "erp_seq" in x else {})
            for x in orjson.loads(fields["lines"])
        ],
        "created_at": iso_ms(int(fields["created_ms"])),
        "updated_at": iso_ms(int(fields["updated_ms"])),
    }
    hold = int(fields.get("hold", "0"))
    if hold:
        out["hold_seconds"] = hold
        out["committed"] = fields.get("committed") == "1"
        if "expires_ms" in fields:
            out["expires_at"] = iso_ms(int(fields["expires_ms"]))
    if "reason" in fields:
        out["reason"] = fields["reason"]
    return out


# reserve.lua's call as one bytes template: EVALSHA sha numkeys, KEYS[1] (the reservation's
# hash), KEYS[2..8], ARGV[1..12], then one triple per line. Identifiers are ASCII
# ([A-Za-z0-9._:-], decode.py), so str lengths are byte lengths. One %-format instead of a
# bulk() call per argument: ~2x cheaper to build.
_RESERVE_KEY_NAMES = (keys.INV, keys.CHANGES, keys.EXPIRY, *OUTBOX_KEYS, keys.HELD)
_ARG = b"$%d\r\n%b\r\n"
_RESERVE_FIXED = 3 + 1 + len(_RESERVE_KEY_NAMES) + 12  # head, keys, ARGV[1..12]


def _literal(*parts: bytes) -> bytes:
    """Constant RESP arguments inside a %-template."""
    return b"".join(bulk(p) for p in parts).replace(b"%", b"%%")


_RESERVE = (
    b"*%d\r\n"
    + _literal(b"EVALSHA", SCRIPTS["reserve"].sha.encode(), b"%d" % (1 + len(_RESERVE_KEY_NAMES)))
    + b"$%d\r\n"
    + keys.RESERVATION.encode().replace(b"%", b"%%")
    + b"%b\r\n"
    + _literal(*(k.encode() for k in _RESERVE_KEY_NAMES))
    + _ARG * 5  # id, fingerprint, priority, hold, now
    + b"%b"  # mode
    + _ARG  # budget
    + _literal(b"%d" % keys.CHANGES_MAXLEN)
    + _ARG * 3  # owner, request id, traceparent
    + b"%b"  # hold quota
)
_LINE = _ARG * 2 + b'$%d\r\n{"sku":"%b","location":"%b","qty":%b}\r\n'
_LINE_JSON = len('{"sku":"","location":"","qty":}')


class Ledger:
    def __init__(
        self, store: Store, cache: Cache, settings: Settings, clock: Clock = time.time
    ) -> None:
        self.store = store
        self.cache = cache
        self.mode = "erp" if settings.erp_url else "standalone"
        self._mode_b = bulk(self.mode.encode())
        self.rate = settings.erp_rate
        # Most entries (this priority and those above it) that may wait before a new
        # reservation of the priority is refused: its budget in seconds of ERP calls.
        self.max_backlog = {p: int(s * settings.erp_rate) for p, s in settings.erp_budgets.items()}
        self.cancel_delay_ms = int(settings.erp_timeout * 1000)
        self.retention_ms = int(settings.retention * 1000)
        self.hold_quota = settings.hold_quota
        self._quota_b = bulk(b"%d" % settings.hold_quota)
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def reserve(
        self,
        req: ReservationRequest,
        owner: str,
        trace: Context | None = None,
        quota: int | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Hold all lines or none. Returns (created, reservation view). ``trace`` (the request
        id and traceparent of the creating request) is saved with the reservation, in the same
        step, for its ERP calls. ``quota``: the owner's cart-hold quota, if it has one of its
        own (else ``ATP_HOLD_QUOTA``'s).

        Raises InsufficientStock (409), IdempotencyConflict (409), Throttled (429)."""
        lines = req.lines
        budget = self.max_backlog[req.priority] if self.mode == "erp" else -1
        now = self.now_ms()
        command = self.reserve_command(req, owner, trace, now, budget, quota)
        reply = await self.store.run_packed(command)
        tag = reply[0]
        if tag == b"created":
            self.cache.apply_many(
                [(reply[j].decode(), reply[j + 1]) for j in range(1, len(reply) - 1, 2)]
            )
            return True, self._created_view(req, now)
        if tag == b"exists":
            fields, _ = _split_reply(reply)
            return False, view(fields)
        if tag == b"conflict":
            raise IdempotencyConflict(
                f"reservation {req.reservation_id} exists with a different body"
            )
        if tag == b"short":
            requested = {line.key: line for line in lines}
            short = []
            for j in range(1, len(reply), 2):
                line = requested[reply[j].decode()]
                short.append(
                    {"sku": line.sku, "location": line.location, "requested": line.qty,
                     "atp": int(reply[j + 1])}
                )  # fmt: skip
            raise InsufficientStock(
                f"{len(short)} of {len(lines)} lines cannot be held", lines=short
            )
        if tag == b"quota":
            held = int(reply[1])
            limit = self.hold_quota if quota is None else quota
            raise HoldQuotaExceeded(
                f"this API key holds {held} units in uncommitted cart holds; this hold of "
                f"{sum(line.qty for line in lines)} more would pass its quota of "
                f"{limit}: commit or release a hold first, or wait for one to expire",
                held=held,
                quota=limit,
            )
        if tag == b"busy":
            backlog = int(reply[1])
            wait = (backlog - budget + 1) / self.rate  # until the backlog is under budget
            raise Throttled(
                f"the ERP backlog ahead of {req.priority} reservations is {backlog} calls "
                f"(~{backlog / self.rate:.0f} s); its budget is {budget / self.rate:.0f} s",
                retry_after=wait,
            )
        raise RuntimeError(f"unexpected reserve reply {tag!r}")

    def reserve_command(
        self,
        req: ReservationRequest,
        owner: str,
        trace: Context | None,
        now: int,
        budget: int,
        quota: int | None = None,
    ) -> bytes:
        """``reserve.lua``'s EVALSHA in RESP (equal to :func:`pack` of its arguments, which
        tests/test_holds.py checks)."""
        rid_b = req.reservation_id.encode()
        hold = b"%d" % (req.hold_seconds or 0)
        now_b = b"%d" % now
        budget_b = b"%d" % budget
        fp = req.fingerprint()
        owner_b = owner.encode()
        req_id = trace.request_id.encode() if trace else b""
        parent = trace.traceparent.encode() if trace else b""
        command = [
            _RESERVE % (
                _RESERVE_FIXED + 3 * len(req.lines),
                len(keys.RESERVATION) + len(rid_b), rid_b,
                len(rid_b), rid_b, len(fp), fp, len(req.priority), req.priority.encode(),
                len(hold), hold, len(now_b), now_b, self._mode_b, len(budget_b), budget_b,
                len(owner_b), owner_b, len(req_id), req_id, len(parent), parent,
                self._quota_b if quota is None else bulk(b"%d" % quota),
            )
        ]  # fmt: skip
        for line in req.lines:
            sku, loc, qty = line.sku.encode(), line.location.encode(), b"%d" % line.qty
            command.append(
                _LINE % (len(sku) + 1 + len(loc), b"%b|%b" % (sku, loc), len(qty), qty,
                         _LINE_JSON + len(sku) + len(loc) + len(qty), sku, loc, qty)
            )  # fmt: skip
        return b"".join(command)

    def _created_view(self, req: ReservationRequest, now: int) -> dict[str, Any]:
        """What :func:`view` gives for the fields ``reserve.lua`` just stored for ``req``
        (built here instead of sent back: tests/test_holds.py checks they agree)."""
        hold = req.hold_seconds or 0
        at = iso_ms(now)
        out: dict[str, Any] = {
            "reservation_id": req.reservation_id,
            "status": "held" if hold or self.mode == "erp" else "confirmed",
            "priority": req.priority,
            "lines": [{"sku": x.sku, "location": x.location, "qty": x.qty} for x in req.lines],
            "created_at": at,
            "updated_at": at,
        }
        if hold:
            out["hold_seconds"] = hold
            out["committed"] = False
            out["expires_at"] = iso_ms(now + hold * 1000)
        return out

    async def get(self, reservation_id: str, owner: str = "") -> dict[str, Any]:
        """The reservation; another caller's (``owner`` set and different) reads as 404."""
        try:
            raw: dict[bytes, bytes] = await self.store.client.hgetall(
                keys.reservation(reservation_id)
            )
        except (RedisError, OSError):
            raise Unavailable("shared state unreachable", retry_after=1) from None
        if not raw or (owner and raw.get(b"owner", b"").decode() != owner):
            raise NotFound(f"reservation {reservation_id} not found")
        return view({k.decode(): v.decode() for k, v in raw.items()})

    async def transition(
        self, reservation_id: str, action: str, owner: str = "", trace: Context | None = None
    ) -> dict[str, Any]:
        """Commit, release or expire. ``trace``: the releasing request's, which a cancel at the
        ERP carries (saved in the same step)."""
        reply = await self.store.run(
            "transition",
            (keys.reservation(reservation_id), keys.INV, keys.CHANGES, keys.EXPIRY, keys.SETTLE,
             *OUTBOX_KEYS, keys.ATTEMPTS, keys.HELD),
            (action, self.now_ms(), self.mode, keys.CHANGES_MAXLEN, self.cancel_delay_ms, owner,
             self.retention_ms, trace.request_id if trace else "",
             trace.traceparent if trace else ""),
        )  # fmt: skip
        tag = reply[0]
        if tag == b"missing":
            raise NotFound(f"reservation {reservation_id} not found")
        fields, records = _split_reply(reply)
        self.cache.apply_many(records)
        if tag == b"not_committable":
            raise NotCommittable(
                f"reservation {reservation_id} is {fields['status']}",
                reservation_status=fields["status"],
            )
        return view(fields)

    async def expire_due(self, limit: int = 500) -> int:
        """Expire cart holds whose time has come; safe to run on every replica at once."""
        due: list[bytes] = await self.store.client.zrangebyscore(
            keys.EXPIRY, "-inf", self.now_ms(), start=0, num=limit
        )
        await asyncio.gather(*(self.transition(rid.decode(), "expire") for rid in due))
        return len(due)
