"""SLO gate for a peak load test: PASS/FAIL from Locust's CSVs, the ERP ledger and the
reservations the locustfile recorded. Exit 0 when every budget holds, 1 on any breach, 2 when
an input is missing or malformed.

    python loadtests/slo_gate.py --csv out/locust \
        --reservations 'out/reservations.*.jsonl' --service http://127.0.0.1:8080 --key KEY \
        --erp http://127.0.0.1:8090 --erp-rate 50 [--slo loadtests/slo.toml]

Inputs (each check without its input prints SKIP):

- ``--csv PREFIX``: Locust's ``PREFIX_stats.csv`` and ``PREFIX_failures.csv``: latency
  percentiles per request name, error rate, intended 409/429 counts;
- ``--erp URL`` (the simulator: ``GET /admin/ledger?keys=0`` and ``/admin/calls/stats``) or
  ``--ledger FILE`` (a saved JSON of the ledger, e.g. by ``--save-ledger``): oversold keys,
  double allocations, the ERP's call rate, what the ERP holds of each reservation;
- ``--reservations GLOB`` (the locustfile's records) with ``--service``/``--key``: the end
  state of every reservation the run created, after waiting up to ``--drain-timeout`` for the
  ERP queue to drain (committed and direct reservations reach ``confirmed``).

Budgets are in ``loadtests/slo.toml`` (documented there). Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import glob
import http.client
import json
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INTENDED_409 = "(409 insufficient-stock)"
INTENDED_429 = "(429 throttled)"
FINAL = frozenset({"confirmed", "rejected", "released", "expired"})


class GateInputError(Exception):
    """An input is missing or unreadable: exit 2."""


@dataclass
class Check:
    name: str
    measured: str
    budget: str
    ok: bool | None  # None = SKIP (no data) or INFO (budget "-")
    details: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "INFO" if self.budget == "-" else "SKIP"
        return "PASS" if self.ok else "FAIL"


# -- Locust CSVs ----------------------------------------------------------------------------


def read_stats(prefix: str) -> list[dict[str, str]]:
    path = Path(f"{prefix}_stats.csv")
    if not path.is_file():
        raise GateInputError(f"no Locust stats at {path} (run locust with --csv {prefix})")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") != "Aggregated"]
    if rows and "Request Count" not in rows[0]:
        raise GateInputError(f"{path} is not a Locust stats CSV")
    return rows


def read_failures(prefix: str) -> list[dict[str, str]]:
    path = Path(f"{prefix}_failures.csv")
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _int(raw: str | None) -> int:
    try:
        return int(float(raw or 0))
    except ValueError:
        return 0


def _pct_column(percentile: float) -> str:
    text = f"{percentile:g}%"
    return text


def _label(row: dict[str, str]) -> str:
    return row["Name"]


def request_checks(rows: list[dict[str, str]], failures: list[dict[str, str]],
                   slo: dict[str, Any]) -> list[Check]:  # fmt: skip
    budgets = slo.get("requests", {})
    total = sum(_int(r["Request Count"]) for r in rows)
    failed = sum(_int(r["Failure Count"]) for r in rows)
    checks = []
    minimum = int(budgets.get("min_requests", 1))
    checks.append(Check("requests made", f"{total}", f">= {minimum}", total >= minimum))
    budget = float(budgets.get("max_error_rate", 0.0))
    rate = failed / total if total else 0.0
    details = [
        f"{_int(f.get('Occurrences'))} x {f.get('Method', '')} {f.get('Name', '')}: "
        f"{(f.get('Error') or '')[:100]}"
        for f in sorted(failures, key=lambda f: -_int(f.get("Occurrences")))[:8]
    ]
    checks.append(
        Check("error rate (intended 409/429 excluded)", f"{rate:.4%} ({failed}/{total})",
              f"<= {budget:.4%}", rate <= budget and (total > 0 or failed == 0), details)
    )  # fmt: skip
    intended = {
        tag: sum(_int(r["Request Count"]) for r in rows if r["Name"].endswith(tag))
        for tag in (INTENDED_409, INTENDED_429)
    }
    checks.append(Check("intended 409 insufficient-stock", str(intended[INTENDED_409]), "-", None))
    checks.append(Check("intended 429 throttled", str(intended[INTENDED_429]), "-", None))
    return checks


def latency_checks(rows: list[dict[str, str]], slo: dict[str, Any]) -> list[Check]:
    checks = []
    for rule in slo.get("latency", []):
        prefix = str(rule["match"])
        column = _pct_column(float(rule.get("percentile", 99)))
        limit = float(rule["max_ms"])
        matched = [r for r in rows if r["Name"].startswith(prefix) and _int(r["Request Count"])]
        if not matched:
            required = bool(rule.get("required", False))
            checks.append(
                Check(f"p{column[:-1]} {prefix}*", "no requests", f"<= {limit:g} ms",
                      False if required else None)
            )  # fmt: skip
            continue
        floor = int(rule.get("min_requests", 0))
        for row in matched:
            count = _int(row["Request Count"])
            if count < floor:
                checks.append(
                    Check(f"p{column[:-1]} {_label(row)}", f"n={count} < {floor}: too few",
                          f"<= {limit:g} ms", None)
                )  # fmt: skip
                continue
            raw = row.get(column)
            if raw is None:
                raise GateInputError(f"the stats CSV has no {column!r} column")
            value = float(raw) if raw not in ("", "N/A") else float("nan")
            checks.append(
                Check(f"p{column[:-1]} {_label(row)}",
                      f"{value:g} ms (n={_int(row['Request Count'])})", f"<= {limit:g} ms",
                      value <= limit)
            )  # fmt: skip
    return checks


def throttle_checks(rows: list[dict[str, str]], slo: dict[str, Any]) -> list[Check]:
    budget = float(slo.get("throttling", {}).get("max_checkout_throttled_ratio", 1.0))
    checkout = [r for r in rows if r["Name"].startswith("POST /v1/reservations [checkout")]
    total = sum(_int(r["Request Count"]) for r in checkout)
    throttled = sum(_int(r["Request Count"]) for r in checkout if r["Name"].endswith(INTENDED_429))
    if not total:
        return [Check("checkout reservations throttled (429)", "none made", f"<= {budget:.2%}",
                      None)]  # fmt: skip
    ratio = throttled / total
    return [
        Check("checkout reservations throttled (429)", f"{ratio:.2%} ({throttled}/{total})",
              f"<= {budget:.2%}", ratio <= budget)
    ]  # fmt: skip


# -- reservation records ----------------------------------------------------------------------


@dataclass
class Journey:
    """One reservation id as the locustfile saw it."""

    rid: str
    priority: str = ""
    hold: int | None = None
    created: bool = False  # answered 200/201
    created_at: float = 0.0
    refused: bool = False  # answered 409 insufficient-stock or 429 (and never accepted)
    uncertain: bool = False  # no answer (timeout, reset, 5xx): may or may not exist
    committed: bool = False
    commit_uncertain: bool = False
    released: bool = False
    released_state: str | None = None

    attempted_at: float = 0.0

    @property
    def expect(self) -> str:
        """confirm | released | hold | refused. With ``uncertain`` (the create got no answer)
        the id may not exist at all; if it does, it is judged like an answered one."""
        if self.created or self.uncertain:
            if self.released:
                return "released"
            if self.hold is None or self.committed:
                return "confirm"
            return "hold"
        return "refused"


def read_records(pattern: str) -> tuple[dict[str, Journey], dict[str, int]]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise GateInputError(f"no reservation records match {pattern!r}")
    records: list[dict[str, Any]] = []
    for name in files:
        with open(name) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    # a worker killed mid-write leaves a torn last line: skip only that
                    print(f"slo_gate: {name}:{number}: torn record skipped", file=sys.stderr)
    records.sort(key=lambda r: r.get("t", 0))
    journeys: dict[str, Journey] = {}
    summary: dict[str, int] = {}
    for rec in records:
        if "summary" in rec:
            for key, value in rec["summary"].items():
                summary[key] = summary.get(key, 0) + int(value)
            continue
        j = journeys.setdefault(rec["id"], Journey(rec["id"]))
        op, status = rec.get("op"), int(rec.get("status", 0) or 0)
        if op == "attempt":
            j.priority = rec.get("priority", "")
            j.hold = rec.get("hold")
            j.attempted_at = j.attempted_at or float(rec.get("t", 0))
            if not j.created:
                j.uncertain = True  # until an answer says otherwise
        elif op == "create":
            if status in (200, 201):
                j.created, j.uncertain, j.refused = True, False, False
                j.created_at = j.created_at or float(rec.get("t", 0))
            elif 400 <= status < 500 and not j.created:
                j.refused, j.uncertain = True, False
            # 0 / 5xx: stays uncertain
        elif op == "commit":
            if status == 200:
                j.committed = True
            elif status == 0 or status >= 500:
                j.commit_uncertain = True
        elif op == "release" and status == 200:
            j.released = True
            j.released_state = rec.get("state")
    return journeys, summary


# -- HTTP -------------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


class StateReader:
    """GET /v1/reservations/{id} over a few keep-alive connections."""

    def __init__(self, service: str, key: str | None, threads: int = 8) -> None:
        parsed = urllib.parse.urlsplit(service)
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if self.https else 80)
        self.base = parsed.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.threads = threads
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self.local.conn = cls(self.host, self.port, timeout=10)
        return conn  # type: ignore[no-any-return]

    def one(self, rid: str) -> tuple[str, str | None]:
        """The reservation's status; None if unknown (404)."""
        for attempt in range(3):
            conn = self._conn()
            try:
                conn.request("GET", f"{self.base}/v1/reservations/{rid}", headers=self.headers)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
                continue
            if resp.status == 404:
                return rid, None
            if resp.status != 200:
                raise GateInputError(f"GET /v1/reservations/{rid}: HTTP {resp.status}")
            return rid, str(json.loads(body)["status"])
        raise AssertionError("unreachable")

    def many(self, ids: Iterable[str]) -> dict[str, str | None]:
        with ThreadPoolExecutor(self.threads) as pool:
            return dict(pool.map(self.one, ids))


