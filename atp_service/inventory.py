"""Pure inventory rules: key state, the ATP formula and ERP event ordering (contract.md s3).

No I/O here. ``lua/apply_events.lua`` implements the same rules atomically in Redis; the tests
run both against the same generated event logs, so the two cannot drift apart.

Ordering per (sku, location) key, with ``cur`` the key's applied seq:
- snapshot, seq > cur: replaces on_hand / allocated / safety_stock (pending is ours, kept);
- snapshot, seq <= cur: duplicate;
- adjustment, seq == cur + 1: applied (deltas may drive a figure negative: the ERP is the
  system of record, refusing would jam the key behind a permanent gap);
- adjustment, seq <= cur: duplicate;
- adjustment, seq > cur + 1, or no snapshot yet: buffered until the gap closes.
After every apply, buffered adjustments that have become next-in-line are applied, and those
at or below the new seq are dropped as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

# Layout of one key's record, in Redis (packed little-endian int64) and in the replica cache.
FIELDS = ("on_hand", "allocated", "safety_stock", "seq", "pending", "ver", "flags", "updated_ms")
ON_HAND, ALLOCATED, SAFETY, SEQ, PENDING, VER, FLAGS, UPDATED = range(len(FIELDS))
RECORD_FORMAT = "<8q"
RECORD_SIZE = 64

FLAG_SNAPSHOT = 1  # the key has had a snapshot: its figures are real
FLAG_GAP = 2  # buffered adjustments wait behind a missing seq: the key reads stale

MAX_QTY = 10**9
MAX_SEQ = 2**53


def atp(on_hand: int, allocated: int, safety_stock: int, pending: int) -> int:
    """Available to promise: never negative."""
    return max(0, on_hand - allocated - safety_stock - pending)


def status_of(value: int, low_stock: int) -> str:
    if value <= 0:
        return "out_of_stock"
    return "low_stock" if value <= low_stock else "in_stock"


@dataclass(frozen=True, slots=True)
class Snapshot:
    event_id: str
    sku: str
    location: str
    seq: int
    on_hand: int
    allocated: int
    safety_stock: int
    occurred_at: str
    type: Literal["snapshot"] = "snapshot"


@dataclass(frozen=True, slots=True)
class Adjustment:
    event_id: str
    sku: str
    location: str
    seq: int
    on_hand_delta: int
    allocated_delta: int
    reason: str
    occurred_at: str
    type: Literal["adjustment"] = "adjustment"


Event = Snapshot | Adjustment
Outcome = Literal["applied", "duplicate", "buffered"]


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the service knows of one (sku, location)."""

    on_hand: int = 0
    allocated: int = 0
    safety_stock: int = 0
    seq: int = 0
    pending: int = 0
    has_snapshot: bool = False

    @property
    def atp(self) -> int:
        return atp(self.on_hand, self.allocated, self.safety_stock, self.pending)


@dataclass(slots=True)
class KeyLedger:
    """One key's state plus the adjustments buffered behind a gap (keyed by seq)."""

    state: KeyState = field(default_factory=KeyState)
    buffer: dict[int, Adjustment] = field(default_factory=dict)

    @property
    def has_gap(self) -> bool:
        return bool(self.buffer)

    def apply(self, event: Event) -> Outcome:
        state = self.state
        if isinstance(event, Snapshot):
            if state.has_snapshot and event.seq <= state.seq:
                return "duplicate"
            self.state = replace(
                state,
                on_hand=event.on_hand,
                allocated=event.allocated,
                safety_stock=event.safety_stock,
                seq=event.seq,
                has_snapshot=True,
            )
        else:
            if state.has_snapshot and event.seq <= state.seq:
                return "duplicate"
            if not state.has_snapshot or event.seq != state.seq + 1:
                if event.seq in self.buffer:
                    return "duplicate"
                self.buffer[event.seq] = event
                return "buffered"
            self.state = _adjust(state, event)
        self._drain()
        return "applied"

    def _drain(self) -> None:
        for seq in sorted(self.buffer):
            if seq <= self.state.seq:
                del self.buffer[seq]
            elif seq == self.state.seq + 1:
                self.state = _adjust(self.state, self.buffer.pop(seq))
            else:
                break


def _adjust(state: KeyState, event: Adjustment) -> KeyState:
    return replace(
        state,
        on_hand=state.on_hand + event.on_hand_delta,
        allocated=state.allocated + event.allocated_delta,
        seq=event.seq,
    )
