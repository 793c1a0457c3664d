"""Token bucket: the ERP's rate limit (contract.md s4), with an injected clock.

``rate`` tokens per second refill a bucket of ``burst`` tokens; each call takes one. With a
burst of 1, calls are accepted only when evenly spaced at least ``1 / rate`` apart, so no
1-second window holds more than ``rate`` accepted calls (plus one at its closed edge).
A refused call takes no token: a client that waits as told by ``Retry-After`` gets in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = clock()

    def take(self) -> float:
        """Take a token: 0.0 if granted, else the seconds until one will be available."""
        self._refill()
        # Tolerate float rounding: a call exactly 1/rate after the last one is on time.
        if self._tokens >= 1 - 1e-9:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def reconfigure(self, rate: float, burst: float) -> None:
        """Change the limit at run time; the tokens held so far are kept (capped)."""
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._refill()
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, burst)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now


def retry_after(wait: float) -> int:
    """``Retry-After`` in whole seconds: rounded up, never below 1."""
    return max(1, math.ceil(wait))