def drain(journeys: dict[str, Journey], reader: StateReader, timeout: float,
          log: Callable[[str], None]) -> tuple[dict[str, str | None], float, float]:  # fmt: skip
    """States of every journey, after waiting for must-confirm ones to leave ``held``; how
    long that took, and when the holds were last read (for the expiry check)."""
    started = time.monotonic()
    states = reader.many(j.rid for j in journeys.values() if j.expect != "refused")
    waiting = [rid for rid, state in states.items()
               if state == "held" and journeys[rid].expect == "confirm"]  # fmt: skip
    last_log = 0.0
    while waiting and time.monotonic() - started < timeout:
        if time.monotonic() - last_log >= 5:
            log(f"drain: {len(waiting)} committed/direct reservations still held "
                f"({time.monotonic() - started:.0f}s of {timeout:g}s)")  # fmt: skip
            last_log = time.monotonic()
        time.sleep(1.0)
        states.update(reader.many(waiting))
        waiting = [rid for rid in waiting if states[rid] == "held"]
    # Holds age meanwhile: read them again at the end for the expiry check.
    drained_in = time.monotonic() - started
    read_at = time.time()
    states.update(reader.many(rid for rid, j in journeys.items() if j.expect == "hold"))
    return states, drained_in, read_at


def reservation_checks(journeys: dict[str, Journey], states: dict[str, str | None] | None,
                       ledger: dict[str, Any] | None, slo: dict[str, Any], now: float,
                       drained_in: float | None) -> list[Check]:  # fmt: skip
    budgets = slo.get("reservations", {})
    slack = float(budgets.get("expiry_slack_seconds", 5))
    counts: dict[str, int] = {}
    for j in journeys.values():
        kind = f"{j.expect} (no answer)" if j.uncertain else j.expect
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    checks = [Check("reservations recorded", f"{len(journeys)} ({summary})", "-", None)]
    erp: dict[str, Any] = (ledger or {}).get("reservations", {})
    unconfirmed: list[str] = []
    rejected: list[str] = []
    wrong: list[str] = []
    for j in journeys.values():
        expect = j.expect
        state = states.get(j.rid) if states is not None else None
        at_erp = erp.get(j.rid, {}).get("status") if ledger is not None else None
        if j.uncertain and state is None and states is not None:
            continue  # the request that got no answer never created it
        if states is not None and expect != "refused":
            if expect == "confirm":
                if state == "rejected":
                    rejected.append(f"{j.rid} ({j.priority}): rejected by the ERP")
                elif state in ("held", None):
                    unconfirmed.append(f"{j.rid} ({j.priority}): {state or 'unknown'}")
                elif state != "confirmed":
                    unconfirmed.append(f"{j.rid} ({j.priority}): {state}, expected confirmed")
            elif expect == "released":
                if state not in ("released", j.released_state):
                    wrong.append(f"{j.rid}: released by the journey but {state}")
            elif expect == "hold":
                expired_by = (j.created_at or j.attempted_at) + float(j.hold or 0) + slack
                if state == "confirmed" and j.commit_uncertain:
                    pass  # the commit did go through
                elif state not in ("held", "expired"):
                    wrong.append(f"{j.rid}: an uncommitted hold, but {state}")
                elif state == "held" and now > expired_by:
                    wrong.append(f"{j.rid}: still held {now - expired_by + slack:.1f}s after "
                                 f"its hold_seconds={j.hold}")  # fmt: skip
        if ledger is not None:
            if expect in ("hold", "refused") and at_erp == "allocated" and not j.commit_uncertain:
                wrong.append(f"{j.rid}: never sent to the ERP ({expect}), but allocated there")
            if states is not None and state == "confirmed" and at_erp != "allocated":
                wrong.append(f"{j.rid}: confirmed by the service, ERP says {at_erp}")
    if states is None:
        skip = "no --service: reservation states not read"
        checks.append(Check("committed/direct reservations not confirmed", skip, "", None))
        if ledger is None:
            return checks
    else:
        budget = int(budgets.get("max_unconfirmed", 0))
        drained = f" after a {drained_in:.0f}s drain" if drained_in is not None else ""
        checks.append(
            Check(f"committed/direct reservations not confirmed{drained}", str(len(unconfirmed)),
                  f"<= {budget}", len(unconfirmed) <= budget, unconfirmed[:10])
        )  # fmt: skip
        budget = int(budgets.get("max_erp_rejected", 0))
        checks.append(
            Check("committed/direct reservations rejected by the ERP", str(len(rejected)),
                  f"<= {budget}", len(rejected) <= budget, rejected[:10])
        )  # fmt: skip
    budget = int(budgets.get("max_state_errors", 0))
    checks.append(
        Check("reservations in a wrong end state", str(len(wrong)), f"<= {budget}",
              len(wrong) <= budget, wrong[:10])
    )  # fmt: skip
    return checks


