"""The load test's workload model: catalogue names, location groups, SKU popularity, options.

Pure (standard library only, no Locust import), so ``loadtests/runner.py`` uses the same
names and defaults as ``loadtests/locustfile.py``. Every option has a command-line flag
(a Locust custom argument) and an environment variable; the flag wins. ``OPTIONS`` is the one
list of them (flag, variable, default, meaning); ``loadtests/README.md`` documents the same.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Option:
    flag: str
    env: str
    default: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--api-key", "ATP_LOAD_KEY", "loadtest", "bearer key with availability:read and "
           "reservations:write"),
    Option("--skus", "ATP_LOAD_SKUS", "10000", "catalogue size: SKUs SKU-000001... (the ERP "
           "simulator's --catalogue naming)"),
    Option("--locations", "ATP_LOAD_LOCATIONS", "20", "a count N (LOC-01..LOC-N) or a comma "
           "list of location names"),
    Option("--groups", "ATP_LOAD_GROUPS", "auto", "GROUP=L1,L2;GROUP2=... as the service's "
           "ATP_LOCATION_GROUPS; 'auto' = locations split in order into up to 4 groups "
           "REGION-1..; 'none' = no ?group= lookups"),
    Option("--zipf", "ATP_LOAD_ZIPF", "1.0", "Zipf exponent of SKU popularity (rank r is "
           "picked with weight 1/r^s; 0 = uniform)"),
    Option("--long-tail", "ATP_LOAD_LONG_TAIL", "0.1", "share of picks drawn uniformly from "
           "the whole catalogue instead of by popularity"),
    Option("--popularity-seed", "ATP_LOAD_SEED", "42", "seed of the popularity order (the same "
           "on every worker, so all agree on the hot set)"),
    Option("--flash-skus", "ATP_LOAD_FLASH_SKUS", "5", "flash-sale SKUs: a count K (spread "
           "evenly over the catalogue: SKU #1, #1+N/K, ...) or a comma list of SKUs"),
    Option("--flash-share", "ATP_LOAD_FLASH_SHARE", "0.3", "share of shopper picks that go to "
           "a flash-sale SKU"),
    Option("--weights", "ATP_LOAD_WEIGHTS", "checkout=85,sales=10,crawler=5", "user class "
           "weights"),
    Option("--think-checkout", "ATP_LOAD_THINK_CHECKOUT", "1,4", "CheckoutShopper think time, "
           "MIN,MAX seconds"),
    Option("--think-sales", "ATP_LOAD_THINK_SALES", "2,8", "SalesRep think time, MIN,MAX s"),
    Option("--think-crawler", "ATP_LOAD_THINK_CRAWLER", "0.5,2", "StorefrontCrawler think "
           "time, MIN,MAX s"),
    Option("--checkout-mix", "ATP_LOAD_CHECKOUT_MIX", "direct=4,commit=3,release=1,abandon=2",
           "how placed orders go: a direct order, or a cart hold that is committed, released "
           "(DELETE) or abandoned (left to expire); relative weights"),
    Option("--cart-hold", "ATP_LOAD_CART_HOLD", "20,90", "cart hold_seconds, MIN,MAX"),
    Option("--quote-hold", "ATP_LOAD_QUOTE_HOLD", "3600,14400", "sales quote hold_seconds, "
           "MIN,MAX"),
    Option("--crawler-batch", "ATP_LOAD_CRAWLER_BATCH", "100,1000", "SKUs per crawler batch "
           "lookup, MIN,MAX"),
    Option("--reservation-log", "ATP_LOAD_RESERVATION_LOG", "reservations", "path prefix of "
           "the reservation record files: <prefix>.<host>-<pid>.jsonl, one per Locust process"),
    Option("--run-id", "ATP_LOAD_RUN_ID", "", "prefix of reservation ids (default: a fresh "
           "time-based one per process)"),
)  # fmt: skip

DEFAULTS: dict[str, str] = {o.dest: o.default for o in OPTIONS}


def env_defaults(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each option's value from its environment variable (empty = unset), else the default."""
    source = os.environ if env is None else env
    return {o.dest: (source.get(o.env, "").strip() or o.default) for o in OPTIONS}


