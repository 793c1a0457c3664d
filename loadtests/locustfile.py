"""Peak-season journeys against the ATP service (issue 5).

Users, each a journey of real clients:

- ``CheckoutShopper``: browses products (``GET /v1/availability/{sku}``), checks carts of
  1-20 items (``POST /v1/availability``), and places orders (priority ``checkout``): a direct
  order, or a cart hold (``hold_seconds``) that is then committed, released (``DELETE``) or
  abandoned to expire. Half the orders re-check the cart first and drop what is unavailable;
  the other half are "buy now" clicks from a product page that may be seconds old.
- ``SalesRep``: checks a SKU across every location, by location group (``?group=``) and at a
  few named locations; now and then puts a ``sales`` hold of hours on a quote (committed,
  released or left held).
- ``StorefrontCrawler``: feed/marketplace syncs: bulk batch lookups of 100-1000 SKUs walking
  the catalogue, and occasional ``background`` reservations.

SKU popularity is Zipf-like over a seeded order of the catalogue, with a uniform long tail
and a share of flash-sale SKUs (which the runner stocks low so they sell out). Every option
(catalogue, locations, groups, skew, weights, think times, API key...) is a Locust custom
argument with an ``ATP_LOAD_*`` variable: see ``workload.py`` and ``loadtests/README.md``.

Stats are named by route (``GET /v1/availability/[sku]``). An intended outcome, 409
insufficient-stock or 429 throttled (with ``Retry-After``), is a success recorded under its own
name (``... (409 insufficient-stock)``, ``... (429 throttled)``) so the SLO gate can count them.
Every reservation this process creates, commits or releases is appended to
``<reservation-log>.<host>-<pid>.jsonl``, which the gate checks against the service and ERP.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import ResponseContextManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # beside this file (on workers too)

CONFIG: workload.Workload | None = None
STATS: Counter[str] = Counter()  # journey outcomes and stale lookups of this process


def config() -> workload.Workload:
    assert CONFIG is not None, "the init event has not run"
    return CONFIG


class Recorder:
    """Appends one JSON line per reservation step; opened on first use (the master has none)."""

    def __init__(self) -> None:
        self.prefix = ""
        self.file: Any = None
        self.lock = threading.Lock()

    @property
    def path(self) -> str:
        return f"{self.prefix}.{socket.gethostname()}-{os.getpid()}.jsonl"

    def write(self, **record: Any) -> None:
        record["t"] = round(time.time(), 3)
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self.lock:
            if self.file is None:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open
            self.file.write(line)

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


RECORDER = Recorder()


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_kw: Any) -> None:
    for option in workload.OPTIONS:
        parser.add_argument(
            option.flag, type=str, env_var=option.env, default=option.default,
            help=f"{option.help} (default {option.default!r})",
        )  # fmt: skip


@events.init.add_listener
def _init(environment: Any, **_kw: Any) -> None:
    global CONFIG
    opts = environment.parsed_options
    if opts is None:  # used as a library: the environment only
        values = workload.env_defaults()
    else:
        values = {o.dest: getattr(opts, o.dest, o.default) for o in workload.OPTIONS}
    try:
        CONFIG = workload.Workload.parse(values)
    except ValueError as exc:
        sys.exit(f"locustfile: bad option: {exc}")
    headers = {"Authorization": f"Bearer {CONFIG.api_key}", "Accept": "application/json"}
    for cls, key in ((CheckoutShopper, "checkout"), (SalesRep, "sales"),
                     (StorefrontCrawler, "crawler")):  # fmt: skip
        weight = round(CONFIG.weights[key])
        if weight < 1:
            sys.exit(f"locustfile: weight of {cls.__name__} must be >= 1 (name the user "
                     "classes to run as positional arguments to leave one out)")  # fmt: skip
        cls.weight = weight
        cls.default_headers = headers
    RECORDER.prefix = CONFIG.reservation_log


@events.test_stop.add_listener
def _summary(**_kw: Any) -> None:
    if STATS:
        RECORDER.write(summary=dict(STATS), pid=os.getpid(), host=socket.gethostname())
        STATS.clear()


@events.quitting.add_listener
def _close(**_kw: Any) -> None:
    RECORDER.close()


def _problem_type(resp: ResponseContextManager) -> str:
    try:
        return str(resp.json().get("type", ""))
    except (ValueError, AttributeError, TypeError):
        return ""


def _short(resp: ResponseContextManager) -> str:
    text = resp.text or str(getattr(resp, "error", "") or "")
    return f"HTTP {resp.status_code}: {text[:160]}"


class AtpUser(FastHttpUser):
    abstract = True
    journey = "checkout"
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.rng = random.Random()
        self.cfg = config()
        self.home = self.rng.choice(self.cfg.locations)
        # The service's real clients (checkout, Salesforce, feeds) call it over pooled
        # keep-alive connections: open this user's connection first, in its own entry, so
        # the journeys measure requests, not TCP set-up in a flash-sale stampede.
        with self.client.get("/healthz", name="GET /healthz [connect]", catch_response=True) as r:
            if r.status_code == 200:
                r.success()
            else:
                r.failure(_short(r))

    def wait_time(self) -> float:
        lo, hi = self.cfg.think[self.journey]
        return self.rng.uniform(lo, hi)

    def think(self) -> None:
        gevent.sleep(self.wait_time())

    def pick(self, flash: bool = True) -> str:
        return self.cfg.popularity.pick(self.rng, flash)

    def new_id(self, code: str) -> str:
        return f"lt-{self.cfg.run_id}-{code}-{uuid.uuid4().hex[:16]}"

    # -- lookups ----------------------------------------------------------------------------

    def lookup(self, sku: str, query: str = "", name: str = "GET /v1/availability/[sku]") -> Any:
        with self.client.get(
            f"/v1/availability/{sku}{query}", name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_short(resp))
                return None
            try:
                body = resp.json()
                locations = body["locations"]
            except (ValueError, KeyError, TypeError):
                resp.failure("not an availability body")
                return None
            if body.get("stale"):
                STATS["lookups_stale"] += 1
            STATS["lookups"] += 1
            resp.success()
            return locations

    def batch(self, items: list[dict[str, Any]], label: str) -> list[dict[str, Any]] | None:
        with self.client.post(
            "/v1/availability", json={"items": items}, name=f"POST /v1/availability [{label}]",
            catch_response=True,
        ) as resp:  # fmt: skip
            if resp.status_code != 200:
                resp.failure(_short(resp))
                return None
            try:
                body = resp.json()
                out = body["items"]
            except (ValueError, KeyError, TypeError):
                resp.failure("not a batch availability body")
                return None
            if len(out) != len(items):
                resp.failure(f"sent {len(items)} items, got {len(out)}")
                return None
            if body.get("stale"):
                STATS["lookups_stale"] += 1
            STATS["lookups"] += 1
            resp.success()
            return out  # type: ignore[no-any-return]

    # -- reservations -----------------------------------------------------------------------

    def reserve(
        self, rid: str, priority: str, lines: list[dict[str, Any]], label: str,
        hold: int | None = None,
    ) -> str | None:  # fmt: skip
        """Create a reservation; its status if accepted (201/200), None if refused or failed.

        A 429 is retried once, with the same id and body, after ``Retry-After`` (if short).
        """
        body: dict[str, Any] = {"reservation_id": rid, "priority": priority, "lines": lines}
        if hold is not None:
            body["hold_seconds"] = hold
        name = f"POST /v1/reservations [{label}]"
        RECORDER.write(id=rid, op="attempt", priority=priority, hold=hold, journey=self.journey)
        for attempt in range(2):
            with self.client.post(
                "/v1/reservations", json=body, name=name, catch_response=True
            ) as resp:
                status = resp.status_code
                if status in (200, 201):
                    try:
                        state = str(resp.json()["status"])
                    except (ValueError, KeyError, TypeError):
                        resp.failure("not a reservation body")
                        RECORDER.write(id=rid, op="create", status=status, error="body")
                        return None
                    resp.success()
                    RECORDER.write(id=rid, op="create", status=status, state=state, hold=hold)
                    STATS[f"{label}: accepted"] += 1
                    return state
                if status == 409 and _problem_type(resp).endswith("/insufficient-stock"):
                    resp.request_meta["name"] = f"{name} (409 insufficient-stock)"
                    resp.success()
                    RECORDER.write(id=rid, op="create", status=409)
                    STATS[f"{label}: insufficient stock"] += 1
                    return None
                retry_after = resp.headers.get("Retry-After") if resp.headers else None
                if status == 429 and retry_after is not None:
                    resp.request_meta["name"] = f"{name} (429 throttled)"
                    resp.success()
                    RECORDER.write(id=rid, op="create", status=429)
                    STATS[f"{label}: throttled"] += 1
                    try:
                        wait = float(retry_after)
                    except ValueError:
                        wait = 60.0
                    if attempt == 0 and wait <= 5:
                        gevent.sleep(wait)
                        continue
                    return None
                resp.failure(_short(resp))
                # 0 = no answer (timeout, reset): the reservation may exist; the gate looks it up
                RECORDER.write(id=rid, op="create", status=status, error=_short(resp)[:120])
                STATS[f"{label}: failed"] += 1
                return None
        return None

    def transition(self, rid: str, op: str) -> str | None:
        """``commit`` or ``release`` a reservation; its status after, None on failure."""
        if op == "commit":
            call = self.client.post(
                f"/v1/reservations/{rid}/commit", name="POST /v1/reservations/[id]/commit",
                catch_response=True,
            )  # fmt: skip
        else:
            call = self.client.delete(
                f"/v1/reservations/{rid}", name="DELETE /v1/reservations/[id]",
                catch_response=True,
            )  # fmt: skip
        with call as resp:
            state = None
            if resp.status_code == 200:
                try:
                    state = str(resp.json()["status"])
                except (ValueError, KeyError, TypeError):
                    state = None
            if state is None:
                resp.failure(_short(resp))
            else:
                resp.success()
            RECORDER.write(id=rid, op=op, status=resp.status_code, state=state)
            STATS[f"{op}: {'ok' if state else 'failed'}"] += 1
            return state

    def status_of(self, rid: str) -> None:
        with self.client.get(
            f"/v1/reservations/{rid}", name="GET /v1/reservations/[id]", catch_response=True
        ) as resp:
            if resp.status_code == 200:
                resp.success()
            else:
                resp.failure(_short(resp))


class CheckoutShopper(AtpUser):
    weight = 85
    journey = "checkout"

    @task(10)
    def browse(self) -> None:
        """A product page: one SKU, every location."""
        self.lookup(self.pick())

    @task(4)
    def cart(self) -> None:
        """The cart page: 1-20 items, by home location, home region or anywhere."""
        skus = self.cfg.popularity.distinct(self.rng, self.rng.randint(1, 20))
        self.batch([self._item(sku) for sku in skus], "cart")

    @task(3)
    def place_order(self) -> None:
        rng = self.rng
        skus = self.cfg.popularity.distinct(rng, rng.choices((1, 2, 3, 4, 5), (5, 3, 2, 1, 1))[0])
        lines = [
            {"sku": sku, "location": self.home if rng.random() < 0.8 else
             rng.choice(self.cfg.locations), "qty": rng.choices((1, 2, 3), (7, 2, 1))[0]}
            for sku in skus
        ]  # fmt: skip
        if rng.random() < 0.5:  # checkout page: re-check the cart, drop what is gone
            seen = self.batch(lines, "cart")
            if seen is None:
                return
            lines = [line for line, item in zip(lines, seen, strict=True) if item["available"]]
            if not lines:
                STATS["order: cart sold out"] += 1
                return
        mix = self.cfg.checkout_mix
        path = rng.choices(list(mix), list(mix.values()))[0]
        if path == "direct":
            rid = self.new_id("co")
            if self.reserve(rid, "checkout", lines, "checkout") and rng.random() < 0.3:
                self.think()
                self.status_of(rid)  # the order confirmation page
            return
        rid = self.new_id("ch")
        hold = round(rng.uniform(*self.cfg.cart_hold))
        if self.reserve(rid, "checkout", lines, "checkout hold", hold=hold) is None:
            return
        STATS[f"cart hold: {path}"] += 1
        if path == "abandon":
            return  # expires after hold_seconds
        self.think()  # paying, or changing their mind
        self.transition(rid, "commit" if path == "commit" else "release")

    def _item(self, sku: str) -> dict[str, Any]:
        item: dict[str, Any] = {"sku": sku, "qty": self.rng.choices((1, 2, 3), (7, 2, 1))[0]}
        where = self.rng.random()
        if where < 0.6:
            item["location"] = self.home
        elif where < 0.8 and self.cfg.groups:
            item["group"] = self.rng.choice(list(self.cfg.groups))
        return item


class SalesRep(AtpUser):
    weight = 10
    journey = "sales"

    @task(6)
    def stock_check(self) -> None:
        """Where is it? Every location."""
        self.lookup(self.pick(flash=False))

    @task(4)
    def group_check(self) -> None:
        if not self.cfg.groups:
            return self.stock_check()
        group = self.rng.choice(list(self.cfg.groups))
        self.lookup(self.pick(flash=False), f"?group={group}",
                    "GET /v1/availability/[sku]?group=[group]")  # fmt: skip
        return None

    @task(2)
    def locations_check(self) -> None:
        locs = self.rng.sample(self.cfg.locations, min(3, len(self.cfg.locations)))
        query = "?" + "&".join(f"location={loc}" for loc in locs)
        self.lookup(self.pick(flash=False), query, "GET /v1/availability/[sku]?location=[loc]")

    @task(1)
    def quote_hold(self) -> None:
        """A quote for a customer: hold stock for hours at the best-stocked location."""
        rng = self.rng
        lines = []
        for sku in self.cfg.popularity.distinct(rng, rng.randint(1, 3), flash=False):
            locations = self.lookup(sku)
            if not locations:
                continue
            best = max(locations, key=lambda loc: loc["atp"])
            qty = min(rng.randint(5, 50), max(best["atp"] // 2, 1))
            lines.append({"sku": sku, "location": best["location"], "qty": qty})
        if not lines:
            return
        rid = self.new_id("sq")
        hold = round(rng.uniform(*self.cfg.quote_hold))
        if self.reserve(rid, "sales", lines, "sales hold", hold=hold) is None:
            return
        outcome = rng.random()
        if outcome < 0.5:
            return  # stays held: the customer has not answered yet
        self.think()
        self.transition(rid, "commit" if outcome < 0.8 else "release")


class StorefrontCrawler(AtpUser):
    weight = 5
    journey = "crawler"

    def on_start(self) -> None:
        super().on_start()
        self.cursor = self.rng.randrange(self.cfg.skus)

    @task(20)
    def bulk(self) -> None:
        """Feed sync: the next 100-1000 SKUs of the catalogue, all locations or by region."""
        cfg = self.cfg
        n = self.rng.randint(*cfg.crawler_batch)
        indexes = [(self.cursor + i) % cfg.skus + 1 for i in range(n)]
        self.cursor = (self.cursor + n) % cfg.skus
        by_region = cfg.groups and self.rng.random() < 0.3
        group = self.rng.choice(list(cfg.groups)) if by_region else None
        items = [{"sku": workload.sku_name(i, cfg.skus)} for i in indexes]
        if group is not None:
            for item in items:
                item["group"] = group
        self.batch(items, "bulk")

    @task(1)
    def background_reservation(self) -> None:
        """A marketplace order synced in the background: straight to the ERP, lowest priority."""
        rng = self.rng
        lines = [
            {"sku": sku, "location": rng.choice(self.cfg.locations), "qty": rng.randint(1, 5)}
            for sku in self.cfg.popularity.distinct(rng, rng.randint(1, 3), flash=False)
        ]
        self.reserve(self.new_id("bg"), "background", lines, "background")
