"""Availability lookups: served from this replica's memory only, never awaiting I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import msgspec
import orjson
from aiohttp import web

from .. import decode
from ..cache import Cache
from ..config import ApiKey
from ..errors import BadRequest, NotFound, UnknownGroup
from ..inventory import ALLOCATED, FLAG_GAP, FLAGS, MAX_QTY, ON_HAND, PENDING, SAFETY, SEQ
from .endpoint import JSON_HEADERS, json_response, parse_json, read_body
from .response import FastResponse

MEMO_MAX = 100_000  # entries per memo (~0.8 KB a body, ~0.5 KB a batch item); emptied when full


def _compact(body: bytes) -> bytes:
    """A right-sized copy of ``body`` to keep: the bytes orjson returns keep its whole output
    buffer (4.3 KB resident per memoised 0.5 KB body, against 0.8 KB for a copy, measured with
    orjson 3.13), so a full memo would hold ~430 MB instead of ~80 MB."""
    return bytes(memoryview(body))


class BatchItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One item of a batch body as :meth:`Availability.batch_bytes` decodes it: typed (a
    ``qty`` of ``true`` or ``1.0`` is refused, not equal to 1), no unknown key, hashable (the
    key of its memoised answer). Identifiers are checked before an item is memoised."""

    sku: str
    location: str | None = None
    group: str | None = None
    qty: Annotated[int, msgspec.Meta(ge=1, le=MAX_QTY)] | None = None  # null or absent: 1


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=decode.MAX_BATCH_ITEMS)]


_decode_batch = msgspec.json.Decoder(BatchBody).decode


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
        # Memos of what is derived from a sku's rows: the cache deletes an entry as soon as a
        # row of its sku changes (Cache.memo), so an entry found is current.
        self.memo: dict[str, bytes] = cache.memo()  # sku -> its encoded single-sku answer
        self.totals: dict[str, tuple[int, bool]] = cache.memo()  # sku -> (total ATP, gap)
        self.encoded: dict[BatchItem, bytes] = cache.memo()  # batch item -> its encoded answer

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
        # sku changes (Cache.memo), so a repeated lookup is a dict hit, not a re-render.
        body = self.memo.get(sku)
        if body is not None and fresh:
            return FastResponse(body=body, headers=JSON_HEADERS)
        body = orjson.dumps(self._render(sku, list(locs), locs, fresh))
        if fresh:
            self._remember(self.memo, sku, sku, _compact(body))
        return FastResponse(body=body, headers=JSON_HEADERS)

    def _remember(self, memo: dict[Any, Any], sku: str, key: Any, value: Any) -> None:
        if len(memo) >= MEMO_MAX:
            self.cache.forget_all()
        self.cache.remember(memo, sku, key, value)

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
        raw = await read_body(request)
        encoded = self.batch_bytes(raw)
        if encoded is not None:
            return FastResponse(body=encoded, headers=JSON_HEADERS)
        return json_response(self.answer(decode.availability_items(parse_json(raw))))

    def batch_bytes(self, raw: bytes) -> bytes | None:
        """The batch answer to the body ``raw``, encoded; ``None`` at the first doubt (a body
        :data:`BatchBody` refuses, an invalid identifier, an unknown group):
        then :func:`decode.availability_items` and :meth:`answer` answer, with their precise
        errors. Equal to ``orjson.dumps(answer(...))`` (tests/test_batch.py checks it).

        msgspec decodes and types the body in one C step, into hashable items, and each
        item's encoded answer is memoised (:attr:`encoded`) until a row of its sku changes.
        So when every item is memoised, the answer is one C-level pass of dict lookups and
        a join: no Python code per item. Measured in-process on the benchmark's 100-item body,
        all memoised: 15 µs from the raw bytes, against 36-53 µs for the code before it
        (``orjson.loads``, then a Python loop over a (sku, location) memo with a version
        check per item) and 60 µs for the general path."""
        try:
            items = _decode_batch(raw).items
        except msgspec.DecodeError:  # ValidationError included
            return None
        gap = False
        try:
            # An item not memoised gives None, and join raises TypeError at it.
            joined = b",".join(map(self.encoded.get, items))  # type: ignore[arg-type]
        except TypeError:
            parts = self._encode_all(items)
            if parts is None:
                return None
            joined, gap = parts
        tail = b'],"stale":true}' if gap or not self.fresh() else b'],"stale":false}'
        return b'{"items":[' + joined + tail

    def _encode_all(self, items: list[BatchItem]) -> tuple[bytes, bool] | None:
        """The items' answers joined, memoising each new one, and whether any reads a seq
        gap (those are not memoised); ``None`` if an item is invalid."""
        memoised = self.encoded.get
        out = []
        gap = False
        for item in items:
            encoded = memoised(item)
            if encoded is None:
                if not self._valid(item):
                    return None
                one = (item.sku, item.location, item.group, item.qty or 1)
                (answer,), item_gap = self._answer([one])
                encoded = orjson.dumps(answer)
                if item_gap:
                    gap = True
                else:  # kept: a right-sized copy
                    encoded = _compact(encoded)
                    self._remember(self.encoded, item.sku, item, encoded)
            out.append(encoded)
        return b",".join(out), gap

    def _valid(self, item: BatchItem) -> bool:
        """Whether the general path answers this typed item rather than refusing it: valid
        identifiers, not both a location and a group, a known group."""
        loc, group = item.location, item.group
        if not decode.is_identifier(item.sku):
            return False
        if loc is not None:
            return group is None and decode.is_identifier(loc)
        return group is None or group in self.groups

    def answer(self, items: list[decode.Item]) -> dict[str, Any]:
        out, gap = self._answer(items)
        return {"items": out, "stale": gap or not self.fresh()}

    def _answer(self, items: list[decode.Item]) -> tuple[list[dict[str, Any]], bool]:
        """The batch answer's items for decoded items, in one pass, and whether any of them
        reads a seq gap. A location's ATP is read straight from its record; a whole-sku
        total from a memo kept until any row of the sku changes (``Cache.memo``). Measured
        on the benchmark's 100-item body: 39 µs, against 61 µs for two passes around one
        vectorised ATP step (numpy's ~9 µs fixed cost per call outweighs its per-row gain at
        this size)."""
        cache = self.cache
        by_sku = cache.by_sku
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
                    memo = totals.get(sku)
                    if memo is None:
                        atps, sku_gap = cache.atp_many(list(locs.values()))
                        memo = (sum(atps), sku_gap)
                        self._remember(totals, sku, sku, memo)
                    atp = memo[0]
                    if memo[1]:
                        gap = True
            if atp < 0:
                item["atp"], item["available"], item["status"] = 0, False, "unknown"
            else:
                status = "out_of_stock" if atp <= 0 else "low_stock" if atp <= low else "in_stock"
                item["atp"], item["available"], item["status"] = atp, atp >= qty, status
            out.append(item)
        return out, gap
