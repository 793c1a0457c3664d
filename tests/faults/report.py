"""What a fault did: latency samples stamped with the time they started, marks for when the
fault began, ended and was recovered from, and the counts a fault test asserts on
(accepted, lost, ...). The ``fault_report`` fixture hands one out per test; with
``ATP_FAULT_REPORT=<path>.md`` set, the session writes every record to ``<path>.md`` and
``<path>.json``. The tests assert their invariants themselves (lost == 0); the report only
tells what happened."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

PHASES = ("before", "during", "after")


@dataclass
class FaultRecord:
    """One fault test's measurements. Phases: before the ``start`` mark, between ``start`` and
    ``end``, after ``end``. ``recovered`` (if marked) gives the time to recover after ``end``."""

    test: str
    fault: str
    outcome: str = "unknown"
    marks: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, float, bool]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def mark(self, name: str, at: float | None = None) -> None:
        self.marks[name] = time.monotonic() if at is None else at

    def add(self, kind: str, started: float, ms: float, ok: bool = True) -> None:
        """One request of ``kind`` that started at ``started`` (monotonic) and took ``ms``."""
        self.samples.setdefault(kind, []).append((started, ms, ok))

    @asynccontextmanager
    async def timed(self, kind: str) -> AsyncIterator[None]:
        """Time the body as one sample of ``kind``; an exception counts as not ok."""
        started, t0 = time.monotonic(), time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.add(kind, started, (time.perf_counter() - t0) * 1000, ok)

    def count(self, **counts: int) -> None:
        self.counts.update(counts)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def phase_of(self, at: float) -> str:
        start, end = self.marks.get("start"), self.marks.get("end")
        if start is None or at < start:
            return "before"
        if end is None or at <= end:
            return "during"
        return "after"

    def summary(self) -> dict[str, Any]:
        latency: dict[str, dict[str, dict[str, float | int]]] = {}
        for kind, rows in self.samples.items():
            by_phase: dict[str, list[tuple[float, bool]]] = {p: [] for p in PHASES}
            for at, ms, ok in rows:
                by_phase[self.phase_of(at)].append((ms, ok))
            latency[kind] = {p: _stats(v) for p, v in by_phase.items() if v}
        start, end = self.marks.get("start"), self.marks.get("end")
        recovered = self.marks.get("recovered")
        return {
            "test": self.test,
            "fault": self.fault,
            "outcome": self.outcome,
            "fault_seconds": round(end - start, 2) if start and end else None,
            "recovery_seconds": round(recovered - end, 2) if recovered and end else None,
            "latency_ms": latency,
            "counts": self.counts,
            "notes": self.notes,
        }


def _stats(rows: list[tuple[float, bool]]) -> dict[str, float | int]:
    ms = sorted(m for m, _ in rows)
    return {
        "n": len(ms),
        "failed": sum(1 for _, ok in rows if not ok),
        "p50": round(ms[len(ms) // 2], 2),
        "p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max": round(ms[-1], 2),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "note": "a shared 2-core box: other engineers' builds and tests ran on it at the same "
        "time, so absolute numbers are noisy; compare during/after with before in each row",
    }


def write(path: Path, records: list[FaultRecord], took_s: float) -> None:
    """``path`` names the Markdown file; the JSON goes next to it with the same stem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summaries = [r.summary() for r in records]
    env = machine()
    path.with_suffix(".json").write_bytes(
        orjson.dumps(
            {"machine": env, "session_seconds": round(took_s, 1), "faults": summaries},
            option=orjson.OPT_INDENT_2,
        )
    )
    lines = [
        "# Fault tests: what each fault did to latency, and what was lost",
        "",
        f"Machine: {env['cpus']} CPUs, load average at the end {env['load_average']}, "
        f"Python {env['python']}. {env['note'][0].upper()}{env['note'][1:]}.",
        "",
        "Written by `ATP_FAULT_REPORT=benchmarks/results/faults.md scripts/test tests/faults "
        "tests/test_degraded.py "
        f"-m 'slow or not slow'` (the whole fault set, {took_s:.0f} s). Latency is as the test "
        "client saw it over loopback, in ms; *before* / *during* / *after* are the phases "
        "around the fault; *failed* counts requests that got no 2xx/4xx answer (503 problem "
        "responses while a dependency was away, or client timeouts). **lost** is asserted 0 "
        "by each test: a reservation answered 201 that is missing afterwards.",
        "",
    ]
    for s in summaries:
        lines += [f"## {s['fault']}", "", f"`{s['test']}` ({s['outcome']})", ""]
        facts = []
        if s["fault_seconds"] is not None:
            facts.append(f"fault lasted {s['fault_seconds']} s")
        if s["recovery_seconds"] is not None:
            facts.append(f"recovered {s['recovery_seconds']} s after it ended")
        facts += [f"{k.replace('_', ' ')}: {v}" for k, v in s["counts"].items()]
        lines += ["; ".join(facts) + ".", ""]
        if s["latency_ms"]:
            lines += [
                "| requests | phase | n | failed | p50 | p99 | max |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
            for kind, phases in s["latency_ms"].items():
                for phase, st in phases.items():
                    lines.append(
                        f"| {kind} | {phase} | {st['n']} | {st['failed']} | {st['p50']} | "
                        f"{st['p99']} | {st['max']} |"
                    )
            lines.append("")
        lines += [f"- {n}" for n in s["notes"]]
        if s["notes"]:
            lines.append("")
    path.write_text("\n".join(lines))
