"""Scale benchmark (issue 7): 1, 2 and 3 replicas of ``atp-service serve`` on this machine
against one shared redis-server; how lookups/s and reservations/s grow with the replica count,
and what each request costs in CPU.

One redis-server (AOF everysec) for the whole run. Per replica count N: ``FLUSHALL``, start N
replicas (each ``ATP_REDIS_URL`` = that Redis, its own port), seed SKUs x locations with large
stock through replica 1 and wait until every replica serves the last key (each loads Redis at
start and tails the change stream). Then, per repeat, two wrk runs with the same client shape
for every N (``-t 6``: 6 is a multiple of 1, 2 and 3, so thread i goes to replica i mod N and
every replica gets the same number of connections; ``lua/spread.lua``):

- lookups: GET /v1/availability/{sku} rotating over every SKU (``lua/lookup.lua``);
- reservations: POST /v1/reservations, one line of qty 1, unique ids (``lua/reserve.lua``),
  standalone mode (no ERP), so each is one atomic script in the shared Redis.

Reported per N: requests/s, its ratio to one replica, wrk's p50/p99, the split of requests
between replicas (their own ``/metrics``), and CPU per request: replicas (sum of their
utime+stime / responses), redis-server, wrk, and how many cores were busy in all. After each
reservation run, units held == reservations stored in Redis (no oversell, nothing lost).

Pinning: by default nothing is pinned (replicas, Redis and wrk share every core: that is
what a scale-out on one box looks like); ``--server-cpu`` / ``--client-cpu`` pin replicas /
Redis + wrk. On a 2-core machine the curve flattens at 2 busy cores: one replica already
keeps one core busy with wrk on the other, so a second replica can only take what wrk and
Redis leave, and a third only adds contention. The CPU-per-request columns show whether
a replica itself gets more expensive as N grows (each replica also applies every other
replica's writes from the change stream).

    .venv/bin/python -m benchmarks.scale            # default: ~3-4 minutes
    .venv/bin/python -m benchmarks.scale --quick    # smoke run: ~30 s
"""

from __future__ import annotations

import os
import secrets
from functools import partial
from typing import Any

import redis

from .common import (
    TOKEN,
    Proc,
    Procs,
    Target,
    base_parser,
    fmt_us,
    http_json,
    log,
    lua_script,
    machine_facts,
    md_table,
    median,
    out_dir,
    run_wrk,
    scrape_histogram,
    spread,
    url,
    use_ref,
    wait_until,
    workdir,
    write_results,
)
from .reserve import seed_ours, settled_check

WRK_THREADS = 6  # a multiple of every replica count: each replica gets the same connections
KINDS = {"lookup": ("lookup", "availability.get"), "reserve": ("reserve", "reservations.create")}


def start_replicas(procs: Procs, redis_url: str, n: int, cpu: str | None, args: Any) -> list[Proc]:
    replicas = [
        procs.service(
            redis_url, name=f"replica{i + 1}", cpu=cpu, extra_env={"ATP_LOG_LEVEL": "warning"}
        )
        for i in range(n)
    ]
    seed_ours(url(replicas[0], ""), args.skus, args.locations)
    last = f"/v1/availability/SKU-{args.skus - 1:06d}"
    for rep in replicas:
        wait_until(partial(serves, url(rep, last)), 30)
    return replicas


def serves(address: str) -> bool:
    return http_json("GET", address)[0] == 200


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far (/proc/stat): the whole machine, neighbours
    included, to tell a full box from a slow program."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def route_counts(replicas: list[Proc], route: str) -> list[float]:
    return [scrape_histogram(url(r, "/metrics"), route)["count"] for r in replicas]


