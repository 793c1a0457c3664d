"""The single-sku lookup memo stays within its documented memory: ~0.8 KB per memoised body
(MEMO_MAX bodies, ~80 MB at most), not the ~4.3 KB each that keeping orjson's own output
bytes costs (they hold on to orjson's whole output buffer).

Measured in a fresh interpreter (resident memory before and after filling the memo through
the real handler), so memory freed by earlier tests cannot hide the growth."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import asyncio, struct, sys
from atp_service.cache import Cache
from atp_service.http.availability import Availability
from atp_service.inventory import RECORD_FORMAT

N = 20_000

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")

cache = Cache()
record = struct.pack(RECORD_FORMAT, 100, 3, 2, 7, 1, 1, 1, 0)
for s in range(N):
    for loc in range(4):
        cache.apply(f"SKU-{s:06d}|LOC-{loc:02d}", record)
lookups = Availability(cache, {}, 5, lambda: True)

class Request:  # what the handler reads of a request (aiohttp's mocked one is ~1 ms to make)
    query_string = ""
    def __init__(self, sku):
        self.match_info = {"sku": sku}

requests = [Request(f"SKU-{s:06d}") for s in range(N)]

async def main():
    sizes = 0
    before = rss()
    for request in requests:
        sizes += len((await lookups.one(request, None)).body)
    grown = rss() - before
    assert len(lookups.memo) == N, len(lookups.memo)
    print(grown / N, sizes / N)

asyncio.run(main())
"""


def test_memoised_bodies_cost_about_their_size() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    per_entry, body = map(float, out.stdout.split())
    assert 400 < body < 700  # a 4-location sku's answer
    # ~0.8 KB measured with a right-sized copy, 4.3 KB with orjson's own bytes
    assert per_entry < 1600, f"{per_entry:.0f} B resident per memoised {body:.0f}-byte body"
