"""Warm-up benchmark: time and resident memory to load 1,000,000 (sku, location) keys.

1. Fill a fresh redis-server fast: the ``atp:inv`` hash written directly with HSET in big
   pipelines, records ``struct.pack('<8q', on_hand, allocated, safety_stock, seq, pending,
   ver, flags, updated_ms)`` with ver >= 1 and flags = 1 (snapshot), keys
   ``SKU-%06d|LOC-%02d`` (default 50,000 SKUs x 20 locations).
2. In-process, each in a fresh subprocess (clean heap): ``Tailer.warm()`` into a fresh
   ``Cache``, against the naive "plain dict of dicts" caches loaded by the same HSCAN loop
   (same client, same COUNT, so only decoding and storage differ):
   - ``dict_of_dicts``: ``cache[sku][loc] = {"on_hand": ..., ...}`` (a dict per key)
   - ``dict_of_tuples``: ``cache[sku][loc] = struct.unpack(...)`` (a tuple per key)
   Reported: seconds, VmRSS delta per key (before/after, after ``gc.collect()``), peak
   (VmHWM) delta, and ``cache.nbytes()`` for ours.
3. End-to-end: ``atp-service serve`` against that Redis, timed from spawn until ``/readyz``
   answers 200 (and until the port first answers at all); the service's VmRSS then, minus
   the VmRSS of a service started on an empty database of the same Redis, per key.

    .venv/bin/python -m benchmarks.warmup            # default: 1,000,000 keys, ~2 minutes
    .venv/bin/python -m benchmarks.warmup --quick    # 100,000 keys, 1 repeat
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
from typing import Any

import redis

from .common import (
    Procs,
    Target,
    base_parser,
    code_env,
    cpu_seconds,
    cpus,
    http_status,
    log,
    machine_facts,
    md_table,
    median,
    out_dir,
    pinned,
    proc_status_kb,
    url,
    use_ref,
    wait_until,
    workdir,
    write_results,
)

FMT = "<8q"
FIELDS = ("on_hand", "allocated", "safety_stock", "seq", "pending", "ver", "flags", "updated_ms")
IMPLS = ("ours", "dict_of_dicts", "dict_of_tuples")
INV = "atp:inv"
SCAN_COUNT = 20_000  # same as atp_service.tailer.SCAN_COUNT


def fill(
    redis_url: str, n_skus: int, n_locs: int, per_hset: int = 5000, per_pipe: int = 20
) -> float:
    """HSET atp:inv in pipelines of per_pipe commands x per_hset fields; returns seconds."""
    client = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    pack = struct.Struct(FMT).pack
    pipe = client.pipeline(transaction=False)
    queued = 0
    mapping: dict[str, bytes] = {}
    for s in range(n_skus):
        for loc in range(n_locs):
            on_hand = (s * 31 + loc * 17) % 1000
            mapping[f"SKU-{s:06d}|LOC-{loc:02d}"] = pack(
                on_hand, on_hand // 10, 2, 1 + (s + loc) % 50, 0, 1, 1, now_ms
            )
            if len(mapping) == per_hset:
                pipe.hset(INV, mapping=mapping)  # type: ignore[arg-type]
                mapping = {}
                queued += 1
                if queued == per_pipe:
                    pipe.execute()
                    queued = 0
    if mapping:
        pipe.hset(INV, mapping=mapping)  # type: ignore[arg-type]
    pipe.execute()
    took = time.perf_counter() - started
    assert client.hlen(INV) == n_skus * n_locs
    client.close()
    return took


# ---------------------------------------------------------------------------------------------
# child: one in-process measurement in a fresh interpreter


def _vm(field: str) -> int:
    return proc_status_kb("self", field) * 1024


async def _child(impl: str, redis_url: str) -> dict[str, Any]:
    from atp_service.cache import Cache
    from atp_service.store import connect
    from atp_service.tailer import Tailer

    client = connect(redis_url)
    await client.ping()
    await client.hlen(INV)
    gc.collect()
    rss0, hwm0 = _vm("VmRSS"), _vm("VmHWM")
    started = time.perf_counter()
    cpu_started = time.process_time()
    out: dict[str, Any] = {"impl": impl}
    if impl == "ours":
        cache = Cache()
        tailer = Tailer(client, redis_url, cache, 2.0)
        await tailer.warm()
        keep: object = cache
        out["keys"] = len(cache)
        out["nbytes"] = cache.nbytes()
        out["array_rows"] = len(cache.arr)
        locs = cache.locations("SKU-000123") or {}
        sample = cache.row(locs["LOC-05"]) if "LOC-05" in locs else None
    else:
        as_dict = impl == "dict_of_dicts"
        unpack = struct.Struct(FMT).unpack
        by_sku: dict[str, dict[str, Any]] = {}
        cursor = 0
        n = 0
        while True:
            cursor, chunk = await client.hscan(INV, cursor, count=SCAN_COUNT)
            pairs: dict[bytes, bytes] = chunk  # type: ignore[assignment]
            for k, v in pairs.items():
                sku, _, loc = k.decode().partition("|")
                locs_ = by_sku.get(sku)
                if locs_ is None:
                    locs_ = by_sku[sku] = {}
                if loc not in locs_:
                    n += 1
                locs_[loc] = dict(zip(FIELDS, unpack(v), strict=True)) if as_dict else unpack(v)
            if cursor == 0:
                break
        keep = by_sku
        out["keys"] = n
        rec = by_sku.get("SKU-000123", {}).get("LOC-05")
        sample = (list(rec.values()) if as_dict else list(rec)) if rec is not None else None
    out["seconds"] = time.perf_counter() - started
    out["cpu_seconds"] = time.process_time() - cpu_started
    gc.collect()
    out["rss_delta"] = _vm("VmRSS") - rss0
    out["hwm_delta"] = max(0, _vm("VmHWM") - max(hwm0, rss0))
    out["rss_after"] = _vm("VmRSS")
    out["sample_SKU-000123|LOC-05"] = sample
    out["bytes_per_key"] = out["rss_delta"] / out["keys"] if out["keys"] else None
    del keep
    await client.aclose()
    return out


def child_main(impl: str, redis_url: str) -> None:
    import uvloop

    print("CHILD_RESULT " + json.dumps(uvloop.run(_child(impl, redis_url))), flush=True)


def run_child(impl: str, redis_url: str, cpu: str | None) -> dict[str, Any]:
    cmd = pinned(
        [sys.executable, "-m", "benchmarks.warmup", "--child", impl, "--redis-url", redis_url], cpu
    )
    env, cwd = code_env()
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **env},
        cwd=cwd,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("CHILD_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"child {impl} failed: {out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("CHILD_RESULT "))
    return result


# ---------------------------------------------------------------------------------------------
# end-to-end


def e2e_once(procs: Procs, redis_url: str, name: str, cpu: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    svc = procs.service(redis_url, name=name, cpu=cpu, wait_ready=False)
    listening: list[float] = []

    def ready() -> bool:
        svc.check()
        status = http_status(url(svc, "/readyz"), timeout=1)
        if not listening:
            listening.append(time.perf_counter() - started)
        return status == 200

    wait_until(ready, 120, interval=0.01)
    ready_s = time.perf_counter() - started
    cpu_s = cpu_seconds(svc.pid)
    time.sleep(0.3)
    rss = svc.rss_kb() * 1024
    keys = cache_bytes = 0.0
    with urllib.request.urlopen(url(svc, "/metrics"), timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("atp_cache_keys "):
                keys = float(line.split()[1])
            elif line.startswith("atp_cache_bytes "):
                cache_bytes = float(line.split()[1])
    warm_log = None
    if svc.log and svc.log.exists():
        for line in svc.log.read_text().splitlines():
            if "cache warm:" in line:
                warm_log = json.loads(line).get("msg")
    procs.stop(svc)
    return {
        "listening_s": listening[0] if listening else None,
        "ready_s": ready_s,
        "cpu_s": cpu_s,
        "rss": rss,
        "keys": keys,
        "cache_bytes": cache_bytes,
        "log": warm_log,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--skus", type=int, default=None, help="default 50,000 (quick 5,000)")
    parser.add_argument("--locations", type=int, default=20)
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.redis_url)
        return {}
    use_ref(args.ref, args.code_dir)
    quick = args.quick
    n_skus = args.skus or (5_000 if quick else 50_000)
    n_keys = n_skus * args.locations
    repeats = args.repeats or (1 if quick else 3)
    server_cpu, client_cpu = cpus(args)
    directory = out_dir(args)
    facts = machine_facts()

    inproc: list[dict[str, Any]] = []
    e2e: list[dict[str, Any]] = []
    with workdir("warmup") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=client_cpu, aof=False)
        log(f"filling {n_keys:,} keys")
        fill_s = fill(rp.url, n_skus, args.locations)
        info = redis.Redis.from_url(rp.url).info("memory")
        log(f"filled in {fill_s:.1f}s; redis used_memory {info['used_memory_human']}")
        for rep in range(repeats):
            for impl in IMPLS if rep % 2 == 0 else IMPLS[::-1]:
                r = run_child(impl, rp.url, server_cpu)
                r["repeat"] = rep
                inproc.append(r)
                log(
                    f"in-process {impl:14s} rep={rep}: {r['seconds']:.2f}s, "
                    f"{r['bytes_per_key']:.0f} B/key RSS, keys={r['keys']:,}"
                )
        empty_url = rp.url.rsplit("/", 1)[0] + "/1"
        for rep in range(repeats):
            full = e2e_once(procs, rp.url, f"service-full-{rep}", server_cpu)
            empty = e2e_once(procs, empty_url, f"service-empty-{rep}", server_cpu)
            full["rss_empty"] = empty["rss"]
            full["ready_empty_s"] = empty["ready_s"]
            full["bytes_per_key"] = (full["rss"] - empty["rss"]) / n_keys
            full["repeat"] = rep
            e2e.append(full)
            log(
                f"end-to-end rep={rep}: ready in {full['ready_s']:.2f}s (listening at "
                f"{full['listening_s']:.2f}s, empty db ready {empty['ready_s']:.2f}s), "
                f"{full['bytes_per_key']:.0f} B/key RSS; {full['log']}"
            )

    def med(impl: str, key: str) -> float:
        return median([r[key] for r in inproc if r["impl"] == impl])

    samples = {json.dumps(r["sample_SKU-000123|LOC-05"]) for r in inproc}
    summary = {
        impl: {
            "seconds": med(impl, "seconds"),
            "cpu_seconds": med(impl, "cpu_seconds"),
            "bytes_per_key": med(impl, "bytes_per_key"),
            "hwm_delta_per_key": med(impl, "hwm_delta") / n_keys,
            "keys": med(impl, "keys"),
        }
        for impl in IMPLS
    }
    summary["ours"]["nbytes"] = med("ours", "nbytes")
    e2e_sum = {
        "ready_s": median([r["ready_s"] for r in e2e]),
        "cpu_s": median([r["cpu_s"] for r in e2e]),
        "listening_s": median([r["listening_s"] for r in e2e]),
        "ready_empty_s": median([r["ready_empty_s"] for r in e2e]),
        "bytes_per_key": median([r["bytes_per_key"] for r in e2e]),
        "rss_mib": median([r["rss"] for r in e2e]) / 2**20,
        "rss_empty_mib": median([r["rss_empty"] for r in e2e]) / 2**20,
    }
    o = summary["ours"]
    targets = [
        Target(
            f"warm-up of {n_keys:,} keys, end-to-end (spawn to /readyz 200)",
            "< 10 s",
            f"{e2e_sum['ready_s']:.2f} s",
            e2e_sum["ready_s"] < 10,
        ),
        Target("Tailer.warm() in-process", "< 10 s", f"{o['seconds']:.2f} s", o["seconds"] < 10),
        Target(
            "resident bytes per key (in-process RSS delta)",
            "< 250 B",
            f"{o['bytes_per_key']:.0f} B",
            o["bytes_per_key"] < 250,
        ),
        Target(
            "resident bytes per key (service RSS, full - empty)",
            "< 250 B",
            f"{e2e_sum['bytes_per_key']:.0f} B",
            e2e_sum["bytes_per_key"] < 250,
        ),
        Target(
            "all caches agree on a sample record",
            "identical",
            f"{len(samples)} distinct",
            len(samples) == 1,
        ),
    ]
    rows = []
    for impl in IMPLS:
        s = summary[impl]
        rows.append(
            [
                {
                    "ours": "ours: Tailer.warm() -> Cache (numpy)",
                    "dict_of_dicts": "naive: dict of dicts (dict per key)",
                    "dict_of_tuples": "naive: dict of dicts (tuple per key)",
                }[impl],
                f"{s['seconds']:.2f} s",
                f"{s['cpu_seconds']:.2f} s",
                f"{s['seconds'] / o['seconds']:.2f}x",
                f"{s['bytes_per_key']:.0f}",
                f"{s['bytes_per_key'] / o['bytes_per_key']:.2f}x",
                f"{s['hwm_delta_per_key']:.0f}",
                f"{s['nbytes'] / n_keys:.0f}" if "nbytes" in s else "",
            ]
        )
    run_rows = [
        [
            r["impl"],
            r["repeat"],
            f"{r['seconds']:.2f}",
            f"{r['cpu_seconds']:.2f}",
            f"{r['bytes_per_key']:.0f}",
            f"{r['hwm_delta'] / 2**20:.0f}",
        ]
        for r in inproc
    ]
    e2e_rows = [
        [
            r["repeat"],
            f"{r['listening_s']:.2f}",
            f"{r['ready_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['ready_empty_s']:.2f}",
            f"{r['rss'] / 2**20:.0f}",
            f"{r['rss_empty'] / 2**20:.0f}",
            f"{r['bytes_per_key']:.0f}",
            r["log"],
        ]
        for r in e2e
    ]
    body = (
        f"## In-process load of {n_keys:,} keys (median of {repeats})\n\n"
        + md_table(
            [
                "Cache",
                "load time",
                "CPU time",
                "time vs ours",
                "RSS B/key",
                "vs ours",
                "peak (HWM) extra B/key",
                "array B/key (nbytes)",
            ],
            rows,
        )
        + "\n"
        + md_table(["impl", "repeat", "seconds", "CPU s", "RSS B/key", "peak extra MiB"], run_rows)
        + f"\n## End-to-end: `atp-service serve` until /readyz is 200 (median of {repeats})\n\n"
        f"- ready after **{e2e_sum['ready_s']:.2f} s** (port answering after "
        f"{e2e_sum['listening_s']:.2f} s; an empty database is ready after "
        f"{e2e_sum['ready_empty_s']:.2f} s); the service had used "
        f"{e2e_sum['cpu_s']:.2f} s of CPU by then\n"
        f"- RSS {e2e_sum['rss_mib']:.0f} MiB warm vs {e2e_sum['rss_empty_mib']:.0f} MiB "
        f"empty: **{e2e_sum['bytes_per_key']:.0f} B/key**\n\n"
        + md_table(
            [
                "repeat",
                "listening s",
                "ready s",
                "service CPU s at ready",
                "empty ready s",
                "RSS MiB",
                "empty RSS MiB",
                "B/key",
                "service log",
            ],
            e2e_rows,
        )
        + f"\n### Setup\n\n- {n_skus:,} SKUs x {args.locations} locations = {n_keys:,} keys "
        f"written with HSET pipelines in {fill_s:.1f} s (redis-server without AOF)\n"
        "- In-process runs: a fresh `python -m benchmarks.warmup --child IMPL` per run, pinned "
        f"with `taskset -c {server_cpu}`; RSS from /proc/self/status after `gc.collect()`, "
        "with every module imported and the Redis connection open before the first reading; "
        "CPU time = process_time() over the load (robust to a noisy neighbour)\n"
        f"- Service pinned with `taskset -c {server_cpu}`, redis-server `taskset -c "
        f"{client_cpu}`; readiness polled every 10 ms\n"
    )
    data = {
        "machine": facts,
        "settings": {
            "skus": n_skus,
            "locations": args.locations,
            "keys": n_keys,
            "repeats": repeats,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            "fill_seconds": fill_s,
        },
        "summary": {"in_process": summary, "end_to_end": e2e_sum},
        "in_process_runs": inproc,
        "end_to_end_runs": e2e,
    }
    write_results(
        "warmup", directory, f"Warm-up benchmark: {n_keys:,} keys", data, body, targets, quick
    )
    return {"name": "warmup", "md": body, "targets": targets, "dir": str(directory)}


if __name__ == "__main__":
    main()
