"""The simulator's state, wired from :class:`SimConfig` in one place.

Everything a handler touches lives on one :class:`Simulator` kept on the aiohttp app: the
ledger, faults, rate limiter, call and event logs, sinks and background activity. Every
stock change goes through :meth:`Simulator.emit`, which turns it into exactly one event and
hands that to the log and to every sink, in order.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import catalogue
from .activity import Activity
from .calls import CallLog
from .config import SimConfig
from .events import EventFactory, EventLog
from .faults import Faults
from .ledger import Change, Ledger, Stock
from .publisher import HttpSink, KafkaSink, Sink
from .ratelimit import TokenBucket
from .schema import StockItem

Clock = Callable[[], float]


@dataclass
class Simulator:
    config: SimConfig
    ledger: Ledger
    faults: Faults
    bucket: TokenBucket
    calls: CallLog
    events: EventLog
    make_event: EventFactory
    activity: Activity
    sinks: list[Sink]
    rng: random.Random
    clock: Clock
    storm_changed: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False  # shutting down: hung calls are let go

    def emit(self, changes: Iterable[Change]) -> int:
        count = 0
        for change in changes:
            event = self.make_event(change)
            self.events.append(event)
            for sink in self.sinks:
                sink.submit(event)
            count += 1
        return count

    def set_stock(self, items: Iterable[StockItem]) -> int:
        return self.emit(
            self.ledger.set_stock(i.sku, i.location, i.on_hand, i.allocated, i.safety_stock)
            for i in items
        )

    def counts(self) -> dict[str, Any]:
        statuses = {"allocated": 0, "cancelled": 0, "rejected": 0}
        for reservation in self.ledger.reservations.values():
            statuses[reservation.status] += 1
        stock = self.ledger.stock.values()
        activity = self.activity.counts
        return {
            "keys": len(self.ledger.stock),
            "on_hand": sum(s.on_hand for s in stock),
            "allocated": sum(s.allocated for s in stock),
            "reservations": len(self.ledger.reservations),
            "reservations_allocated": statuses["allocated"],
            "reservations_cancelled": statuses["cancelled"],
            "reservations_rejected": statuses["rejected"],
            "max_allocations": max(
                (r.allocations for r in self.ledger.reservations.values()), default=0
            ),
            "events": self.events.next,
            "calls": len(self.calls),
            "sales": activity.sales,
            "sale_units": activity.sale_units,
            "skipped_sales": activity.skipped_sales,
            "receipts": activity.receipts,
            "receipt_units": activity.receipt_units,
        }


def stock_view(sku: str, location: str, stock: Stock) -> dict[str, Any]:
    return {
        "sku": sku,
        "location": location,
        "on_hand": stock.on_hand,
        "allocated": stock.allocated,
        "safety_stock": stock.safety_stock,
        "seq": stock.seq,
    }


def build(
    config: SimConfig,
    clock: Clock = time.monotonic,
    wall: Clock = time.time,
    sinks: list[Sink] | None = None,
) -> Simulator:
    """Wire a simulator and load its starting stock (raises BadBody for a bad seed file).

    ``sinks`` replaces the sinks the config names (tests pass their own).
    """
    seed = config.random_seed if config.random_seed is not None else secrets.randbits(64)
    rng = random.Random(seed)
    ledger = Ledger()
    sim = Simulator(
        config=config,
        ledger=ledger,
        faults=Faults(latency=config.latency),
        bucket=TokenBucket(config.rate, config.burst, clock),
        calls=CallLog(config.max_calls, clock, wall),
        events=EventLog(config.max_events),
        # A fresh prefix per process keeps event ids unique across restarts.
        make_event=EventFactory(f"erpsim-{secrets.token_hex(4)}", wall),
        activity=Activity(
            ledger,
            random.Random(rng.random()),
            config.sales_rate,
            config.receipts_rate,
            config.skew,
        ),
        sinks=configured_sinks(config) if sinks is None else sinks,
        rng=rng,
        clock=clock,
    )
    if config.skus and config.locations:
        sim.set_stock(
            catalogue.generated(config.skus, config.locations, config.on_hand, config.safety_stock)
        )
    if config.seed_file is not None:
        sim.set_stock(catalogue.load(config.seed_file))
    return sim


def configured_sinks(config: SimConfig) -> list[Sink]:
    sinks: list[Sink] = []
    batch, linger = config.publish_batch, config.publish_linger_ms / 1000
    if config.events_url is not None:
        sinks.append(
            HttpSink(config.events_url, config.publish_key, batch_size=batch, linger=linger)
        )
    if config.kafka_bootstrap is not None:
        sinks.append(
            KafkaSink(
                config.kafka_bootstrap,
                config.kafka_topic,
                batch_size=batch,
                linger=linger,
                security=config.kafka_security,
            )
        )
    return sinks
