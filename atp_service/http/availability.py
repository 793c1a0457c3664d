"""Availability lookups: served from this replica's memory only, never awaiting I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .. import decode
from ..cache import Cache
from ..config import ApiKey
from ..errors import BadRequest, NotFound, UnknownGroup
from ..inventory import ALLOCATED, FLAG_GAP, FLAGS, ON_HAND, PENDING, SAFETY, SEQ
from .endpoint import json_response, read_json


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
        if not decode.is_identifier(sku):
            raise BadRequest("sku must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
        locs = self.cache.locations(sku)
        if locs is None:
            raise NotFound(f"unknown sku {sku!r}")
        query = request.query
        if query:
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
            names = [n for n in locs if n in wanted]
        else:
            names = list(locs)
        rows = self.cache.rows([locs[n] for n in names]) if names else []
        status = self._status
        total = 0
        stale = not self.fresh()
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
        return json_response({"sku": sku, "total_atp": total, "stale": stale, "locations": out})

    async def batch(self, request: web.Request, _key: ApiKey | None) -> web.Response:
        items = decode.availability_items(await read_json(request))
        cache = self.cache
        stale = not self.fresh()
        out: list[dict[str, Any]] = []
        for sku, loc, group, qty in items:
            locs = cache.locations(sku)
            item: dict[str, Any] = {"sku": sku}
            if loc is not None:
                item["location"] = loc
                rows = [locs[loc]] if locs is not None and loc in locs else []
            elif group is not None:
                item["group"] = group
                members = self._group(group)
                rows = [locs[m] for m in members if m in locs] if locs is not None else []
            else:
                rows = list(locs.values()) if locs is not None else []
            if not rows:
                item.update(atp=0, available=False, status="unknown")
            else:
                atp = cache.group_atp(rows) if len(rows) > 1 else _row_atp(cache.row(rows[0]))
                stale = stale or cache.any_gap(rows)
                item.update(atp=atp, available=atp >= qty, status=self._status(atp))
            out.append(item)
        return json_response({"items": out, "stale": stale})


def _row_atp(r: list[int]) -> int:
    atp = r[ON_HAND] - r[ALLOCATED] - r[SAFETY] - r[PENDING]
    return atp if atp > 0 else 0
