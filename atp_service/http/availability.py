"""Availability lookups: served from this replica's memory only, never awaiting I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from .. import decode
from ..cache import Cache
from ..config import ApiKey
from ..errors import BadRequest, NotFound, UnknownGroup
from ..inventory import ALLOCATED, FLAG_GAP, FLAGS, ON_HAND, PENDING, SAFETY, SEQ
from .endpoint import JSON_HEADERS, json_response, read_json
from .response import FastResponse

MEMO_MAX = 100_000  # memoised bodies kept (~0.8 KB each: ~80 MB at most); cleared when full


class Availability:
    def __init__(
        self,
        cache: Cache,
        groups: Mapping[str, tuple[str, ...]],
        low_stock: int,
        fresh: Callable[[], bool],
    ) -> None:
        self.cache = cache
        self.groups = groups
        self.low = low_stock
        self.fresh = fresh
        self.memo: dict[str, tuple[int, bytes]] = {}  # sku -> (cache version, encoded body)
        self.totals: dict[str, tuple[int, int, bool]] = {}  # sku -> (version, total ATP, gap)

    def _status(self, atp: int) -> str:
        if atp <= 0:
            return "out_of_stock"
        return "low_stock" if atp <= self.low else "in_stock"

    def _group(self, name: str) -> tuple[str, ...]:
        members = self.groups.get(name)
        if members is None:
            raise UnknownGroup(f"unknown location group {name!r}")
        return members

    async def one(self, request: web.Request, _key: ApiKey | None) -> web.Response:
        sku = request.match_info["sku"]
        cache = self.cache
        locs = cache.locations(sku)
        if locs is None:
            if not decode.is_identifier(sku):
                raise BadRequest("sku must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
            raise NotFound(f"unknown sku {sku!r}")
        fresh = self.fresh()
        if request.query_string:
            return json_response(self._render(sku, self._filtered(request, locs), locs, fresh))
        # The hot path: a whole-sku lookup. Its encoded body is memoised until any row of the
        # sku changes (cache.version), so a repeated lookup is a dict hit, not a re-render.
        version = cache.version(sku)
        memo = self.memo.get(sku)
        if memo is not None and memo[0] == version and fresh:
            return FastResponse(body=memo[1], headers=JSON_HEADERS)
        body = orjson.dumps(self._render(sku, list(locs), locs, fresh))
        if fresh:
            if len(self.memo) >= MEMO_MAX:
                self.memo.clear()
            # A copy: the bytes orjson returns keep its whole output buffer (4.3 KB resident
            # per memoised 0.5 KB body, against 0.8 KB for a copy, measured with orjson 3.13):
            # a full memo would hold ~430 MB instead of ~80 MB.
            self.memo[sku] = (version, bytes(memoryview(body)))
        return FastResponse(body=body, headers=JSON_HEADERS)

    def _filtered(self, request: web.Request, locs: dict[str, int]) -> list[str]:
        query = request.query
        wanted: set[str] = set()
        for loc in query.getall("location", ()):
            if not decode.is_identifier(loc):
                raise BadRequest(f"location {loc[:70]!r} is not a valid identifier")
            wanted.add(loc)
        for group in query.getall("group", ()):
            if not decode.is_identifier(group):
                raise BadRequest(f"group {group[:70]!r} is not a valid identifier")
            wanted.update(self._group(group))
        extra = query.keys() - {"location", "group"}
        if extra:
            raise BadRequest(f"unknown query parameter {sorted(extra)[0]!r}")
        return [n for n in locs if n in wanted]

    def _render(
        self, sku: str, names: list[str], locs: dict[str, int], fresh: bool
    ) -> dict[str, Any]:
        rows = self.cache.rows([locs[n] for n in names]) if names else []
        status = self._status
        total = 0
        stale = not fresh
        out = []
        for name, r in zip(names, rows, strict=True):
            atp = r[ON_HAND] - r[ALLOCATED] - r[SAFETY] - r[PENDING]
            atp = atp if atp > 0 else 0
            total += atp
            if r[FLAGS] & FLAG_GAP:
                stale = True
            out.append(
                {
                    "location": name,
                    "atp": atp,
                    "on_hand": r[ON_HAND],
                    "allocated": r[ALLOCATED],
                    "safety_stock": r[SAFETY],
                    "pending": r[PENDING],
                    "seq": r[SEQ],
                    "status": status(atp),
                }
            )
        return {"sku": sku, "total_atp": total, "stale": stale, "locations": out}

    async def batch(self, request: web.Request, _key: ApiKey | None) -> web.Response:
        return json_response(self.answer(decode.availability_items(await read_json(request))))

    def answer(self, items: list[decode.Item]) -> dict[str, Any]:
        """The batch answer for decoded items, in one pass. A location's ATP is read straight
        from its record; a whole-sku total from a memo kept until any row of the sku changes
        (``cache.version``). Measured on the benchmark's 100-item body: 39 µs, against 61 µs
        for two passes around one vectorised ATP step (numpy's ~9 µs fixed cost per call
        outweighs its per-row gain at this size)."""
        cache = self.cache
        by_sku = cache.by_sku
        changed_at = cache.changed_at
        bulk_at = cache.bulk_at
        ints = cache.ints()
        totals = self.totals
        low = self.low
        gap = False
        out: list[dict[str, Any]] = []
        for sku, loc, group, qty in items:
            locs = by_sku.get(sku)
            atp = -1  # no such sku, or none of the asked locations
            if loc is not None:
                item: dict[str, Any] = {"sku": sku, "location": loc}
                row = None if locs is None else locs.get(loc)
                if row is not None:
                    at = row * 8
                    atp = ints[at + ON_HAND] - ints[at + ALLOCATED] - ints[at + SAFETY]
                    atp -= ints[at + PENDING]
                    if atp < 0:
                        atp = 0
                    if ints[at + FLAGS] & FLAG_GAP:
                        gap = True
            elif group is not None:
                item = {"sku": sku, "group": group}
                members = self._group(group)  # an unknown group is 400 even for an unknown sku
                if locs is not None:
                    for member in members:
                        row = locs.get(member)
                        if row is not None:
                            at = row * 8
                            one = ints[at + ON_HAND] - ints[at + ALLOCATED] - ints[at + SAFETY]
                            atp = max(atp, 0) + max(one - ints[at + PENDING], 0)
                            if ints[at + FLAGS] & FLAG_GAP:
                                gap = True
            else:
                item = {"sku": sku}
                if locs is not None:
                    version = changed_at.get(sku, bulk_at)
                    memo = totals.get(sku)
                    if memo is None or memo[0] != version:
                        atps, sku_gap = cache.atp_many(list(locs.values()))
                        if len(totals) >= MEMO_MAX:
                            totals.clear()
                        memo = totals[sku] = (version, sum(atps), sku_gap)
                    atp = memo[1]
                    if memo[2]:
                        gap = True
            if atp < 0:
                item["atp"], item["available"], item["status"] = 0, False, "unknown"
            else:
                status = "out_of_stock" if atp <= 0 else "low_stock" if atp <= low else "in_stock"
                item["atp"], item["available"], item["status"] = atp, atp >= qty, status
            out.append(item)
        return {"items": out, "stale": gap or not self.fresh()}
