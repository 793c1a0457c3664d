"""The lookup memos stay within their documented memory: ~0.8 KB per memoised single-sku
body and ~0.5 KB per memoised batch item (MEMO_MAX entries each), not the ~4.3 KB each that
keeping orjson's own output bytes costs (they hold on to orjson's whole output buffer).

Measured in a fresh interpreter (resident memory before and after filling a memo through
the real handler), so memory freed by earlier tests cannot hide the growth."""

from __future__ import annotations

import subprocess
import sys

# N skus of 4 locations in a cache, and a reader of resident memory
PRELUDE = r"""
import asyncio, struct, sys
import orjson
from atp_service.cache import Cache
from atp_service.http.availability import Availability
from atp_service.inventory import RECORD_FORMAT

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
"""

SINGLE = r"""
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

BATCH = r"""
bodies = [
    orjson.dumps({"items": [
        {"sku": f"SKU-{i // 4:06d}", "location": f"LOC-{i % 4:02d}", "qty": 2}
        for i in range(b * 100, b * 100 + 100)
    ]})
    for b in range(N * 4 // 100)
]
before = rss()
for raw in bodies:
    assert lookups.batch_bytes(raw) is not None
grown = rss() - before
assert len(lookups.encoded) == N * 4, len(lookups.encoded)
print(grown / (N * 4))
"""


def _run(n: int, script: str) -> list[float]:
    code = f"N = {n}\n{PRELUDE}\n{script}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return [float(x) for x in out.stdout.split()]


def test_memoised_bodies_cost_about_their_size() -> None:
    per_entry, body = _run(20_000, SINGLE)
    assert 400 < body < 700  # a 4-location sku's answer
    # ~0.8 KB measured with a right-sized copy, 4.3 KB with orjson's own bytes
    assert per_entry < 1600, f"{per_entry:.0f} B resident per memoised {body:.0f}-byte body"


def test_memoised_batch_items_cost_about_their_size() -> None:
    (per_item,) = _run(5_000, BATCH)  # 20,000 distinct items
    # ~0.5 KB measured (item, its ~80-byte answer, the cache's index entry), 4.4 KB with
    # orjson's own bytes
    assert per_item < 1200, f"{per_item:.0f} B resident per memoised batch item"
