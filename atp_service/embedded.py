"""The embedded default: a private ``redis-server`` owned by this process (no ATP_REDIS_URL).

It listens on a unix socket only (no TCP port to collide with or to expose), keeps an
append-only file under ``ATP_DATA_DIR`` (``appendfsync everysec`` by default: a reply is only
sent after the write reached the AOF file, so an acknowledged reservation survives ``kill -9``
of the service and of Redis; ``always`` also survives power loss), and is told by the kernel
(PR_SET_PDEATHSIG) to shut down cleanly if this process dies, even by ``kill -9``.

One process owns a data directory: it holds an exclusive ``flock`` on ``ATP_DATA_DIR/lock``
for its lifetime (the kernel drops it when the process dies, ``kill -9`` included). A second
``serve`` on the same directory stops at start with a clear error instead of taking over the
first one's redis-server from under it. With the lock held, a leftover server from an earlier
run (its pid file: its owner is dead) is shut down before a new one starts, so two servers
never write one AOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    """``ATP_REDIS_SERVER`` (read by config users), PATH, or the usual Debian location."""
    for candidate in (os.environ.get("ATP_REDIS_SERVER"), shutil.which("redis-server"),
                      "/usr/bin/redis-server"):  # fmt: skip
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedRedisError(
        "no redis-server found: install it (Debian: apt-get install redis-server; the README's "
        "set-up script does this) or set ATP_REDIS_URL to an existing Redis"
    )


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    def __init__(self, data_dir: Path, fsync: str = "everysec") -> None:
        self.data_dir = data_dir.resolve()
        self.fsync = fsync
        self.socket = self.data_dir / "redis.sock"
        self.pidfile = self.data_dir / "redis.pid"
        self.lockfile = self.data_dir / "lock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None  # the fd holding the flock (not inherited by children)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _stop_leftover(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)

    def _take_lock(self) -> None:
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedRedisError(
                f"{self.data_dir} is in use by another atp-service (pid {owner}): the embedded "
                "Redis serves one process. Stop that one, give this one another ATP_DATA_DIR, "
                "or run replicas on a shared Redis (ATP_REDIS_URL)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the fd drops the flock
            self._lock = None

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._stop_leftover()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pidfile),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        # Popen returns at once (fork+exec); readiness is awaited below without blocking.
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 60  # a large AOF takes a while to load
        client = aioredis.Redis.from_url(self.url)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with {self.proc.returncode}; see "
                        f"{self.data_dir / 'redis.log'}"
                    )
                try:
                    if await client.ping():
                        return
                except Exception:  # loading or not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError("embedded redis-server did not become ready")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        try:
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        finally:
            self._release_lock()
