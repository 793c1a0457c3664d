"""The naive reservation service, written the way a user would write it: one aiohttp handler,
one Redis round trip per request (a Lua script via redis-py's ``register_script``: EVALSHA,
falling back to EVAL), no batching across requests, no cache.

The script is still correct (atomic check-and-decrement of every line, idempotent on the
reservation id), so the comparison with ours is about the I/O pattern, not about cutting
corners. Stock lives in one hash ``naive:stock`` (field ``sku|location`` -> units left).

    python -m benchmarks.baseline_naive_reserve --port 18002 --redis-url redis://127.0.0.1:P/0
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

STOCK = "naive:stock"
RESERVE = """
-- KEYS: 1 reservation, 2 stock hash; ARGV: 1 body json, then pairs field, qty
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGET', KEYS[1], 'body')}
end
for i = 2, #ARGV, 2 do
  local have = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if have < tonumber(ARGV[i + 1]) then return {-1, ARGV[i]} end
end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], -tonumber(ARGV[i + 1]))
end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'status', 'confirmed')
return {1, ARGV[1]}
"""


def make_app(redis_url: str) -> web.Application:
    client = aioredis.Redis.from_url(redis_url)
    reserve = client.register_script(RESERVE)

    async def create(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            rid = body["reservation_id"]
            args: list[str | int] = []
            lines = []
            for line in body["lines"]:
                args += (f"{line['sku']}|{line['location']}", int(line["qty"]))
                lines.append(
                    {"sku": line["sku"], "location": line["location"], "qty": int(line["qty"])}
                )
        except (ValueError, KeyError, TypeError):
            return web.json_response({"title": "bad request"}, status=400)
        doc = orjson.dumps(
            {
                "reservation_id": rid,
                "status": "confirmed",
                "priority": body.get("priority"),
                "lines": lines,
            }
        )
        code, payload = await reserve(keys=[f"naive:res:{rid}", STOCK], args=[doc, *args])
        if code == -1:
            return web.json_response({"title": "insufficient stock"}, status=409)
        return web.Response(
            body=payload, status=201 if code == 1 else 200, content_type="application/json"
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def close(_app: web.Application) -> None:
        await client.aclose()

    app = web.Application()
    app.router.add_post("/v1/reservations", create)
    app.router.add_get("/healthz", healthz)
    app.on_cleanup.append(close)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, make_app(args.redis_url)))


if __name__ == "__main__":
    main()
