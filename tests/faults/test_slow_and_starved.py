"""A slow network link to Redis (a delaying TCP proxy in the test), and a replica whose event
loop is frozen (SIGSTOP) while cart holds come due."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import aiohttp

from ..procs import ADMIN, RedisProc, free_port, snapshot
from ..test_replicas import atp, push, reserve


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
    redis_proc: RedisProc, services, http: aiohttp.ClientSession
) -> None:  # type: ignore[no-untyped-def]
    with delaying_proxy(redis_proc.port, 0.03) as port:
        svc = services(ATP_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        await push(http, svc, snapshot("W", "DC1", 1, 50))
        line = [{"sku": "W", "location": "DC1", "qty": 1}]
        t0 = time.monotonic()
        results = await asyncio.gather(*(reserve(http, svc, f"w{i}", line) for i in range(80)))
        took = time.monotonic() - t0
        assert sorted(s for s, _ in results).count(201) == 50  # still never oversold
        assert took < 5  # batched per loop tick: not 80 sequential slow round trips
        lookups = []
        for _ in range(20):
            t = time.perf_counter()
            assert await atp(http, svc, "W") == 0
            lookups.append(time.perf_counter() - t)
        assert max(lookups) < 0.06  # never waits on the slow link (a round trip is >= 60 ms)


async def test_holds_expire_while_a_replica_is_frozen(
    services, http: aiohttp.ClientSession
) -> None:  # type: ignore[no-untyped-def]
    frozen, other = services(), services()
    await push(http, frozen, snapshot("E", "DC1", 1, 10))
    ids = [f"e{i}" for i in range(5)]
    for rid in ids:
        status, _ = await reserve(http, frozen, rid, [{"sku": "E", "location": "DC1", "qty": 2}],
                                  hold_seconds=1)  # fmt: skip
        assert status == 201
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)  # its loop (and its expiry sweep) stops dead
    try:
        await asyncio.sleep(1.5)
        assert await atp(http, other, "E") == 10  # the other replica expired them on time
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 5
    while await atp(http, frozen, "E") != 10:  # the frozen one catches up on resume
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # its own late sweep must not return the stock a second time
    assert await atp(http, frozen, "E") == 10
    assert await atp(http, other, "E") == 10
    for rid in ids:
        async with http.get(f"{other.url}/v1/reservations/{rid}", headers=ADMIN) as r:
            assert (await r.json())["status"] == "expired"
