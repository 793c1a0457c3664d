"""http/response.FastResponse writes what aiohttp's web.Response writes, byte for byte (the
Date header aside), in its own one-step path and in every case it leaves to aiohttp."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from multidict import CIMultiDict

from atp_service.http.response import FastResponse

BODY = b'{"sku":"SKU-1","atp":7}'
BIG = 32 * 1024 * 1024  # more than the kernel's socket buffers hold
DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


MADE: list[web.Response] = []  # every answer built, in order


def build(cls: type[web.Response], request: web.Request) -> web.Response:
    """One answer, chosen by the query, built the same way for both classes."""
    q = request.query
    status = int(q.get("status", "200"))
    headers = CIMultiDict({"Content-Type": "application/json", "X-Request-ID": "abc"})
    if "retry" in q:
        headers["Retry-After"] = q["retry"]
    body = b"" if "empty" in q else b"x" * BIG if "big" in q else BODY
    response = cls(body=body, status=status, headers=headers)
    if "close" in q:
        response.force_close()
    if "cookie" in q:
        response.set_cookie("c", "1")
    if "chunked" in q:
        response.enable_chunked_encoding()
    MADE.append(response)
    return response


class Prepared:
    """Counts the app's on_response_prepare signals."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.count += 1
        response.headers["X-Signal"] = "seen"


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Prepared]]:
    prepared = Prepared()

    async def fast(request: web.Request) -> web.StreamResponse:
        return build(FastResponse, request)

    async def plain(request: web.Request) -> web.StreamResponse:
        return build(web.Response, request)

    app = web.Application()
    app.router.add_route("*", "/fast", fast)
    app.router.add_route("*", "/plain", plain)
    app.on_response_prepare.append(prepared)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port, prepared
    await runner.cleanup()


async def exchange(port: int, raw: bytes, answers: int = 1) -> bytes:
    """Send ``raw`` bytes; read until ``answers`` complete answers (or the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    out = b""
    try:
        for _ in range(answers):
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            except asyncio.IncompleteReadError as exc:  # closed without (another) answer
                out += exc.partial
                break
            length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
            if raw.startswith(b"HEAD ") or re.match(rb"HTTP/1.. (1..|204|304) ", head):
                body = b""
            elif length:
                body = await asyncio.wait_for(reader.readexactly(int(length[1])), 5)
            elif re.search(rb"(?i)\r\ntransfer-encoding: chunked", head):
                body = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 5)
            else:  # no length: the body runs to the end of the connection
                body = await asyncio.wait_for(reader.read(), 5)
            out += head + body
    finally:
        writer.close()
    return DATE.sub(b"\r\nDate: -\r\n", out)


def request(
    method: str, target: str, version: str = "1.1", extra: str = "", body: str = ""
) -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/{version}\r\nHost: x\r\n{extra}{length}\r\n{body}".encode()


# (method, query, HTTP version, extra header lines, body, whether FastResponse's own one-step
# path answers: the rest it leaves to aiohttp)
CASES = [
    ("GET", "", "1.1", "", "", True),
    ("GET", "?status=201", "1.1", "", "", True),
    ("POST", "?status=409&retry=3", "1.1", "", '{"a":1}', True),
    ("GET", "", "1.1", "Connection: close\r\n", "", True),
    ("GET", "?close=1", "1.1", "", "", True),
    ("GET", "?empty=1", "1.1", "", "", True),
    ("GET", "?status=204", "1.1", "", "", False),
    ("GET", "?status=304", "1.1", "", "", False),
    ("HEAD", "", "1.1", "", "", False),
    ("GET", "", "1.0", "", "", False),
    ("GET", "", "1.0", "Connection: keep-alive\r\n", "", False),
    ("GET", "?cookie=1", "1.1", "", "", False),
    ("GET", "?chunked=1", "1.1", "", "", False),
]


@pytest.mark.parametrize(("method", "query", "version", "extra", "body", "one_step"), CASES)
async def test_same_bytes_as_aiohttp(
    server: tuple[int, Prepared],
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    query: str,
    version: str,
    extra: str,
    body: str,
    one_step: bool,
) -> None:
    port, prepared = server
    calls = []
    aiohttp_prepare = web.StreamResponse.prepare

    async def counted(self: web.StreamResponse, req: web.BaseRequest) -> object:
        calls.append(type(self))
        return await aiohttp_prepare(self, req)

    monkeypatch.setattr(web.StreamResponse, "prepare", counted)
    MADE.clear()
    fast = await exchange(port, request(method, "/fast" + query, version, extra, body))
    plain = await exchange(port, request(method, "/plain" + query, version, extra, body))
    assert fast == plain
    assert fast.startswith(f"HTTP/{version} ".encode())
    assert b"X-Signal: seen" in fast  # the app's on_response_prepare ran for both
    assert prepared.count == 2
    assert MADE[0].body_length == MADE[1].body_length > 0  # what an access log reports
    # aiohttp's prepare ran for the plain answer, and for the fast one only when left to it
    assert calls == ([web.Response] if one_step else [FastResponse, web.Response])


async def test_pipelined_requests_are_answered_in_order(server: tuple[int, Prepared]) -> None:
    port, _ = server
    raw = request("GET", "/fast?status=201") + request("GET", "/fast?status=202")
    raw += request("GET", "/fast?status=203")
    out = await exchange(port, raw, answers=3)
    assert [m.group(1) for m in re.finditer(rb"HTTP/1.1 (\d+)", out)] == [b"201", b"202", b"203"]


async def test_a_header_with_a_line_break_is_refused(server: tuple[int, Prepared]) -> None:
    """aiohttp's serializer refuses CR/LF in a value (no header injection); this path uses
    it, so a split header is never written: the connection closes, as aiohttp's does."""
    port, _ = server
    target = "?status=201&retry=1%0D%0AX-Evil:%201"
    fast = await exchange(port, request("GET", "/fast" + target))
    plain = await exchange(port, request("GET", "/plain" + target))
    assert fast == plain == b""


async def test_an_answer_waits_for_a_client_that_does_not_read(
    server: tuple[int, Prepared],
) -> None:
    """Past the transport's high-water mark the answer waits for the client to read, as
    aiohttp's does, before the next pipelined request is handled: a client that sends and
    never reads cannot make the server buffer answer after answer."""
    port, prepared = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request("GET", "/fast?big=1") + request("GET", "/fast?big=1"))
        await writer.drain()
        await asyncio.sleep(0.5)
        assert prepared.count == 1  # the second request waits behind the unread first answer
        for _ in range(2):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert f"Content-Length: {BIG}".encode() in head
            await asyncio.wait_for(reader.readexactly(BIG), 10)
        assert prepared.count == 2
    finally:
        writer.close()
