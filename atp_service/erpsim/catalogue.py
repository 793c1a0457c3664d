"""Starting stock: a generated catalogue, or a retailer's own file.

- generated: SKUs ``SKU-000001``... times locations ``LOC-01``..., each with the same figures;
- a seed file: JSON Lines (one ``{"sku", "location", "on_hand", "allocated"?,
  "safety_stock"?}`` per line; blank lines and ``#`` comments skipped), or CSV with a header
  row naming those columns (``*.csv``). Other fields or columns (a retailer's export has
  many) are ignored. Every line is checked; an error names its line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from .schema import BadBody, StockItem, parse_json, stock_item


def generated(
    skus: int, locations: int, on_hand: int, safety_stock: int = 0
) -> Iterator[StockItem]:
    sku_width = max(6, len(str(skus)))
    loc_width = max(2, len(str(locations)))
    for s in range(1, skus + 1):
        sku = f"SKU-{s:0{sku_width}d}"
        for loc in range(1, locations + 1):
            yield StockItem(sku, f"LOC-{loc:0{loc_width}d}", on_hand, 0, safety_stock)


def load(path: Path) -> list[StockItem]:
    """Every item of a seed file; raises :class:`BadBody` naming the first bad line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BadBody(f"cannot read seed file {path}: {exc.strerror}") from None
    items = list(_csv(text, path) if path.suffix.lower() == ".csv" else _jsonl(text, path))
    if not items:
        raise BadBody(f"seed file {path} holds no items")
    return items


def _jsonl(text: str, path: Path) -> Iterator[StockItem]:
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            yield stock_item(parse_json(line.encode()), "", extra_ok=True)
        except BadBody as exc:
            raise BadBody(f"{where}: {exc}") from None


_COLUMNS = ("sku", "location", "on_hand", "allocated", "safety_stock")
_NUMERIC = frozenset(_COLUMNS[2:])


def _csv(text: str, path: Path) -> Iterator[StockItem]:
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or ()]
    missing = {"sku", "location", "on_hand"} - set(header)
    if missing:
        raise BadBody(f"{path}: the header row lacks {', '.join(sorted(missing))}")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        raw: dict[str, object] = {}
        for name, value in row.items():
            name = (name or "").strip()
            value = (value or "").strip() if isinstance(value, str) else ""
            if name not in _COLUMNS or value == "":
                continue
            raw[name] = _int_or_text(value) if name in _NUMERIC else value
        try:
            yield stock_item(raw, "")
        except BadBody as exc:
            raise BadBody(f"{where}: {exc}") from None


def _int_or_text(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        return value  # stock_item then names the field as not an integer
