"""A slow network link to Redis or to the ERP (a delaying TCP proxy in the test), and a replica
whose event loop is frozen (SIGSTOP) or starved of CPU (stress-ng on its core) while cart holds
come due."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from atp_service import keys
from atp_service.inventory import PENDING

from ..procs import ADMIN, ErpSimProc, RedisProc, ServiceProc, free_port, snapshot
from ..test_gateway import (
    SKUS,
    admin,
    all_status,
    assert_erp_consistent,
    line,
    lookup_ok,
    wait_for,
)
from ..test_replicas import atp, push, reserve
from .load import Seen, lookups, reservations, stored_state


@contextlib.contextmanager
def delaying_proxy(target_port: int, delay: float) -> Iterator[int]:
    """127.0.0.1:<port> -> 127.0.0.1:<target_port>, every chunk held back ``delay`` seconds
    each way (a slow link: latency, not loss). Runs on its own thread and event loop, so the
    test's own (sometimes blocking) waits cannot stall it."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        started.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    try:
        yield port
    finally:

        def stop() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()

        loop.call_soon_threadsafe(stop)
        thread.join(5)
        loop.close()


async def test_slow_link_to_redis_is_slower_but_correct(
    redis_proc: RedisProc, services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("slow link to Redis: +30 ms each way through a delaying proxy")
    with delaying_proxy(redis_proc.port, 0.03) as port:
        svc = services(ATP_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        await push(http, svc, snapshot("W", "DC1", 1, 50))
        line = [{"sku": "W", "location": "DC1", "qty": 1}]
        rec.mark("start")
        t0 = time.monotonic()

        async def one(i: int) -> int:
            async with rec.timed("reserve (80 at once)"):
                status, _ = await reserve(http, svc, f"w{i}", line)
            return status

        results = await asyncio.gather(*(one(i) for i in range(80)))
        took = time.monotonic() - t0
        assert sorted(results).count(201) == 50  # still never oversold
        assert took < 5  # batched per loop tick: not 80 sequential slow round trips
        lookups = []
        for _ in range(20):
            async with rec.timed("lookup"):
                t = time.perf_counter()
                assert await atp(http, svc, "W") == 0
                lookups.append(time.perf_counter() - t)
        rec.mark("end")
        assert max(lookups) < 0.06  # never waits on the slow link (a round trip is >= 60 ms)
        stored, record = await stored_state(redis_proc.url, "W|DC1")
        rec.count(accepted=50, refused_short_409=results.count(409), lost=50 - len(stored))
        assert len(stored) == 50 and record[PENDING] == 50
        rec.note(f"80 concurrent reservations over a >= 60 ms round trip took {took:.2f} s")


async def test_holds_expire_while_a_replica_is_frozen(
    services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    rec = fault_report("a replica frozen (SIGSTOP 1.5 s) while its cart holds come due")
    frozen, other = services(), services()
    await push(http, frozen, snapshot("E", "DC1", 1, 10))
    ids = [f"e{i}" for i in range(5)]
    for rid in ids:
        status, _ = await reserve(http, frozen, rid, [{"sku": "E", "location": "DC1", "qty": 2}],
                                  hold_seconds=1)  # fmt: skip
        assert status == 201
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)  # its loop (and its expiry sweep) stops dead
    rec.mark("start")
    try:
        await asyncio.sleep(1.5)
        assert await atp(http, other, "E") == 10  # the other replica expired them on time
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
        rec.mark("end")
    deadline = time.monotonic() + 5
    while await atp(http, frozen, "E") != 10:  # the frozen one catches up on resume
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    rec.mark("recovered")
    await asyncio.sleep(0.5)  # its own late sweep must not return the stock a second time
    assert await atp(http, frozen, "E") == 10
    assert await atp(http, other, "E") == 10
    for rid in ids:
        async with http.get(f"{other.url}/v1/reservations/{rid}", headers=ADMIN) as r:
            assert (await r.json())["status"] == "expired"
    rec.count(holds=5, expired=5, returned_twice=0, lost=0)
    rec.note("recovered = the frozen replica's cache shows the returned stock after SIGCONT")


NICE = -10  # the hogs' priority: above the replica's (0)


def _pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to ``cpu``."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def _hog(workers: int, cpu: int, seconds: int, nice: int) -> subprocess.Popen[bytes]:
    """``workers`` stress-ng CPU hogs at 100% on ``cpu`` for ``seconds``, at ``nice``."""
    return subprocess.Popen(
        ["nice", "-n", str(nice), "stress-ng", "--cpu", str(workers), "--cpu-load", "100",
         "--taskset", str(cpu), "--timeout", f"{seconds}s", "--quiet"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("stress-ng") and shutil.which("taskset")),
                    reason="needs stress-ng and taskset")  # fmt: skip
async def test_holds_expire_while_the_replica_is_starved_of_cpu(
    redis_proc: RedisProc, services, http: aiohttp.ClientSession, fault_report
) -> None:  # type: ignore[no-untyped-def]
    """The replica pinned to core 0, with stress-ng CPU hogs pinned there too at a higher
    priority (nice -10: the replica's fair share is ~1/40 of the core), while reservations and
    1 s cart holds keep coming: every hold still expires within a bound, its stock comes back
    exactly once, and every 201 survives."""
    hogs = 4
    rec = fault_report(f"replica starved of CPU: pinned to core 0 with {hogs} stress-ng hogs at "
                       f"nice {NICE} (~1/40 of the core left) for 8 s while 1 s cart holds "
                       "come due")  # fmt: skip
    svc = services()
    await push(http, svc, snapshot("H", "DC1", 1, 100_000))
    assert svc.proc is not None
    _pin(svc.proc.pid, 0)
    seen = Seen()
    qty_line = [{"sku": "H", "location": "DC1", "qty": 1}]
    hog: subprocess.Popen[bytes] | None = None
    wall: dict[str, float] = {}

    async def chaos() -> None:
        nonlocal hog
        await asyncio.sleep(2.0)
        hog = _hog(hogs, cpu=0, seconds=8, nice=NICE)
        rec.mark("start")
        wall["start"] = time.time() * 1000
        await asyncio.to_thread(hog.wait, 20)
        rec.mark("end")
        wall["end"] = time.time() * 1000

    try:
        until = time.monotonic() + 12
        await asyncio.gather(
            *(reservations(http, svc, qty_line, rec, seen, until, f"c{n}", timeout=30,
                           pause=0.02, hold_every=2) for n in range(4)),
            lookups(http, svc, "H", rec, seen, until, interval=0.02),
            chaos(),
        )  # fmt: skip
    finally:
        if hog is not None and hog.poll() is None:
            hog.kill()
            hog.wait(5)
    await asyncio.sleep(1.5)  # the last holds come due
    accepted = seen.accepted()
    holds = [rid for rid in accepted if rid.endswith("-h")]
    plain = [rid for rid in accepted if not rid.endswith("-h")]
    assert len(holds) > 20 and len(plain) > 20
    client = aioredis.Redis.from_url(redis_proc.url)
    try:
        late_ms: list[tuple[float, float]] = []  # (when due, how late it expired)
        statuses: dict[str, str] = {}
        for rid in accepted:
            res = await client.hgetall(keys.reservation(rid))
            assert res, f"{rid} answered 201 but is gone"
            statuses[rid] = res[b"status"].decode()
            if rid.endswith("-h") and statuses[rid] == "expired":
                due = int(res[b"expires_ms"])
                late_ms.append((due, int(res[b"updated_ms"]) - due))
        _, record = await stored_state(redis_proc.url, "H|DC1")
    finally:
        await client.aclose()
    assert {statuses[rid] for rid in holds} == {"expired"}
    assert {statuses[rid] for rid in plain} == {"confirmed"}
    # Each hold's stock came back exactly once: what is still held is the plain ones, exactly.
    assert record[PENDING] == len(plain), (record[PENDING], len(plain))
    assert await atp(http, svc, "H") == 100_000 - len(plain)
    worst = max(ms for _, ms in late_ms)
    starved = sorted(ms for due, ms in late_ms if wall["start"] <= due <= wall["end"])
    assert len(starved) > 10  # holds really came due while the replica was starved
    rec.count(accepted=len(accepted), holds_expired=len(holds), confirmed=len(plain),
              returned_twice=record[PENDING] - len(plain), lost=0)  # fmt: skip
    for name, lateness in (("all", sorted(ms for _, ms in late_ms)), ("starved", starved)):
        rec.note(f"hold expiry lateness, {len(lateness)} holds due ({name}): p50 "
                 f"{lateness[len(lateness) // 2]} ms, p99 {lateness[int(len(lateness) * 0.99)]}"
                 f" ms, max {lateness[-1]} ms (the sweep runs every 0.1 s)")  # fmt: skip
    assert worst < 3000, worst  # a bound that holds on a busy shared box


async def test_slow_link_to_the_erp(
    services,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    erp_sims: list[ErpSimProc],
    fault_report,
) -> None:  # type: ignore[no-untyped-def]
    """The gateway talks to the ERP through a link that adds 250 ms each way: every accepted
    reservation is confirmed, allocated exactly once at the ERP, and nothing is oversold."""
    rec = fault_report("slow link to the ERP: +250 ms each way through a delaying proxy")
    erp = ErpSimProc([], log=tmp_path / "erp.log")
    with delaying_proxy(erp.port, 0.25) as port:
        svc: ServiceProc = services(ATP_ERP_URL=f"http://127.0.0.1:{port}", ATP_ERP_RATE="50",
                                    ATP_ERP_TIMEOUT="2")  # fmt: skip
        erp.args = ["--rate", "1000", "--burst", "1", "--latency-ms", "5", "--latency-p99-ms",
                    "20", "--publish-url", svc.url, "--publish-key", "test-admin"]  # fmt: skip
        erp_sims.append(erp.start())
        stock = [{"sku": s, "location": "DC1", "on_hand": 10} for s in SKUS]
        await admin(http, erp, "POST", "/admin/stock", {"items": stock})
        await wait_for(lambda: lookup_ok(http, svc, SKUS[-1]), 20)
        rec.mark("start")
        ids = [f"s{i}" for i in range(150)]

        async def one(i: int, rid: str) -> int:
            async with rec.timed("reserve (150 at once)"):
                status, _ = await reserve(http, svc, rid, line(i))
            return status

        results = await asyncio.gather(*(one(i, rid) for i, rid in enumerate(ids)))
        accepted = [rid for rid, s in zip(ids, results, strict=True) if s == 201]
        assert len(accepted) == 100 and results.count(409) == 50  # 10 per sku, no more
        t0 = time.monotonic()
        await wait_for(lambda: all_status(http, svc, accepted, "confirmed"), 40, 0.25)
        confirm_s = time.monotonic() - t0
        rec.mark("end")
        ledger = await assert_erp_consistent(http, erp, accepted)  # each allocated once
        allocated = sum(k["allocated"] for k in ledger["keys"])
        assert allocated == 100
        calls = [ledger["reservations"][rid]["calls"] for rid in accepted]
        for _ in range(50):
            async with rec.timed("lookup"):
                assert await atp(http, svc, SKUS[0]) == 0
        rec.count(accepted=len(accepted), refused_short_409=results.count(409),
                  erp_allocations=allocated, erp_calls=sum(calls), lost=0)  # fmt: skip
        rec.note(f"all 100 confirmed {confirm_s:.2f} s after the last 201 (ERP round trip "
                 ">= 500 ms, 16 calls in flight)")  # fmt: skip
