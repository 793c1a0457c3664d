"""The record of every call to the ERP endpoints, for the admin API and the tests.

Pure: clocks are injected. A call is recorded when it arrives (so calls still in flight, e.g.
hung ones, are visible) and completed when answered. ``status`` is what the client got (0
while in flight, 499 when it gave up first); ``outcome`` is what the ERP did.
``request_id`` and ``traceparent`` are the caller's ``X-Request-ID`` and W3C ``traceparent``
headers as received (None when absent), so a test can follow one request end to end.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GAVE_UP = 499  # the client closed the connection before the answer (nginx's convention)


@dataclass(slots=True)
class Call:
    n: int
    monotonic: float
    wall: float
    method: str
    path: str
    idempotency_key: str | None
    reservation_id: str | None
    request_id: str | None = None
    traceparent: str | None = None
    status: int = 0
    outcome: str = "in_flight"
    duration_ms: float = 0.0

    def view(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "monotonic": self.monotonic,
            "wall": self.wall,
            "method": self.method,
            "path": self.path,
            "idempotency_key": self.idempotency_key,
            "reservation_id": self.reservation_id,
            "request_id": self.request_id,
            "traceparent": self.traceparent,
            "status": self.status,
            "outcome": self.outcome,
            "duration_ms": round(self.duration_ms, 3),
        }


class CallLog:
    def __init__(
        self, capacity: int, clock: Callable[[], float], wall: Callable[[], float]
    ) -> None:
        self._calls: deque[Call] = deque(maxlen=capacity)
        self._clock = clock
        self._wall = wall
        self._n = 0
        # Per reservation id, every call naming it; survives reset() (a test's phase marker).
        self.per_reservation: Counter[str] = Counter()

    def start(
        self, method: str, path: str, idempotency_key: str | None, reservation_id: str | None,
        request_id: str | None = None, traceparent: str | None = None,
    ) -> Call:  # fmt: skip
        self._n += 1
        call = Call(
            self._n, self._clock(), self._wall(), method, path, idempotency_key, reservation_id,
            request_id[:200] if request_id else None, traceparent[:200] if traceparent else None,
        )  # fmt: skip
        self._calls.append(call)
        if reservation_id is not None:
            self.per_reservation[reservation_id] += 1
        return call

    def __len__(self) -> int:
        return len(self._calls)

    def finish(self, call: Call, status: int, outcome: str) -> None:
        call.status = status
        call.outcome = outcome
        call.duration_ms = (self._clock() - call.monotonic) * 1000

    def since(self, n: int = 0) -> list[dict[str, Any]]:
        """Calls numbered above ``n``, oldest first."""
        return [c.view() for c in self._calls if c.n > n]

    def reset(self) -> int:
        cleared = len(self._calls)
        self._calls.clear()
        return cleared

    def stats(self, window: float = 1.0) -> dict[str, Any]:
        """Counts, and the most calls that arrived within any ``window`` seconds."""
        calls = list(self._calls)
        accepted = [c for c in calls if c.status != 429]
        return {
            "count": len(calls),
            "by_status": dict(Counter(str(c.status) for c in calls)),
            "by_outcome": dict(Counter(c.outcome for c in calls)),
            "max_in_window": _densest(calls, window),
            "max_accepted_in_window": _densest(accepted, window),
            "window_seconds": window,
        }


def _densest(calls: list[Call], window: float) -> int:
    """Largest number of arrivals in a half-open interval of ``window`` seconds."""
    best = 0
    lo = 0
    for hi, call in enumerate(calls):
        while call.monotonic - calls[lo].monotonic >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
