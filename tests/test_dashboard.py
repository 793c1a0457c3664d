"""The Grafana dashboard (deploy/grafana/atp-service.json) uses only metric names, and labels,
that the app really exports: each PromQL expression is checked against the ``/metrics`` text of
an in-process app in ERP mode (ATP_ERP_URL on a closed port, so the gateway runs, retries and
opens its breaker) after traffic that gives the labelled series their first samples."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from atp_service.metrics import LIVE_COUNTERS

from .conftest import start_app
from .procs import ADMIN, RedisProc, free_port, snapshot

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "atp-service.json"
# Ours (atp_) and prometheus_client's standard process_ families.
METRIC = re.compile(r"\b((?:atp|process)_[a-zA-Z0-9_]+)\b")
# Series that exist only after something this test cannot cause. The Kafka feed gauges need
# no entry: they are registered without labels, so /metrics exports them (as 0) without Kafka.
NO_SAMPLES_HERE = {
    # observed only when an ERP *confirms*; here the ERP is a closed port
    "atp_erp_confirm_seconds_bucket": "needs an ERP that answers 200",
}
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus, not by the app
# Standard families exported but deliberately not charted.
NOT_CHARTED = {
    "process_start_time_seconds": "restarts show as gaps and resets on every panel",
    "process_virtual_memory_bytes": "address space, not memory use: resident memory is charted",
    "python_info": "its version is atp_build_info's python label, which is charted",
}


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(PromQL, legend format) of every panel target and query variable."""
    out = []
    for panel in dash["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out += [(t["expr"], t.get("legendFormat", "")) for t in inner.get("targets", [])]
    for var in dash["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var["type"] == "query" and isinstance(query, str):
            out.append((query, ""))
    return out


def exported(text: str) -> tuple[dict[str, set[str]], set[str]]:
    """(sample name -> label names seen on it, names of declared families)."""
    samples: dict[str, set[str]] = {}
    declared: set[str] = set()
    for family in text_string_to_metric_families(text):
        declared.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples, declared


async def scrape_after_traffic(redis_proc: RedisProc) -> str:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every ERP call fails
    client = await start_app(redis_proc.url, ATP_ERP_URL=closed, ATP_ERP_TIMEOUT="0.5")
    try:
        events = [snapshot("S1", "DC1", 1, 100), snapshot("S1", "ST1", 1, 4)]
        assert (await client.post("/v1/events", json={"events": events}, headers=ADMIN)).ok
        assert (await client.get("/v1/availability/S1", headers=ADMIN)).status == 200
        items = {"items": [{"sku": "S1", "group": "EAST"}]}
        assert (await client.post("/v1/availability", json=items, headers=ADMIN)).status == 200
        res = {"reservation_id": "r-1", "priority": "sales",
               "lines": [{"sku": "S1", "location": "DC1", "qty": 1}]}  # fmt: skip
        assert (await client.post("/v1/reservations", json=res, headers=ADMIN)).status == 201
        hold = {**res, "reservation_id": "cart-1", "hold_seconds": 60}
        assert (await client.post("/v1/reservations", json=hold, headers=ADMIN)).status == 201
        assert (await client.delete("/v1/reservations/cart-1", headers=ADMIN)).status == 200
        assert (await client.get("/v1/availability/S1")).status == 401
        deadline = time.monotonic() + 10
        while True:  # the gateway's first failed call, and the stats loop's first pass
            text = await (await client.get("/metrics")).text()
            if "atp_erp_calls_total{" in text and "atp_erp_queue_length{" in text:
                return text
            assert time.monotonic() < deadline, "the gateway made no ERP call"
            await asyncio.sleep(0.1)
    finally:
        await client.close()


def test_dashboard_is_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["title"] and dash["uid"] == "atp-service"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            assert METRIC.search(expr), f"{panel['title']}: no atp_ or process_ metric in {expr}"
            if "rate(" in expr or "increase(" in expr:  # counters and histograms only
                for name in re.findall(r"(?:rate|increase)\(((?:atp|process)_\w+)", expr):
                    assert name.endswith(("_total", "_bucket", "_sum", "_count")), (
                        f"rate() of a gauge: {name}"
                    )
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("p50", "p99", "lookups", "reservations", "queue length", "oldest",
                  "erp calls", "breaker", "lag", "event age", "dead letters", "cache size",
                  "redis round trip", "process cpu", "resident memory", "file descriptors",
                  "by version"):  # fmt: skip
        assert topic in titles, topic


async def test_every_metric_and_label_in_the_dashboard_is_exported(redis_proc: RedisProc) -> None:
    samples, declared = exported(await scrape_after_traffic(redis_proc))
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used: set[str] = set()
    for expr, legend in expressions(dash):
        names = set(METRIC.findall(expr))
        assert names, expr
        used |= names
        labels: set[str] = set()
        for name in names:
            if name in NO_SAMPLES_HERE:
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert family in declared, f"{name} is not even declared"
                continue
            assert name in samples, f"{name} (in {expr!r}) is not in /metrics"
            labels |= samples[name]
        if not names - NO_SAMPLES_HERE.keys():
            continue
        wanted = set(re.findall(r"\b(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            wanted |= {x.strip() for x in group.split(",") if x.strip()}
        wanted |= set(re.findall(r"\{\{(\w+)\}\}", legend))
        missing = wanted - labels - SCRAPE_LABELS
        assert not missing, f"labels {missing} in {expr!r} are not on {sorted(names)}"
    # the dashboard covers the service: every family with samples is on some panel
    families = {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in samples}
    shown = {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in used}
    # gauges kept only for old dashboards: their counters (LIVE_COUNTERS) are shown instead
    missing = families - shown - LIVE_COUNTERS.keys() - NOT_CHARTED.keys()
    assert missing == set(), f"not on the dashboard: {sorted(missing)}"
    assert not shown & LIVE_COUNTERS.keys(), "the dashboard reads a deprecated gauge"


async def test_erp_call_kinds_and_monotonic_values_read_well(redis_proc: RedisProc) -> None:
    """ERP call kinds are words, not letters; what only goes up is a counter (the old gauge of
    the same value stays, deprecated)."""
    families = {f.name: f for f in text_string_to_metric_families(
        await scrape_after_traffic(redis_proc))}  # fmt: skip
    kinds = {s.labels["kind"] for s in families["atp_erp_calls"].samples}
    assert kinds and kinds <= {"reserve", "cancel", "resync"}, kinds
    for gauge, counter in LIVE_COUNTERS.items():
        assert families[gauge].type == "gauge" and families[counter].type == "counter"
        (old,) = families[gauge].samples
        new = next(s for s in families[counter].samples if s.name == counter + "_total")
        assert old.value == new.value
