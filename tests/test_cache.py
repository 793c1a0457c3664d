"""The per-replica cache against a plain dict model: newest version wins, whatever the order
records arrive in, through growth of the array, single and bulk paths alike."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atp_service.cache import Cache
from atp_service.inventory import RECORD_FORMAT, VER

KEYS = [f"S{s}|L{loc}" for s in range(6) for loc in range(4)]

records = st.tuples(
    st.sampled_from(KEYS),
    st.lists(st.integers(-(2**40), 2**40), min_size=8, max_size=8),
    st.integers(1, 50),
)


def packed(values: list[int], ver: int) -> bytes:
    values = [*values]
    values[VER] = ver
    return struct.pack(RECORD_FORMAT, *values)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, max_size=120), st.integers(1, 4), st.booleans())
def test_newest_version_wins(batch: list[tuple[str, list[int], int]], cap: int, bulk: bool) -> None:
    cache = Cache(capacity=cap)  # tiny: every run grows the array, views included
    model: dict[str, list[int]] = {}
    if bulk:
        names = [k for k, _, _ in batch]
        blob = b"".join(packed(v, ver) for _, v, ver in batch)
        # load_bulk keeps, per key, the first of equal versions in the chunk; the model
        # applies one record at a time: feed it distinct keys only.
        seen: set[str] = set()
        keep = [i for i, n in enumerate(names) if not (n in seen or seen.add(n))]
        cache.load_bulk(
            [names[i] for i in keep], b"".join(blob[i * 64 : i * 64 + 64] for i in keep)
        )
        for i in keep:
            key, values, ver = batch[i]
            model[key] = [*values[:VER], ver, *values[VER + 1 :]]
    else:
        for key, values, ver in batch:
            applied = cache.apply(key, packed(values, ver))
            newer = ver > model.get(key, [0] * 8)[VER]
            assert applied == newer
            if newer:
                model[key] = [*values[:VER], ver, *values[VER + 1 :]]
    assert len(cache) == len(model)
    for key, expected in model.items():
        sku, _, loc = key.partition("|")
        locs = cache.locations(sku)
        assert locs is not None
        assert cache.row(locs[loc]) == expected
        assert cache.rows([locs[loc]]) == [expected]


def test_a_record_of_the_wrong_size_is_refused() -> None:
    cache = Cache()
    cache.apply("S|L", packed([0] * 8, 1))
    with pytest.raises(ValueError):
        cache.apply("S|L", packed([0] * 8, 2) + b"x")
    assert cache.row(cache.locations("S")["L"])[VER] == 1  # type: ignore[index]


# Memos (Cache.memo): an entry lives until a record of its sku is stored, by any write path.
_writes = st.lists(
    st.tuples(st.sampled_from(["apply", "replies", "bulk"]), st.lists(records, max_size=12)),
    max_size=6,
)


def _version(cache: Cache, key: str) -> int:
    sku, _, loc = key.partition("|")
    row = (cache.locations(sku) or {}).get(loc)
    return 0 if row is None else cache.row(row)[VER]


@settings(max_examples=200, deadline=None)
@given(_writes, st.lists(st.integers(0, 6), min_size=1, max_size=8))
def test_a_memo_entry_lives_until_its_sku_changes(
    writes: list[tuple[str, list[tuple[str, list[int], int]]]], skus: list[int]
) -> None:
    cache = Cache(capacity=2)
    memo, other = cache.memo(), cache.memo()
    for how, batch in writes:
        # remember something for some skus (S6 has no rows: a derived "unknown")
        for s in skus:
            cache.remember(memo, f"S{s}", ("key", s), s)
            cache.remember(other, f"S{s}", s, -s)
        before = {key: _version(cache, key) for key, _, _ in batch}
        if how == "apply":
            for key, values, ver in batch:
                cache.apply(key, packed(values, ver))
        elif how == "replies":
            cache.apply_replies([k for k, _, _ in batch], [packed(v, n) for _, v, n in batch], 0)
        else:
            unique = {k: (v, ver) for k, v, ver in batch}
            cache.load_bulk(list(unique), b"".join(packed(v, ver) for v, ver in unique.values()))
        # skus of which a newer record is stored now (a bulk load empties every memo)
        stored = {key.partition("|")[0] for key, _, ver in batch if ver > before[key]}
        for s in skus:
            alive = how != "bulk" and f"S{s}" not in stored
            assert (("key", s) in memo) == alive, (how, s, stored)
            assert (s in other) == alive


def test_forget_all_empties_every_memo() -> None:
    cache = Cache()
    memos = [cache.memo(), cache.memo()]
    for i, memo in enumerate(memos):
        cache.remember(memo, "S", i, i)
    cache.remember(memos[0], "S", 0, 5)  # again: one entry, one index item
    assert memos[0] == {0: 5}
    cache.forget_all()
    assert memos == [{}, {}]
    cache.apply("S|L", packed([0] * 8, 1))  # nothing left to delete
    cache.remember(memos[1], "S", 1, 1)
    cache.apply("S|L", packed([0] * 8, 2))
    assert memos == [{}, {}]
