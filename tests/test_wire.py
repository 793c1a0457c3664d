"""The pipelined script connection (atp_service.wire) against a real redis-server: replies go
to their callers in order, NOSCRIPT reloads in-band, and every failure is a prompt
``Unavailable`` followed by a fresh connection. Each case runs on asyncio's loop and on uvloop
(the service's)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop
from redis.exceptions import ResponseError

from atp_service.errors import Unavailable
from atp_service.wire import Wire, pack

from .procs import RedisProc, wait_until

ECHO = "return {ARGV[1], tonumber(ARGV[2]) * 2}"
SET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"
LOADING = "return redis.error_reply('LOADING fake: the dataset is loading')"
FAILS = "return redis.error_reply('ERR something in the script')"
# SET after ARGV[2] µs of busy work: long enough to be surely in flight when a test drops the link
SLOW_SET = """local t = redis.call('TIME')
repeat local n = redis.call('TIME')
until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"""
SCRIPTS = (ECHO, SET, LOADING, FAILS, SLOW_SET)

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


def sha(client: redis.Redis, source: str) -> str:
    return str(client.script_load(source))


def call(wire: Wire, *args: str | bytes) -> asyncio.Future[Any]:
    return wire.call(pack(*args))


def batch(wire: Wire, commands: list[bytes]) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in commands]
    wire.send(list(zip(commands, futs, strict=True)))
    return futs


@RUNNERS
def test_replies_reach_their_callers_in_order(redis_proc: RedisProc, run: Runner) -> None:
    echo = sha(redis.Redis.from_url(redis_proc.url), ECHO)

    async def main() -> None:
        wire = Wire(redis_proc.url, SCRIPTS)
        try:
            # many batches in flight at once, from many "ticks"
            futs = []
            for b in range(50):
                futs += batch(wire, [pack("EVALSHA", echo, "0", f"c{b}-{i}", str(i))
                                     for i in range(40)])  # fmt: skip
            replies = await asyncio.gather(*futs)
            assert replies == [[f"c{b}-{i}".encode(), 2 * i] for b in range(50) for i in range(40)]
            assert wire.connects == 1
        finally:
            await wire.close()

    run(main())


@RUNNERS
def test_lost_scripts_are_loaded_again_and_errors_reach_the_caller(
    redis_proc: RedisProc, run: Runner
) -> None:
    client = redis.Redis.from_url(redis_proc.url)
    shas = [sha(client, s) for s in SCRIPTS]

    async def main() -> None:
        wire = Wire(redis_proc.url, SCRIPTS)
        try:
            assert await call(wire, "EVALSHA", shas[1], "1", "k", "v1") == b"v1"
            client.script_flush()  # what a Redis restart without its scripts looks like
            futs = batch(wire, [pack("EVALSHA", shas[1], "1", f"k{i}", f"v{i}")
                                for i in range(20)])  # fmt: skip
            assert await asyncio.gather(*futs) == [f"v{i}".encode() for i in range(20)]
            assert client.get("k7") == b"v7"  # each ran once, after the reload
            with pytest.raises(Unavailable, match="LOADING"):  # "not now": a 503, not a 500
                await call(wire, "EVALSHA", shas[2], "0")
            with pytest.raises(ResponseError, match="something in the script"):
                await call(wire, "EVALSHA", shas[3], "0")
            # a script Redis has never seen, and that the wire cannot load: one reload, then
            # the caller gets NOSCRIPT
            with pytest.raises(ResponseError, match="NOSCRIPT"):
                await call(wire, "EVALSHA", "0" * 40, "0")
            assert await call(wire, "EVALSHA", shas[0], "0", "x", "21") == [b"x", 42]
            assert wire.connects == 1
        finally:
            await wire.close()

    run(main())


@RUNNERS
def test_a_hung_redis_fails_calls_within_the_timeout_then_recovers(
    redis_proc: RedisProc, run: Runner
) -> None:
    echo = sha(redis.Redis.from_url(redis_proc.url), ECHO)

    async def main() -> None:
        wire = Wire(redis_proc.url, SCRIPTS, timeout=0.5)
        try:
            assert await call(wire, "EVALSHA", echo, "0", "a", "1") == [b"a", 2]
            redis_proc.pause()
            started = time.monotonic()
            futs = batch(wire, [pack("EVALSHA", echo, "0", "b", "1")] * 10)
            results = await asyncio.gather(*futs, return_exceptions=True)
            took = time.monotonic() - started
            assert all(isinstance(r, Unavailable) for r in results), results
            assert 0.4 < took < 2.0, took
            redis_proc.resume()
            assert await call(wire, "EVALSHA", echo, "0", "c", "2") == [b"c", 4]
            assert wire.connects == 2
        finally:
            redis_proc.resume()
            await wire.close()

    run(main())


@RUNNERS
def test_a_dead_redis_fails_fast_and_a_restarted_one_is_used_again(
    redis_proc: RedisProc, run: Runner
) -> None:
    async def main() -> None:
        wire = Wire(redis_proc.url, SCRIPTS, timeout=5)
        try:
            assert await call(wire, "PING") == b"PONG"
            in_flight = call(wire, "BLPOP", "never", "0")  # waits in Redis until the kill
            await asyncio.sleep(0.05)
            redis_proc.kill9()
            with pytest.raises(Unavailable):
                await in_flight
            started = time.monotonic()
            with pytest.raises(Unavailable):  # refused: at once, not after the timeout
                await call(wire, "PING")
            assert time.monotonic() - started < 1.0
            redis_proc.start()
            assert await call(wire, "PING") == b"PONG"
        finally:
            await wire.close()

    run(main())


def drop(wire: Wire) -> None:
    """Lose the connection as a network fault would (the client side is reset)."""
    assert wire._proto is not None and wire._proto.transport is not None
    wire._proto.transport.abort()


@RUNNERS
def test_calls_in_flight_on_a_lost_connection_are_sent_once_more(
    redis_proc: RedisProc, run: Runner
) -> None:
    client = redis.Redis.from_url(redis_proc.url)
    slow = sha(client, SLOW_SET)

    async def main() -> None:
        wire = Wire(redis_proc.url, SCRIPTS, timeout=5)
        try:
            futs = batch(wire, [pack("EVALSHA", slow, "1", f"k{i}", f"v{i}", "50000")
                                for i in range(5)])  # fmt: skip
            await asyncio.sleep(0.02)  # the first is running in Redis, the rest queued
            drop(wire)
            assert await asyncio.gather(*futs) == [f"v{i}".encode() for i in range(5)]
            assert wire.connects == 2
            # a second loss of the same calls fails them: no endless resending
            futs = batch(wire, [pack("EVALSHA", slow, "1", f"j{i}", "x", "300000")
                                for i in range(3)])  # fmt: skip
            await asyncio.sleep(0.02)
            drop(wire)
            for _ in range(200):
                if wire.connects == 3:
                    break
                await asyncio.sleep(0.005)
            drop(wire)
            results = await asyncio.gather(*futs, return_exceptions=True)
            assert all(isinstance(r, Unavailable) for r in results), results
            assert await call(wire, "PING") == b"PONG"  # and the wire works on
            assert not wire._resent
        finally:
            await wire.close()

    run(main())


@RUNNERS
def test_unix_socket_password_and_database(tmp_path: Path, run: Runner) -> None:
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket",
         str(sock), "--requirepass", "s3cret", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(sock.exists, 10)

        async def main() -> None:
            wire = Wire(f"unix://:s3cret@{sock}?db=3", SCRIPTS)
            refused = Wire(f"unix://:wrong@{sock}?db=3", SCRIPTS)
            try:
                assert await call(wire, "SET", "where", "db3") == b"OK"
                with pytest.raises(Unavailable):
                    await call(refused, "PING")
            finally:
                await wire.close()
                await refused.close()

        run(main())
        client = redis.Redis(unix_socket_path=str(sock), password="s3cret", db=3)
        assert client.get("where") == b"db3"
    finally:
        proc.terminate()
        proc.wait(10)


@RUNNERS
def test_calls_after_close_are_refused(redis_proc: RedisProc, run: Runner) -> None:
    async def main() -> None:
        wire = Wire(redis_proc.url, SCRIPTS)
        assert await call(wire, "PING") == b"PONG"
        await wire.close()
        with pytest.raises(Unavailable, match="shutting down"):
            await call(wire, "PING")

    run(main())
