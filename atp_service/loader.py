"""``atp-service load FILE``: bulk-load inventory into a running service, with a progress bar.

For a first load of a catalogue, a re-seed after an incident, or a test data set: the file's
events go to ``POST /v1/events`` in batches (the same validation and ordering rules as the
Kafka feed), so the load works against any replica, local or deployed, with a key that has
``events:write``. Input:

- JSON Lines (``.jsonl``, ``.ndjson``): one event per line, as in contract section 3;
- CSV (``.csv``) with a header naming ``sku, location, on_hand, seq`` and optionally
  ``allocated, safety_stock, occurred_at, event_id``: one snapshot per row.

Re-running a load is harmless (events apply once by (sku, location, seq)), so a batch that
gets no answer, a 503 or a 429 is sent again after a pause. A row the service refuses is
reported with its line number and reason; the exit status is 0 when nothing was refused, 3
when some rows were, 1 when the load could not finish.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from .config import Settings
from .decode import MAX_EVENTS
from .ops_cli import OpsError, Progress, problem_text, service_url, table

CSV_REQUIRED = ("sku", "location", "on_hand", "seq")
CSV_INTS = ("on_hand", "allocated", "safety_stock", "seq")
SHOWN = 20  # refused rows listed


@dataclass
class Totals:
    read: int = 0
    applied: int = 0
    duplicates: int = 0
    buffered: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="events (.jsonl/.ndjson) or snapshots (.csv); '-' = stdin")
    parser.add_argument(
        "--format", choices=("jsonl", "csv"), help="default: from the file name (stdin: jsonl)"
    )
    parser.add_argument("--url", help="service base URL (default: ATP_HTTP_HOST/PORT)")
    parser.add_argument(
        "--key", default=os.environ.get("ATP_API_KEY"),
        help="API key with events:write (default: $ATP_API_KEY)",
    )  # fmt: skip
    parser.add_argument(
        "--batch", type=int, default=2000, help=f"events per request (1..{MAX_EVENTS})"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--retries", type=int, default=8,
        help="times a batch is sent again after no answer, 503 or 429 (default 8)",
    )  # fmt: skip


def main(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    try:
        if not 1 <= args.batch <= MAX_EVENTS:
            raise OpsError(f"--batch must be between 1 and {MAX_EVENTS}")
        if not args.key:
            raise OpsError("give an API key with events:write (--key or ATP_API_KEY)")
        base = service_url(args.url, settings)
        fmt = args.format or ("csv" if args.file.lower().endswith(".csv") else "jsonl")
        with _open(args.file) as source:
            lines = source.readlines() if args.file == "-" else None
            total = len(lines) if lines is not None else _count_lines(Path(args.file))
            text: TextIO = io.StringIO("".join(lines)) if lines is not None else source
            rows = read_csv(text) if fmt == "csv" else read_jsonl(text)
            send = http_sender(base, args.key, args.timeout, max(0, args.retries))
            totals = load(rows, send, args.batch, Progress(max(0, total), "loading"))
    except OpsError as exc:
        print(f"atp-service load: {exc}", file=sys.stderr)
        return 1
    stream.write(summary(totals) + "\n")
    return 3 if totals.refused else 0


def _open(name: str) -> TextIO:
    if name == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    try:
        return open(name, encoding="utf-8", newline="")  # closed by the caller
    except OSError as exc:
        raise OpsError(f"cannot read {name}: {exc.strerror}") from None


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


# -- reading ----------------------------------------------------------------------------------

Row = tuple[int, Any, str]  # (line number, event or None, why it could not be read)


def read_jsonl(source: TextIO) -> Iterator[Row]:
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line), ""
        except orjson.JSONDecodeError as exc:
            yield number, None, f"invalid JSON: {exc.msg}"


def read_csv(source: TextIO) -> Iterator[Row]:
    reader = csv.DictReader(source)
    missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or ())]
    if missing:
        raise OpsError(f"CSV header lacks {', '.join(missing)} (needs {', '.join(CSV_REQUIRED)})")
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for row in reader:
        number = reader.line_num
        event: dict[str, Any] = {"type": "snapshot", "sku": row["sku"],
                                 "location": row["location"]}  # fmt: skip
        try:
            for name in CSV_INTS:
                value = (row.get(name) or "").strip()
                if value or name in CSV_REQUIRED:
                    event[name] = int(value)
        except ValueError:
            yield number, None, f"{name}: not an integer: {row.get(name)!r}"
            continue
        event.setdefault("allocated", 0)
        event.setdefault("safety_stock", 0)
        event["occurred_at"] = (row.get("occurred_at") or "").strip() or now
        event["event_id"] = (row.get("event_id") or "").strip() or (
            f"load-{row['sku']}-{row['location']}-{event['seq']}"
        )
        yield number, event, ""


# -- sending ----------------------------------------------------------------------------------

Sender = Callable[[list[Any]], dict[str, Any]]


def http_sender(base: str, key: str, timeout: float, retries: int) -> Sender:
    """POST one batch to ``/v1/events``; retries what may succeed later (harmless: events
    apply once by (sku, location, seq))."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def send(events: list[Any]) -> dict[str, Any]:
        body = orjson.dumps({"events": events})
        for attempt in range(retries + 1):
            request = urllib.request.Request(base + "/v1/events", body, headers)
            wait = min(10.0, 0.5 * 2**attempt)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    data: dict[str, Any] = orjson.loads(response.read())
                    return data
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503) or attempt == retries:
                    raise OpsError(f"{base} answered {exc.code}: {problem_text(exc)}") from None
                wait = max(wait, float(exc.headers.get("Retry-After") or 0))
            except (urllib.error.URLError, OSError) as exc:
                if attempt == retries:
                    why = getattr(exc, "reason", exc)
                    raise OpsError(f"cannot reach {base}: {why}") from None
            time.sleep(wait)
        raise AssertionError("unreachable")

    return send


def load(rows: Iterator[Row], send: Sender, batch: int, progress: Progress) -> Totals:
    totals = Totals()
    events: list[Any] = []
    numbers: list[int] = []

    def flush() -> None:
        if not events:
            return
        answer = send(events)
        totals.applied += int(answer.get("applied", 0))
        totals.duplicates += int(answer.get("duplicates", 0))
        totals.buffered += int(answer.get("buffered", 0))
        for item in answer.get("rejected", []):
            totals.refused.append((numbers[int(item["index"])], str(item.get("reason", ""))))
        progress.advance(len(events))
        events.clear()
        numbers.clear()

    for number, event, why in rows:
        totals.read += 1
        if event is None:
            totals.refused.append((number, why))
            progress.advance()
            continue
        events.append(event)
        numbers.append(number)
        if len(events) >= batch:
            flush()
    flush()
    progress.total = progress.done
    progress.close()
    return totals


def summary(t: Totals) -> str:
    out = [table(["READ", "APPLIED", "DUPLICATES", "BUFFERED", "REFUSED"],
                 [[t.read, t.applied, t.duplicates, t.buffered, len(t.refused)]])]  # fmt: skip
    if t.refused:
        rows = [[n, why] for n, why in sorted(t.refused)[:SHOWN]]
        out += ["", table(["LINE", "REFUSED BECAUSE"], rows)]
        if len(t.refused) > SHOWN:
            out.append(f"... and {len(t.refused) - SHOWN} more")
    return "\n".join(out)
