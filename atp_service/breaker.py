"""Circuit breaker for the ERP (pure; the clock is injected).

closed: calls flow; ``threshold`` consecutive transient failures open it.
open: no calls until ``cooldown`` has passed (doubling on each failed probe, up to ``cap``).
half-open: exactly one probe call; its success closes the breaker, its failure reopens it.
Only transient failures count (timeouts, connection errors, 5xx, and the 4xx that are about the
call rather than the reservation: ``erp.ABOUT_THE_CALL``, a refused credential among them); a
409 or 429 is an answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 2.0,
        cap: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.cap = cap
        self.clock = clock
        self.state: State = "closed"
        self.failures = 0
        self.cooldown = cooldown
        self.opened_at = 0.0
        self.probing = False

    def wait(self) -> float:
        """Seconds until a call may start (0 = now). Moving to half-open happens here."""
        if self.state == "closed":
            return 0.0
        if self.state == "open":
            left = self.opened_at + self.cooldown - self.clock()
            if left > 0:
                return left
            self.state = "half_open"
        return 0.0 if not self.probing else 0.05

    def started(self) -> None:
        if self.state == "half_open":
            self.probing = True

    def success(self) -> None:
        self.state, self.failures, self.probing = "closed", 0, False
        self.cooldown = self.base_cooldown

    def failure(self) -> None:
        self.failures += 1
        if self.state == "half_open":
            self.cooldown = min(self.cooldown * 2, self.cap)
            self._open()
        elif self.state == "closed" and self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.state, self.opened_at, self.probing = "open", self.clock(), False

    @property
    def code(self) -> int:
        """0 closed, 1 half-open, 2 open (for the metrics gauge)."""
        return {"closed": 0, "half_open": 1, "open": 2}[self.state]