def stale_checks(summary: dict[str, int], slo: dict[str, Any]) -> list[Check]:
    budget = float(slo.get("lookups", {}).get("max_stale_ratio", 1.0))
    lookups, stale = summary.get("lookups", 0), summary.get("lookups_stale", 0)
    if not lookups:
        return [Check("lookups answered stale", "no summary recorded", f"<= {budget:.2%}", None)]
    ratio = stale / lookups
    return [
        Check("lookups answered stale", f"{ratio:.3%} ({stale}/{lookups})", f"<= {budget:.2%}",
              ratio <= budget)
    ]  # fmt: skip


# -- ERP ----------------------------------------------------------------------------------


def erp_checks(ledger: dict[str, Any] | None, call_stats: dict[str, Any] | None,
               erp_rate: float | None, slo: dict[str, Any]) -> list[Check]:  # fmt: skip
    budgets = slo.get("erp", {})
    if ledger is None:
        return [Check("ERP oversold keys", "no ledger (--erp / --ledger)", "<= 0", None)]
    oversold = ledger.get("oversold", [])
    budget = int(budgets.get("max_oversold_keys", 0))
    details = [f"{k.get('sku')}@{k.get('location')}: on_hand {k.get('on_hand')}, "
               f"allocated {k.get('allocated')}" for k in oversold[:10]]  # fmt: skip
    checks = [Check("ERP oversold keys", str(len(oversold)), f"<= {budget}",
                    len(oversold) <= budget, details)]  # fmt: skip
    reservations = ledger.get("reservations", {})
    doubles = [rid for rid, r in reservations.items() if int(r.get("allocations", 0)) > 1]
    budget = int(budgets.get("max_double_allocations", 0))
    checks.append(Check("ERP reservations allocated more than once", str(len(doubles)),
                        f"<= {budget}", len(doubles) <= budget, doubles[:10]))  # fmt: skip
    counts = ledger.get("counts", {})
    if counts:
        checks.append(Check(
            "ERP reservations allocated / rejected; storm sales / receipts",
            f"{counts.get('reservations_allocated', 0)} / {counts.get('reservations_rejected', 0)}"
            f"; {counts.get('sales', 0)} / {counts.get('receipts', 0)}", "-", None,
        ))  # fmt: skip
    if budgets.get("check_rate", True):
        if call_stats is None or erp_rate is None:
            why = "no --erp-rate" if erp_rate is None else "no call stats"
            checks.append(Check("ERP calls in any 1 s window", why, "<= ATP_ERP_RATE", None))
        else:
            peak = int(call_stats.get("max_in_window", 0))
            checks.append(
                Check("ERP calls in any 1 s window",
                      f"{peak} (of {call_stats.get('count', 0)} calls)", f"<= {erp_rate:g}",
                      peak <= erp_rate)
            )  # fmt: skip
    return checks


