"""Operator commands of ``atp-service``: status, inspect, reservations, holds, replay-dlq.

``status`` asks a running replica (``GET /v1/status``); ``inspect``, ``reservations`` and
``holds`` read Redis directly (ATP_REDIS_URL, or the embedded Redis's socket under
ATP_DATA_DIR), read-only; ``replay-dlq`` reads ``<topic>.dlq`` from Kafka and re-publishes to
the topic the events that now validate (dry run unless ``--apply``). Tables are plain aligned
text on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import redis

from . import decode, keys
from .config import Settings
from .embedded import EmbeddedRedis
from .errors import BadRequest
from .http.reservations import owner_of
from .inventory import FIELDS, FLAG_GAP, FLAG_SNAPSHOT, RECORD_FORMAT

COMMANDS = ("status", "inspect", "reservations", "holds", "replay-dlq")
STATUSES = ("held", "confirmed", "rejected", "released", "expired")


class OpsError(Exception):
    """A command cannot do its job; the message says why (exit status 1)."""


# -- output helpers ---------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned plain text; columns holding only numbers (or durations) are right-aligned."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    right = [bool(body) and all(_is_number(r[i]) for r in body) for i in range(len(headers))]
    lines = []
    for row in [list(headers), *body]:
        cells = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?( s)?", text) is not None or text == "-"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))
    return str(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        return f"{value / 60:.0f} min"
    if value < 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds (argparse type)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 60s, 15m, 2h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


class Progress:
    """A one-line progress bar on a stream (stderr), redrawn at most every 0.1 s."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30):
        self.total, self.label, self.width = total, label, width
        self.stream = stream or sys.stderr
        self.done = 0
        self.drawn_at = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.drawn_at >= 0.1:
            self.draw()

    def draw(self) -> None:
        self.drawn_at = time.monotonic()
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        bar = "#" * int(frac * self.width)
        self.stream.write(
            f"\r{self.label} [{bar.ljust(self.width, '.')}] {frac:4.0%} {self.done}/{self.total}"
        )
        self.stream.flush()

    def close(self) -> None:
        self.draw()
        self.stream.write("\n")
        self.stream.flush()


# -- arguments --------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Register the operator sub-commands on the ``atp-service`` parser."""
    status = sub.add_parser(
        "status",
        help="summary of a running service (GET /v1/status)",
        description="Exit status: 0 ok, 3 degraded, 1 no answer.",
    )
    status.add_argument("--url", help="service base URL (default: ATP_HTTP_HOST/PORT)")
    status.add_argument(
        "--key", default=os.environ.get("ATP_API_KEY"),
        help="API key with availability:read (default: $ATP_API_KEY)",
    )  # fmt: skip
    status.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    inspect = sub.add_parser(
        "inspect", help="a key's record, buffered events, settlement lines and recent changes"
    )
    inspect.add_argument("sku")
    inspect.add_argument("location", nargs="?", help="default: every location of the SKU")
    inspect.add_argument("--changes", type=int, default=5, help="recent changes per key")
    inspect.add_argument(
        "--scan", type=int, default=20_000, help="newest change-stream entries searched"
    )
    res = sub.add_parser("reservations", help="list reservations from Redis")
    res.add_argument("--status", choices=STATUSES, help="only this status")
    res.add_argument(
        "--older-than", type=duration, default=0.0, metavar="AGE",
        help="created longer ago than AGE (60s, 15m, 2h)",
    )  # fmt: skip
    res.add_argument("--limit", type=int, default=200, help="rows shown (default 200)")
    sub.add_parser(
        "holds",
        help="units each API key has in uncommitted cart holds, against ATP_HOLD_QUOTA",
        description="Keys are named as in ATP_API_KEYS here ('?': not configured here). "
        "Units are counted only while ATP_HOLD_QUOTA is set on the replicas.",
    )
    dlq = sub.add_parser(
        "replay-dlq",
        help="re-publish DLQ events that now validate (dry run unless --apply)",
        description="Reads ATP_KAFKA_TOPIC.dlq from the beginning; events that now validate "
        "are re-published to ATP_KAFKA_TOPIC (harmless if repeated: events apply once by "
        "(sku, location, seq)). Without --apply nothing is written.",
    )
    dlq.add_argument("--apply", action="store_true", help="really re-publish")
    dlq.add_argument(
        "--read-for", type=float, default=30.0, metavar="SECONDS",
        help="give up reading the DLQ after this long (default 30)",
    )  # fmt: skip


