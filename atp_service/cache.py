"""The per-replica ATP cache: packed records in one numpy array, indexed by sku then location.

Lookups read only this (never await I/O). Records arrive from the bulk warm-up, from the
change stream, and from this replica's own script replies; each carries a per-key version
(``ver``) bumped by every script, so an older record arriving late never overwrites a newer one.
What readers derive from a sku's rows (encoded answers, totals) lives in memos the cache
empties of that sku's entries as it stores any of its rows (:meth:`Cache.memo`).

Memory per key: 64 bytes of array + one slot in the sku's location dict + the row int
(~150 bytes in all; measured by ``benchmarks/warmup.py``).
"""

from __future__ import annotations

import os
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .inventory import ALLOCATED, FLAG_GAP, FLAGS, ON_HAND, PENDING, SAFETY, VER

Row = list[int]
_VER_AT = VER * 8  # byte offset of the version in a packed record
_REC = 64  # bytes per packed record: 8 little-endian int64 (inventory.FIELDS)
_version_of = struct.Struct("<q").unpack_from
# Single records go in and out of the array as raw bytes through memoryviews (a 64-byte copy:
# ~0.1 µs, against ~1.1 µs for numpy's row assignment; a row as a list: 0.2 against 0.4 µs),
# which takes the host's int64 to be the records' little-endian one.
if sys.byteorder != "little":  # pragma: no cover - x86-64 and arm64 are little-endian
    raise ImportError("atp_service.cache needs a little-endian host")


