"""Fixtures: a real redis-server per test, service replicas as real processes, and an
in-process app (same code, same Redis) for the many-request tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from atp_service.app import SERVICE, create_app
from atp_service.config import Settings
from atp_service.http.server import ProblemRunner

from .kafka import Broker
from .procs import KEYS, ErpSimProc, RedisProc, ServiceProc

KAFKA_TOPIC = "erp.inventory.v1"  # the contract's default topic, as the Kafka tests use it


class ServiceServer(TestServer):
    """aiohttp's test server with the runner ``atp-service serve`` uses (its problem answers
    and hot routes), so in-process tests take the same request path as the real server."""

    async def _make_runner(self, **kwargs: object) -> ProblemRunner:
        return ProblemRunner(self.app, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A real Kafka-protocol broker (tests/kafka.py) with the topic and its DLQ."""
    b = Broker(tmp_path / "broker.log").start()
    await b.create_topic(KAFKA_TOPIC, 4)
    await b.create_topic(KAFKA_TOPIC + ".dlq", 1)
    yield b
    b.stop()


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    server = RedisProc(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def services(redis_proc: RedisProc, tmp_path: Path) -> Iterator[Callable[..., ServiceProc]]:
    """Factory: ``services(ATP_X="...")`` starts one more replica on the shared Redis;
    ``code=DIR`` runs the ``atp_service`` in DIR instead of this one."""
    started: list[ServiceProc] = []

    def start(wait_ready: bool = True, code: Path | None = None, **env: str) -> ServiceProc:
        proc = ServiceProc(
            {"ATP_REDIS_URL": redis_proc.url, "ATP_LOCATION_GROUPS": "EAST=DC1,ST1", **env},
            log=tmp_path / f"service-{len(started)}.log",
            code=code,
        )
        started.append(proc)
        return proc.start(wait_ready)

    yield start
    for proc in started:
        proc.stop()


def settings_for(redis_url: str, **overrides: object) -> Settings:
    env = {
        "ATP_REDIS_URL": redis_url,
        "ATP_API_KEYS": KEYS,
        "ATP_LOCATION_GROUPS": "EAST=DC1,ST1;WEST=DC2",
        "ATP_EXPIRY_INTERVAL": "0.05",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


async def start_app(redis_url: str, **env: str) -> TestClient:  # type: ignore[type-arg]
    """The real app in this process on ``redis_url`` (``env``: settings over
    :func:`settings_for`'s), served as ``atp-service serve`` serves it, its cache warm."""
    app = create_app(settings_for(redis_url, **env))
    client = TestClient(ServiceServer(app))
    await client.start_server()
    tailer = app[SERVICE].tailer
    for _ in range(200):
        if tailer.ready:
            break
        await asyncio.sleep(0.01)
    assert tailer.ready
    return client


@pytest.fixture
async def app_client(redis_proc: RedisProc) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """The real app in this process (its own event loop), on a real Redis."""
    client = await start_app(redis_proc.url)
    yield client
    await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
def erp_sims() -> Iterator[list[ErpSimProc]]:
    """ERP simulators a test started (append to the list); stopped after the test."""
    started: list[ErpSimProc] = []
    yield started
    for sim in started:
        sim.stop()
