"""Pure inventory rules: the ATP formula and seq ordering (no I/O, microseconds)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from atp_service.inventory import Adjustment, Event, KeyLedger, KeyState, Snapshot, atp, status_of

figure = st.integers(min_value=-(10**9), max_value=10**9)


@given(figure, figure, figure, figure)
def test_atp_is_never_negative_and_never_above_the_formula(a: int, b: int, c: int, d: int) -> None:
    value = atp(a, b, c, d)
    assert value >= 0
    assert value == max(0, a - b - c - d)


def test_status_thresholds() -> None:
    assert status_of(0, 5) == "out_of_stock"
    assert status_of(1, 5) == "low_stock"
    assert status_of(5, 5) == "low_stock"
    assert status_of(6, 5) == "in_stock"


def snap(seq: int, on_hand: int, allocated: int = 0, safety: int = 0) -> Snapshot:
    return Snapshot(f"s{seq}", "S", "L", seq, on_hand, allocated, safety, "2026-01-01T00:00:00Z")


def adj(seq: int, d_on_hand: int, d_alloc: int = 0) -> Adjustment:
    return Adjustment(f"a{seq}", "S", "L", seq, d_on_hand, d_alloc, "", "2026-01-01T00:00:00Z")


def test_ordering_rules() -> None:
    ledger = KeyLedger()
    assert ledger.apply(adj(11, -1)) == "buffered"  # no snapshot yet: waits
    assert ledger.apply(snap(10, 100, 5, 2)) == "applied"  # ... and then drains seq 11
    assert ledger.state == KeyState(99, 5, 2, 11, 0, True)
    assert ledger.apply(snap(11, 1)) == "duplicate"
    assert ledger.apply(adj(11, -50)) == "duplicate"
    assert ledger.apply(adj(13, -3)) == "buffered"  # gap at 12
    assert ledger.has_gap
    assert ledger.state.seq == 11
    assert ledger.apply(adj(13, -3)) == "duplicate"  # already buffered
    assert ledger.apply(adj(12, 0, 4)) == "applied"  # closes the gap, 13 follows
    assert not ledger.has_gap
    assert ledger.state == KeyState(96, 9, 2, 13, 0, True)
    # An in-sequence adjustment is applied even when it drives a figure negative.
    assert ledger.apply(adj(14, -500)) == "applied"
    assert ledger.state.on_hand == -404
    assert ledger.state.atp == 0
    # A newer snapshot replaces, and drops buffered events at or below it.
    ledger.apply(adj(16, 1))
    assert ledger.apply(snap(20, 7)) == "applied"
    assert not ledger.has_gap
    assert ledger.state.seq == 20


def truthful_log(rng: random.Random, length: int) -> tuple[list[Event], KeyState]:
    """A consistent ERP history: a snapshot, then adjustments and occasional re-snapshots of
    the true state. Returns the events and the final true state."""
    seq = rng.randrange(0, 1000)
    on_hand, alloc, safety = rng.randrange(0, 500), rng.randrange(0, 50), rng.randrange(0, 5)
    events: list[Event] = [snap(seq, on_hand, alloc, safety)]
    for _ in range(length):
        seq += 1
        if rng.random() < 0.15 and on_hand >= 0 and alloc >= 0:  # ERP snapshots are >= 0
            events.append(snap(seq, on_hand, alloc, safety))
        else:
            d_oh, d_al = rng.randrange(-20, 21), rng.randrange(-5, 6)
            on_hand, alloc = on_hand + d_oh, alloc + d_al
            events.append(adj(seq, d_oh, d_al))
    return events, KeyState(on_hand, alloc, safety, seq, 0, True)


def replay(events: list[Event]) -> KeyLedger:
    ledger = KeyLedger()
    for ev in events:
        ledger.apply(ev)
    return ledger


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=0, max_value=40))
def test_any_replay_or_reordering_equals_applying_once_in_order(seed: int, length: int) -> None:
    rng = random.Random(seed)
    events, truth = truthful_log(rng, length)
    in_order = replay(events)
    assert in_order.state == truth
    assert not in_order.has_gap
    # Redeliveries (duplicates) and any reordering end in exactly the same state.
    noisy = events + [rng.choice(events) for _ in range(rng.randrange(0, 20))]
    rng.shuffle(noisy)
    shuffled = replay(noisy)
    assert shuffled.state == truth
    assert not shuffled.has_gap


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2**32))
def test_a_missing_event_leaves_the_key_behind_a_gap(seed: int) -> None:
    rng = random.Random(seed)
    events, _ = truthful_log(rng, 10)
    adjustments = [i for i, e in enumerate(events) if isinstance(e, Adjustment)]
    if not adjustments or isinstance(events[-1], Snapshot):
        return
    hole = rng.choice(adjustments)
    later_snapshot = any(isinstance(e, Snapshot) for e in events[hole + 1 :])
    ledger = replay(events[:hole] + events[hole + 1 :])
    if not later_snapshot and hole != len(events) - 1:
        assert ledger.has_gap  # never applied out of order: waits for the missing seq
        assert ledger.state.seq == events[hole].seq - 1
