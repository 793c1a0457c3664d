"""Direct TLS (ATP_TLS_CERT / ATP_TLS_KEY) on a real `atp-service serve` process: https works
with a certificate made here, TLS below 1.2 is refused by the server, plain HTTP gets no
answer on the TLS port, and a bad or half configuration stops the start with exit 2."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from .procs import ServiceProc, snapshot, wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1 / localhost, valid for a day."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    """A verifying client that trusts only the test certificate."""
    return ssl.create_default_context(cafile=str(cert))


def get(url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        assert response.status == 200
        return bytes(response.read())


def handshake(port: int, context: ssl.SSLContext) -> str | None:
    """The negotiated protocol version, or raise the handshake's SSLError."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


@pytest.fixture
def tls_service(
    services: Callable[..., ServiceProc], tmp_path: Path
) -> tuple[ServiceProc, ssl.SSLContext]:
    cert, key = make_cert(tmp_path)
    proc = services(wait_ready=False, ATP_TLS_CERT=str(cert), ATP_TLS_KEY=str(key))
    context = client_context(cert)
    base = f"https://127.0.0.1:{proc.port}"

    def ready() -> bool:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise AssertionError(f"service exited with {proc.proc.returncode}")
        return b"ready" in get(base + "/readyz", context)

    wait_until(ready, 30)
    return proc, context


def test_serves_https_with_the_configured_certificate(
    tls_service: tuple[ServiceProc, ssl.SSLContext],
) -> None:
    proc, context = tls_service
    base = f"https://127.0.0.1:{proc.port}"
    assert orjson.loads(get(base + "/healthz", context)) == {"status": "ok"}
    # an authenticated write and read over TLS
    body = orjson.dumps({"events": [snapshot("S1", "DC1", 1, 10)]})
    request = urllib.request.Request(
        base + "/v1/events", data=body, method="POST",
        headers={"Authorization": "Bearer test-admin", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        assert orjson.loads(response.read())["applied"] == 1
    lookup = orjson.loads(get(base + "/v1/availability/S1", context, {
        "Authorization": "Bearer test-read"}))  # fmt: skip
    assert lookup["total_atp"] == 10
    # the certificate the server presents is the configured one (the client verified it
    # against that certificate alone), and the log names the https scheme
    assert proc.log is not None
    assert f"listening on https://127.0.0.1:{proc.port}" in proc.log.read_text()


def test_tls_1_2_and_1_3_accepted(tls_service: tuple[ServiceProc, ssl.SSLContext]) -> None:
    proc, context = tls_service
    assert handshake(proc.port, context) == "TLSv1.3"
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(proc.port, context) == "TLSv1.2"


def tls11_client() -> ssl.SSLContext:
    """A client that offers TLS 1.1 only. OpenSSL 3 drops TLS 1.1 at its default security
    level; level 0 lets this client really offer it."""
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # setting TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    return old


def test_tls11_client_works_against_a_server_that_allows_it(tmp_path: Path) -> None:
    """The control for the next test: the same client does speak TLS 1.1 to a server that
    still allows it, so a refusal from the service is the service's doing."""
    cert, key = make_cert(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        assert handshake(port, tls11_client()) == "TLSv1.1"
        thread.join(5)


def test_tls_1_1_refused_by_the_server(tls_service: tuple[ServiceProc, ssl.SSLContext]) -> None:
    proc, context = tls_service
    with pytest.raises(ssl.SSLError) as refused:
        handshake(proc.port, tls11_client())
    # the server ended the handshake (alert or EOF); the client did offer TLS 1.1
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value).upper(), refused.value
    assert handshake(proc.port, context) == "TLSv1.3"  # and the service is still serving


def test_plain_http_gets_no_answer_on_the_tls_port(
    tls_service: tuple[ServiceProc, ssl.SSLContext],
) -> None:
    proc, _ = tls_service
    with pytest.raises(OSError):  # no plaintext fallback: the connection is dropped
        urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/healthz", timeout=5)


def start_failure(env: dict[str, str]) -> tuple[int, str]:
    """`atp-service serve` with ``env``: its exit code and stderr (it must not start)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    full.update({"ATP_API_KEYS": "k:*", "ATP_HTTP_PORT": "0", **env})
    done = subprocess.run(
        [sys.executable, "-m", "atp_service.cli", "serve"],
        env=full, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cert-only", "ATP_TLS_CERT and ATP_TLS_KEY go together"),
        ("key-only", "ATP_TLS_CERT and ATP_TLS_KEY go together"),
        ("missing-cert", "ATP_TLS_CERT='{dir}/nope.crt' is not a readable file"),
        ("missing-key", "ATP_TLS_KEY='{dir}/nope.key' is not a readable file"),
        ("cert-is-a-directory", "ATP_TLS_CERT='{dir}' is not a readable file"),
        ("not-pem", "ATP_TLS_CERT/ATP_TLS_KEY:"),
        ("key-of-another-cert", "ATP_TLS_CERT/ATP_TLS_KEY:"),
    ],
)
def test_bad_tls_configuration_fails_at_start(tmp_path: Path, case: str, message: str) -> None:
    cert, key = make_cert(tmp_path)
    _, other_key = make_cert(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    env = {
        "cert-only": {"ATP_TLS_CERT": str(cert)},
        "key-only": {"ATP_TLS_KEY": str(key)},
        "missing-cert": {"ATP_TLS_CERT": str(tmp_path / "nope.crt"), "ATP_TLS_KEY": str(key)},
        "missing-key": {"ATP_TLS_CERT": str(cert), "ATP_TLS_KEY": str(tmp_path / "nope.key")},
        "cert-is-a-directory": {"ATP_TLS_CERT": str(tmp_path), "ATP_TLS_KEY": str(key)},
        "not-pem": {"ATP_TLS_CERT": str(garbage), "ATP_TLS_KEY": str(key)},
        "key-of-another-cert": {"ATP_TLS_CERT": str(cert), "ATP_TLS_KEY": str(other_key)},
    }[case]
    code, stderr = start_failure(env)
    assert code == 2, stderr
    assert "atp-service: configuration error:" in stderr
    assert message.format(dir=tmp_path) in stderr
    assert "Traceback" not in stderr


def test_empty_tls_variables_mean_plain_http() -> None:
    from atp_service.config import Settings

    settings = Settings.from_env({"ATP_API_KEYS": "k:*", "ATP_TLS_CERT": "", "ATP_TLS_KEY": " "})
    assert settings.tls_cert is None and settings.tls_key is None
