"""A paced lookup prober: GET /v1/availability/{sku} at a steady rate on one keep-alive
connection, each latency timed from the write of the request to the last byte of the answer.

Written on raw asyncio streams (uvloop), not an HTTP client library, so the prober itself adds
tens of microseconds, not hundreds: it is meant to tell whether lookups stay under 1 ms while
something else (an overload, an ingest) runs. One request at a time: if an answer is late,
the next request goes as soon as it arrives (its scheduled time is recorded too).

Runs until ``--duration`` seconds or SIGTERM, then writes ``--out`` (JSON):
``{"samples": [[wall_time, latency_s, status, lag_s], ...]}`` where lag = actual send time -
scheduled send time.

    python -m benchmarks.lookup_probe --port P --token T --skus 200 --rate 100 --out F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import uvloop


async def probe(args: argparse.Namespace) -> list[list[float]]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    host = f"127.0.0.1:{args.port}"
    requests = [
        (
            f"GET /v1/availability/{args.prefix}{i:06d} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {args.token}\r\n\r\n"
        ).encode()
        for i in range(args.first, args.first + args.skus)
    ]
    samples: list[list[float]] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    interval = 1.0 / args.rate
    started = time.perf_counter()
    end = started + args.duration
    i = 0
    while not stop.is_set() and time.perf_counter() < end:
        scheduled = started + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        wall = time.time()
        t0 = time.perf_counter()
        try:
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            status = int(head[9:12])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
        samples.append([wall, time.perf_counter() - t0, status, t0 - scheduled])
        i += 1
    writer.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--prefix", default="SKU-")
    parser.add_argument("--first", type=int, default=1, help="first SKU number")
    parser.add_argument("--skus", type=int, required=True, help="SKUs to rotate over")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    samples = uvloop.run(probe(args))
    with open(args.out, "w") as f:
        json.dump({"samples": samples}, f)


if __name__ == "__main__":
    main()
