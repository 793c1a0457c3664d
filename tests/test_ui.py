"""The stock page in a real headless Chromium (Debian's ``chromium``, driven by playwright-core
from npm: tests/ui/). A real replica on a real port serves it; the test types a wrong key, then
the right one, looks up SKUs, and checks what a sales rep would read: ATP per location and per
group, status colours, pending holds, freshness, and a readable 401. The screenshot lands in
tests/artifacts/stock-page.png.

Skipped only when no chromium binary exists (``scripts/setup test`` installs it); a missing
node or playwright-core is a failure, not a skip, so CI cannot pass without the browser test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .procs import ADMIN, ServiceProc, snapshot

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "ui" / "drive.js"
ARTIFACTS = HERE / "artifacts"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


pytestmark = pytest.mark.skipif(
    chromium() is None,
    reason="no chromium binary (Debian: apt-get install chromium; scripts/setup test does it)",
)


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={**ADMIN, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def drive(options: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is missing: run scripts/setup test"
    assert (HERE / "ui" / "node_modules" / "playwright-core").is_dir(), (
        "tests/ui/node_modules is missing: run scripts/setup test (npm ci in tests/ui)"
    )
    done = subprocess.run(
        [node, str(DRIVER), json.dumps(options)], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_stock_page_in_a_real_browser(services: Callable[..., ServiceProc]) -> None:
    svc = services()  # ATP_LOCATION_GROUPS=EAST=DC1,ST1 (conftest)
    events = [
        snapshot("S1", "DC1", 1, 100, 5, 2),  # ATP 93, in stock
        snapshot("S1", "ST1", 1, 4),  # ATP 4, low
        snapshot("S2", "DC1", 1, 3, 3),  # ATP 0, out
        snapshot("S2", "ST1", 1, 10),  # 10, less a hold of 2: 8, in stock
    ]
    assert post(svc.url + "/v1/events", {"events": events})["applied"] == 4
    hold = {"reservation_id": "quote-1", "priority": "sales", "hold_seconds": 3600,
            "lines": [{"sku": "S2", "location": "ST1", "qty": 2}]}  # fmt: skip
    assert post(svc.url + "/v1/reservations", hold)["status"] == "held"

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = ARTIFACTS / "stock-page.png"
    shot.unlink(missing_ok=True)
    seen = drive({
        "url": svc.url, "chromium": chromium(), "badKey": "not-a-key", "key": "test-read",
        "skus": "S1, S2\nNOPE bad/sku", "screenshot": str(shot),
        "errorScreenshot": str(ARTIFACTS / "stock-page-401.png"),
    })  # fmt: skip

    errors = [c for c in seen["console"] if c.startswith(("error", "pageerror"))]
    # the browser logs each 4xx answer (the wrong key's 401, NOPE's 404); nothing else
    assert all("Failed to load resource" in c and ("401" in c or "404" in c) for c in errors), (
        errors
    )
    assert seen["keyFormShown"] is True
    assert seen["badKeyMessage"].startswith("401 Missing or unknown API key: unknown API key.")
    assert "Paste a valid API key" in seen["badKeyMessage"]
    assert "request id" in seen["badKeyMessage"]
    assert seen["keyFormAfter401"] is True
    assert seen["keyStored"] == "test-read"
    assert seen["message"] is None, seen["message"]

    table = {(r["kind"], r["sku"], r["name"]): r for r in seen["rows"]}
    expect = {
        ("sku", "S1", None): ("97", "in_stock"),
        ("location", "S1", "DC1"): ("93", "in_stock"),
        ("location", "S1", "ST1"): ("4", "low_stock"),
        ("group", "S1", "EAST"): ("97", "in_stock"),
        ("sku", "S2", None): ("8", "in_stock"),
        ("location", "S2", "DC1"): ("0", "out_of_stock"),
        ("location", "S2", "ST1"): ("8", "in_stock"),
        ("group", "S2", "EAST"): ("8", "in_stock"),
        ("sku", "NOPE", None): ("0", "unknown"),
        ("sku", "bad/sku", None): ("0", "unknown"),
    }
    assert {k: (r["atp"], r["status"]) for k, r in table.items()} == expect
    for row in seen["rows"]:
        assert f"st-{row['status']}" in row["classes"].split(), row
    # the colours differ by status (in, low, out, unknown)
    colours = {r["status"]: r["badgeColor"] for r in seen["rows"]}
    assert len(set(colours.values())) == 4, colours
    # on hand, allocated, safety, pending holds, seq
    assert table[("location", "S1", "DC1")]["cells"][3:] == ["100", "5", "2", "0", "1"]
    assert table[("location", "S2", "ST1")]["cells"][3:] == ["10", "0", "0", "2", "1"]
    assert table[("group", "S1", "EAST")]["cells"][0] == "EAST (DC1, ST1)"
    assert "unknown SKU" in table[("sku", "NOPE", None)]["cells"][-1]
    assert "not a valid SKU" in table[("sku", "bad/sku", None)]["cells"][-1]
    assert [r["sku"] for r in seen["rows"] if r["kind"] == "sku"] == ["S1", "S2", "NOPE", "bad/sku"]

    assert seen["freshness"].startswith("Live data: last update read "), seen["freshness"]
    assert seen["service"].startswith("Service ok"), seen["service"]
    assert "ERP standalone" in seen["service"]

    assert seen["keyFormAfterReload"] is False
    assert seen["reloadRows"] == [
        ["sku", None, "97"], ["location", "DC1", "93"], ["location", "ST1", "4"],
        ["group", "EAST", "97"],
    ]  # fmt: skip
    assert shot.stat().st_size > 10_000
