"""Load shapes for the peak tests: load this file next to the locustfile to use one.

    locust -f loadtests/locustfile.py,loadtests/shapes.py --headless \
        --shape flash --users 500 --run-time 120s

``--shape`` (``ATP_SHAPE``) picks the shape; ``--users`` is its peak and ``--run-time`` its
length (both also ``ATP_SHAPE_USERS`` / ``ATP_SHAPE_DURATION``); every phase is a fraction of
the length, so one shape scales from an 8-second smoke test to a day-long soak:

- ``flash``: a flash sale. A quiet store (``--flash-base`` of the peak, default 5%) for
  ``--flash-idle`` of the run (default 20%), then 0 to the peak in ``--flash-rise`` seconds
  (default 5), hold for ``--flash-hold`` of the run (default 50%), drop back to the quiet
  level and end.
- ``ramp``: the holiday build-up. From ``--ramp-start`` of the peak (default 10%) straight
  up to the peak at the end of the run.
- ``soak``: the peak, constant, after a ``--soak-rise`` seconds start (default 5).
"""

from __future__ import annotations

import os
import re
from typing import Any

from locust import LoadTestShape, events

SHAPES = ("flash", "ramp", "soak")
# (flag, variable, default, help)
SHAPE_OPTIONS = (
    ("--shape", "ATP_SHAPE", "soak", "load shape: flash, ramp or soak"),
    ("--shape-users", "ATP_SHAPE_USERS", "", "peak users (default: --users, else 100)"),
    ("--shape-duration", "ATP_SHAPE_DURATION", "", "run length, 90, 90s, 5m, 1h (default: "
     "--run-time, else 60s)"),
    ("--flash-base", "ATP_FLASH_BASE", "0.05", "flash: quiet-store users, share of the peak"),
    ("--flash-idle", "ATP_FLASH_IDLE", "0.2", "flash: quiet phase before the spike, share of "
     "the run"),
    ("--flash-rise", "ATP_FLASH_RISE", "5", "flash: seconds from quiet to peak"),
    ("--flash-hold", "ATP_FLASH_HOLD", "0.5", "flash: peak phase, share of the run"),
    ("--ramp-start", "ATP_RAMP_START", "0.1", "ramp: starting users, share of the peak"),
    ("--soak-rise", "ATP_SOAK_RISE", "5", "soak: seconds to reach the peak"),
)  # fmt: skip


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_kw: Any) -> None:
    for flag, env, default, help_text in SHAPE_OPTIONS:
        parser.add_argument(flag, type=str, env_var=env, default=default, help=help_text)


def seconds(raw: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``."""
    raw = raw.strip()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"not a duration: {raw!r}")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


class Phases:
    """A shape as a pure function of elapsed time: (users, spawn rate) or None at the end."""

    def __init__(self, kind: str, users: int, duration: float, opts: dict[str, str]) -> None:
        if kind not in SHAPES:
            raise ValueError(f"unknown shape {kind!r}: expected one of {', '.join(SHAPES)}")
        if users < 1 or duration <= 0:
            raise ValueError("a shape needs users >= 1 and a positive duration")
        self.kind, self.users, self.duration = kind, users, duration
        self.opts = opts

    def _f(self, name: str) -> float:
        return float(self.opts[name])

    def at(self, t: float) -> tuple[int, float] | None:
        if t >= self.duration:
            return None
        peak = self.users
        if self.kind == "soak":
            rise = max(self._f("soak_rise"), 0.1)
            return peak, peak / rise
        if self.kind == "ramp":
            start = max(1, round(peak * self._f("ramp_start")))
            target = start + (peak - start) * t / self.duration
            per_second = (peak - start) / self.duration
            return max(1, round(target)), max(per_second * 2, 1.0)
        base = round(peak * self._f("flash_base"))
        rise = max(self._f("flash_rise"), 0.1)
        spike_at = self.duration * self._f("flash_idle")
        drop_at = spike_at + rise + self.duration * self._f("flash_hold")
        if t < spike_at:
            return max(base, 1), float(max(base, 1))  # the quiet store, within a second
        if t >= drop_at:
            return base, float(peak)  # the sale is over: back to quiet within a second
        return peak, peak / rise


class AtpShape(LoadTestShape):
    """The shape named by ``--shape`` / ``ATP_SHAPE``, sized by ``--users`` and ``--run-time``."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.phases: Phases | None = None

    def _build(self) -> Phases:
        opts = self.runner.environment.parsed_options if self.runner else None
        values = {flag[2:].replace("-", "_"): os.environ.get(env, "") or default
                  for flag, env, default, _ in SHAPE_OPTIONS}  # fmt: skip
        if opts is not None:
            values.update({k: str(getattr(opts, k)) for k in values if getattr(opts, k, None)})
        users_raw = values["shape_users"] or str(getattr(opts, "num_users", None) or "") or "100"
        if values["shape_duration"]:
            duration = seconds(values["shape_duration"])
        else:
            duration = float(getattr(opts, "run_time", None) or 60)
        return Phases(values["shape"], int(users_raw), duration, values)

    def tick(self) -> tuple[int, float] | None:
        if self.phases is None:
            self.phases = self._build()
        return self.phases.at(self.get_run_time())
