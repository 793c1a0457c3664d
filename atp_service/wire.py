"""One pipelined Redis connection for the script calls of the hot path.

Redis answers the commands of a connection in the order it received them, so one connection
can carry every script call of every loop tick without waiting for the previous tick's
replies: each write carries the calls ``Store`` gathered, and each reply resolves the oldest
waiting future, straight from ``data_received``. redis-py's pooled connections cost a pool
checkout, an ``asyncio.wait_for`` task per write and a timeout context per reply read.
Measured side by side (``python -m benchmarks.wire``, a reserve-sized call): 3.0 CPU-µs a
call here against 12.8 through the pool with 64 callers, 9.0 against 25.5 with 8.

Failures:

- a lost connection sends its calls in flight once more on a new one (every write script is
  idempotent on its key); a second loss, or a reply that takes longer than ``timeout`` (a hung
  Redis), fails them with ``Unavailable`` (their effects unknown: the caller retries with the
  same id), and the next call connects again;
- ``NOSCRIPT`` (Redis restarted and lost its script cache): every script is loaded again on
  the same connection, ahead of the call sent again, in one write. A call answered NOSCRIPT
  did not run, so sending it again is safe; a second NOSCRIPT is the caller's error;
- Redis answering "not now" (``LOADING`` after a restart, ``BUSY``, ``READONLY``, ``OOM``...)
  is ``Unavailable`` too; any other error reply (a script error) is raised to its caller.

Replies are parsed by hiredis exactly as redis-py parses them (bytes, ints, nested lists).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ResponseError

from .errors import Unavailable

# Error replies that mean "Redis cannot take this now", not "this call is wrong".
TRANSIENT = (b"LOADING", b"BUSY", b"MASTERDOWN", b"READONLY", b"TRYAGAIN", b"CLUSTERDOWN", b"OOM")
_TRANSIENT = tuple(t.decode() for t in TRANSIENT)


def bulk(arg: bytes) -> bytes:
    """One argument in RESP (a bulk string)."""
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def pack(*args: Any) -> bytes:
    """One command in RESP (what redis-py's packer does, without its per-argument overhead:
    ~3x cheaper for a reserve call with its dozen arguments)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("booleans are not Redis arguments")
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    __slots__ = ("handshake", "reader", "transport", "wire")

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        # replies awaited while connecting (AUTH, SELECT), before the wire uses this one
        self.handshake: deque[asyncio.Future[Any]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self.wire._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.wire._lost(self)


# A call in flight: (future, command, loop time written, write generation, tries)
_Call = tuple[asyncio.Future[Any], bytes, float, int, int]


class Wire:
    """Script calls pipelined on one connection (see the module docstring)."""

    def __init__(
        self,
        url: str,
        scripts: Sequence[str] = (),
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.scripts = tuple(scripts)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._waiting: deque[_Call] = deque()
        self._backlog: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._connecting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._generation = 0  # writes so far
        self._loaded_at = -1  # the generation of the last SCRIPT LOAD write
        self._closed = False
        # calls sent again once after their connection was lost (a second loss fails them)
        self._resent: set[asyncio.Future[Any]] = set()
        self.connects = 0

    # -- sending

    def send(self, batch: Sequence[tuple[bytes, asyncio.Future[Any]]]) -> None:
        """Write ``batch`` (RESP command, future for its reply) in one go, connecting first if
        needed; each future gets its reply, or ``Unavailable``."""
        proto = self._proto
        if proto is None:
            if self._closed:
                _fail(batch, "service shutting down")
                return
            self._backlog.extend(batch)
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        self._write(proto, batch)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """One command (RESP, see :func:`pack`) written on its own; the future gets its reply."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send([(command, fut)])
        return fut

    def _write(self, proto: _Protocol, batch: Sequence[tuple[bytes, asyncio.Future[Any]]]) -> None:
        assert proto.transport is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._generation += 1
        gen = self._generation
        waiting = self._waiting
        for cmd, fut in batch:
            waiting.append((fut, cmd, now, gen, 0))
        proto.transport.write(b"".join([cmd for cmd, _ in batch]))
        if self._timer is None:
            self._timer = loop.call_at(now + self.timeout, self._check)

    async def _connect(self) -> None:
        try:
            proto = await asyncio.wait_for(self._open(), self.connect_timeout + self.timeout)
        except asyncio.CancelledError:
            self._connecting = None
            backlog, self._backlog = self._backlog, []
            _fail(backlog, "service shutting down")
            raise
        except Exception:  # refused, timed out, auth refused: everyone waiting gets a 503
            self._connecting = None
            backlog, self._backlog = self._backlog, []
            _fail(backlog, "shared state unreachable")
            self._resent.clear()  # all of them were in the backlog, now failed
            return
        self._connecting = None
        if proto.transport is None or proto.transport.is_closing():  # lost just now
            backlog, self._backlog = self._backlog, []
            _fail(backlog, "shared state unreachable")
            self._resent.clear()
            return
        self._proto = proto
        self.connects += 1
        backlog, self._backlog = self._backlog, []
        if backlog:
            self._write(proto, backlog)

    async def _open(self) -> _Protocol:
        """Connect, authenticate and select the database; the protocol is not yet current."""
        opts: dict[str, Any] = dict(parse_url(self.url))
        loop = asyncio.get_running_loop()
        cls = opts.get("connection_class")
        proto = _Protocol(self)
        if cls is UnixDomainSocketConnection:
            await loop.create_unix_connection(lambda: proto, opts["path"])
        else:
            await loop.create_connection(
                lambda: proto,
                opts.get("host", "localhost"),
                int(opts.get("port", 6379)),
                ssl=_ssl_context(opts) if cls is SSLConnection else None,
            )
        hello: list[bytes] = []
        if opts.get("password"):
            user = opts.get("username")
            creds = (user, opts["password"]) if user else (opts["password"],)
            hello.append(pack("AUTH", *(unquote(c) for c in creds)))
        if int(opts.get("db", 0) or 0):
            hello.append(pack("SELECT", int(opts["db"])))
        if hello:
            # Sent before any caller's command; the protocol is not current yet, so these
            # replies are matched here, by hand.
            futs = [loop.create_future() for _ in hello]
            proto.handshake.extend(futs)
            assert proto.transport is not None
            proto.transport.write(b"".join(hello))
            try:
                for fut in futs:
                    reply = await fut
                    if isinstance(reply, Exception):
                        raise reply
            except BaseException:
                if proto.transport is not None:
                    proto.transport.abort()
                raise
        return proto

    # -- receiving

    def _received(self, proto: _Protocol, data: bytes) -> None:
        reader = proto.reader
        reader.feed(data)
        if proto is not self._proto:
            handshake = proto.handshake
            while handshake and (reply := reader.gets()) is not False:
                fut = handshake.popleft()
                if not fut.done():
                    fut.set_result(reply)
            return
        waiting = self._waiting
        resent = self._resent
        try:
            while (reply := reader.gets()) is not False:
                fut, cmd, _, gen, tries = waiting.popleft()
                if resent:
                    resent.discard(fut)
                if type(reply) is ResponseError:
                    self._error(fut, cmd, gen, tries, reply)
                elif not fut.done():
                    fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # garbage, or a reply nobody asked for
            self._abort("shared state unreachable")

    def _error(
        self, fut: asyncio.Future[Any], cmd: bytes, gen: int, tries: int, error: ResponseError
    ) -> None:
        text = str(error)
        if text.startswith("NOSCRIPT") and tries == 0 and self._proto is not None:
            self._resend(self._proto, fut, cmd, gen)
        elif fut.done():
            pass
        elif text.startswith(_TRANSIENT):
            fut.set_exception(Unavailable(f"shared state busy ({text.split()[0]})", retry_after=1))
        else:
            fut.set_exception(error)

    def _resend(self, proto: _Protocol, fut: asyncio.Future[Any], cmd: bytes, gen: int) -> None:
        """A call answered NOSCRIPT: load every script (unless that was already written after
        the call), then send the call again, in one write."""
        assert proto.transport is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        out = []
        self._generation += 1
        if gen > self._loaded_at:
            self._loaded_at = self._generation
            for source in self.scripts:
                done: asyncio.Future[Any] = loop.create_future()
                done.add_done_callback(_consume)
                self._waiting.append((done, b"", now, self._generation, 1))
                out.append(pack("SCRIPT", "LOAD", source))
        self._waiting.append((fut, cmd, now, self._generation, 1))
        out.append(cmd)
        proto.transport.write(b"".join(out))

    # -- failure

    def _check(self) -> None:
        """Timer: fail everything if the oldest call has waited ``timeout``."""
        self._timer = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0][2] + self.timeout
        if loop.time() >= due:
            self._abort("shared state unreachable")
        else:
            self._timer = loop.call_at(due, self._check)

    def _lost(self, proto: _Protocol) -> None:
        if proto is self._proto:
            self._abort("shared state unreachable", resend=True)
        else:
            for fut in proto.handshake:
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost during set-up"))

    def _abort(self, why: str, resend: bool = False) -> None:
        """Drop the connection. Its calls in flight fail, except, when ``resend`` (the
        connection was lost, not hung), those not sent again before: they go out once more on
        a new connection, which is safe because every write script is idempotent on its key
        (what redis-py's one retry on a broken connection relied on too)."""
        proto, self._proto = self._proto, None
        waiting, self._waiting = self._waiting, deque()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        again: list[tuple[bytes, asyncio.Future[Any]]] = []
        failed: list[tuple[bytes, asyncio.Future[Any]]] = []
        for fut, cmd, *_ in waiting:
            if resend and cmd and not self._closed and not fut.done() and fut not in self._resent:
                self._resent.add(fut)
                again.append((cmd, fut))
            else:
                failed.append((cmd, fut))
        _fail(failed, why)
        self._resent.difference_update(fut for _, fut in failed)
        if again:
            self.send(again)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        self._abort("service shutting down")


def _fail(batch: Sequence[tuple[bytes, asyncio.Future[Any]]], why: str) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(Unavailable(why, retry_after=1))


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed SCRIPT LOAD shows in the call re-sent after it


def _ssl_context(opts: dict[str, Any]) -> ssl.SSLContext:
    """``rediss://``: verify the server unless ``ssl_cert_reqs=none``; optional CA file and
    client certificate (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``)."""
    ctx = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"))
    if str(opts.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if opts.get("ssl_certfile"):
        ctx.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"))
    return ctx
