"""Settings: the one place that reads the environment (contract.md section 1).

Every setting is read once, validated, and frozen into :class:`Settings`. An empty variable
means unset. A bad value raises :class:`ConfigError` with the variable's name, so a typo
fails at start-up, not at peak.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCOPES = frozenset({"availability:read", "reservations:write", "events:write", "admin"})
PRIORITIES = ("checkout", "sales", "background")
MAX_HOLD_QUOTA = 10**12
HOLD_QUOTA_SCOPE = "hold_quota="  # an ATP_API_KEYS scope-list item: the key's own quota


class ConfigError(ValueError):
    """A launch variable has a value the service cannot run with."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One caller: the SHA-256 of its secret (never the secret), its scopes, and its own cart-
    hold quota (``hold_quota=N`` in its entry; ``None``: ``ATP_HOLD_QUOTA``'s)."""

    digest: str
    scopes: frozenset[str]
    name: str
    hold_quota: int | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every Kafka client of ours connects (the service's consumer and DLQ producer, the
    DLQ replay tool, the ERP simulator's producer): TLS and SASL as managed Kafka services
    (Confluent Cloud, MSK, Aiven, Event Hubs) ask for them. The password is never shown."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None  # unset: the system's trusted CAs
    certfile: Path | None = None  # client certificate (mutual TLS), with keyfile
    keyfile: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @classmethod
    def from_env(cls, get: Callable[[str], str | None]) -> KafkaSecurity:
        """``ATP_KAFKA_SECURITY_PROTOCOL``, ``ATP_KAFKA_SASL_{MECHANISM,USERNAME,PASSWORD}``
        and ``ATP_KAFKA_SSL_{CAFILE,CERTFILE,KEYFILE}``, checked together so a setting that
        would be silently ignored, or a missing file, fails at start-up."""
        protocol = _choice(
            "ATP_KAFKA_SECURITY_PROTOCOL",
            (get("ATP_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            "PLAINTEXT",
            KAFKA_PROTOCOLS,
        )
        wanted = cls(protocol)  # what the protocol asks for; the rest is checked against it
        sasl, tls = wanted.sasl, wanted.tls
        mechanism, user, password = (
            get("ATP_KAFKA_SASL_MECHANISM"),
            get("ATP_KAFKA_SASL_USERNAME"),
            get("ATP_KAFKA_SASL_PASSWORD"),
        )
        files = {
            "ATP_KAFKA_SSL_CAFILE": get("ATP_KAFKA_SSL_CAFILE"),
            "ATP_KAFKA_SSL_CERTFILE": get("ATP_KAFKA_SSL_CERTFILE"),
            "ATP_KAFKA_SSL_KEYFILE": get("ATP_KAFKA_SSL_KEYFILE"),
        }
        if not sasl and (mechanism or user or password):
            raise ConfigError(
                "ATP_KAFKA_SASL_* is set but ATP_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        if not tls and any(files.values()):
            raise ConfigError(
                f"ATP_KAFKA_SSL_* is set but ATP_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                "use SSL or SASL_SSL"
            )
        if sasl:
            mechanism = _choice(
                "ATP_KAFKA_SASL_MECHANISM", (mechanism or "PLAIN").upper(), "PLAIN",
                KAFKA_MECHANISMS,
            )  # fmt: skip
            if not user or not password:
                raise ConfigError(
                    f"ATP_KAFKA_SECURITY_PROTOCOL={protocol} needs ATP_KAFKA_SASL_USERNAME "
                    "and ATP_KAFKA_SASL_PASSWORD"
                )
        cert, key = files["ATP_KAFKA_SSL_CERTFILE"], files["ATP_KAFKA_SSL_KEYFILE"]
        if (cert is None) != (key is None):
            raise ConfigError(
                "ATP_KAFKA_SSL_CERTFILE and ATP_KAFKA_SSL_KEYFILE go together: set both or neither"
            )
        paths = {name: _readable(name, raw) for name, raw in files.items()}
        return cls(
            protocol, mechanism, user, password, paths["ATP_KAFKA_SSL_CAFILE"],
            paths["ATP_KAFKA_SSL_CERTFILE"], paths["ATP_KAFKA_SSL_KEYFILE"],
        )  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's consumer, producer and admin clients."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            context = ssl.create_default_context(cafile=self.cafile)
            if self.certfile is not None:
                context.load_cert_chain(self.certfile, self.keyfile)
            options["ssl_context"] = context
        if self.sasl:
            options["sasl_mechanism"] = self.mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options


@dataclass(frozen=True, slots=True)
class Settings:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    redis_url: str | None = None
    data_dir: Path = Path("./.atp-data")
    embedded_fsync: str = "everysec"
    kafka_bootstrap: str | None = None
    kafka_topic: str = "erp.inventory.v1"
    kafka_group: str = "atp-service"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    erp_url: str | None = None
    erp_rate: float = 50.0
    erp_timeout: float = 5.0
    # Sent as "Authorization: Bearer <token>" on every ERP call (unset: no header).
    erp_token: str | None = field(default=None, repr=False)
    # Queue budgets: seconds of ERP calls (at erp_rate) that may wait ahead of a new
    # reservation of each priority before it is refused with 429; shrinking so the lowest
    # priority is refused first.
    erp_budgets: Mapping[str, float] = field(
        default_factory=lambda: {"checkout": 120.0, "sales": 30.0, "background": 10.0}
    )
    # Aging: seconds of head start each priority's entries get when the gateway picks the
    # next call; a background entry waiting longer than this difference goes first.
    erp_aging: Mapping[str, float] = field(
        default_factory=lambda: {"checkout": 60.0, "sales": 30.0, "background": 0.0}
    )
    erp_concurrency: int = 16
    gap_window: float = 2.0  # seconds a seq gap may wait for its event before an ERP resync
    kafka_lag_bound: int = 10_000  # records behind beyond which lookups read stale
    kafka_unreachable_after: float = 5.0  # seconds without the broker before lookups read stale
    api_keys: tuple[ApiKey, ...] = ()
    dev_key: str | None = None
    location_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    low_stock: int = 5
    # The most units one API key may have in uncommitted cart holds at once (0 = no limit).
    hold_quota: int = 0
    expiry_interval: float = 0.1
    stale_after: float = 2.0
    # How long a finished reservation (released, expired, rejected) stays readable and keeps its
    # id from being reused; then Redis deletes it. Not applied while an ERP cancel is due.
    retention: float = 7 * 86400.0
    log_level: str = "info"
    access_log: bool = False  # one JSON line per request on stderr (off: the hot path stays lean)
    # Direct TLS on the listener (both or neither); unset = plain HTTP behind a TLS proxy.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``ATP_*`` variable; an empty value means unset."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        keys_raw = get("ATP_API_KEYS")
        dev_key = None
        keys: tuple[ApiKey, ...]
        if keys_raw is None:
            dev_key = "dev-" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
            keys = (ApiKey(_digest(dev_key), frozenset(SCOPES), "dev"),)
        else:
            keys = parse_api_keys(keys_raw)
        return cls(
            http_host=get("ATP_HTTP_HOST") or "127.0.0.1",
            http_port=_int("ATP_HTTP_PORT", get("ATP_HTTP_PORT"), 8080, 0, 65535),
            redis_url=get("ATP_REDIS_URL"),
            data_dir=Path(get("ATP_DATA_DIR") or "./.atp-data"),
            embedded_fsync=_choice(
                "ATP_EMBEDDED_FSYNC", get("ATP_EMBEDDED_FSYNC"), "everysec", ("everysec", "always")
            ),
            kafka_bootstrap=get("ATP_KAFKA_BOOTSTRAP"),
            kafka_topic=get("ATP_KAFKA_TOPIC") or "erp.inventory.v1",
            kafka_group=get("ATP_KAFKA_GROUP") or "atp-service",
            kafka_security=KafkaSecurity.from_env(get),
            erp_url=(get("ATP_ERP_URL") or "").rstrip("/") or None,
            erp_rate=_positive_float("ATP_ERP_RATE", get("ATP_ERP_RATE"), 50.0),
            erp_timeout=_positive_float("ATP_ERP_TIMEOUT", get("ATP_ERP_TIMEOUT"), 5.0),
            erp_token=_token("ATP_ERP_TOKEN", get("ATP_ERP_TOKEN")),
            erp_budgets=_per_priority(
                "ATP_ERP_BUDGETS", get("ATP_ERP_BUDGETS"), (120.0, 30.0, 10.0)
            ),
            erp_aging=_per_priority("ATP_ERP_AGING", get("ATP_ERP_AGING"), (60.0, 30.0, 0.0)),
            erp_concurrency=_int("ATP_ERP_CONCURRENCY", get("ATP_ERP_CONCURRENCY"), 16, 1, 1024),
            api_keys=keys,
            dev_key=dev_key,
            location_groups=parse_location_groups(get("ATP_LOCATION_GROUPS") or ""),
            low_stock=_int("ATP_LOW_STOCK", get("ATP_LOW_STOCK"), 5, 0, 10**9),
            hold_quota=_int("ATP_HOLD_QUOTA", get("ATP_HOLD_QUOTA"), 0, 0, MAX_HOLD_QUOTA),
            gap_window=_positive_float("ATP_GAP_WINDOW", get("ATP_GAP_WINDOW"), 2.0),
            kafka_lag_bound=_int(
                "ATP_KAFKA_LAG_BOUND", get("ATP_KAFKA_LAG_BOUND"), 10_000, 0, 10**12
            ),
            kafka_unreachable_after=_positive_float(
                "ATP_KAFKA_UNREACHABLE_AFTER", get("ATP_KAFKA_UNREACHABLE_AFTER"), 5.0
            ),
            expiry_interval=_positive_float("ATP_EXPIRY_INTERVAL", get("ATP_EXPIRY_INTERVAL"), 0.1),
            stale_after=_positive_float("ATP_STALE_AFTER", get("ATP_STALE_AFTER"), 2.0),
            retention=_positive_float(
                "ATP_RESERVATION_RETENTION", get("ATP_RESERVATION_RETENTION"), 7 * 86400.0
            ),
            log_level=(get("ATP_LOG_LEVEL") or "info").lower(),
            access_log=_flag("ATP_ACCESS_LOG", get("ATP_ACCESS_LOG")),
            tls_cert=_tls_file("ATP_TLS_CERT", get("ATP_TLS_CERT"), get("ATP_TLS_KEY")),
            tls_key=_tls_file("ATP_TLS_KEY", get("ATP_TLS_KEY"), get("ATP_TLS_CERT")),
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """``secret:scope,scope;secret2:*``; a secret of the form ``sha256=<hex>`` is a stored hash.
    Among the scopes, ``hold_quota=N`` gives the key a cart-hold quota of its own (0: none)."""
    keys: list[ApiKey] = []
    for index, entry in enumerate(p.strip() for p in raw.split(";")):
        if not entry:
            continue
        secret, sep, scopes_raw = entry.partition(":")
        secret = secret.strip()
        if not sep or not secret or not scopes_raw:
            raise ConfigError(f"ATP_API_KEYS entry {index + 1}: expected secret:scope[,scope]")
        scopes: set[str] = set()
        quota: int | None = None
        for scope in (s.strip() for s in scopes_raw.split(",")):
            if scope.startswith(HOLD_QUOTA_SCOPE):
                if quota is not None:
                    raise ConfigError(f"ATP_API_KEYS entry {index + 1}: hold_quota given twice")
                quota = _int(
                    f"ATP_API_KEYS entry {index + 1} hold_quota",
                    scope.removeprefix(HOLD_QUOTA_SCOPE), 0, 0, MAX_HOLD_QUOTA,
                )  # fmt: skip
            elif scope == "*":
                scopes |= SCOPES
            elif scope in SCOPES:
                scopes.add(scope)
            else:
                raise ConfigError(f"ATP_API_KEYS entry {index + 1}: unknown scope {scope!r}")
        if secret.startswith("sha256="):
            digest = secret.removeprefix("sha256=").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"ATP_API_KEYS entry {index + 1}: bad sha256 digest")
        else:
            digest = _digest(secret)
        if not scopes:
            raise ConfigError(f"ATP_API_KEYS entry {index + 1}: no scope")
        keys.append(ApiKey(digest, frozenset(scopes), f"key{index + 1}", quota))
    if not keys:
        raise ConfigError("ATP_API_KEYS holds no key")
    return tuple(keys)


def parse_location_groups(raw: str) -> dict[str, tuple[str, ...]]:
    """``GROUP=LOC1,LOC2;GROUP2=...``"""
    groups: dict[str, tuple[str, ...]] = {}
    for entry in (p.strip() for p in raw.split(";")):
        if not entry:
            continue
        name, sep, locs = entry.partition("=")
        name = name.strip()
        members = tuple(dict.fromkeys(loc.strip() for loc in locs.split(",") if loc.strip()))
        if not sep or not name or not members:
            raise ConfigError(f"ATP_LOCATION_GROUPS entry {entry!r}: expected GROUP=LOC1,LOC2")
        groups[name] = members
    return groups


def _int(name: str, raw: str | None, default: int, lo: int, hi: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _positive_float(name: str, raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a positive number")
    return value


def _per_priority(
    name: str, raw: str | None, default: tuple[float, float, float]
) -> dict[str, float]:
    """``checkout=120,sales=30,background=10`` (missing priorities keep their default)."""
    values = dict(zip(PRIORITIES, default, strict=True))
    for part in (p.strip() for p in (raw or "").split(",")):
        if not part:
            continue
        prio, sep, number = part.partition("=")
        if not sep or prio.strip() not in values:
            raise ConfigError(f"{name}: expected priority=seconds, got {part!r}")
        try:
            value = float(number)
        except ValueError:
            raise ConfigError(f"{name}: {number!r} is not a number") from None
        if not 0 <= value < float("inf"):
            raise ConfigError(f"{name}: {part!r} must be zero or positive")
        values[prio.strip()] = value
    return values


def _flag(name: str, raw: str | None) -> bool:
    if raw is None:
        return False
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected 1 or 0")


def _tls_file(name: str, raw: str | None, other: str | None) -> Path | None:
    """``ATP_TLS_CERT`` (PEM chain) / ``ATP_TLS_KEY`` (PEM private key): both or neither, each
    a readable file, so a typo fails at start-up rather than at the first handshake."""
    if (raw is None) != (other is None):
        raise ConfigError("ATP_TLS_CERT and ATP_TLS_KEY go together: set both or neither")
    return _readable(name, raw)


def _token(name: str, raw: str | None) -> str | None:
    """A bearer token: visible ASCII, no spaces (it goes into an HTTP header as is)."""
    if raw is not None and not all("!" <= c <= "~" for c in raw):
        raise ConfigError(f"{name} must be visible ASCII without spaces")
    return raw


def _readable(name: str, raw: str | None) -> Path | None:
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={raw!r} is not a readable file")
    return path


def _choice(name: str, raw: str | None, default: str, allowed: tuple[str, ...]) -> str:
    if raw is None:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return raw