def sku_name(index: int, skus: int) -> str:
    """The simulator's generated SKU name for 1-based ``index`` of a catalogue of ``skus``."""
    return f"SKU-{index:0{max(6, len(str(skus)))}d}"


def location_names(raw: str) -> list[str]:
    raw = raw.strip()
    if raw.isdigit():
        count = int(raw)
        if count < 1:
            raise ValueError("locations: need at least one")
        width = max(2, len(str(count)))
        return [f"LOC-{i:0{width}d}" for i in range(1, count + 1)]
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise ValueError("locations: expected a count or a comma list of names")
    return names


def location_groups(raw: str, locations: Sequence[str]) -> dict[str, list[str]]:
    """``GROUP=L1,L2;...``, ``auto`` (consecutive split into up to 4 groups) or ``none``."""
    raw = raw.strip()
    if raw.lower() in ("", "none"):
        return {}
    if raw.lower() == "auto":
        size = math.ceil(len(locations) / 4)
        chunks = [locations[i : i + size] for i in range(0, len(locations), size)]
        return {f"REGION-{n}": list(chunk) for n, chunk in enumerate(chunks, start=1)}
    groups: dict[str, list[str]] = {}
    for entry in (p.strip() for p in raw.split(";")):
        if not entry:
            continue
        name, sep, members = entry.partition("=")
        locs = [m.strip() for m in members.split(",") if m.strip()]
        if not sep or not name.strip() or not locs:
            raise ValueError(f"groups: expected GROUP=L1,L2, got {entry!r}")
        groups[name.strip()] = locs
    return groups


def groups_env(groups: Mapping[str, Sequence[str]]) -> str:
    """The service's ``ATP_LOCATION_GROUPS`` for ``groups``."""
    return ";".join(f"{name}={','.join(locs)}" for name, locs in groups.items())


def flash_skus(raw: str, skus: int) -> list[str]:
    raw = raw.strip()
    if raw.isdigit():
        count = min(int(raw), skus)
        if count == 0:
            return []
        step = skus // count
        return [sku_name(1 + j * step, skus) for j in range(count)]
    return [s.strip() for s in raw.split(",") if s.strip()]


def pair(raw: str, name: str) -> tuple[float, float]:
    """``MIN,MAX`` (or one number for both)."""
    parts = [p.strip() for p in raw.split(",")]
    try:
        lo, hi = (float(parts[0]), float(parts[-1])) if len(parts) in (1, 2) else (-1.0, -1.0)
    except ValueError:
        lo = hi = -1.0
    if not 0 <= lo <= hi or not math.isfinite(hi):
        raise ValueError(f"{name}: expected MIN,MAX with 0 <= MIN <= MAX, got {raw!r}")
    return lo, hi


def weights(raw: str, names: Sequence[str], name: str) -> dict[str, float]:
    """``a=3,b=1``: every one of ``names`` (missing = 0), each >= 0, not all 0."""
    found = dict.fromkeys(names, 0.0)
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in found:
            raise ValueError(f"{name}: expected {'=N,'.join(names)}=N, got {part!r}")
        try:
            found[key] = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number") from None
        if found[key] < 0 or not math.isfinite(found[key]):
            raise ValueError(f"{name}: {part!r} must be >= 0")
    if not any(found.values()):
        raise ValueError(f"{name}: all weights are 0")
    return found


