"""The pure reservation model: body identity and the state machine table."""

from __future__ import annotations

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
