"""The naive ERP integration, written the way a user would write it: an aiohttp service whose
``POST /v1/reservations`` calls the ERP's ``POST /reservations`` synchronously for every
request and answers when the ERP answers. No queue, no pacing, no priorities, no retries:

- ERP 200 -> 201 ``{"reservation_id", "status": "confirmed", "priority", "lines"}``
- ERP 409 -> 409 (the ERP refused: out of stock)
- ERP 429 -> 429, the ERP's ``Retry-After`` passed on
- ERP timeout (``--timeout``, default 5 s like ATP_ERP_TIMEOUT) -> 504; connection error or
  5xx -> 502: both errors for the caller, who cannot tell whether the ERP allocated

One ``aiohttp.ClientSession`` with its default connector (100 connections), as the aiohttp
documentation shows it.

    python -m benchmarks.baseline_naive_erp --port 18003 --erp-url http://127.0.0.1:P
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
import orjson
import uvloop
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def problem(status: int, title: str, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status})
    return web.Response(
        body=body, status=status, content_type="application/problem+json", headers=headers
    )


def make_app(erp_url: str, timeout: float) -> web.Application:
    async def create(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            rid = body["reservation_id"]
            erp_body = {
                "reservation_id": rid,
                "priority": body.get("priority", "checkout"),
                "lines": [
                    {"sku": x["sku"], "location": x["location"], "qty": int(x["qty"])}
                    for x in body["lines"]
                ],
            }
        except (ValueError, KeyError, TypeError):
            return problem(400, "bad request")
        session = request.app[SESSION]
        try:
            async with session.post(
                erp_url + "/reservations",
                data=orjson.dumps(erp_body),
                headers={"Idempotency-Key": rid, "Content-Type": "application/json"},
            ) as r:
                answer = orjson.loads(await r.read() or b"{}")
                status, retry_after = r.status, r.headers.get("Retry-After")
        except TimeoutError:
            return problem(504, "the ERP did not answer in time")
        except aiohttp.ClientError:
            return problem(502, "the ERP is unreachable")
        if status == 200:
            reply = {
                "reservation_id": rid,
                "status": "confirmed",
                "priority": erp_body["priority"],
                "lines": answer.get("lines", erp_body["lines"]),
            }
            return web.Response(
                body=orjson.dumps(reply), status=201, content_type="application/json"
            )
        if status == 409:
            return problem(409, answer.get("reason", "insufficient stock"))
        if status == 429:
            return problem(429, "the ERP is busy", {"Retry-After": retry_after or "1"})
        return problem(502, f"the ERP answered {status}")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        yield
        await app[SESSION].close()

    app = web.Application()
    app.router.add_post("/v1/reservations", create)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(session_ctx)
    return app


async def serve(port: int, erp_url: str, erp_timeout: float) -> None:
    runner = web.AppRunner(make_app(erp_url.rstrip("/"), erp_timeout), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.erp_url, args.timeout))


if __name__ == "__main__":
    main()
