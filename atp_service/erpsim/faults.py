"""What can go wrong with the ERP, switchable at run time, and how slow it answers.

Pure: randomness comes from the caller's ``random.Random``. Faults apply to the three ERP
endpoints only, never to ``/admin``.

- ``outage``: every call is answered 503 at once;
- ``hang``: calls get no answer (and have no effect) until hang is turned off or the
  client gives up;
- ``hang_after_apply``: calls take effect, then get no answer until it is turned off or the
  client gives up (the "did my timed-out call happen?" case);
- ``error_rate``: that fraction of calls is answered 503 (after the latency, no effect);
- ``reject_all``: every new reservation is refused (409, "simulated refusal");
- ``latency``: a lognormal delay fitted to a median and a p99, before each answer.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from .schema import BadBody, boolean, no_extra, number, obj

Z99 = 2.3263478740408408  # standard normal quantile at 0.99
MAX_LATENCY_MS = 60_000.0


@dataclass(frozen=True, slots=True)
class Latency:
    """Lognormal delay with the given median and 99th percentile (ms); 0 = none."""

    median_ms: float = 20.0
    p99_ms: float = 80.0

    def __post_init__(self) -> None:
        if not 0 <= self.median_ms <= MAX_LATENCY_MS or not 0 <= self.p99_ms <= MAX_LATENCY_MS:
            raise ValueError(f"latency must be between 0 and {MAX_LATENCY_MS:g} ms")
        if self.median_ms > 0 and self.p99_ms < self.median_ms:
            raise ValueError("latency p99 must be at least the median")

    @property
    def sigma(self) -> float:
        if self.median_ms <= 0:
            return 0.0
        return math.log(self.p99_ms / self.median_ms) / Z99

    def sample(self, rng: random.Random) -> float:
        """One delay, in seconds."""
        if self.median_ms <= 0:
            return 0.0
        sigma = self.sigma
        if sigma == 0:
            return self.median_ms / 1000
        ms = rng.lognormvariate(math.log(self.median_ms), sigma)
        return min(ms, MAX_LATENCY_MS) / 1000


@dataclass(slots=True)
class Faults:
    error_rate: float = 0.0
    outage: bool = False
    hang: bool = False
    hang_after_apply: bool = False
    reject_all: bool = False
    latency: Latency = field(default_factory=Latency)

    def update(self, body: object) -> None:
        """Apply a partial update; nothing changes unless the whole body is valid."""
        value = obj(body, "")
        no_extra(value, _FIELDS, "")
        error_rate = self.error_rate
        if "error_rate" in value:
            error_rate = number(value["error_rate"], "/error_rate", 0.0, 1.0)
        flags = {
            name: boolean(value[name], "/" + name) if name in value else getattr(self, name)
            for name in ("outage", "hang", "hang_after_apply", "reject_all")
        }
        median = self.latency.median_ms
        p99 = self.latency.p99_ms
        if "latency_ms" in value:
            median = number(value["latency_ms"], "/latency_ms", 0, MAX_LATENCY_MS)
            if "latency_p99_ms" not in value:
                p99 = max(p99, median)  # keep the distribution valid
        if "latency_p99_ms" in value:
            p99 = number(value["latency_p99_ms"], "/latency_p99_ms", 0, MAX_LATENCY_MS)
        try:
            latency = Latency(median, p99)
        except ValueError as exc:
            raise BadBody(str(exc)) from None
        self.error_rate = error_rate
        self.outage = flags["outage"]
        self.hang = flags["hang"]
        self.hang_after_apply = flags["hang_after_apply"]
        self.reject_all = flags["reject_all"]
        self.latency = latency

    def clear(self, latency: Latency) -> None:
        """No faults; latency back to the launch setting."""
        self.error_rate = 0.0
        self.outage = self.hang = self.hang_after_apply = self.reject_all = False
        self.latency = latency

    def view(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "outage": self.outage,
            "hang": self.hang,
            "hang_after_apply": self.hang_after_apply,
            "reject_all": self.reject_all,
            "latency_ms": self.latency.median_ms,
            "latency_p99_ms": self.latency.p99_ms,
        }


_FIELDS = frozenset(
    {"error_rate", "outage", "hang", "hang_after_apply", "reject_all", "latency_ms",
     "latency_p99_ms"}
)  # fmt: skip