def main(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    try:
        if args.command == "status":
            summary = fetch_status(args, settings)
            stream.write(show_status(summary) + "\n")
            return 0 if summary["status"] == "ok" else 3
        elif args.command == "inspect":
            stream.write(inspect(_redis(settings), args.sku, args.location, args.changes,
                                 args.scan) + "\n")  # fmt: skip
        elif args.command == "reservations":
            stream.write(
                reservations(_redis(settings), args.status, args.older_than, args.limit) + "\n"
            )
        elif args.command == "holds":
            stream.write(holds(_redis(settings), settings) + "\n")
        elif args.command == "replay-dlq":
            stream.write(asyncio.run(replay_dlq(settings, args.apply, args.read_for)) + "\n")
    except OpsError as exc:
        print(f"atp-service {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- status -----------------------------------------------------------------------------------


def service_url(url: str | None, settings: Settings) -> str:
    """The base URL of a running replica: ``url``, else this machine's ATP_HTTP_HOST/PORT."""
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    return (url or f"http://{host}:{settings.http_port}").rstrip("/")


def problem_text(exc: urllib.error.HTTPError) -> str:
    """``title: detail`` of a problem response, or the HTTP reason if the body is not one."""
    try:
        problem = orjson.loads(exc.read())
        return f"{problem.get('title')}: {problem.get('detail')}"
    except orjson.JSONDecodeError:
        return str(exc.reason)


def fetch_status(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    base = service_url(args.url, settings)
    if not args.key:
        raise OpsError("give an API key with availability:read (--key or ATP_API_KEY)")
    request = urllib.request.Request(
        base + "/v1/status",
        headers={"Authorization": f"Bearer {args.key}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            data: dict[str, Any] = orjson.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        raise OpsError(f"{base} answered {exc.code} ({problem_text(exc)})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise OpsError(f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from None


def show_status(s: dict[str, Any]) -> str:
    rep, cache, erp, feed = s["replica"], s["cache"], s["erp"], s["feed"]
    out = [f"Service {s['status'].upper()}   (replica {rep['id']}, version {rep['version']}, "
           f"up {seconds(rep['uptime_seconds'])}, at {s['generated_at']})"]  # fmt: skip
    out += [f"  ! {reason}" for reason in s.get("reasons", [])]
    seen = s["replicas_seen"]
    out.append(f"Replicas seen (last 10 s): {'unknown' if seen is None else seen}")
    out += ["", table(["CACHE", "KEYS", "READY", "FRESH", "DATA AGE"],
                      [["this replica", cache["keys"], cache["ready"], cache["fresh"],
                        seconds(cache["age_seconds"])]])]  # fmt: skip
    out.append("")
    if feed is None:
        out.append("FEED  not configured (ATP_KAFKA_BOOTSTRAP unset; events come over HTTP)")
    else:
        broker = "reachable" if feed["broker_reachable"] else "UNREACHABLE"
        out.append(table(["FEED TOPIC", "LAG", "JOINED", "EVENT AGE", "BROKER"],
                         [[feed["topic"], feed["lag"], feed["joined"],
                           seconds(feed["event_age_seconds"]), broker]]))  # fmt: skip
    out.append("")
    inflight = "unknown" if erp["inflight"] is None else erp["inflight"]
    out.append(f"ERP  mode {erp['mode']}, rate {_cell(erp['rate'])}/s, breaker "
               f"{erp['breaker']}, in flight {inflight}")  # fmt: skip
    queues = erp["queues"]
    if queues is None:
        out.append("  queues unknown (Redis did not answer)")
    else:
        out.append(table(["PRIORITY", "WAITING", "OLDEST"],
                         [[p, q["length"], seconds(q["oldest_seconds"])]
                          for p, q in queues.items()]))  # fmt: skip
    out.append("")
    groups = s.get("groups") or {}
    if groups:
        out.append(table(["GROUP", "LOCATIONS"], [[g, ", ".join(m)] for g, m in groups.items()]))
    else:
        out.append("GROUPS  none configured (ATP_LOCATION_GROUPS)")
    return "\n".join(out)


# -- Redis readers ----------------------------------------------------------------------------


def _redis(settings: Settings) -> Any:
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        if not embedded.socket.exists():
            raise OpsError(
                f"set ATP_REDIS_URL (or run where the embedded service keeps {embedded.socket})"
            )
        url = embedded.url
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise OpsError(f"cannot reach Redis at {url}: {exc}") from None
    return client


def _record(raw: bytes) -> dict[str, int]:
    return dict(zip(FIELDS, struct.unpack(RECORD_FORMAT, raw), strict=True))


def _flags(value: int) -> str:
    names = [n for bit, n in ((FLAG_SNAPSHOT, "snapshot"), (FLAG_GAP, "GAP")) if value & bit]
    return ",".join(names) or "none"


def _atp(r: dict[str, int]) -> int:
    if not r["flags"] & FLAG_SNAPSHOT:
        return 0
    return max(0, r["on_hand"] - r["allocated"] - r["safety_stock"] - r["pending"])


def inspect(client: Any, sku: str, location: str | None, changes: int, scan: int) -> str:
    if not decode.is_identifier(sku) or (location and not decode.is_identifier(location)):
        raise OpsError("sku and location must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
    records: dict[str, dict[str, int]] = {}
    if location:
        raw = client.hget(keys.INV, f"{sku}|{location}")
        if raw is not None:
            records[f"{sku}|{location}"] = _record(raw)
    else:
        for name, raw in client.hscan_iter(keys.INV, match=f"{sku}|*", count=5000):
            records[name.decode()] = _record(raw)
    if not records:
        where = f" at {location}" if location else ""
        raise OpsError(f"no record for {sku}{where} in Redis")
    ordered = sorted(records)
    out = [table(
        ["KEY", "ATP", "ON_HAND", "ALLOCATED", "SAFETY", "PENDING", "SEQ", "VER", "FLAGS",
         "UPDATED (UTC)"],
        [[k, _atp(r), r["on_hand"], r["allocated"], r["safety_stock"], r["pending"], r["seq"],
          r["ver"], _flags(r["flags"]), iso(r["updated_ms"]) if r["updated_ms"] else "-"]
         for k, r in ((k, records[k]) for k in ordered)],
    )]  # fmt: skip
    recent = _recent_changes(client, set(ordered), changes, scan)
    for key in ordered:
        lo, hi = f"[{key}\0".encode(), f"({key}\1".encode()
        buffered = [m.split(b"\0") for m in client.zrangebylex(keys.BUF, lo, hi)]
        settle = [m.split(b"\0") for m in client.zrangebylex(keys.SETTLE, lo, hi)]
        out.append("")
        out.append(f"{key}: {len(buffered)} buffered event(s), {len(settle)} unsettled line(s)")
        if buffered:
            rows = []
            for parts in buffered:
                on_hand, _, allocated = parts[2].decode().partition("|")
                rows.append([int(parts[1]), on_hand, allocated])
            out.append(table(["  SEQ", "ON_HAND_DELTA", "ALLOCATED_DELTA"], rows))
        if settle:
            out.append(table(["  ERP_SEQ", "RESERVATION", "QTY"],
                             [[int(p[1]), p[2].decode(), int(p[3])] for p in settle]))  # fmt: skip
        mine = recent.get(key, [])
        if mine:
            out.append(table(
                ["  CHANGE (UTC)", "STREAM ID", "ATP", "ON_HAND", "ALLOCATED", "PENDING", "SEQ",
                 "VER"],
                [[iso(int(sid.split("-")[0])), sid, _atp(r), r["on_hand"], r["allocated"],
                  r["pending"], r["seq"], r["ver"]] for sid, r in mine],
            ))  # fmt: skip
        else:
            out.append(f"  no change of this key in the newest {scan} stream entries")
    return "\n".join(out)


def _recent_changes(
    client: Any, wanted: set[str], per_key: int, scan: int
) -> dict[str, list[tuple[str, dict[str, int]]]]:
    """The newest change-stream entries (up to ``scan``) that touch the wanted keys."""
    found: dict[str, list[tuple[str, dict[str, int]]]] = {}
    last = "+"
    seen = 0
    while seen < scan and any(len(found.get(k, [])) < per_key for k in wanted):
        page = client.xrevrange(keys.CHANGES, max=last, count=min(1000, scan - seen))
        if last != "+":
            page = page[1:]  # the boundary entry was in the previous page
        if not page:
            break
        for entry_id, fields in page:
            seen += 1
            for name, raw in fields.items():
                key = name.decode()
                if key in wanted and len(found.setdefault(key, [])) < per_key:
                    found[key].append((entry_id.decode(), _record(raw)))
        last = page[-1][0].decode()
    return found


def reservations(client: Any, status: str | None, older_than: float, limit: int) -> str:
    secs, micros = client.time()
    now_ms = int(secs) * 1000 + int(micros) // 1000
    cutoff = now_ms - older_than * 1000
    rows: list[tuple[int, list[object]]] = []
    scanned = 0
    batch: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for name in batch:
            pipe.hgetall(name)
        for raw in pipe.execute():
            if not raw:
                continue  # gone meanwhile
            f = {k.decode(): v.decode() for k, v in raw.items()}
            created = int(f.get("created_ms", "0"))
            if (status and f.get("status") != status) or created > cutoff:
                continue
            lines = orjson.loads(f.get("lines", "[]"))
            expires = int(f["expires_ms"]) if "expires_ms" in f else None
            left = None if expires is None else max(0.0, (expires - now_ms) / 1000)
            rows.append((created, [
                f.get("id"), f.get("status"), f.get("priority"),
                seconds((now_ms - created) / 1000), f.get("hold", "0") != "0",
                seconds(left) if f.get("status") == "held" and left is not None else "-",
                len(lines), sum(int(x["qty"]) for x in lines), f.get("owner") or "-",
                f.get("reason", "")[:40],
            ]))  # fmt: skip
        batch.clear()

    for name in client.scan_iter(match=keys.RESERVATION + "*", count=1000):
        scanned += 1
        batch.append(name)
        if len(batch) >= 500:
            flush()
    if batch:
        flush()
    rows.sort(key=lambda r: r[0])
    what = f"{status} " if status else ""
    age = f" created more than {seconds(older_than)} ago" if older_than else ""
    head = f"{len(rows)} {what}reservation(s){age}, of {scanned} in Redis"
    if not rows:
        return head
    shown = rows[:limit]
    more = f"\n... and {len(rows) - limit} more (--limit)" if len(rows) > limit else ""
    return head + "\n" + table(
        ["ID", "STATUS", "PRIORITY", "AGE", "CART", "EXPIRES IN", "LINES", "QTY", "OWNER",
         "REASON"],
        [r for _, r in shown],
    ) + more  # fmt: skip


def holds(client: Any, settings: Settings) -> str:
    """Units per API key in uncommitted cart holds (``keys.HELD``), most first."""
    names = {owner_of(k): k.name for k in settings.api_keys}
    default = settings.hold_quota
    quotas = {owner_of(k): k.hold_quota for k in settings.api_keys if k.hold_quota is not None}
    rows = sorted(
        ((int(units), owner.decode()) for owner, units in client.hgetall(keys.HELD).items()),
        reverse=True,
    )
    limit = f"{default} units per key" if default else "not set here (no limit, nothing counted)"
    own = f"; {len(quotas)} key(s) with a quota of their own" if quotas else ""
    head = (
        f"{len(rows)} API key(s) with units in uncommitted cart holds; ATP_HOLD_QUOTA: {limit}"
        + own
    )
    if not rows:
        return head

    out = []
    for units, owner in rows:
        quota = quotas.get(owner, default)
        share = f"{100 * units / quota:.0f}%" if quota else "-"
        out.append([names.get(owner, "?"), owner or "-", units, quota or "-", share])
    return head + "\n" + table(["KEY", "OWNER", "UNITS", "QUOTA", "OF QUOTA"], out)


# -- replay-dlq -------------------------------------------------------------------------------


def classify(value: bytes | None) -> tuple[str | None, str]:
    """(Kafka key, "") for an event that now validates, else (None, reason)."""
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"
    try:
        event = decode.event(raw)
    except BadRequest as exc:
        return None, exc.detail
    return f"{event.sku}|{event.location}", ""


async def replay_dlq(
    settings: Settings, apply: bool, read_for: float,
    progress: Callable[[int, str], Progress] = lambda n, label: Progress(n, label),
) -> str:  # fmt: skip
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.errors import KafkaError

    if not settings.kafka_bootstrap:
        raise OpsError("set ATP_KAFKA_BOOTSTRAP (and ATP_KAFKA_TOPIC) to reach the broker")
    topic, dlq = settings.kafka_topic, settings.kafka_topic + ".dlq"
    options = settings.kafka_security.client_options()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
        **options,
    )  # fmt: skip
    producer = None
    try:
        await consumer.start()
        await consumer.topics()  # fetches metadata, so the partitions below are known
        parts = consumer.partitions_for_topic(dlq)
        if not parts:
            raise OpsError(f"topic {dlq} not found")
        tps = [TopicPartition(dlq, p) for p in sorted(parts)]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        total = sum(end[tp] - begin[tp] for tp in tps)
        bar = progress(total, f"reading {dlq}")
        good: list[tuple[str, bytes | None, str]] = []
        bad: Counter[str] = Counter()
        deadline = time.monotonic() + read_for
        # Read to the end offsets taken at start, then until the topic has been quiet for one
        # poll: the end offsets are a lower bound (records may arrive meanwhile, and some
        # Kafka-protocol brokers report the end of the last batch's first record).
        remaining = {tp for tp in tps if end[tp] > begin[tp]}
        quiet = False
        while (remaining or not quiet) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            quiet = not batch
            for tp, records in batch.items():
                for record in records:
                    key, reason = classify(record.value)
                    if key is None:
                        bad[reason] += 1
                    else:
                        good.append((key, record.value, f"{dlq}:{tp.partition}:{record.offset}"))
                    bar.total = max(bar.total, bar.done + 1)
                    bar.advance()
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        bar.close()
        if remaining:
            raise OpsError(f"read only {bar.done} of {total}+ records in {read_for:g} s")
        if apply and good:
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False, acks="all",
                **options,
            )  # fmt: skip
            await producer.start()
            bar = progress(len(good), f"publishing to {topic}")
            for key, value, origin in good:
                await producer.send_and_wait(
                    topic, value, key=key.encode(), headers=[("dlq.replayed.from", origin.encode())]
                )
                bar.advance()
            bar.close()
    except KafkaError as exc:
        raise OpsError(f"Kafka: {exc}") from None
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    verb = "re-published" if apply else "would be re-published (dry run: add --apply)"
    out = [f"{len(good) + sum(bad.values())} record(s) in {dlq}: "
           f"{len(good)} now valid {verb}; {sum(bad.values())} still invalid"]  # fmt: skip
    if bad:
        out.append(table(["STILL INVALID", "REASON"], [[n, r] for r, n in bad.most_common(20)]))
    return "\n".join(out)
