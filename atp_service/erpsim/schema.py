"""Decoders for the simulator's request bodies and seed data: JSON values -> typed values.

Pure. Identifiers and quantities follow the service's rules (contract.md s2), so data the
simulator accepts is data the service accepts. ``bool`` is never an integer here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import PRIORITIES
from ..inventory import MAX_QTY
from .ledger import Line

# The service's identifier rule (contract.md s2; decode.ID_RE, which a test keeps this equal to).
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MAX_LINES = 1000
MAX_ITEMS = 100_000


class BadBody(ValueError):
    """A request body or seed line the simulator refuses (HTTP 400, or a start-up error)."""


@dataclass(frozen=True, slots=True)
class StockItem:
    """Figures to set on one key; None keeps the current value (0 for a new key)."""

    sku: str
    location: str
    on_hand: int
    allocated: int | None = None
    safety_stock: int | None = None


@dataclass(frozen=True, slots=True)
class ReservationBody:
    reservation_id: str
    priority: str
    lines: tuple[Line, ...]


def parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"body is not valid JSON: {exc}") from None


def obj(value: object, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise BadBody(f"{where or 'body'} must be a JSON object")
    return value


def no_extra(value: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(value.keys() - allowed)
    if extra:
        raise BadBody(f"{where}/{extra[0]}: unknown field")


def identifier(value: object, where: str) -> str:
    if type(value) is not str or ID_RE.fullmatch(value) is None:
        raise BadBody(f"{where} must be an identifier matching [A-Za-z0-9][A-Za-z0-9._:-]{{0,63}}")
    return value


def integer(value: object, where: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise BadBody(f"{where} must be an integer between {lo} and {hi}")
    return value


def number(value: object, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise BadBody(f"{where} must be a number between {lo:g} and {hi:g}")
    return float(value)


def boolean(value: object, where: str) -> bool:
    if type(value) is not bool:
        raise BadBody(f"{where} must be true or false")
    return value


_RESERVATION = frozenset({"reservation_id", "priority", "lines"})
_LINE = frozenset({"sku", "location", "qty"})


def reservation(body: object) -> ReservationBody:
    value = obj(body, "")
    no_extra(value, _RESERVATION, "")
    rid = identifier(value.get("reservation_id"), "/reservation_id")
    priority = value.get("priority")
    if priority not in PRIORITIES:
        raise BadBody(f"/priority must be one of {', '.join(PRIORITIES)}")
    raw_lines = value.get("lines")
    if type(raw_lines) is not list or not 1 <= len(raw_lines) <= MAX_LINES:
        raise BadBody(f"/lines must be an array of 1 to {MAX_LINES} lines")
    lines = []
    for i, raw in enumerate(raw_lines):
        where = f"/lines/{i}"
        line = obj(raw, where)
        no_extra(line, _LINE, where)
        lines.append(
            Line(
                identifier(line.get("sku"), where + "/sku"),
                identifier(line.get("location"), where + "/location"),
                integer(line.get("qty"), where + "/qty", 1, MAX_QTY),
            )
        )
    return ReservationBody(rid, str(priority), tuple(lines))


_ITEM = frozenset({"sku", "location", "on_hand", "allocated", "safety_stock"})


def stock_item(raw: object, where: str, extra_ok: bool = False) -> StockItem:
    value = obj(raw, where)
    if not extra_ok:
        no_extra(value, _ITEM, where)
    allocated = value.get("allocated")
    safety = value.get("safety_stock")
    return StockItem(
        identifier(value.get("sku"), where + "/sku"),
        identifier(value.get("location"), where + "/location"),
        integer(value.get("on_hand"), where + "/on_hand", 0, MAX_QTY),
        None if allocated is None else integer(allocated, where + "/allocated", 0, MAX_QTY),
        None if safety is None else integer(safety, where + "/safety_stock", 0, MAX_QTY),
    )


def stock_items(body: object) -> list[StockItem]:
    value = obj(body, "")
    no_extra(value, frozenset({"items"}), "")
    items = value.get("items")
    if type(items) is not list or not 1 <= len(items) <= MAX_ITEMS:
        raise BadBody(f"/items must be an array of 1 to {MAX_ITEMS} items")
    return [stock_item(raw, f"/items/{i}") for i, raw in enumerate(items)]
