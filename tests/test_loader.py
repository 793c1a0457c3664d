"""`atp-service load`: a snapshot CSV or an event JSONL reaches a real replica through
POST /v1/events; refused rows are listed by line; a re-run changes nothing; a progress bar."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from .procs import ADMIN, ServiceProc, snapshot


def load(svc_url: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atp_service.cli", "load", *args, "--url", svc_url,
         "--key", "test-admin", "--retries", "0"],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def numbers(out: str) -> dict[str, int]:
    """The summary table's first two lines -> {column: value}."""
    head, values = out.splitlines()[:2]
    return dict(zip(head.split(), (int(v.replace(",", "")) for v in values.split()), strict=True))


def lookup(svc: ServiceProc, sku: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{svc.url}/v1/availability/{sku}", headers=ADMIN)
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_csv_snapshots_load_and_a_rerun_changes_nothing(services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = services()
    rows = ["sku,location,on_hand,allocated,safety_stock,seq"]
    rows += [f"L{i},DC{j},{10 + i},{j},1,{5 + i}" for i in range(300) for j in range(3)]
    path = tmp_path / "stock.csv"
    path.write_text("\n".join(rows) + "\n")
    first = load(svc.url, str(path), "--batch", "250")
    assert first.returncode == 0, first.stderr
    assert numbers(first.stdout) == {"READ": 900, "APPLIED": 900, "DUPLICATES": 0,
                                     "BUFFERED": 0, "REFUSED": 0}  # fmt: skip
    assert "loading [" in first.stderr and "900/900" in first.stderr  # the progress bar
    body = lookup(svc, "L7")
    assert {x["location"]: (x["on_hand"], x["atp"], x["seq"]) for x in body["locations"]} == {
        "DC0": (17, 16, 12), "DC1": (17, 15, 12), "DC2": (17, 14, 12),
    }  # fmt: skip
    again = load(svc.url, str(path))
    assert again.returncode == 0, again.stderr
    assert numbers(again.stdout)["DUPLICATES"] == 900 and numbers(again.stdout)["APPLIED"] == 0
    assert lookup(svc, "L7") == body


def test_refused_rows_are_listed_by_line_and_the_rest_applies(services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = services()
    good = [snapshot("J1", "DC1", 1, 10), snapshot("J2", "DC1", 1, 10)]
    lines = [json.dumps(good[0]), "{not json", json.dumps({**good[1], "on_hand": -5}), "",
             json.dumps(good[1])]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = load(svc.url, str(path))
    assert result.returncode == 3, result.stderr
    assert numbers(result.stdout) == {"READ": 4, "APPLIED": 2, "DUPLICATES": 0,
                                      "BUFFERED": 0, "REFUSED": 2}  # fmt: skip
    rows = [line.strip() for line in result.stdout.splitlines()[4:]]
    refused = {int(row.split()[0]): row for row in rows if row[:1].isdigit()}
    assert set(refused) == {2, 3}, result.stdout
    assert "invalid JSON" in refused[2] and "on_hand" in refused[3]
    assert lookup(svc, "J2")["total_atp"] == 10


def test_stdin_csv_and_bad_input(services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = services()
    csv = b"sku,location,on_hand,seq\nK1,DC1,4,1\nK1,DC2,x,1\n"
    result = load(svc.url, "-", "--format", "csv", stdin=csv)
    assert result.returncode == 3, result.stderr
    assert numbers(result.stdout)["APPLIED"] == 1
    assert "on_hand: not an integer: 'x'" in result.stdout
    no_header = tmp_path / "bad.csv"
    no_header.write_text("sku,location,qty\nK1,DC1,3\n")
    result = load(svc.url, str(no_header))
    assert result.returncode == 1 and "CSV header lacks on_hand, seq" in result.stderr
    result = load(svc.url, str(tmp_path / "missing.jsonl"))
    assert result.returncode == 1 and "cannot read" in result.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps(snapshot("K9", "DC1", 1, 1)) + "\n")
    result = load("http://127.0.0.1:9", str(empty))
    assert result.returncode == 1 and "cannot reach" in result.stderr
    wrong_key = subprocess.run(
        [sys.executable, "-m", "atp_service.cli", "load", str(empty), "--url", svc.url,
         "--key", "nope", "--retries", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong_key.returncode == 1 and "401" in wrong_key.stderr
