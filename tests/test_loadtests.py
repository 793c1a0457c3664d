"""Issue 5's load-test tooling: a short real run of ``loadtests/run`` (whole stack, Locust,
storm, drain, gate), and the SLO gate on crafted inputs (it must fail on a breach)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loadtests import slo_gate

ROOT = Path(__file__).resolve().parent.parent
SLO = ROOT / "loadtests" / "slo.toml"
PERCENTILES = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")

# The smoke run checks the plumbing, not this machine's speed: loose latency, few requests;
# errors and every reservation/ERP invariant stay as strict as in slo.toml.
SMOKE_SLO = """
[requests]
min_requests = 20
max_error_rate = 0.0
[[latency]]
match = "GET /v1/availability/"
percentile = 99
max_ms = 2000
required = true
[lookups]
max_stale_ratio = 0.05
[throttling]
max_checkout_throttled_ratio = 0.0
[erp]
max_oversold_keys = 0
max_double_allocations = 0
check_rate = true
[reservations]
max_unconfirmed = 0
max_erp_rejected = 0
max_state_errors = 0
expiry_slack_seconds = 5
drain_timeout_seconds = 30
"""


def test_run_soak_smoke(tmp_path: Path) -> None:
    slo = tmp_path / "smoke-slo.toml"
    slo.write_text(SMOKE_SLO)
    out = tmp_path / "out"
    started = time.monotonic()
    # Receipts only: background sales could sell stock a cart hold keeps, and the ERP would
    # then (rightly) refuse its commit; that race is for the real runs, not a smoke test.
    proc = subprocess.run(
        [str(ROOT / "loadtests" / "run"), "--duration", "8", "--users", "20", "--shape", "soak",
         "--catalogue", "200x4", "--storm-sales", "0", "--storm-receipts", "20",
         "--out", str(out), "--slo", str(slo), "--drain-timeout", "20"],
        cwd=ROOT, env={**os.environ, "ATP_PYTHON": sys.executable},
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "SLO gate: PASS" in proc.stdout
    assert (out / "report.html").stat().st_size > 10_000
    for name in ("locust_stats.csv", "locust_failures.csv", "erp-ledger.json", "gate.txt"):
        assert (out / name).is_file(), name
    with (out / "locust_stats.csv").open() as f:
        names = {row["Name"] for row in csv.DictReader(f)}
    assert "GET /v1/availability/[sku]" in names
    assert list(out.glob("reservations.*.jsonl"))
    assert "ERP event storm on" in proc.stdout
    assert time.monotonic() - started < 60
    # everything it started (redis, service, simulator, locust, gate) was stopped and reaped
    pids = dict(line.split()[::-1] for line in (out / "pids.txt").read_text().splitlines())
    assert {"redis", "service", "erp-sim", "locust", "slo-gate"} <= set(pids.values())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def write_stats(prefix: Path, rows: list[tuple[str, str, int, int, float]]) -> None:
    """rows: (method, name, requests, failures, p99 ms); other percentiles = p99 / 2."""
    with open(f"{prefix}_stats.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                    "Average Response Time", "Min Response Time", "Max Response Time",
                    "Average Content Size", "Requests/s", "Failures/s", *PERCENTILES])  # fmt: skip
        total = 0
        for method, name, count, fails, p99 in rows:
            pct = [p99 / 2] * 7 + [p99, p99, p99, p99]
            w.writerow([method, name, count, fails, p99 / 2, p99 / 2, 0.5, p99, 500, 10, 0, *pct])
            total += count
        w.writerow(["", "Aggregated", total, 0, 1, 1, 0.5, 1, 500, 10, 0, *[1] * 11])
    with open(f"{prefix}_failures.csv", "w", newline="") as f:
        csv.writer(f).writerow(["Method", "Name", "Error", "Occurrences"])


def ledger(oversold: list[dict[str, Any]], reservations: dict[str, Any] | None = None,
           max_in_window: int = 10) -> dict[str, Any]:  # fmt: skip
    return {
        "keys": [], "reservations": reservations or {}, "oversold": oversold,
        "counts": {"reservations_allocated": 1},
        "call_stats": {"count": 100, "max_in_window": max_in_window},
    }  # fmt: skip


GOOD_ROWS = [
    ("GET", "GET /v1/availability/[sku]", 5000, 0, 12.0),
    ("POST", "POST /v1/availability [cart]", 2000, 0, 20.0),
    ("POST", "POST /v1/reservations [checkout]", 300, 0, 30.0),
    ("POST", "POST /v1/reservations [checkout] (409 insufficient-stock)", 40, 0, 5.0),
]


def run_gate(tmp_path: Path, rows: list[tuple[str, str, int, int, float]],
             book: dict[str, Any], *extra: str) -> int:  # fmt: skip
    write_stats(tmp_path / "locust", rows)
    (tmp_path / "ledger.json").write_text(json.dumps(book))
    return slo_gate.main(["--csv", str(tmp_path / "locust"), "--ledger",
                          str(tmp_path / "ledger.json"), "--slo", str(SLO), "--erp-rate", "50",
                          *extra])  # fmt: skip


def test_gate_passes_a_clean_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_gate(tmp_path, GOOD_ROWS, ledger([])) == 0
    out = capsys.readouterr().out
    assert "SLO gate: PASS" in out
    assert "intended 409 insufficient-stock" in out and " 40 " in out


def test_gate_fails_on_a_p99_breach_and_an_oversell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*GOOD_ROWS[1:], ("GET", "GET /v1/availability/[sku]", 5000, 0, 480.0)]
    oversold = [{"sku": "SKU-000001", "location": "LOC-01", "on_hand": 3, "allocated": 5}]
    assert run_gate(tmp_path, rows, ledger(oversold)) == 1
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert lines["p99 GET /v1/availability/[sku]"].endswith("FAIL")
    assert lines["ERP oversold keys"].endswith("FAIL")
    assert "SKU-000001@LOC-01: on_hand 3, allocated 5" in out
    assert "SLO gate: FAIL (2 breaches)" in out


def test_gate_fails_on_errors_and_an_erp_over_its_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*GOOD_ROWS, ("POST", "POST /v1/reservations [sales hold]", 100, 30, 10.0)]
    assert run_gate(tmp_path, rows, ledger([], max_in_window=51)) == 1
    out = capsys.readouterr().out
    assert "error rate" in out and "(30/7440)" in out
    assert "ERP calls in any 1 s window" in out and "SLO gate: FAIL (2 breaches)" in out


def test_gate_input_errors_exit_2(tmp_path: Path) -> None:
    assert slo_gate.main(["--csv", str(tmp_path / "missing")]) == 2
    write_stats(tmp_path / "locust", GOOD_ROWS)
    (tmp_path / "ledger.json").write_text("{}")
    assert slo_gate.main(["--csv", str(tmp_path / "locust"), "--ledger",
                          str(tmp_path / "ledger.json")]) == 2  # fmt: skip


def test_gate_judges_reservation_end_states(tmp_path: Path) -> None:
    now = time.time()
    records = [
        # a direct order, confirmed: fine
        {"id": "d1", "op": "attempt", "priority": "checkout", "hold": None, "t": now - 50},
        {"id": "d1", "op": "create", "status": 201, "state": "held", "t": now - 50},
        # a committed cart hold still held after the drain: unconfirmed
        {"id": "c1", "op": "attempt", "priority": "checkout", "hold": 60, "t": now - 40},
        {"id": "c1", "op": "create", "status": 201, "state": "held", "t": now - 40},
        {"id": "c1", "op": "commit", "status": 200, "state": "held", "t": now - 39},
        # a released hold: fine
        {"id": "r1", "op": "attempt", "priority": "checkout", "hold": 60, "t": now - 40},
        {"id": "r1", "op": "create", "status": 201, "state": "held", "t": now - 40},
        {"id": "r1", "op": "release", "status": 200, "state": "released", "t": now - 38},
        # an abandoned 10 s hold still held 30 s later: not expired on time
        {"id": "a1", "op": "attempt", "priority": "checkout", "hold": 10, "t": now - 30},
        {"id": "a1", "op": "create", "status": 201, "state": "held", "t": now - 30},
        # refused with 409, yet allocated at the ERP
        {"id": "x1", "op": "attempt", "priority": "checkout", "hold": None, "t": now - 20},
        {"id": "x1", "op": "create", "status": 409, "t": now - 20},
        # a direct order the ERP refused
        {"id": "j1", "op": "attempt", "priority": "background", "hold": None, "t": now - 20},
        {"id": "j1", "op": "create", "status": 201, "state": "held", "t": now - 20},
        # attempts that got no answer (the run ended): one never created, one created
        {"id": "u1", "op": "attempt", "priority": "checkout", "hold": 30, "t": now - 1},
        {"id": "u2", "op": "attempt", "priority": "checkout", "hold": None, "t": now - 1},
        {"summary": {"lookups": 100, "lookups_stale": 1}, "t": now},
    ]
    path = tmp_path / "reservations.host-1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    journeys, summary = slo_gate.read_records(str(tmp_path / "reservations.*.jsonl"))
    assert summary == {"lookups": 100, "lookups_stale": 1}
    assert {rid: j.expect for rid, j in journeys.items()} == {
        "d1": "confirm", "c1": "confirm", "r1": "released", "a1": "hold", "x1": "refused",
        "j1": "confirm", "u1": "hold", "u2": "confirm",
    }  # fmt: skip
    assert {rid for rid, j in journeys.items() if j.uncertain} == {"u1", "u2"}
    states: dict[str, str | None] = {"d1": "confirmed", "c1": "held", "r1": "released",
                                     "a1": "held", "j1": "rejected", "u1": None,
                                     "u2": "confirmed"}  # fmt: skip
    at_erp = {"d1": "allocated", "x1": "allocated", "j1": "rejected", "u2": "allocated"}
    book = {"reservations": {rid: {"status": status} for rid, status in at_erp.items()}}
    slo = {"reservations": {"expiry_slack_seconds": 5}}
    found = slo_gate.reservation_checks(journeys, states, book, slo, now, 3.0)
    checks = {c.name.split(" after")[0]: c for c in found}
    unconfirmed = checks["committed/direct reservations not confirmed"]
    assert (unconfirmed.ok, unconfirmed.measured) == (False, "1")
    assert "c1" in unconfirmed.details[0]
    rejected = checks["committed/direct reservations rejected by the ERP"]
    assert (rejected.ok, rejected.measured) == (False, "1")
    wrong = checks["reservations in a wrong end state"]
    assert (wrong.ok, wrong.measured) == (False, "2")
    assert any(d.startswith("a1: still held") for d in wrong.details)
    assert any(d.startswith("x1: never sent to the ERP") for d in wrong.details)
