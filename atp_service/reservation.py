"""Pure reservation model: the request, its idempotency fingerprint, and the state machine.

States (contract.md s2): ``held`` (counted; a cart hold, or waiting for the ERP),
``confirmed`` (the ERP accepted, or standalone mode), ``rejected`` (the ERP refused; stock
returned), ``released`` (cancelled by the client), ``expired`` (a cart hold that timed out).
``rejected``, ``released`` and ``expired`` are terminal and hold no stock. The Lua scripts
apply exactly :data:`TRANSITIONS`; the unit tests walk this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["held", "confirmed", "rejected", "released", "expired"]
Action = Literal["commit", "release", "expire", "erp_confirm", "erp_reject"]
TERMINAL: frozenset[str] = frozenset({"rejected", "released", "expired"})
HOLDS_STOCK: frozenset[str] = frozenset({"held", "confirmed"})

# (status, is an uncommitted cart hold) -> action -> new status. Missing = no change.
# A commit of a terminal reservation is refused (NotCommittable); every other missing pair
# is an idempotent no-op.
TRANSITIONS: dict[tuple[str, bool], dict[str, str]] = {
    ("held", True): {
        "commit": "held",  # with an ERP: now waits for the ERP; standalone: see below
        "release": "released",
        "expire": "expired",
    },
    ("held", False): {
        "release": "released",
        "erp_confirm": "confirmed",
        "erp_reject": "rejected",
    },
    ("confirmed", False): {"release": "released"},
}


def next_status(status: str, cart_hold: bool, action: str, standalone: bool) -> str:
    """The status after ``action``; unchanged when the action does not apply."""
    if action == "commit" and status == "held" and cart_hold and standalone:
        return "confirmed"
    return TRANSITIONS.get((status, cart_hold), {}).get(action, status)


def committable(status: str) -> bool:
    return status not in TERMINAL


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field, 3.4x the
# cost (0.85 against 0.25 µs here, paid per line and per request on the reserve path). Treat
# them as immutable all the same: nothing assigns to them after construction.
@dataclass(slots=True)
class Line:
    sku: str
    location: str
    qty: int

    @property
    def key(self) -> str:
        return f"{self.sku}|{self.location}"


@dataclass(slots=True)
class ReservationRequest:
    reservation_id: str
    priority: str
    raw_lines: tuple[Line, ...]
    hold_seconds: int | None
    # One line per (sku, location), quantities summed, in first-seen order (computed once).
    lines: tuple[Line, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        summed: tuple[Line, ...]
        if len(self.raw_lines) == 1:
            summed = self.raw_lines
        else:
            qty: dict[tuple[str, str], int] = {}
            for line in self.raw_lines:
                k = (line.sku, line.location)
                qty[k] = qty.get(k, 0) + line.qty
            summed = tuple(Line(s, loc, q) for (s, loc), q in qty.items())
        self.lines = summed

    def fingerprint(self) -> bytes:
        """Identity of the body for idempotency: priority, hold_seconds, raw lines in order.

        The bytes of ``orjson.dumps([priority, hold_seconds, [[sku, location, qty], ...]])``
        (stored with each reservation, so they must never change), formatted directly: 3x
        cheaper, and exact because identifiers never need JSON escaping (decode.py's
        ``[A-Za-z0-9._:-]``; tests/test_reservation_model.py checks against orjson)."""
        lines = b",".join(
            [
                b'["%b","%b",%d]' % (x.sku.encode(), x.location.encode(), x.qty)
                for x in self.raw_lines
            ]
        )
        hold = b"null" if self.hold_seconds is None else b"%d" % self.hold_seconds
        return b'["%b",%b,[%b]]' % (self.priority.encode(), hold, lines)