def one_run(
    kind: str,
    n: int,
    rep: int,
    replicas: list[Proc],
    redis_proc: Proc,
    client: redis.Redis,
    args: Any,
    tmp: Any,
    cores: tuple[str | None, str | None],
) -> dict[str, Any]:
    client_cpu = cores[1]
    script_name, route = KINDS[kind]
    script = lua_script(script_name, tmp, "spread")
    if kind == "lookup":
        wargs = [str(args.skus), TOKEN]
    else:
        wargs = [f"{args.nonce}{n}{rep}", str(args.skus), str(args.locations), TOKEN]
    env = {"WRK_PORTS": ",".join(str(r.port) for r in replicas)}
    watch = {r.name: r.pid for r in replicas}
    watch["redis"] = redis_proc.pid
    # a short warm-up with the same shape (reservations under other ids)
    warm_args = wargs if kind == "lookup" else [wargs[0] + "w", *wargs[1:]]
    run_wrk(url(replicas[0], "/"), script, warm_args, args.connections, args.warmup,
            client_cpu, threads=WRK_THREADS, env=env)  # fmt: skip
    before = route_counts(replicas, route)
    busy0 = machine_busy()
    res = run_wrk(url(replicas[0], "/"), script, wargs, args.connections, args.duration,
                  client_cpu, threads=WRK_THREADS, watch=watch, env=env)  # fmt: skip
    busy1 = machine_busy()
    split = [a - b for a, b in zip(route_counts(replicas, route), before, strict=True)]
    for r in replicas:
        r.check()
    ex = res.extra
    replicas_us = sum(ex[f"cpu_us_per_req_{r.name}"] or 0.0 for r in replicas)
    row: dict[str, Any] = {
        "kind": kind,
        "replicas": n,
        "repeat": rep,
        **res.as_json(),
        "cpu_us_replicas": replicas_us,
        "cpu_us_redis": ex["cpu_us_per_req_redis"],
        "cpu_us_wrk": ex["cpu_us_per_req_wrk"],
        "split": split,
        "errors_total": sum(res.errors.values()),
    }
    total_us = replicas_us + (ex["cpu_us_per_req_redis"] or 0) + (ex["cpu_us_per_req_wrk"] or 0)
    row["busy_cores"] = total_us * res.rps / 1e6
    ncpu = len(os.sched_getaffinity(0))
    spent = busy1[1] - busy0[1]
    # all CPUs of the machine (neighbours too), scaled to the cores this process may use
    row["machine_busy_cores"] = (
        (busy1[0] - busy0[0]) / spent * (os.cpu_count() or ncpu) if spent else None
    )
    if kind == "reserve":
        row["check"] = settled_check(client, "ours")
    log(
        f"{kind:7s} replicas={n} rep={rep}: {res.rps:,.0f}/s p99={fmt_us(res.p99_us)} "
        f"cpu µs/req replicas={replicas_us:.0f} redis={ex['cpu_us_per_req_redis']:.0f} "
        f"wrk={ex['cpu_us_per_req_wrk']:.0f} busy cores={row['busy_cores']:.2f} "
        f"(machine {row['machine_busy_cores'] or 0:.2f}) "
        f"split={[round(x) for x in split]} errors={res.errors}"
    )
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, comma list")
    parser.add_argument("--connections", type=int, default=48, help="wrk connections in all")
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=4)
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 8.0)
    args.warmup = 1.0 if quick else 2.0
    args.nonce = secrets.token_hex(3)
    repeats = args.repeats or (1 if quick else 3)
    counts = [int(x) for x in args.replicas.split(",") if x]
    if any(WRK_THREADS % n for n in counts):
        raise SystemExit(f"replica counts must divide {WRK_THREADS} (wrk threads)")
    if args.connections % WRK_THREADS:
        raise SystemExit(f"--connections must be a multiple of {WRK_THREADS}")
    cores = (args.server_cpu, args.client_cpu)  # unpinned unless asked: see the docstring
    directory = out_dir(args)
    facts = machine_facts()

    runs: list[dict[str, Any]] = []
    with workdir("scale") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=cores[1], aof=True)
        client = redis.Redis.from_url(rp.url)
        for n in counts:
            client.flushall()
            with Procs(tmp) as group:
                log(f"starting {n} replica(s)")
                replicas = start_replicas(group, rp.url, n, cores[0], args)
                for rep in range(repeats):
                    for kind in KINDS:
                        runs.append(
                            one_run(kind, n, rep, replicas, rp.proc, client, args, tmp, cores)
                        )
        client.close()

    summary: list[dict[str, Any]] = []
    for kind in KINDS:
        base_rps = None
        for n in counts:
            rs = [r for r in runs if r["kind"] == kind and r["replicas"] == n]
            s: dict[str, Any] = {
                "kind": kind,
                "replicas": n,
                "rps": median([r["rps"] for r in rs]),
                "rps_range": spread([r["rps"] for r in rs]),
                "p50_us": median([r["p50_us"] for r in rs]),
                "p99_us": median([r["p99_us"] for r in rs]),
                "cpu_us_replicas": median([r["cpu_us_replicas"] for r in rs]),
                "cpu_us_redis": median([r["cpu_us_redis"] for r in rs]),
                "cpu_us_wrk": median([r["cpu_us_wrk"] for r in rs]),
                "busy_cores": median([r["busy_cores"] for r in rs]),
                "machine_busy_cores": median([r["machine_busy_cores"] for r in rs]),
                "split": [median(list(x)) for x in zip(*(r["split"] for r in rs), strict=True)],
                "errors": sum(r["errors_total"] for r in rs),
                "checks_ok": all(r.get("check", {}).get("consistent", True) for r in rs),
            }
            base_rps = base_rps or s["rps"]
            s["speedup"] = s["rps"] / base_rps if base_rps else float("nan")
            summary.append(s)

    def pick(kind: str, n: int) -> dict[str, Any] | None:
        return next((s for s in summary if s["kind"] == kind and s["replicas"] == n), None)

    nproc = os.cpu_count() or 1
    top = max(counts)
    targets: list[Target] = []
    for kind, label in (("lookup", "lookups/s"), ("reserve", "reservations/s")):
        found = pick(kind, top)
        if found is None or top == min(counts):
            continue
        s = found
        targets.append(
            Target(
                f"{label}, {top} replicas vs {min(counts)}",
                f"report (ideal {top / min(counts):.0f}x needs {top}+ free cores; "
                f"this box has {nproc})",
                f"{s['speedup']:.2f}x ({s['rps']:,.0f}/s), {s['busy_cores']:.2f} cores busy",
                None,
            )
        )
    errors = sum(s["errors"] for s in summary)
    checks = all(s["checks_ok"] for s in summary)
    targets.append(
        Target(
            "no errors; units held == reservations stored after every run",
            "every run",
            f"{errors} errors, checks {'ok' if checks else 'FAILED'}",
            errors == 0 and checks,
        )
    )

    headers = ["requests", "replicas", "req/s", "vs 1 replica", "p50", "p99",
               "CPU µs/req replicas", "redis", "wrk", "cores busy (ours / machine)",
               "split between replicas",
               "req/s min..max"]  # fmt: skip
    rows = []
    for s in summary:
        total = sum(s["split"]) or 1.0
        rows.append([
            "GET /v1/availability/{sku}" if s["kind"] == "lookup" else "POST /v1/reservations",
            s["replicas"], f"{s['rps']:,.0f}", f"{s['speedup']:.2f}x", fmt_us(s["p50_us"]),
            fmt_us(s["p99_us"]), f"{s['cpu_us_replicas']:.0f}", f"{s['cpu_us_redis']:.0f}",
            f"{s['cpu_us_wrk']:.0f}",
            f"{s['busy_cores']:.2f} / {s['machine_busy_cores']:.2f}",
            " / ".join(f"{100 * x / total:.0f}%" for x in s["split"]), s["rps_range"],
        ])  # fmt: skip
    run_rows = [
        [r["kind"], r["replicas"], r["repeat"], f"{r['rps']:,.0f}", fmt_us(r["p99_us"]),
         f"{r['cpu_us_replicas']:.0f}", f"{r['busy_cores']:.2f}", r["errors_total"],
         "" if "check" not in r else
         f"{r['check']['reservations_stored']:,} stored, {r['check']['units_held']:,} held"]
        for r in runs
    ]  # fmt: skip
    saturated = any(s["machine_busy_cores"] >= 0.85 * nproc for s in summary if s["replicas"] > 1)
    verdict = (
        f"This machine has {nproc} cores"
        + (
            f" and they were saturated (>= {0.85 * nproc:.1f} of them busy, neighbours "
            "included) with more than one "
            "replica: the curve flattens because there is no idle core left for another "
            "replica (wrk and redis-server take their share of the same cores), not because "
            "replicas contend on shared state. The per-request CPU columns are the "
            "capacity measure that carries over to a bigger box: cores needed = req/s x "
            "CPU µs/req / 1e6."
            if saturated
            else "; they were not saturated in these runs (see 'cores busy'): whatever "
            "flattening there is comes from contention (Redis round trips, the event loops "
            "sharing cores with wrk), not from a full machine."
        )
        + " For reservations, every replica also applies every other replica's writes from "
        "the `atp:changes` stream, so the replicas' CPU per reservation grows with N even on "
        "an idle box; lookups read process memory only and cost the same on any replica.\n"
    )
    body = (
        "## Results (median of repeats)\n\n"
        + md_table(headers, rows)
        + "\nCPU µs/req = utime+stime over the measured run / responses: replicas summed, "
        "redis-server, wrk. Cores busy: ours = those three x req/s; machine = every CPU's "
        "busy time in /proc/stat over the run (neighbours included). Split = each replica's "
        "share of the requests (from its own `/metrics`).\n\n"
        + verdict
        + "\n### Every run\n\n"
        + md_table(
            [
                "kind",
                "replicas",
                "repeat",
                "req/s",
                "p99",
                "CPU µs/req replicas",
                "cores busy",
                "errors",
                "Redis check",
            ],
            run_rows,
        )
        + f"\n### Setup\n\n- One redis-server (AOF everysec), `FLUSHALL` and fresh replicas "
        f"per replica count; {args.skus} SKUs x {args.locations} locations with large stock, "
        "seeded through replica 1\n"
        f"- wrk `-t {WRK_THREADS} -c {args.connections}`, thread i to replica i mod N "
        f"(`lua/spread.lua`); {repeats} repeat(s) x {args.duration:g} s per kind after a "
        f"{args.warmup:g} s warm-up\n"
        f"- Pinning: replicas {cores[0] or 'unpinned'}, redis-server and wrk "
        f"{cores[1] or 'unpinned'}; {nproc} CPUs\n"
    )
    data = {
        "machine": facts,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": repeats,
            "replicas": counts,
            "connections": args.connections,
            "wrk_threads": WRK_THREADS,
            "skus": args.skus,
            "locations": args.locations,
            "server_cpu": cores[0],
            "client_cpu": cores[1],
        },
        "summary": summary,
        "runs": runs,
    }
    write_results("scale", directory, "Scale benchmark: 1..3 replicas on one box, one Redis",
                  data, body, targets, quick)  # fmt: skip
    return {"name": "scale", "md": body, "targets": targets, "dir": str(directory)}


if __name__ == "__main__":
    main()