class Cache:
    def __init__(self, capacity: int = 1024) -> None:
        self.arr: npt.NDArray[np.int64] = np.zeros((capacity, 8), dtype=np.int64)
        self._views()
        self.size = 0
        self.by_sku: dict[str, dict[str, int]] = {}
        self._locations: dict[str, str] = {}  # interned location names
        # What readers derive from a sku's rows (see :meth:`memo`): the memos, and by sku the
        # (memo, key) of each entry to delete as soon as a row of that sku changes.
        self._memos: list[dict[Any, Any]] = []
        self._derived: dict[str, list[tuple[dict[Any, Any], Any]]] = {}
        # This replica's own writes (see :meth:`own`): a writer id, the last token handed
        # out, the last token whose reply is in the cache, and own stream entries read
        # before their reply was.
        self.writer = os.urandom(6).hex()
        self._writer_b = self.writer.encode()
        self._token = 0
        self.acked = 0
        self._early: deque[tuple[int, dict[bytes, bytes]]] = deque()

    def __len__(self) -> int:
        return self.size

    def _row_for(self, sku: str, location: str, keep_sorted: bool = True) -> int:
        """The row of (sku, location), adding it if new; each sku's locations stay sorted."""
        locs = self.by_sku.get(sku)
        if locs is None:
            locs = self.by_sku[sku] = {}
        row = locs.get(location)
        if row is None:
            if self.size == len(self.arr):
                self._grow(self.size + 1)
            row = self.size
            self.size += 1
            last = next(reversed(locs), None)
            location = self._locations.setdefault(location, location)
            locs[location] = row
            if keep_sorted and last is not None and location < last:
                self.by_sku[sku] = dict(sorted(locs.items()))
        return row

    def _grow(self, need: int) -> None:
        capacity = max(need, len(self.arr) * 2)
        grown = np.zeros((capacity, 8), dtype=np.int64)
        grown[: self.size] = self.arr[: self.size]
        self.arr = grown
        self._views()

    def _views(self) -> None:
        """Byte and int64 views of ``arr`` (renewed whenever ``arr`` is replaced)."""
        self._bytes = self.arr.data.cast("B")
        self._ints = self._bytes.cast("q")

    def apply(self, key: str, record: bytes) -> bool:
        """Store one packed record unless the cache already has a newer version of it."""
        sku, _, location = key.partition("|")
        row = self._row_for(sku, location)
        # Version first: most stream entries are this replica's own writes,
        # already applied from the script's reply. Every saved record has ver >= 1.
        if _version_of(record, _VER_AT)[0] <= self._ints[row * 8 + VER]:
            return False
        at = row * _REC
        self._bytes[at : at + _REC] = record  # ValueError unless exactly one record
        if sku in self._derived:
            self.forget((sku,))
        return True

    def apply_replies(self, names: Sequence[str], reply: Sequence[Any], start: int) -> None:
        """The records of one ``apply_events`` reply (``reply[start + i]`` is the record of
        ``names[i]``, ``b''`` if the key has none), in one vectorised step."""
        pairs = [(n, r) for n, r in zip(names, reply[start:], strict=True) if r]
        if len(pairs) < 8:
            for name, record in pairs:
                self.apply(name, record)
            return
        row_for = self._row_for
        by_sku = self.by_sku
        skus = []
        rows = []
        for name, _ in pairs:
            sku, _, location = name.partition("|")
            skus.append(sku)
            locs = by_sku.get(sku)
            row = None if locs is None else locs.get(location)
            rows.append(row_for(sku, location) if row is None else row)
        at = np.array(rows, dtype=np.int64)
        values = np.frombuffer(b"".join([r for _, r in pairs]), dtype="<i8").reshape(-1, 8)
        keep = values[:, VER] > self.arr[at, VER]
        self.arr[at[keep]] = values[keep]
        if self._derived:
            changed = skus if keep.all() else [skus[i] for i in keep.nonzero()[0].tolist()]
            self.forget(changed)

    def next_token(self) -> int:
        """A token for one of this replica's writes whose reply is finished in token order."""
        self._token += 1
        return self._token

    def ack(self, token: int) -> None:
        """The reply of the write ``token`` (and of every earlier one) is in the cache."""
        self.acked = max(self.acked, token)
        early = self._early
        while early and early[0][0] <= token:
            early.popleft()

    def own(self, tag: bytes, fields: dict[bytes, bytes]) -> bool:
        """Whether a change-stream entry tagged ``tag`` is this replica's own write, which
        its reply brings (or brought) into the cache, so the tailer can skip it. An entry
        read before its reply is kept until the reply is in (then dropped) or until the
        writer gives up on the reply (:meth:`new_writer`: then applied)."""
        writer, _, token = tag.rpartition(b":")
        if writer != self._writer_b:
            return False
        tok = int(token)
        if tok > self.acked:
            self._early.append((tok, fields))
        return True

    def new_writer(self) -> None:
        """Replies of writes in flight may be lost (connection dropped): apply their stream
        entries read so far, and take a new writer id so the rest are applied when read."""
        self.writer = os.urandom(6).hex()
        self._writer_b = self.writer.encode()
        early, self._early = self._early, deque()
        for _, fields in early:
            for name, record in fields.items():
                self.apply(name.decode(), record)

    def apply_many(self, pairs: Iterable[tuple[str, bytes]]) -> None:
        for key, record in pairs:
            self.apply(key, record)

    def load_bulk(self, names: list[str], blob: bytes) -> None:
        """Warm-up: many records at once (names[i] is the key of the i-th 64-byte record).
        New locations are appended unsorted: call :meth:`sort_locations` after the last chunk."""
        values = np.frombuffer(blob, dtype="<i8").reshape(-1, 8)
        row_for = self._row_for
        rows = np.fromiter(
            (row_for(*_split(n), keep_sorted=False) for n in names), np.int64, len(names)
        )
        keep = values[:, VER] > self.arr[rows, VER]
        self.arr[rows[keep]] = values[keep]
        self.forget_all()

    def sort_locations(self) -> None:
        """Order every sku's locations by name (once, after a bulk load)."""
        for sku, locs in self.by_sku.items():
            self.by_sku[sku] = dict(sorted(locs.items()))

    def memo(self) -> dict[Any, Any]:
        """A new memo for values derived from the rows: a dict whose entries, each stored with
        :meth:`remember` under the sku it was derived from, the cache deletes as soon as any
        row of that sku changes, and all of them on a bulk load. So an entry found is current,
        and a reader pays one dict lookup for it, no version check. The sku need not have rows
        yet (a derived "unknown"): its first row deletes the entry too."""
        memo: dict[Any, Any] = {}
        self._memos.append(memo)
        return memo

    def remember(self, memo: dict[Any, Any], sku: str, key: Any, value: Any) -> None:
        """``memo[key] = value``, deleted when any row of ``sku`` changes (:meth:`memo`)."""
        if key not in memo:
            derived = self._derived.get(sku)
            if derived is None:
                self._derived[sku] = [(memo, key)]
            else:
                derived.append((memo, key))
        memo[key] = value

    def forget(self, skus: Iterable[str]) -> None:
        """Delete every memo entry derived from these skus (their rows changed)."""
        pop = self._derived.pop
        for sku in skus:
            derived = pop(sku, None)
            if derived is not None:
                for memo, key in derived:
                    memo.pop(key, None)

    def forget_all(self) -> None:
        """Empty every memo: after a bulk load, or when a reader finds one of them full (a
        reader bounds its memos' sizes; emptying all of them keeps the index bounded too)."""
        for memo in self._memos:
            memo.clear()
        self._derived.clear()

    def atp_many(self, rows: list[int]) -> tuple[list[int], bool]:
        """Per-row ATP (clipped at 0) for many rows in one vectorised step, and whether any of
        them reads stale (a seq gap)."""
        sub = self.arr[rows]
        raw = sub[:, ON_HAND] - sub[:, ALLOCATED] - sub[:, SAFETY] - sub[:, PENDING]
        atp: list[int] = np.clip(raw, 0, None).tolist()
        return atp, bool((sub[:, FLAGS] & FLAG_GAP).any())

    def ints(self) -> memoryview:
        """The records as one flat int64 view: field f of row r is ``[r * 8 + f]``. Valid
        until the array grows (any write may grow it): read it without awaiting in between."""
        return self._ints

    def locations(self, sku: str) -> dict[str, int] | None:
        return self.by_sku.get(sku)

    def rows(self, rows: list[int]) -> list[Row]:
        result: list[Row] = self.arr[rows].tolist()
        return result

    def row(self, row: int) -> Row:
        result: Row = self._ints[row * 8 : row * 8 + 8].tolist()
        return result

    def nbytes(self) -> int:
        return int(self.arr.nbytes)


def _split(name: str) -> tuple[str, str]:
    sku, _, location = name.partition("|")
    return sku, location
