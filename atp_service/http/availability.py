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
from ..inventory import ALLOCATED, FLAG_GAP, FLAGS, MAX_QTY, ON_HAND, PENDING, SAFETY, SEQ
from .endpoint import JSON_HEADERS, json_response, read_json
from .response import FastResponse

Fragment = tuple[int, bytes, bytes, int, bool]
_PLAIN_ITEM = frozenset({"sku", "location", "qty"})
MEMO_MAX = 100_000  # memoised bodies kept (~0.8 KB each: ~80 MB at most); cleared when full


def _compact(body: bytes) -> bytes:
    """A right-sized copy of ``body`` to keep: the bytes orjson returns keep its whole output
    buffer (4.3 KB resident per memoised 0.5 KB body, against 0.8 KB for a copy, measured with
    orjson 3.13), so a full memo would hold ~430 MB instead of ~80 MB."""
    return bytes(memoryview(body))


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
        # (sku, location or None) -> its batch item encoded (see :meth:`batch_bytes`)
        self.items: dict[tuple[str, str | None], Fragment] = {}

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
            self.memo[sku] = (version, _compact(body))
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
        body = await read_json(request)
        encoded = self.batch_bytes(body)
        if encoded is not None:
            return FastResponse(body=encoded, headers=JSON_HEADERS)
        return json_response(self.answer(decode.availability_items(body)))

    def batch_bytes(self, body: object) -> bytes | None:
        """The batch answer, encoded, for the common body: every item a valid ``sku`` with a
        ``location`` or alone (whole sku), no ``group``. ``None`` at the first doubt (an
        invalid item, a group): then :func:`decode.availability_items` and :meth:`answer`
        answer, with their precise errors. Equal to ``orjson.dumps(answer(...))`` (tests/
        test_batch.py checks it).

        Each (sku, location) item's encoding is memoised, in both its ``available`` forms,
        until any row of the sku changes (``cache.version``), so a repeated item costs a
        dict hit and no validation (only valid identifiers are memoised) or encoding. Measured
        on the benchmark's 100-item body, 35 µs with ``orjson.loads``, against 58 µs through
        ``decode.availability_items``, :meth:`answer` and ``orjson.dumps`` (in-process)."""
        if type(body) is not dict or body.keys() != decode.ITEMS_ONLY:
            return None
        raw_items = body["items"]
        if type(raw_items) is not list or not 0 < len(raw_items) <= decode.MAX_BATCH_ITEMS:
            return None
        cache = self.cache
        version_of = cache.changed_at.get
        bulk_at = cache.bulk_at
        memoised = self.items.get
        plain = _PLAIN_ITEM.issuperset  # an item with a group key (even null) goes the general way
        qmax = MAX_QTY
        out: list[bytes] = []
        append = out.append
        gap = False
        try:
            for raw in raw_items:
                if type(raw) is not dict or not plain(raw):
                    return None
                sku: Any = raw.get("sku")
                loc: Any = raw.get("location")
                qty = raw.get("qty")
                if qty is None:
                    qty = 1
                elif type(qty) is not int or not 1 <= qty <= qmax:
                    return None
                # No type checks on sku and location: a memoised key is two valid identifiers
                # (so a hit is one), _fragment refuses anything else, and an unhashable value
                # (a list, an object) raises TypeError here.
                version = version_of(sku, bulk_at)
                item = memoised((sku, loc))
                if item is None or item[0] != version:
                    item = self._fragment(sku, loc, version)
                    if item is None:
                        return None
                append(item[1] if item[3] >= qty else item[2])
                if item[4]:
                    gap = True
        except TypeError:
            return None
        tail = b'],"stale":true}' if gap or not self.fresh() else b'],"stale":false}'
        return b'{"items":[' + b",".join(out) + tail

    def _fragment(self, sku: object, loc: object, version: int) -> Fragment | None:
        """(version, encoded item if available, if not, ATP to compare qty with (-1: unknown),
        stale), memoised; ``None`` for an invalid identifier (not memoised)."""
        if type(sku) is not str or not decode.is_identifier(sku):
            return None
        if loc is not None and (type(loc) is not str or not decode.is_identifier(loc)):
            return None
        (answer,), gap = self._answer([(sku, loc, None, 1)])
        atp = answer["atp"] if answer["status"] != "unknown" else -1
        answer["available"] = True
        yes = _compact(orjson.dumps(answer))
        answer["available"] = False
        no = _compact(orjson.dumps(answer))
        if len(self.items) >= MEMO_MAX:
            self.items.clear()
        item = self.items[(sku, loc)] = (version, yes, no, atp, gap)
        return item

    def answer(self, items: list[decode.Item]) -> dict[str, Any]:
        out, gap = self._answer(items)
        return {"items": out, "stale": gap or not self.fresh()}

    def _answer(self, items: list[decode.Item]) -> tuple[list[dict[str, Any]], bool]:
        """The batch answer's items for decoded items, in one pass, and whether any of them
        reads a seq gap. A location's ATP is read straight from its record; a whole-sku
        total from a memo kept until any row of the sku changes (``cache.version``). Measured
        on the benchmark's 100-item body: 39 µs, against 61 µs for two passes around one
        vectorised ATP step (numpy's ~9 µs fixed cost per call outweighs its per-row gain at
        this size)."""
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
        return out, gap
