"""The simulated ERP's stock ledger: the system of record the ATP service mirrors.

Pure (no I/O, no clock). Every stock change returns a :class:`Change` carrying the key's new
``seq``; the caller turns each into exactly one ERP event (contract.md s3), so the event
stream replays the ledger exactly. Invariants:

- ``seq`` per (sku, location) goes up by exactly one per change, starting at 1;
- a reservation allocates at most once (``allocations`` <= 1), all lines or none, and only
  when every (summed) line fits ``on_hand - allocated - safety_stock``;
- a cancellation deallocates at most once;
- a sale takes only unallocated stock, so sales alone never make ``allocated > on_hand``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Key = tuple[str, str]
Kind = Literal["snapshot", "adjustment"]
Status = Literal["allocated", "cancelled", "rejected"]


@dataclass(slots=True)
class Stock:
    """One (sku, location): the ERP's figures and the seq of its last change."""

    on_hand: int
    allocated: int = 0
    safety_stock: int = 0
    seq: int = 0

    @property
    def free(self) -> int:
        """What a reservation may still take."""
        return self.on_hand - self.allocated - self.safety_stock


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    location: str
    qty: int

    @property
    def key(self) -> Key:
        return (self.sku, self.location)


@dataclass(frozen=True, slots=True)
class Change:
    """One stock change; becomes exactly one event. Figures are the key's state after it."""

    kind: Kind
    sku: str
    location: str
    seq: int
    on_hand: int
    allocated: int
    safety_stock: int
    on_hand_delta: int = 0
    allocated_delta: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A line that could not be allocated; ``free`` is None for an unknown sku/location."""

    sku: str
    location: str
    requested: int
    free: int | None


@dataclass(slots=True)
class Reservation:
    reservation_id: str
    priority: str
    request: tuple[Line, ...]  # as first sent: a replay must match it exactly
    lines: tuple[Line, ...]  # one per (sku, location), quantities summed
    status: Status
    reason: str = ""
    erp_seqs: tuple[int, ...] = ()  # per summed line, the seq of its allocation event
    allocations: int = 0
    shortfalls: tuple[Shortfall, ...] = ()


@dataclass(frozen=True, slots=True)
class Confirmed:
    reservation: Reservation
    changes: tuple[Change, ...]  # empty for a replay
    replay: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    shortfalls: tuple[Shortfall, ...]
    replay: bool


@dataclass(frozen=True, slots=True)
class Conflict:
    """The key was first used with another body."""

    reason: str


ReserveOutcome = Confirmed | Rejected | Conflict


def summed(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per (sku, location), in order of first appearance, quantities summed."""
    totals: dict[Key, int] = {}
    for line in lines:
        totals[line.key] = totals.get(line.key, 0) + line.qty
    return tuple(Line(sku, loc, qty) for (sku, loc), qty in totals.items())


