"""Pure parts of the ERP gateway: reply classification, backoff, circuit breaker."""

from __future__ import annotations

from atp_service.breaker import Breaker
from atp_service.erp import Reply, classify
from atp_service.gateway import backoff

SENT = [{"sku": "S", "location": "L", "qty": 2}, {"sku": "T", "location": "L", "qty": 1}]


def test_classify_reserve_replies() -> None:
    ok = Reply(200, {"status": "confirmed", "lines": [
        {"sku": "T", "location": "L", "qty": 1, "erp_seq": 9},
        {"sku": "S", "location": "L", "qty": 2, "erp_seq": 2**53 - 1},
    ]})  # fmt: skip
    out = classify("r:1", ok, SENT)
    assert out.kind == "confirmed" and not out.transient
    assert out.data == [
        {"sku": "S", "location": "L", "erp_seq": str(2**53 - 1)},
        {"sku": "T", "location": "L", "erp_seq": "9"},
    ]
    assert classify("r:1", Reply(409, {"status": "rejected", "reason": "no stock"}), SENT).data == (
        "no stock"
    )
    refused = classify("r:1", Reply(422, None), SENT)
    assert refused.kind == "rejected" and "422" in refused.data  # any other 4xx: permanent
    assert classify("r:1", Reply(429, None, 3.0), SENT).data == 3.0
    assert classify("r:1", Reply(429, None), SENT).kind == "throttled"
    for transient in (Reply(0), Reply(500), Reply(503)):
        out = classify("r:1", transient, SENT)
        assert out.kind == "retry" and out.transient
    # A success without a valid erp_seq for every line sent is not trusted.
    partial = Reply(200, {"status": "confirmed", "lines": [
        {"sku": "S", "location": "L", "qty": 2, "erp_seq": 4}]})  # fmt: skip
    assert classify("r:1", partial, SENT).kind == "retry"
    bad_seq = Reply(200, {"status": "confirmed", "lines": [
        {"sku": "S", "location": "L", "erp_seq": "4"}, {"sku": "T", "location": "L", "erp_seq": -1}
    ]})  # fmt: skip
    assert classify("r:1", bad_seq, SENT).kind == "retry"


def test_answers_about_the_call_are_retried_not_taken_as_a_refusal() -> None:
    """401/403 (our credential refused), 407, 408 and 425 say nothing about the reservation:
    retried and counted by the breaker, for reserves, cancels and resyncs alike; other 4xx
    stay permanent for a reserve."""
    for status in (401, 403, 407, 408, 425):
        for entry, sent in (("r:1", SENT), ("c:1", None), ("g:S|L", None)):
            out = classify(entry, Reply(status, {"status": "unauthorized"}), sent)
            assert out.kind == "retry" and out.transient, (status, entry)
    for status in (400, 404, 410, 413, 422):
        assert classify("r:1", Reply(status, None), SENT).kind == "rejected", status


def test_classify_cancel_replies() -> None:
    assert classify("c:1", Reply(200, {})).kind == "done"
    assert classify("c:1", Reply(404, None)).kind == "done"
    assert classify("c:1", Reply(503, None)).kind == "retry"
    assert classify("c:1", Reply(429, None, 2)).kind == "throttled"


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert backoff(1, lambda: 1.0) == 0.25
    assert backoff(3, lambda: 1.0) == 1.0
    assert backoff(40, lambda: 1.0) == 10.0
    assert backoff(3, lambda: 0.0) == 0.5


def test_breaker_opens_probes_and_recovers() -> None:
    now = [0.0]
    b = Breaker(threshold=3, cooldown=2.0, cap=8.0, clock=lambda: now[0])
    for _ in range(2):
        b.failure()
    assert b.state == "closed" and b.wait() == 0
    b.failure()
    assert b.state == "open" and b.wait() == 2.0
    now[0] = 2.0
    assert b.wait() == 0 and b.state == "half_open"
    b.started()
    assert b.wait() > 0  # only one probe at a time
    b.failure()  # the probe failed: open again, for longer
    assert b.state == "open" and b.wait() == 4.0
    now[0] = 6.0
    assert b.wait() == 0
    b.started()
    b.success()
    assert b.state == "closed" and b.failures == 0
    b.failure()
    assert b.state == "closed"  # the count restarted


def test_classify_needs_the_lines_sent_with_a_reserve_call() -> None:
    import pytest

    with pytest.raises(ValueError):
        classify("r:1", Reply(200, {"status": "confirmed", "lines": []}))


async def test_send_pacer_spaces_this_replicas_sends() -> None:
    from atp_service.gateway import SendPacer

    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    pacer = SendPacer(0.02, clock=lambda: now[0], sleep=fake_sleep)
    await pacer.wait()  # first call: at once
    await pacer.wait()  # claimed back to back: held 20 ms
    now[0] += 0.5
    await pacer.wait()  # long after: at once again
    assert slept == [0.02]


def test_spacing_widens_on_429_and_narrows_back() -> None:
    from atp_service.gateway import INTERVAL_MARGIN, Spacing

    spacing = Spacing(50)
    assert spacing.interval_ms == 20 * INTERVAL_MARGIN
    spacing.throttled()
    assert spacing.interval_ms == 20 * INTERVAL_MARGIN * Spacing.GROW
    for _ in range(20):
        spacing.throttled()
    assert spacing.interval_ms == 20 * Spacing.MAX  # capped: never slower than half the rate
    for _ in range(10_000):
        spacing.answered()
    assert spacing.interval_ms == 20 * INTERVAL_MARGIN  # never tighter than the base margin
    spacing.throttled()
    steps = 0
    while spacing.margin > INTERVAL_MARGIN:
        spacing.answered()
        steps += 1
    assert 50 <= steps <= 200  # recovers over a few seconds of calls, not at once
