"""JSON answers written in one step: aiohttp's ``Response`` without its general machinery.

``web.Response.prepare`` and ``write_eof`` handle every case aiohttp supports (chunking,
compression, cookies, HTTP/1.0, HEAD, payload objects, header and chunk hooks) through about
a dozen calls and six awaits. For the common case here, a complete ``bytes`` body to an
HTTP/1.1 client, :class:`FastResponse` does what they do in one step: the same headers
(``Content-Length``, ``Date``, ``Connection: close`` when the connection ends), the app's
``on_response_prepare`` signal, aiohttp's own header serializer (which refuses CR/LF in a
value), then one transport write of head and body, waiting for the client only when the
transport is over its high-water mark, as aiohttp does. Measured in-process on this box:
11.0 µs a response through aiohttp's path, 5.7 µs here (``benchmarks/cpu_split.py``'s
``aiohttp-response`` variant measures the whole service without it).

Every other case goes through ``web.Response`` unchanged, and ``tests/test_response.py``
checks that both write the same bytes. The one-step path reads aiohttp internals (a response's
and a stream writer's private state); on an aiohttp without them (:data:`ONE_STEP` false at
import) every answer takes aiohttp's path.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import StreamWriter

try:
    from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time
    from aiohttp.http_writer import _serialize_headers
except ImportError:  # pragma: no cover - an aiohttp that moved them: aiohttp's path only
    _serialize_headers = None  # type: ignore[assignment]


def _internals_present() -> bool:
    """Whether this aiohttp has the private state the one-step path reads and writes."""
    if _serialize_headers is None:
        return False
    response = web.Response(body=b"")
    writer = StreamWriter(SimpleNamespace(transport=None), None)  # type: ignore[arg-type]
    names: list[tuple[Any, str]] = [
        (response, n)
        for n in ("_body", "_chunked", "_compression", "_cookies", "_keep_alive", "_headers",
                  "_eof_sent", "_payload_writer", "_req", "_body_length", "_status", "_reason")
    ]  # fmt: skip
    names += [
        (writer, n)
        for n in ("_protocol", "_on_headers_sent", "_on_chunk_sent", "on_body_write", "output_size")
    ]
    names.append((web.BaseRequest, "_prepare_hook"))
    return all(hasattr(obj, name) for obj, name in names)


ONE_STEP = _internals_present()


class FastResponse(web.Response):
    """A ``web.Response`` that writes a plain bytes body to an HTTP/1.1 client in one step."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        body = self._body
        writer = request._payload_writer
        if (
            not ONE_STEP
            or self._eof_sent
            or self._payload_writer is not None
            or type(body) is not bytes
            or self._chunked
            or self._compression
            or self._cookies
            or request.version != HttpVersion11
            or must_be_empty_body(request.method, self._status)
            or type(writer) is not StreamWriter
            or writer._on_headers_sent is not None
            or writer._on_chunk_sent is not None
            or writer.on_body_write is not None
            or writer.output_size
        ):
            return await super().prepare(request)
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        headers[hdrs.CONTENT_LENGTH] = str(len(body))
        if body:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if not keep_alive and hdrs.CONNECTION not in headers:
            headers[hdrs.CONNECTION] = "close"
        self._req = request
        self._payload_writer = writer
        await request._prepare_hook(self)
        data = _serialize_headers(f"HTTP/1.1 {self._status} {self._reason}", headers) + body
        protocol = writer._protocol
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        writer.output_size += len(data)
        transport.write(data)
        self._eof_sent = True
        self._body_length = writer.output_size  # as aiohttp counts it: head and body
        self._req = None
        self._payload_writer = None
        if protocol._paused:
            await writer.drain()
        return writer
