"""``atp-service erp-sim`` settings: the one place the simulator reads options and environment.

Every option ``--some-option`` can also be set as ``ERPSIM_SOME_OPTION``; the command line
wins over the environment, which wins over the default. An empty variable means unset. Values
are checked once, here, into the frozen :class:`SimConfig`; a bad one raises
:class:`SimConfigError` naming the option or variable it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, KafkaSecurity
from .faults import Latency

MAX_KEYS = 10_000_000


class SimConfigError(ValueError):
    """An option has a value the simulator cannot run with."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    rate: float = 50.0
    burst: float = 1.0
    latency_ms: float = 20.0
    latency_p99_ms: float = 80.0
    skus: int = 0
    locations: int = 1
    on_hand: int = 100
    safety_stock: int = 0
    seed_file: Path | None = None
    sales_rate: float = 0.0
    receipts_rate: float = 0.0
    skew: float = 1.1
    publish_url: str | None = None
    publish_key: str | None = None
    publish_batch: int = 500
    publish_linger_ms: float = 20.0
    kafka_bootstrap: str | None = None
    token: str | None = field(default=None, repr=False)
    kafka_topic: str = "erp.inventory.v1"
    # TLS / SASL towards the broker: the service's own ATP_KAFKA_SECURITY_PROTOCOL,
    # ATP_KAFKA_SASL_* and ATP_KAFKA_SSL_* variables (the simulator feeds the same cluster).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    random_seed: int | None = None
    max_events: int = 1_000_000
    max_calls: int = 1_000_000
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst >= 1:
            raise SimConfigError("rate must be > 0 and burst >= 1")
        try:
            self.latency  # noqa: B018 - validates the pair
        except ValueError as exc:
            raise SimConfigError(str(exc)) from None
        if self.skus * self.locations > MAX_KEYS:
            raise SimConfigError(f"a generated catalogue holds at most {MAX_KEYS} keys")
        if self.publish_url is not None and not re.match(r"https?://[^/]", self.publish_url):
            raise SimConfigError(f"publish URL {self.publish_url!r} must start with http(s)://")

    @property
    def latency(self) -> Latency:
        return Latency(self.latency_ms, self.latency_p99_ms)

    @property
    def events_url(self) -> str | None:
        """Where the HTTP sink posts: the service's ``/v1/events`` under ``publish_url``."""
        if self.publish_url is None:
            return None
        base = self.publish_url.rstrip("/")
        return base if base.endswith("/v1/events") else base + "/v1/events"


def _text(raw: str) -> str:
    return raw


def _port(raw: str) -> int:
    return _int_in(raw, 0, 65535)


def _count(raw: str) -> int:
    return _int_in(raw, 0, 10**9)


def _size(raw: str) -> int:
    return _int_in(raw, 1, 10**9)


def _int_in(raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("not an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"outside {lo}..{hi}")
    return value


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def _catalogue(raw: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", raw)
    if match is None:
        raise ValueError("expected N_SKUS x N_LOCATIONS, e.g. 1000x4")
    return int(match[1]), int(match[2])


def _url(raw: str) -> str:
    return raw.rstrip("/")


def _level(raw: str) -> str:
    level = raw.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("expected debug, info, warning or error")
    return level


@dataclass(frozen=True, slots=True)
class _Option:
    field: str
    parse: Callable[[str], Any]
    metavar: str
    help: str
    nargs: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return "ERPSIM_" + self.field.upper()


OPTIONS = (
    _Option("host", _text, "ADDR", "listen address"),
    _Option("port", _port, "PORT", "listen port"),
    _Option("rate", _number, "PER_S", "ERP calls accepted per second (token bucket)"),
    _Option("burst", _number, "N", "token bucket size; 1 = calls must be evenly spaced"),
    _Option("latency_ms", _number, "MS", "median answer latency (lognormal)"),
    _Option("latency_p99_ms", _number, "MS", "99th percentile latency (4 x median if unset)"),
    _Option("catalogue", _catalogue, "SKUSxLOCS", "generated catalogue: 1000x4 or 1000 x 4", "+"),
    _Option("skus", _count, "N", "generated SKUs SKU-000001..."),
    _Option("locations", _count, "N", "locations per generated SKU LOC-01..."),
    _Option("on_hand", _count, "N", "on_hand of each generated key"),
    _Option("safety_stock", _count, "N", "safety_stock of each generated key"),
    _Option("seed_file", Path, "PATH", "stock to load: JSON Lines or CSV with a header"),
    _Option("sales_rate", _number, "PER_S", "background sales per second"),
    _Option("receipts_rate", _number, "PER_S", "background receipts per second"),
    _Option("skew", _number, "S", "Zipf exponent of key popularity for sales and receipts"),
    _Option("publish_url", _url, "URL", "ATP service base URL: events go to POST /v1/events"),
    _Option("publish_key", _text, "SECRET", "bearer key (events:write) for --publish-url"),
    _Option("publish_batch", _size, "N", "events per batch at most (HTTP and Kafka)"),
    _Option("publish_linger_ms", _number, "MS", "longest wait to fill a batch"),
    _Option("token", _text, "SECRET", "bearer token every ERP call must carry (401 without)"),
    _Option("kafka_bootstrap", _text, "HOST:PORT", "Kafka bootstrap servers to produce to"),
    _Option("kafka_topic", _text, "TOPIC", "Kafka topic for inventory events"),
    _Option("random_seed", _count, "N", "seed for latency, faults and activity (reproducible)"),
    _Option("max_events", _size, "N", "events kept in memory for GET /admin/events"),
    _Option("max_calls", _size, "N", "calls kept in memory for GET /admin/calls"),
    _Option("log_level", _level, "LEVEL", "debug, info, warning or error"),
)

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SimConfig)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``erp-sim`` options; every default is None so the environment can fill in."""
    for option in OPTIONS:
        default = _DEFAULTS.get(option.field)
        shown = "" if default is None else f"; default {default}"
        parser.add_argument(
            option.flag,
            dest=option.field,
            metavar=option.metavar,
            nargs=option.nargs,
            help=f"{option.help} [{option.env}{shown}]",
        )


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> SimConfig:
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for option in OPTIONS:
        raw = getattr(args, option.field, None)
        if isinstance(raw, list):
            raw = " ".join(raw)
        origin = option.flag
        if raw is None:
            raw = source.get(option.env, "").strip() or None
            origin = option.env
        if raw is None:
            continue
        try:
            values[option.field] = option.parse(raw)
        except ValueError as exc:
            raise SimConfigError(f"{origin}={raw!r}: {exc}") from None
        explicit.add(option.field)
    if "latency_ms" in values and "latency_p99_ms" not in values:
        values["latency_p99_ms"] = values["latency_ms"] * 4  # the default shape (20 / 80)
    if "kafka_bootstrap" in values:
        try:
            values["kafka_security"] = KafkaSecurity.from_env(
                lambda name: source.get(name, "").strip() or None
            )
        except ConfigError as exc:
            raise SimConfigError(str(exc)) from None
    catalogue = values.pop("catalogue", None)
    if catalogue is not None:
        if explicit & {"skus", "locations"}:
            raise SimConfigError("give --catalogue or --skus/--locations, not both")
        values["skus"], values["locations"] = catalogue
    return SimConfig(**values)
