"""Kafka security settings (``ATP_KAFKA_SECURITY_PROTOCOL``, ``ATP_KAFKA_SASL_*``,
``ATP_KAFKA_SSL_*``): their rules (a half or ignored configuration stops the start), exactly
what aiokafka's clients are given, and, against the real `tansu` broker, that a connection the
broker cannot take leaves the feed unjoined, retrying and explained in /v1/status.

Not tested here, and why: a successful TLS or SASL session needs a broker that offers one.
The only broker this machine can run, tansu 0.6.0, rejects ``--cert`` together with ``--key``
and answered no TLS handshake with a combined PEM (tcp://, tls:// or ssl:// listener); with
``--authentication`` its memory store cannot get a SCRAM user (``tansu user create`` is itself
refused: NotAuthenticated). aiokafka's own suites cover its TLS and SASL against Kafka.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from atp_service.config import ConfigError, KafkaSecurity, Settings
from atp_service.erpsim.config import SimConfigError, from_args

from .kafka import Broker
from .procs import ADMIN, RedisProc, ServiceProc, snapshot
from .test_feed import TOPIC, feed_env
from .test_tls import make_cert

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


async def _lookup(http: aiohttp.ClientSession, svc: ServiceProc, sku: str) -> dict[str, Any] | None:
    async with http.get(f"{svc.url}/v1/availability/{sku}", headers=ADMIN) as r:
        return await r.json() if r.status == 200 else None  # type: ignore[no-any-return]


async def test_a_refused_connection_leaves_the_feed_unjoined_says_why_and_retries(
    redis_proc: RedisProc, broker: Broker, services, http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """The security settings reach aiokafka: a replica told to speak TLS to this plaintext
    broker cannot connect; its feed stays unjoined and retrying (the task never dies), its
    lookups read stale, and /v1/status says why. A plaintext replica on the same broker and
    topic consumes meanwhile (the control)."""
    other_redis = RedisProc(tmp_path / "other-redis").start()  # only Kafka could feed it
    try:
        tls = ServiceProc(
            feed_env(other_redis, broker, ATP_KAFKA_SECURITY_PROTOCOL="SSL",
                     ATP_KAFKA_GROUP="tls", ATP_KAFKA_UNREACHABLE_AFTER="1"),
            log=tmp_path / "tls.log",
        ).start()  # fmt: skip
        try:
            plain = services(**feed_env(redis_proc, broker))
            await broker.produce(TOPIC, [snapshot("SEC1", "DC1", 1, 25)])
            deadline = time.monotonic() + 30
            while not (body := await _lookup(http, plain, "SEC1")) or body["stale"]:
                assert time.monotonic() < deadline, f"the control did not consume: {body}"
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 30  # a handshake the broker never answers: 10 s
            while True:
                async with http.get(f"{tls.url}/v1/status", headers=ADMIN) as r:
                    feed = (status := await r.json())["feed"]
                if feed["last_error"]:
                    break
                assert time.monotonic() < deadline, f"no reason given: {feed}"
                assert feed["joined"] is False
                await asyncio.sleep(0.25)
            assert feed["joined"] is False and "KafkaError" in feed["last_error"], feed
            assert any("Kafka" in reason for reason in status["reasons"]), status
            assert await _lookup(http, tls, "SEC1") is None
        finally:
            tls.stop()
    finally:
        other_redis.stop()


# -- the settings (no broker)


@pytest.fixture
def pem(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "ca.pem"
    path.write_text("not checked here\n")
    yield str(path)


BAD = [
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "TLS"}, "ATP_KAFKA_SECURITY_PROTOCOL='TLS': expected one of"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs ATP_KAFKA_SASL_USERNAME"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ATP_KAFKA_SASL_USERNAME": "u"},
     "needs ATP_KAFKA_SASL_USERNAME and ATP_KAFKA_SASL_PASSWORD"),
    ({"ATP_KAFKA_SASL_USERNAME": "u", "ATP_KAFKA_SASL_PASSWORD": "p"},
     "ATP_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: use SASL_SSL"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ATP_KAFKA_SASL_USERNAME": "u",
      "ATP_KAFKA_SASL_PASSWORD": "p", "ATP_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "ATP_KAFKA_SASL_MECHANISM='GSSAPI': expected one of"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "ATP_KAFKA_SASL_USERNAME": "u",
      "ATP_KAFKA_SASL_PASSWORD": "p", "ATP_KAFKA_SSL_CAFILE": "PEM"},
     "ATP_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT: use SSL or SASL_SSL"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SSL", "ATP_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "ATP_KAFKA_SSL_CAFILE='/nonexistent/ca.pem' is not a readable file"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SSL", "ATP_KAFKA_SSL_CERTFILE": "PEM"},
     "ATP_KAFKA_SSL_CERTFILE and ATP_KAFKA_SSL_KEYFILE go together"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "message"), BAD)
def test_a_half_or_ignored_kafka_security_setting_is_refused(
    env: dict[str, str], message: str, pem: str
) -> None:
    env = {k: pem if v == "PEM" else v for k, v in env.items()}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_the_erp_simulator_refuses_them_too_but_only_when_it_produces_to_kafka() -> None:
    import argparse

    from atp_service.erpsim.config import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    env = {"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    assert from_args(parser.parse_args([]), env).kafka_security == KafkaSecurity()
    with pytest.raises(SimConfigError, match="needs ATP_KAFKA_SASL_USERNAME"):
        from_args(parser.parse_args(["--kafka-bootstrap", "127.0.0.1:1"]), env)


def test_the_defaults_and_what_the_clients_get(pem: str) -> None:
    assert Settings.from_env({}).kafka_security.client_options() == {
        "security_protocol": "PLAINTEXT"
    }
    sasl = Settings.from_env({
        "ATP_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "ATP_KAFKA_SASL_USERNAME": "svc",
        "ATP_KAFKA_SASL_PASSWORD": "hunter2-secret"})  # fmt: skip
    assert sasl.kafka_security.client_options() == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc", "sasl_plain_password": "hunter2-secret",
    }  # fmt: skip
    assert "hunter2" not in repr(sasl) and "hunter2" not in str(sasl.kafka_security)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path)


@needs_openssl
def test_tls_verifies_the_broker_and_can_present_a_client_certificate(
    cert: tuple[Path, Path],
) -> None:
    options = KafkaSecurity("SSL", cafile=cert[0], certfile=cert[0], keyfile=cert[1])
    context = options.client_options()["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_serve_stops_at_start_with_exit_2_on_a_bad_kafka_setting(tmp_path: Path) -> None:
    env = {**os.environ, "ATP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
           "ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ATP_DATA_DIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "atp_service.cli", "serve"], env=env,
                          capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert b"ATP_KAFKA_SASL_USERNAME" in done.stderr
