"""Real processes for the tests: a redis-server and `atp-service serve` replicas on free ports.

Every process is started by a fixture on a free port and stopped after the test; nothing
relies on a server someone started by hand (the machine's own Redis on 6379 is never used).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

KEYS = (
    "test-admin:*;test-read:availability:read;test-write:reservations:write;"
    "test-events:events:write"
)
ADMIN = {"Authorization": "Bearer test-admin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessDied(RuntimeError):
    """A process under test exited while we waited for it: fail now, not at the timeout."""


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except ProcessDied:
            raise
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


class Freezable:
    """A test's server process that can be frozen (SIGSTOP) and thawed (SIGCONT)."""

    proc: subprocess.Popen[bytes] | None

    def pause(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)


@dataclass
class RedisProc(Freezable):
    """A private redis-server with AOF (everysec) in its own directory."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--logfile", str(self.dir / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._pong, 10)
        return self

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class ServiceProc:
    """One `atp-service serve` replica as a real process."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    # Run another copy of the package: a directory holding its atp_service/ (``python -m``
    # puts the working directory first on sys.path).
    code: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> ServiceProc:
        env = {**os.environ, **self.env, "ATP_HTTP_PORT": str(self.port)}
        env.setdefault("ATP_API_KEYS", KEYS)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            if self.code is not None:
                env["PYTHONPATH"] = str(self.code)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "atp_service.cli", "serve"], env=env, stdout=out,
                stderr=out, cwd=self.code,
            )  # fmt: skip
        finally:
            if not isinstance(out, int):
                out.close()  # the child keeps its own descriptor
        if wait_ready:
            wait_until(self.ready, 30)
        return self

    def ready(self) -> bool:
        assert self.proc
        if self.proc.poll() is not None:
            log = self.log.read_text()[-2000:] if self.log and self.log.exists() else ""
            raise ProcessDied(f"service exited with {self.proc.returncode}\n{log}")
        with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
            return bool(r.status == 200)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


def snapshot(sku: str, location: str, seq: int, on_hand: int, allocated: int = 0,
             safety_stock: int = 0, event_id: str | None = None) -> dict[str, object]:  # fmt: skip
    return {
        "event_id": event_id or f"s-{sku}-{location}-{seq}",
        "type": "snapshot", "sku": sku, "location": location, "seq": seq,
        "on_hand": on_hand, "allocated": allocated, "safety_stock": safety_stock,
        "occurred_at": "2026-11-22T10:00:00Z",
    }  # fmt: skip


def adjustment(sku: str, location: str, seq: int, on_hand_delta: int = 0,
               allocated_delta: int = 0) -> dict[str, object]:  # fmt: skip
    return {
        "event_id": f"a-{sku}-{location}-{seq}", "type": "adjustment", "sku": sku,
        "location": location, "seq": seq, "on_hand_delta": on_hand_delta,
        "allocated_delta": allocated_delta, "reason": "test",
        "occurred_at": "2026-11-22T10:00:01Z",
    }  # fmt: skip


@dataclass
class ErpSimProc:
    """`atp-service erp-sim` as a real process; its /admin API tells what the ERP saw."""

    args: list[str]
    log: Path | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ErpSimProc:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "atp_service.cli", "erp-sim", "--port", str(self.port),
                 *self.args], stdout=out, stderr=out,
            )  # fmt: skip
        finally:
            if not isinstance(out, int):
                out.close()
        wait_until(self._up, 20)
        return self

    def _up(self) -> bool:
        assert self.proc
        if self.proc.poll() is not None:
            raise ProcessDied(f"erp-sim exited with {self.proc.returncode}")
        with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
            return bool(r.status == 200)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