def load_ledger(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if args.erp:
        base = args.erp.rstrip("/")
        try:
            ledger = get_json(base + "/admin/ledger?keys=0", timeout=120)
            stats = get_json(base + "/admin/calls/stats?window=1", timeout=120)
        except OSError as exc:
            raise GateInputError(f"cannot read the ERP ledger at {base}: {exc}") from None
        if args.save_ledger:
            Path(args.save_ledger).write_text(json.dumps({**ledger, "call_stats": stats}))
        return ledger, stats
    if args.ledger:
        try:
            ledger = json.loads(Path(args.ledger).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GateInputError(f"cannot read the ledger {args.ledger}: {exc}") from None
        if not isinstance(ledger, dict) or "oversold" not in ledger:
            raise GateInputError(f"{args.ledger} is not an /admin/ledger JSON")
        return ledger, ledger.pop("call_stats", None)
    return None, None


# -- output -----------------------------------------------------------------------------------


def render(checks: list[Check]) -> str:
    width = min(max(len(c.name) for c in checks), 72)
    mwidth = min(max(len(c.measured) for c in checks), 48)
    bwidth = max(len(c.budget) for c in checks)
    lines = [f"{'CHECK':<{width}}  {'MEASURED':<{mwidth}}  {'BUDGET':<{bwidth}}  RESULT",
             "-" * (width + mwidth + bwidth + 14)]  # fmt: skip
    for c in checks:
        lines.append(
            f"{c.name[:width]:<{width}}  {c.measured:<{mwidth}}  {c.budget:<{bwidth}}  {c.verdict}"
        )
        if c.ok is False:
            lines.extend(f"    - {d}" for d in c.details)
    fails = sum(c.ok is False for c in checks)
    skips = sum(c.verdict == "SKIP" for c in checks)
    lines.append("-" * (width + mwidth + bwidth + 14))
    verdict = "PASS" if not fails else f"FAIL ({fails} breach{'es' if fails > 1 else ''})"
    lines.append(f"SLO gate: {verdict}  [{len(checks)} checks, {skips} skipped]")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slo_gate", description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", required=True, metavar="PREFIX", help="Locust --csv prefix")
    p.add_argument("--slo", default=str(HERE / "slo.toml"), help="budgets (default: %(default)s)")
    p.add_argument("--erp", metavar="URL", help="ERP simulator base URL (its /admin API)")
    p.add_argument("--ledger", metavar="FILE", help="a saved /admin/ledger JSON instead of --erp")
    p.add_argument("--save-ledger", metavar="FILE", help="with --erp: keep the ledger read")
    p.add_argument("--erp-rate", type=float, help="the service's ATP_ERP_RATE (rate check)")
    p.add_argument("--reservations", metavar="GLOB", help="the locustfile's record files")
    p.add_argument("--service", metavar="URL", help="the ATP service (reservation states)")
    p.add_argument("--key", help="API key with reservations:write (for --service)")
    p.add_argument("--drain-timeout", type=float, help="seconds to wait for the ERP queue "
                   "(default: slo.toml reservations.drain_timeout_seconds)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        try:
            slo = tomllib.loads(Path(args.slo).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise GateInputError(f"cannot read budgets {args.slo}: {exc}") from None
        rows = read_stats(args.csv)
        checks = request_checks(rows, read_failures(args.csv), slo)
        checks += latency_checks(rows, slo)
        checks += throttle_checks(rows, slo)
        journeys: dict[str, Journey] = {}
        summary: dict[str, int] = {}
        states: dict[str, str | None] | None = None
        drained_in = None
        read_at = time.time()
        if args.reservations:
            journeys, summary = read_records(args.reservations)
            if args.service:
                timeout = args.drain_timeout
                if timeout is None:
                    timeout = float(slo.get("reservations", {}).get("drain_timeout_seconds", 180))
                states, drained_in, read_at = drain(
                    journeys, StateReader(args.service, args.key), timeout, log
                )
        checks += stale_checks(summary, slo)
        ledger, call_stats = load_ledger(args)  # after the drain: the ERP's final word
        if args.reservations:
            checks += reservation_checks(journeys, states, ledger, slo, read_at, drained_in)
        else:
            checks.append(Check("reservations", "no --reservations", "", None))
        checks += erp_checks(ledger, call_stats, args.erp_rate, slo)
    except GateInputError as exc:
        print(f"slo_gate: {exc}", file=sys.stderr)
        return 2
    print(f"SLO gate: {args.csv} (budgets {args.slo})")
    print(render(checks), flush=True)
    return 1 if any(c.ok is False for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
