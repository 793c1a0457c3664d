"""Script-call transport benchmark: ``atp_service.wire.Wire`` (every tick's calls, up to
``store.FLUSH_AT`` a write, on one pipelined connection, replies matched in order by hiredis)
against the two ways redis-py offers, side by side in one run:

- ``pool``: what ``Store`` did before the wire: each tick's calls in one write on a connection
  checked out of redis-py's ``BlockingConnectionPool``, then one ``read_response`` per reply;
- ``naive``: one ``client.evalsha`` per call.

N callers in this process (pinned to one core; redis-server on the other) each send the same
small script call (``reserve.lua``-sized: 7 keys, 14 arguments) in a loop. Reported: calls/s
and this process's CPU-µs per call at N = 1, 8 and 64, medians of repeats run interleaved.

    .venv/bin/python -m benchmarks.wire            # ~1 minute
    .venv/bin/python -m benchmarks.wire --quick
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import uvloop

from .common import (
    Procs,
    Target,
    base_parser,
    cpus,
    log,
    machine_facts,
    md_table,
    median,
    out_dir,
    use_ref,
    workdir,
    write_results,
)

IMPLS = ("wire", "pool", "naive")
SCRIPT = "return {'created', ARGV[1], ARGV[2]}"
ARGS = [f"a{i}" for i in range(14)]
KEYS = [f"k{i}" for i in range(7)]


def _pool_caller(client: Any, command: bytes) -> Callable[[], Awaitable[Any]]:
    """The pre-wire Store: per tick, a pool checkout, one write, a read per reply."""
    queue: list[asyncio.Future[Any]] = []

    async def execute(batch: list[asyncio.Future[Any]]) -> None:
        pool = client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(command * len(batch), check_health=False)
            for fut in batch:
                fut.set_result(await conn.read_response())
        finally:
            await pool.release(conn)

    def flush() -> None:
        batch = queue[:]
        queue.clear()
        asyncio.get_running_loop().create_task(execute(batch))

    def call() -> Awaitable[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not queue:
            loop.call_soon(flush)
        queue.append(fut)
        return fut

    return call


async def _measure(impl: str, url: str, callers: int, calls: int) -> dict[str, Any]:
    from atp_service.store import Store, connect, pack

    client = connect(url)
    sha = await client.script_load(SCRIPT)
    command = pack("EVALSHA", sha, len(KEYS), *KEYS, *ARGS)
    store = Store(client, url)  # the service's path: per tick, Wire.send of its calls
    if impl == "wire":

        def call() -> Awaitable[Any]:
            return store.run_packed(command)

    elif impl == "pool":
        call = _pool_caller(client, command)
    else:
        plain = aioredis.Redis.from_url(url, max_connections=callers)

        def call() -> Awaitable[Any]:
            return plain.evalsha(sha, len(KEYS), *KEYS, *ARGS)  # type: ignore[no-any-return]

    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reply = await call()
            assert reply[0] == b"created", reply

    left = 20 * callers  # warm-up: connections made, scripts cached
    await asyncio.gather(*(caller() for _ in range(callers)))
    left = calls
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await store.close()
    await client.aclose()
    if impl == "naive":
        await plain.aclose()
    return {"impl": impl, "callers": callers, "calls_per_s": calls / wall,
            "cpu_us_per_call": cpu / calls * 1e6}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=None, help="calls per run")
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    repeats = args.repeats or (1 if args.quick else 3)
    calls = args.calls or (2_000 if args.quick else 20_000)
    server_cpu, client_cpu = cpus(args)
    if server_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in server_cpu.split(",")})
    levels = (1, 8, 64)
    runs: list[dict[str, Any]] = []
    with workdir("wire") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=client_cpu, aof=False)
        for rep in range(repeats):
            for callers in levels:
                order = IMPLS if rep % 2 == 0 else tuple(reversed(IMPLS))
                for impl in order:
                    n = max(calls // 10, 1000) if callers == 1 else calls
                    res = uvloop.run(_measure(impl, rp.url, callers, n))
                    res["repeat"] = rep
                    runs.append(res)
                    log(f"wire {impl:5s} callers={callers:2d} rep={rep}: "
                        f"{res['calls_per_s']:,.0f} calls/s, "
                        f"{res['cpu_us_per_call']:.1f} CPU-µs/call")  # fmt: skip
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for impl in IMPLS:
        summary[impl] = {}
        for callers in levels:
            mine = [r for r in runs if r["impl"] == impl and r["callers"] == callers]
            summary[impl][callers] = {
                "calls_per_s": median([r["calls_per_s"] for r in mine]),
                "cpu_us_per_call": median([r["cpu_us_per_call"] for r in mine]),
            }
    rows = []
    for callers in levels:
        w, p, n = (summary[i][callers] for i in IMPLS)
        rows.append([
            callers,
            f"{w['calls_per_s']:,.0f}", f"{p['calls_per_s']:,.0f}", f"{n['calls_per_s']:,.0f}",
            f"{w['cpu_us_per_call']:.1f}", f"{p['cpu_us_per_call']:.1f}",
            f"{n['cpu_us_per_call']:.1f}",
            f"{p['cpu_us_per_call'] / w['cpu_us_per_call']:.1f}x",
        ])  # fmt: skip
    at64 = summary["wire"][64]["cpu_us_per_call"] / summary["pool"][64]["cpu_us_per_call"]
    targets = [
        Target(
            "wire CPU per call vs the pooled path, 64 callers",
            "< 1x",
            f"{at64:.2f}x ({summary['wire'][64]['cpu_us_per_call']:.1f} / "
            f"{summary['pool'][64]['cpu_us_per_call']:.1f} µs)",
            at64 < 1,
        )
    ]
    body = (
        "## Results (medians)\n\n"
        + md_table(
            [
                "callers",
                "wire calls/s",
                "pool calls/s",
                "naive calls/s",
                "wire CPU-µs/call",
                "pool CPU-µs/call",
                "naive CPU-µs/call",
                "pool / wire CPU",
            ],
            rows,
        )
        + "\n## Setup\n\n"
        + f"- {repeats} repeat(s), implementations interleaved (order reversed every other "
        f"repeat); {calls:,} calls per run ({max(calls // 10, 1000):,} with 1 caller)\n"
        + f"- this process pinned to core {server_cpu}, redis-server (no AOF) to core "
        f"{client_cpu}; CPU is this process's user+system time over the run\n"
        + "- script: `"
        + SCRIPT
        + "`, called with 7 keys and 14 arguments (the size of a "
        "reserve call)\n"
    )
    data = {"machine": machine_facts(), "repeats": repeats, "calls": calls, "runs": runs,
            "summary": summary}  # fmt: skip
    write_results("wire", out_dir(args), "Wire benchmark: script calls per transport", data,
                  body, targets, args.quick)  # fmt: skip
    return data


if __name__ == "__main__":
    main()
