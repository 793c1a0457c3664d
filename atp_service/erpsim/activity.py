"""Background store activity: sales and receipts at set rates on Zipf-skewed keys.

Pure: the caller passes elapsed time and a seeded ``random.Random``. Keys are ranked in a
seeded random order and key ``k`` (from 1) is picked with weight ``1 / k**skew``, so a few
keys are hot and most are quiet, as in a real assortment. A sale takes only unallocated
stock (see :meth:`Ledger.sale`); a sale that finds none is skipped and makes no event.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from .ledger import Change, Key, Ledger

SALE_SIZES = (1, 2, 3)
SALE_WEIGHTS = (7, 2, 1)
RECEIPT_SIZES = (6, 12, 24, 48)  # case packs
MAX_STEP = 1.0  # seconds: after a stall, do not make up for more than this


@dataclass(slots=True)
class ActivityCounts:
    sales: int = 0
    sale_units: int = 0
    skipped_sales: int = 0
    receipts: int = 0
    receipt_units: int = 0


class Activity:
    def __init__(
        self,
        ledger: Ledger,
        rng: random.Random,
        sales_rate: float = 0.0,
        receipts_rate: float = 0.0,
        skew: float = 1.1,
    ) -> None:
        self._ledger = ledger
        self._rng = rng
        self.sales_rate = sales_rate
        self.receipts_rate = receipts_rate
        self.skew = skew
        self.counts = ActivityCounts()
        self._sales_due = 0.0
        self._receipts_due = 0.0
        self._ranked: list[Key] = []
        self._scores: dict[Key, float] = {}
        self._cum_weights: list[float] = []

    @property
    def idle(self) -> bool:
        return self.sales_rate <= 0 and self.receipts_rate <= 0

    def set_rates(self, sales_rate: float | None, receipts_rate: float | None) -> None:
        if sales_rate is not None:
            self.sales_rate = sales_rate
        if receipts_rate is not None:
            self.receipts_rate = receipts_rate

    def step(self, elapsed: float) -> list[Change]:
        """The sales and receipts due in ``elapsed`` seconds (fractions carry over)."""
        if not self._ledger.stock:
            return []
        elapsed = min(max(elapsed, 0.0), MAX_STEP)
        self._sales_due += self.sales_rate * elapsed
        self._receipts_due += self.receipts_rate * elapsed
        sales, receipts = int(self._sales_due), int(self._receipts_due)
        self._sales_due -= sales
        self._receipts_due -= receipts
        changes: list[Change] = []
        for key in self._pick(sales):
            qty = self._rng.choices(SALE_SIZES, SALE_WEIGHTS)[0]
            change = self._ledger.sale(key[0], key[1], qty)
            if change is None:
                self.counts.skipped_sales += 1
                continue
            self.counts.sales += 1
            self.counts.sale_units -= change.on_hand_delta
            changes.append(change)
        for key in self._pick(receipts):
            change = self._ledger.receipt(key[0], key[1], self._rng.choice(RECEIPT_SIZES))
            self.counts.receipts += 1
            self.counts.receipt_units += change.on_hand_delta
            changes.append(change)
        return changes

    def _pick(self, n: int) -> list[Key]:
        if n <= 0:
            return []
        if len(self._ranked) != len(self._ledger.stock):
            self._rank()
        return self._rng.choices(self._ranked, cum_weights=self._cum_weights, k=n)

    def _rank(self) -> None:
        """Rank by a random score drawn once per key: keys added later land at random ranks
        and existing keys keep their order, so hot keys stay hot (keys are never removed)."""
        for key in self._ledger.stock:
            if key not in self._scores:
                self._scores[key] = self._rng.random()
        self._ranked = sorted(self._scores, key=self._scores.__getitem__)
        weights = (1 / (k**self.skew) for k in range(1, len(self._ranked) + 1))
        self._cum_weights = list(itertools.accumulate(weights))