@dataclass
class Ledger:
    stock: dict[Key, Stock] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def get(self, sku: str, location: str) -> Stock | None:
        return self.stock.get((sku, location))

    def set_stock(
        self,
        sku: str,
        location: str,
        on_hand: int,
        allocated: int | None = None,
        safety_stock: int | None = None,
    ) -> Change:
        """Set a key's figures (an omitted figure keeps its current value, 0 for a new key)."""
        stock = self.stock.get((sku, location))
        if stock is None:
            stock = self.stock[(sku, location)] = Stock(on_hand)
        stock.on_hand = on_hand
        if allocated is not None:
            stock.allocated = allocated
        if safety_stock is not None:
            stock.safety_stock = safety_stock
        stock.seq += 1
        return _change("snapshot", sku, location, stock)

    def reserve(
        self, reservation_id: str, priority: str, lines: Iterable[Line], refusal: str | None = None
    ) -> ReserveOutcome:
        """Allocate every line or none. ``refusal`` rejects a new reservation outright."""
        request = tuple(lines)
        known = self.reservations.get(reservation_id)
        if known is not None:
            return _replay(known, priority, request)
        total = summed(request)
        if refusal is not None:
            return self._reject(reservation_id, priority, request, total, refusal, ())
        short = tuple(self._shortfalls(total))
        if short:
            reason = "; ".join(_describe(s) for s in short)
            return self._reject(reservation_id, priority, request, total, reason, short)
        changes = []
        for line in total:
            stock = self.stock[line.key]
            stock.allocated += line.qty
            stock.seq += 1
            changes.append(
                _change(
                    "adjustment", line.sku, line.location, stock,
                    allocated_delta=line.qty, reason=f"reservation:{reservation_id}",
                )
            )  # fmt: skip
        reservation = Reservation(
            reservation_id, priority, request, total, "allocated",
            erp_seqs=tuple(c.seq for c in changes), allocations=1,
        )  # fmt: skip
        self.reservations[reservation_id] = reservation
        return Confirmed(reservation, tuple(changes), replay=False)

    def cancel(self, reservation_id: str) -> tuple[Reservation, tuple[Change, ...]] | None:
        """Deallocate what the reservation holds (once); None if the id is unknown.

        Deallocation never takes ``allocated`` below zero (an operator may have reset the
        figures through ``set_stock`` since); a line with nothing left to return makes no event.
        """
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            return None
        if reservation.status != "allocated":
            return reservation, ()
        changes = []
        for line in reservation.lines:
            stock = self.stock[line.key]
            qty = min(line.qty, max(stock.allocated, 0))
            if qty == 0:
                continue
            stock.allocated -= qty
            stock.seq += 1
            changes.append(
                _change(
                    "adjustment", line.sku, line.location, stock,
                    allocated_delta=-qty, reason=f"cancel:{reservation_id}",
                )
            )  # fmt: skip
        reservation.status = "cancelled"
        return reservation, tuple(changes)

    def sale(self, sku: str, location: str, qty: int) -> Change | None:
        """Sell up to ``qty`` of the unallocated stock; None when there is none."""
        stock = self.stock[(sku, location)]
        qty = min(qty, stock.on_hand - stock.allocated)
        if qty <= 0:
            return None
        stock.on_hand -= qty
        stock.seq += 1
        return _change("adjustment", sku, location, stock, on_hand_delta=-qty, reason="sale")

    def receipt(self, sku: str, location: str, qty: int) -> Change:
        stock = self.stock[(sku, location)]
        stock.on_hand += qty
        stock.seq += 1
        return _change("adjustment", sku, location, stock, on_hand_delta=qty, reason="receipt")

    def oversold(self) -> list[Key]:
        return [key for key, s in self.stock.items() if s.allocated > s.on_hand]

    def _shortfalls(self, lines: Iterable[Line]) -> Iterable[Shortfall]:
        for line in lines:
            stock = self.stock.get(line.key)
            if stock is None:
                yield Shortfall(line.sku, line.location, line.qty, None)
            elif stock.free < line.qty:
                yield Shortfall(line.sku, line.location, line.qty, max(stock.free, 0))

    def _reject(
        self,
        reservation_id: str,
        priority: str,
        request: tuple[Line, ...],
        total: tuple[Line, ...],
        reason: str,
        short: tuple[Shortfall, ...],
    ) -> Rejected:
        self.reservations[reservation_id] = Reservation(
            reservation_id, priority, request, total, "rejected", reason=reason, shortfalls=short
        )
        return Rejected(reason, short, replay=False)


def _replay(known: Reservation, priority: str, request: tuple[Line, ...]) -> ReserveOutcome:
    if known.priority != priority or known.request != request:
        return Conflict(
            f"idempotency key {known.reservation_id} was first used with a different body"
        )
    if known.status == "allocated":
        return Confirmed(known, (), replay=True)
    if known.status == "cancelled":
        return Rejected(f"reservation {known.reservation_id} was cancelled", (), replay=True)
    return Rejected(known.reason, known.shortfalls, replay=True)


def _describe(short: Shortfall) -> str:
    where = f"{short.sku}@{short.location}"
    if short.free is None:
        return f"unknown sku/location {where}"
    return f"insufficient stock for {where}: requested {short.requested}, free {short.free}"


def _change(
    kind: Kind,
    sku: str,
    location: str,
    stock: Stock,
    *,
    on_hand_delta: int = 0,
    allocated_delta: int = 0,
    reason: str = "",
) -> Change:
    return Change(
        kind, sku, location, stock.seq, stock.on_hand, stock.allocated, stock.safety_stock,
        on_hand_delta, allocated_delta, reason,
    )  # fmt: skip
