"""The pure reservation model: body identity and the state machine table."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from atp_service.reservation import (
    TERMINAL,
    Line,
    ReservationRequest,
    committable,
    next_status,
)


def req(lines: list[tuple[str, str, int]], hold: int | None = None) -> ReservationRequest:
    return ReservationRequest("r1", "checkout", tuple(Line(*x) for x in lines), hold)


def test_repeated_lines_are_summed_in_first_seen_order() -> None:
    r = req([("A", "L1", 1), ("B", "L1", 2), ("A", "L1", 3)])
    assert r.lines == (Line("A", "L1", 4), Line("B", "L1", 2))


def test_fingerprint_is_the_body_identity() -> None:
    base = req([("A", "L1", 1), ("B", "L1", 2)])
    assert base.fingerprint() == req([("A", "L1", 1), ("B", "L1", 2)]).fingerprint()
    assert base.fingerprint() != req([("B", "L1", 2), ("A", "L1", 1)]).fingerprint()  # order
    assert base.fingerprint() != req([("A", "L1", 1), ("B", "L1", 2)], hold=60).fingerprint()


def test_state_machine() -> None:
    # cart holds
    assert next_status("held", True, "commit", standalone=True) == "confirmed"
    assert next_status("held", True, "commit", standalone=False) == "held"
    assert next_status("held", True, "expire", standalone=True) == "expired"
    assert next_status("held", True, "release", standalone=True) == "released"
    # waiting for the ERP
    assert next_status("held", False, "erp_confirm", standalone=False) == "confirmed"
    assert next_status("held", False, "erp_reject", standalone=False) == "rejected"
    assert next_status("held", False, "expire", standalone=False) == "held"
    assert next_status("confirmed", False, "release", standalone=True) == "released"
    assert next_status("confirmed", False, "expire", standalone=True) == "confirmed"
    for status in TERMINAL:
        assert not committable(status)
        for action in ("commit", "release", "expire", "erp_confirm", "erp_reject"):
            assert next_status(status, False, action, standalone=True) == status
    assert committable("held") and committable("confirmed")


_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    priority=st.sampled_from(["checkout", "sales", "background"]),
    hold=st.one_of(st.none(), st.integers(1, 86400)),
    lines=st.lists(st.tuples(_ids, _ids, st.integers(1, 10**9)), min_size=1, max_size=6),
)
def test_fingerprint_is_the_orjson_encoding(
    priority: str, hold: int | None, lines: list[tuple[str, str, int]]
) -> None:
    """Stored with every reservation: must stay byte-equal to what earlier versions stored."""
    r = ReservationRequest("r1", priority, tuple(Line(*x) for x in lines), hold)
    assert r.fingerprint() == orjson.dumps([priority, hold, [list(x) for x in lines]])