class Popularity:
    """Picks SKUs: Zipf over a seeded order of the catalogue, a uniform long tail, and a
    share of flash-sale SKUs. Rank ``r`` (1 = hottest) has weight ``1 / r**s``."""

    def __init__(
        self,
        skus: int,
        exponent: float,
        long_tail: float,
        seed: int,
        flash: Sequence[str] = (),
        flash_share: float = 0.0,
    ) -> None:
        if skus < 1:
            raise ValueError("skus: need at least one")
        order = list(range(1, skus + 1))
        random.Random(seed).shuffle(order)
        self.names = [sku_name(i, skus) for i in order]  # by rank
        self.cum = list(itertools.accumulate(1.0 / r**exponent for r in range(1, skus + 1)))
        self.long_tail = long_tail
        self.flash = list(flash)
        self.flash_share = flash_share if self.flash else 0.0

    def pick(self, rng: random.Random, flash: bool = True) -> str:
        u = rng.random()
        if flash and u < self.flash_share:
            return rng.choice(self.flash)
        if rng.random() < self.long_tail:
            return self.names[rng.randrange(len(self.names))]
        return self.names[bisect.bisect(self.cum, rng.random() * self.cum[-1])]

    def distinct(self, rng: random.Random, n: int, flash: bool = True) -> list[str]:
        """``n`` different SKUs (fewer if the catalogue is smaller)."""
        n = min(n, len(self.names))
        seen: dict[str, None] = {}
        for _ in range(n * 20):
            if len(seen) >= n:
                break
            seen[self.pick(rng, flash)] = None
        while len(seen) < n:  # a tiny, very skewed catalogue: fill uniformly
            seen[self.names[rng.randrange(len(self.names))]] = None
        return list(seen)


@dataclass(frozen=True)
class Workload:
    """Every option, parsed and checked once."""

    api_key: str
    skus: int
    locations: list[str]
    groups: dict[str, list[str]]
    popularity: Popularity
    flash: list[str]
    weights: dict[str, float]
    think: dict[str, tuple[float, float]]
    checkout_mix: dict[str, float]
    cart_hold: tuple[float, float]
    quote_hold: tuple[float, float]
    crawler_batch: tuple[int, int]
    reservation_log: str
    run_id: str

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> Workload:
        v = {**DEFAULTS, **{k: str(x) for k, x in values.items() if x is not None}}
        skus = int(v["skus"])
        locations = location_names(v["locations"])
        flash = flash_skus(v["flash_skus"], skus)
        think = {
            "checkout": pair(v["think_checkout"], "think-checkout"),
            "sales": pair(v["think_sales"], "think-sales"),
            "crawler": pair(v["think_crawler"], "think-crawler"),
        }
        cart_hold = pair(v["cart_hold"], "cart-hold")
        quote_hold = pair(v["quote_hold"], "quote-hold")
        for name, (lo, hi) in (("cart-hold", cart_hold), ("quote-hold", quote_hold)):
            if lo < 1 or hi > 14400:
                raise ValueError(f"{name}: hold_seconds must be within 1..14400")
        blo, bhi = pair(v["crawler_batch"], "crawler-batch")
        if blo < 1 or bhi > 1000:
            raise ValueError("crawler-batch: a batch holds 1..1000 items")
        run_id = v["run_id"] or _fresh_run_id()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,31}", run_id):
            raise ValueError("run-id: up to 32 of [A-Za-z0-9._:-], starting alphanumeric")
        return cls(
            api_key=v["api_key"],
            skus=skus,
            locations=locations,
            groups=location_groups(v["groups"], locations),
            popularity=Popularity(
                skus,
                float(v["zipf"]),
                float(v["long_tail"]),
                int(v["popularity_seed"]),
                flash,
                float(v["flash_share"]),
            ),
            flash=flash,
            weights=weights(v["weights"], ("checkout", "sales", "crawler"), "weights"),
            think=think,
            checkout_mix=weights(
                v["checkout_mix"], ("direct", "commit", "release", "abandon"), "checkout-mix"
            ),
            cart_hold=cart_hold,
            quote_hold=quote_hold,
            crawler_batch=(int(blo), int(bhi)),
            reservation_log=v["reservation_log"],
            run_id=run_id,
        )


def _fresh_run_id() -> str:
    return time.strftime("%m%d%H%M%S") + f"{random.getrandbits(16):04x}"
