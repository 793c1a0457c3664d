"""Rolling upgrade: the previous version and this one serve side by side on one Redis.

A rolling deploy runs replicas of two versions against the same shared state for minutes.
Each must read what the other wrote (inventory records, reservations, outbox entries, the
change stream, loaded scripts), and neither may oversell against the other. ``PREVIOUS`` is the
version that runs in production before this one: bump it when a release ships, and a change
to a stored format then fails here until it reads both the old format and the new.

The previous version's ``atp_service`` comes from git (``git archive``), so the test is skipped
where there is no history (a source tarball). CI runs on a clone of main, which has it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .procs import ADMIN, ErpSimProc, ServiceProc, snapshot
from .test_gateway import SKUS, admin, all_status, assert_erp_consistent, line, lookup_ok, wait_for
from .test_replicas import eventually_atp, push, reserve

# The last release: what main was when session 5 closed, with CI green (2026-12-04).
PREVIOUS = "4d85a7b"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def previous_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the previous version's ``atp_service`` package."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", PREVIOUS, "atp_service"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git history holding {PREVIOUS} here ({exc})")
    dest = tmp_path_factory.mktemp("previous")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # The replica started with code=dest imports this copy, not the working tree's.
    where = subprocess.run(
        [sys.executable, "-c", "import atp_service; print(atp_service.__file__)"],
        capture_output=True, text=True, check=True, cwd=dest,
        env={**os.environ, "PYTHONPATH": str(dest)},
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(dest), where
    return dest


async def get(http: aiohttp.ClientSession, svc: ServiceProc, rid: str) -> dict[str, Any]:
    async with http.get(f"{svc.url}/v1/reservations/{rid}", headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_previous_and_current_replicas_share_state_and_never_oversell(
    services, http, previous_code: Path
) -> None:  # type: ignore[no-untyped-def]
    old, new = services(code=previous_code), services()
    await push(http, old, snapshot("HOT", "DC1", 1, 100), snapshot("C", "DC1", 1, 50))
    one = [{"sku": "HOT", "location": "DC1", "qty": 1}]
    results = await asyncio.gather(
        *(reserve(http, (old, new)[i % 2], f"u{i}", one) for i in range(300))
    )
    statuses = [s for s, _ in results]
    assert (statuses.count(201), statuses.count(409)) == (100, 200)
    await eventually_atp(http, (old, new), "HOT", 0)

    # Which version won the race above is up to scheduling: each now takes one of its own.
    c1 = [{"sku": "C", "location": "DC1", "qty": 1}]
    for maker, rid in ((old, "x-old"), (new, "x-new")):
        status, _ = await reserve(http, maker, rid, c1)
        assert status == 201
    # Each version reads the other's reservation the same way; a replay on the other version
    # is the same reservation, another body a conflict.
    for other, rid in ((new, "x-old"), (old, "x-new")):
        assert await get(http, old, rid) == await get(http, new, rid)
        status, body = await reserve(http, other, rid, c1)
        assert status == 200 and body == await get(http, other, rid)
        status, body = await reserve(http, other, rid, [{**c1[0], "qty": 2}])
        assert status == 409 and body["type"].endswith("/idempotency-conflict")
    await eventually_atp(http, (old, new), "C", 48)

    # A cart hold taken on the previous version, committed on this one, read on both.
    status, body = await reserve(
        http, old, "cart-1", [{"sku": "C", "location": "DC1", "qty": 5}], hold_seconds=60
    )
    assert status == 201 and body["status"] == "held"
    await eventually_atp(http, (old, new), "C", 43)
    async with http.post(f"{new.url}/v1/reservations/cart-1/commit", headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        committed = await r.json()
    assert committed["status"] == "confirmed" and committed["committed"] is True
    assert await get(http, old, "cart-1") == committed

    # A reservation taken on this version, released on the previous one: the stock returns.
    status, _ = await reserve(http, new, "n-1", [{"sku": "C", "location": "DC1", "qty": 3}])
    assert status == 201
    await eventually_atp(http, (old, new), "C", 40)
    async with http.delete(f"{old.url}/v1/reservations/n-1", headers=ADMIN) as r:
        assert r.status == 200 and (await r.json())["status"] == "released"
    await eventually_atp(http, (old, new), "C", 43)


async def test_what_the_previous_version_queued_for_the_erp_this_one_confirms_once(
    services, http, tmp_path: Path, erp_sims: list[ErpSimProc], previous_code: Path
) -> None:  # type: ignore[no-untyped-def]
    """The previous version's outbox entries, written during an ERP outage, are sent by this
    version once the previous one is gone (killed mid-deploy): each exactly once."""
    erp = ErpSimProc([], log=tmp_path / "erp.log")
    env = {"ATP_ERP_URL": erp.url, "ATP_ERP_RATE": "20", "ATP_ERP_TIMEOUT": "2"}
    new = services(**env)
    old = services(code=previous_code, **env)
    erp.args = ["--rate", "1000", "--burst", "1", "--latency-ms", "5", "--publish-url",
                new.url, "--publish-key", "test-admin"]  # fmt: skip
    erp_sims.append(erp.start())
    stock = [{"sku": s, "location": "DC1", "on_hand": 1000} for s in SKUS]
    await admin(http, erp, "POST", "/admin/stock", {"items": stock})
    for svc in (new, old):
        await wait_for(lambda svc=svc: lookup_ok(http, svc, SKUS[-1]), 20)

    await admin(http, erp, "POST", "/admin/faults", {"outage": True})
    ids = [f"q{i}" for i in range(30)]
    results = await asyncio.gather(
        *(reserve(http, old, rid, line(i, qty=2)) for i, rid in enumerate(ids))
    )
    assert {s for s, _ in results} == {201}
    assert {body["status"] for _, body in results} == {"held"}
    old.kill9()
    await admin(http, erp, "DELETE", "/admin/faults")
    await wait_for(lambda: all_status(http, new, ids, "confirmed"), 40, 0.5)
    ledger = await assert_erp_consistent(http, erp, ids)  # each allocated exactly once
    assert sum(k["allocated"] for k in ledger["keys"]) == 30 * 2
