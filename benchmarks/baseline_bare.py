"""The lookup ceiling: a bare aiohttp + uvloop + orjson server answering a constant body.

Same framework, event loop, JSON encoder and server settings as ``atp-service serve``
(``AppRunner(access_log=None)``, ``TCPSite(backlog=1024)``), but no auth, no cache, no
middleware, no timing: ``GET /v1/availability/{sku}`` returns ``orjson.dumps`` of a fixed
payload (a real response of our service, so the body has the same size), and
``POST /v1/availability`` reads and parses the JSON body, then returns a fixed batch payload;
``POST /v1/reservations`` the same with status 201 (the HTTP ceiling of the reserve benchmark).

    python -m benchmarks.baseline_bare --port 18001 --get-body get.json --post-body post.json
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import orjson
import uvloop
from aiohttp import web


def make_app(get_payload: object, post_payload: object, reserve_payload: object) -> web.Application:
    async def one(request: web.Request) -> web.Response:
        request.match_info["sku"]
        return web.Response(body=orjson.dumps(get_payload), content_type="application/json")

    async def batch(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.Response(body=orjson.dumps(post_payload), content_type="application/json")

    async def reserve(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.Response(
            body=orjson.dumps(reserve_payload), status=201, content_type="application/json"
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/availability/{sku}", one)
    app.router.add_post("/v1/availability", batch)
    app.router.add_post("/v1/reservations", reserve)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(port: int, app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _payload(path: Path | None) -> object:
    return orjson.loads(path.read_bytes()) if path else {"ok": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--get-body", type=Path, help="JSON answered to GET /v1/availability/x")
    parser.add_argument("--post-body", type=Path, help="JSON answered to POST /v1/availability")
    parser.add_argument(
        "--reserve-body", type=Path, help="JSON answered (201) to POST /v1/reservations"
    )
    args = parser.parse_args()
    app = make_app(_payload(args.get_body), _payload(args.post_body), _payload(args.reserve_body))
    uvloop.run(serve(args.port, app))


if __name__ == "__main__":
    main()
