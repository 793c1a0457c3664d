"""Reservation benchmark: POST /v1/reservations holds per second and latency at concurrency 64,
our service (one atomic ``reserve`` script per reservation, batched into one pipeline per
event-loop tick) against the naive one-round-trip-per-request handler
(``baseline_naive_reserve.py``) and the HTTP ceiling (``baseline_bare.py`` answering the same
POST with a constant 201 body, no Redis).

Every repeat starts a fresh redis-server (AOF everysec, like production) and a fresh server
for each implementation, seeds SKUs x locations with large stock (nothing runs short), runs
a short wrk warm-up, then the measured wrk run. Those Redis servers do not rewrite their AOF
during the run (``auto-aof-rewrite-percentage 0``), as a production Redis whose rewrites are
kept out of the peak window (docs/scaling.md). A fourth row, "rewriting", is ours again
against a Redis with its default rewrite policy (at 64 MB, then at each doubling): a fresh
Redis filling at ~17 MB of AOF a second rewrites several times in the window, a fork and a
child process on the core wrk and Redis share, and the row shows what that does to the tail.
A fifth row, "paced", is ours again with wrk sending on a schedule at the target rate
(:data:`PACE`, 15,000 holds/s; ``lua/pace.lua``) instead of as fast as answers come back: the
issue's target read as "15,000 holds/s with p99 at most 5 ms". At full speed (the other rows) a
closed loop of 64 connections makes the mean latency 64 / throughput (Little's law), so that
p99 measures the throughput as much as the service's latency.

Each request is a single line of qty 1 with a unique reservation_id (``lua/reserve.lua``: run
nonce + wrk thread + counter), rotating over every seeded key. After each run the Redis state
is checked: units held == reservations stored (no oversell, nothing lost), and every wrk
response was a 2xx.

The server is pinned to one core (``taskset -c 0``); wrk and redis-server share the other.

    .venv/bin/python -m benchmarks.reserve           # default: ~4 minutes
    .venv/bin/python -m benchmarks.reserve --quick   # smoke run
    .venv/bin/python -m benchmarks.reserve --versus bb6daa1   # + our service at that commit
    .venv/bin/python -m benchmarks.reserve --versus-python /tmp/other/bin/python  # + on it

``--versus REF`` adds another implementation, "previous": ``atp-service`` as of git REF, run
the same way and interleaved with the others, so a change is measured against what it
replaces on the same machine in the same run (absolute figures on a shared box drift by 2x
between days). ``--versus-python EXE`` runs "previous" on that interpreter instead (alone:
this code on another interpreter).
"""

from __future__ import annotations

import json
import secrets
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from .common import (
    TOKEN,
    Procs,
    Target,
    base_parser,
    cpus,
    export_ref,
    fmt_us,
    http_json,
    interpreter_speed_ms,
    log,
    lua_script,
    machine_facts,
    md_table,
    median,
    out_dir,
    pinned,
    require_matplotlib,
    run_wrk,
    spread,
    url,
    use_ref,
    workdir,
    write_results,
)

STOCK = 100_000_000
IMPLS = ("ours", "naive", "ceiling", "rewriting", "paced")
PACE = 15_000  # holds/s offered in the "paced" runs: the target rate
# The shape of ours' 201 reply (standalone mode, no hold), answered as is by the ceiling.
RESERVE_REPLY = {
    "reservation_id": "r0a1b2cm0o64-1-1234567",
    "status": "confirmed",
    "priority": "checkout",
    "lines": [{"sku": "SKU-000123", "location": "LOC-01", "qty": 1}],
    "created_at": "2026-11-23T12:00:00.000Z",
    "updated_at": "2026-11-23T12:00:00.000Z",
}


def seed_ours(service_url: str, n_skus: int, n_locs: int) -> None:
    events = [
        {
            "event_id": f"seed-{s}-{loc}",
            "type": "snapshot",
            "sku": f"SKU-{s:06d}",
            "location": f"LOC-{loc:02d}",
            "seq": 1,
            "on_hand": STOCK,
            "allocated": 0,
            "safety_stock": 0,
            "occurred_at": "2026-11-22T10:00:00Z",
        }
        for s in range(n_skus)
        for loc in range(n_locs)
    ]
    for i in range(0, len(events), 2000):
        status, body = http_json(
            "POST", service_url + "/v1/events", {"events": events[i : i + 2000]}
        )
        if status != 200:
            raise RuntimeError(f"seeding failed: {status} {body[:300]!r}")


def seed_naive(client: redis.Redis, n_skus: int, n_locs: int) -> None:
    mapping = {f"SKU-{s:06d}|LOC-{loc:02d}": STOCK for s in range(n_skus) for loc in range(n_locs)}
    client.hset("naive:stock", mapping=mapping)  # type: ignore[arg-type]


def count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=10_000))


def check_ours(client: redis.Redis) -> dict[str, Any]:
    records: list[bytes] = client.hvals("atp:inv")  # type: ignore[assignment]
    held = sum(struct.unpack("<8q", rec)[4] for rec in records)  # pending
    stored = count_keys(client, "atp:res:*")
    return {"units_held": held, "reservations_stored": stored, "consistent": held == stored}


def check_naive(client: redis.Redis) -> dict[str, Any]:
    held = sum(STOCK - int(v) for v in client.hvals("naive:stock"))
    stored = count_keys(client, "naive:res:*")
    return {"units_held": held, "reservations_stored": stored, "consistent": held == stored}


def settled_check(client: redis.Redis, impl: str) -> dict[str, Any]:
    """Check once the requests still in flight when wrk stopped have finished."""
    if impl == "ceiling":
        return {}
    reading = check_naive if impl == "naive" else check_ours
    last = reading(client)
    for _ in range(20):
        time.sleep(0.2)
        now = reading(client)
        if now == last:
            break
        last = now
    return now


def one_run(
    impl: str,
    c: int,
    rep: int,
    args: Any,
    nonce: str,
    duration: float,
    warmup_s: float,
    cores: tuple[str | None, str | None],
) -> dict[str, Any]:
    """Fresh redis-server + fresh server, seed, warm up, measure, check."""
    server_cpu, client_cpu = cores
    with workdir(f"reserve-{impl}") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=client_cpu, aof=not args.no_aof, rewrite=impl == "rewriting")
        client = redis.Redis.from_url(rp.url)
        if impl in ("ours", "previous", "rewriting", "paced"):
            server = procs.service(
                rp.url, cpu=server_cpu, extra_env={"ATP_LOG_LEVEL": "warning"},
                code_dir=args.previous_dir if impl == "previous" else None,
                python=args.versus_python if impl == "previous" else None,
            )  # fmt: skip
            seed_ours(url(server, ""), args.skus, args.locations)
        elif impl == "naive":
            seed_naive(client, args.skus, args.locations)
            server = procs.python_server(
                "naive",
                "benchmarks.baseline_naive_reserve",
                ["--redis-url", rp.url],
                cpu=server_cpu,
            )
        else:
            reply = tmp / "reply.json"
            reply.write_text(json.dumps(RESERVE_REPLY))
            server = procs.python_server(
                "ceiling",
                "benchmarks.baseline_bare",
                ["--reserve-body", str(reply)],
                cpu=server_cpu,
            )
        script = lua_script("reserve", tmp)
        base = [str(args.skus), str(args.locations), TOKEN]
        tag = f"{nonce}{rep}{impl[0]}{c}"
        warm = run_wrk(url(server, "/"), script, [tag + "w", *base], c, warmup_s, client_cpu)
        measured, pace = script, []
        if impl == "paced":
            measured, pace = lua_script("reserve", tmp, "pace"), [str(PACE)]
        aof_before = aof_facts(client)
        res = run_wrk(
            url(server, "/"),
            measured,
            [tag + "m", *base, *pace],
            c,
            duration,
            client_cpu,
            watch={"server": server.pid, "redis": rp.proc.pid},
        )
        server.check()
        aof = aof_window(aof_before, aof_facts(client), res.requests)
        check = settled_check(client, impl)
        client.close()
    if check:
        check["wrk_responses"] = warm.requests + res.requests
        # requests in flight when wrk stopped are stored but not counted by wrk
        check["accounted"] = (
            check["consistent"]
            and 0 <= check["reservations_stored"] - check["wrk_responses"] <= c * 2
        )
    log(
        f"reserve {impl:7s} c={c} rep={rep}: {res.rps:,.0f} holds/s p50={res.p50_us:,.0f}µs "
        f"p99={res.p99_us:,.0f}µs errors={sum(res.errors.values())} "
        f"cpu={res.extra['cpu_us_per_req_server']:.0f}µs/req aof={aof} check={check}"
    )
    return {"impl": impl, "c": c, "repeat": rep, **res.as_json(), "check": check, "aof": aof}


def aof_facts(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = {**client.info("persistence"), **client.info("stats")}
    return {
        k: int(info.get(k) or 0)
        for k in ("aof_enabled", "aof_rewrites", "aof_rewrite_in_progress", "aof_current_size",
                  "latest_fork_usec")
    }  # fmt: skip


def aof_window(before: dict[str, int], after: dict[str, int], holds: int) -> dict[str, Any]:
    """AOF rewrites started in the measured run, the last fork's pause, and the AOF bytes a
    hold appends (only where no rewrite reset the file's size meanwhile)."""
    rewrites = after["aof_rewrites"] - before["aof_rewrites"] + after["aof_rewrite_in_progress"]
    grown = after["aof_current_size"] - before["aof_current_size"]
    return {
        "rewrites": rewrites,
        "fork_ms": after["latest_fork_usec"] / 1000 if rewrites else None,
        "bytes_per_hold": round(grown / holds) if after["aof_enabled"] and holds and
        not rewrites else None,
    }  # fmt: skip


# One script call per request, like a hold (the real reserve.lua does more work per call).
REDIS_SCRIPT = "redis.call('HINCRBY', KEYS[1], 'held', 1) return 1"


def redis_ceiling(args: Any, cores: tuple[str | None, str | None], quick: bool) -> dict[str, Any]:
    """The Redis side's ceiling: ``redis-benchmark`` (same host, TCP, 64 clients) calling a
    one-HINCRBY script on a fresh redis-server pinned like the runs' (client core), the
    benchmark tool on the server core; unpipelined (one round trip per request, like the
    naive handler) and pipelined 16 deep (what batching per loop tick can reach)."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return {"rows": {}, "note": "redis-benchmark not installed"}
    server_cpu, client_cpu = cores
    n = 50_000 if quick else 300_000
    rows: dict[str, float] = {}
    with workdir("reserve-redis") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=client_cpu, aof=not args.no_aof)
        for label, extra in (
            ("EVAL 1 HINCRBY, c=64", []),
            ("EVAL 1 HINCRBY, c=64 -P 16", ["-P", "16"]),
        ):
            cmd = [tool, "-h", "127.0.0.1", "-p", str(rp.port), "-c", "64", "-n", str(n), *extra,
                   "-q", "--csv", "EVAL", REDIS_SCRIPT, "1", "naive:bench"]  # fmt: skip
            out = subprocess.run(pinned(cmd, server_cpu), capture_output=True, text=True,
                                 timeout=300, check=False)  # fmt: skip
            lines = [x for x in out.stdout.splitlines() if x.startswith('"EVAL')]
            if out.returncode == 0 and lines:
                rows[label] = float(lines[-1].split('","')[1])
                log(f"redis-benchmark {label}: {rows[label]:,.0f}/s")
    return {"rows": rows, "requests": n, "script": REDIS_SCRIPT}


def plot(
    path: Path, summary: list[dict[str, Any]], ceiling: dict[str, Any], impls: tuple[str, ...]
) -> None:
    """Holds/s per implementation (median of repeats) against the HTTP ceiling, with the
    redis-benchmark figures as horizontal lines: the Redis side's ceiling."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    labels, values = [], []
    for s in summary:
        for impl in impls:
            labels.append(f"{impl}\nc={s['c']}")
            values.append(s[impl]["rps"])
    colors = {"ours": "tab:blue", "naive": "tab:orange", "ceiling": "0.7", "previous": "tab:cyan",
              "rewriting": "tab:purple", "paced": "tab:green"}  # fmt: skip
    ax.bar(range(len(values)), values, color=[colors[lb.split()[0]] for lb in labels])
    for x, v in enumerate(values):
        ax.annotate(f"{v:,.0f}", (x, v), ha="center", va="bottom", fontsize=8)
    styles = iter(("--", ":", "-."))
    for label, v in ceiling.get("rows", {}).items():
        ax.axhline(v, color="tab:red", ls=next(styles, "--"), lw=1,
                   label=f"redis-benchmark {label}: {v:,.0f}/s")  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.set_ylim(bottom=100)
    ax.set_ylabel("holds/s (log)")
    ax.set_title("POST /v1/reservations: ours, naive, HTTP ceiling (no Redis), Redis ceiling")
    if ceiling.get("rows"):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="64", help="wrk connections, comma list")
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=4)
    parser.add_argument("--no-aof", action="store_true", help="redis-server without AOF")
    parser.add_argument(
        "--versus", default=None, help="also run atp-service as of this git ref ('previous')"
    )
    parser.add_argument(
        "--versus-python", default=None, metavar="EXE",
        help="run 'previous' on this interpreter (with --versus or alone: this code)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    impls: tuple[str, ...] = IMPLS
    if args.no_aof:  # nothing to rewrite
        impls = tuple(i for i in IMPLS if i != "rewriting")
    args.previous_dir = None
    if args.versus:
        args.previous_dir, previous_desc = export_ref(args.versus)
        log(f"previous: atp_service from {previous_desc}")
    args.versus_python_speed_ms = None
    if args.versus_python:
        args.versus_python_speed_ms = interpreter_speed_ms(args.versus_python)
        log(f"previous: on {args.versus_python} (speed index {args.versus_python_speed_ms} ms)")
    if args.versus or args.versus_python:
        impls = (*impls, "previous")
    previous = " on ".join(x for x in (args.versus, args.versus_python) if x)
    if args.versus_python:
        previous += f" (speed index {args.versus_python_speed_ms} ms)"
    require_matplotlib()  # fail now, not after the run
    quick = args.quick
    duration = args.duration or (2.0 if quick else 10.0)
    warmup_s = 1.0 if quick else 2.0
    repeats = args.repeats or (1 if quick else 3)
    conc = [int(c) for c in args.concurrency.split(",")]
    server_cpu, client_cpu = cpus(args)
    directory = out_dir(args)
    facts = machine_facts()
    nonce = secrets.token_hex(3)

    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        order = impls if rep % 2 == 0 else impls[::-1]
        for c in conc:
            for impl in order:
                runs.append(one_run(impl, c, rep, args, nonce, duration, warmup_s, cpus(args)))

    ceiling = redis_ceiling(args, cpus(args), quick)
    summary = []
    for c in conc:
        s: dict[str, Any] = {"c": c}
        for impl in impls:
            rs = [r for r in runs if r["impl"] == impl and r["c"] == c]
            s[impl] = {
                "rps": median([r["rps"] for r in rs]),
                "rps_range": spread([r["rps"] for r in rs]),
                "p50_us": median([r["p50_us"] for r in rs]),
                "p99_us": median([r["p99_us"] for r in rs]),
                "p999_us": median([r["p999_us"] for r in rs]),
                "p99_range": spread([r["p99_us"] for r in rs]),
                "cpu_us": median([r["extra"]["cpu_us_per_req_server"] for r in rs]),
                "redis_cpu_us": median([r["extra"]["cpu_us_per_req_redis"] for r in rs]),
                "errors": sum(sum(r["errors"].values()) for r in rs),
                "aof_rewrites": sum(r.get("aof", {}).get("rewrites", 0) for r in rs),
                "aof_bytes_per_hold": median(
                    [
                        r["aof"]["bytes_per_hold"]
                        for r in rs
                        if r.get("aof", {}).get("bytes_per_hold") is not None
                    ]
                    or [0]
                ),
                "checks_ok": all(r["check"].get("accounted", True) for r in rs),
            }
        s["ours_vs_naive"] = s["ours"]["rps"] / s["naive"]["rps"]
        s["ours_vs_ceiling"] = s["ours"]["rps"] / s["ceiling"]["rps"]
        s["naive_vs_ceiling"] = s["naive"]["rps"] / s["ceiling"]["rps"]
        if previous:
            s["ours_vs_previous"] = s["ours"]["rps"] / s["previous"]["rps"]
        summary.append(s)

    targets = []
    for s in summary:
        if s["c"] != 64 and len(summary) > 1:
            continue
        o = s["ours"]
        stored = [s[impl] for impl in impls if impl not in ("ceiling", "previous")]
        errors = sum(x["errors"] for x in stored)
        checks_ok = all(x["checks_ok"] for x in stored)
        targets += [
            Target(
                f"holds/s per process, c={s['c']}",
                ">= 15,000/s",
                f"{o['rps']:,.0f}/s ({s['ours_vs_ceiling']:.2f}x the HTTP ceiling of "
                f"{s['ceiling']['rps']:,.0f}/s)",
                o["rps"] >= 15_000,
            ),
            Target(f"hold p99, c={s['c']}", "<= 5 ms", fmt_us(o["p99_us"]), o["p99_us"] <= 5000),
            *(
                [
                    Target(
                        f"hold p99, c={s['c']}, Redis rewriting its AOF in the run (its defaults)",
                        "report",
                        f"{fmt_us(s['rewriting']['p99_us'])} ({s['rewriting']['aof_rewrites']} "
                        f"rewrites in {repeats} runs; {s['rewriting']['rps']:,.0f} holds/s)",
                        None,
                    )
                ]
                if "rewriting" in s
                else []
            ),
            *(
                [
                    Target(
                        f"hold p99 at the target rate: {PACE:,} holds/s offered (paced), "
                        f"c={s['c']}",
                        "<= 5 ms",
                        f"{fmt_us(s['paced']['p99_us'])} ({s['paced']['rps']:,.0f} holds/s "
                        "answered)",
                        s["paced"]["p99_us"] <= 5000,
                    )
                ]
                if "paced" in s
                else []
            ),
            Target(
                f"ours / naive throughput, c={s['c']}",
                "report (> 1x expected)",
                f"{s['ours_vs_naive']:.2f}x",
                None,
            ),
            Target(
                "no errors; units held == reservations stored",
                "every run",
                f"{errors} errors, checks {'ok' if checks_ok else 'FAILED'}",
                errors == 0 and checks_ok,
            ),
        ]
        if previous:
            p = s["previous"]
            targets.append(
                Target(
                    f"ours / previous ({previous}) throughput, c={s['c']}",
                    "report",
                    f"{s['ours_vs_previous']:.2f}x ({p['rps']:,.0f}/s, "
                    f"{p['cpu_us']:.0f} CPU-µs/hold; errors {p['errors']}, checks "
                    f"{'ok' if p['checks_ok'] else 'FAILED'})",
                    None,
                )
            )

    names = {
        "ours": "ours (atp-service)",
        "naive": "naive (1 EVALSHA / request)",
        "ceiling": "HTTP ceiling (no Redis)",
        "previous": f"previous (atp-service, {previous})",
        "rewriting": "ours, Redis rewriting its AOF (default policy)",
        "paced": f"ours, paced: {PACE:,} holds/s offered",
    }
    rows = [
        [
            names[impl],
            s["c"],
            f"{s[impl]['rps']:,.0f}",
            f"{s[impl]['rps'] / s['ceiling']['rps']:.2f}" if impl != "paced" else "(paced)",
            fmt_us(s[impl]["p50_us"]),
            fmt_us(s[impl]["p99_us"]),
            fmt_us(s[impl]["p999_us"]),
            f"{s[impl]['cpu_us']:.0f}",
            f"{s[impl]['redis_cpu_us']:.0f}" if impl != "ceiling" else "",
            f"{s[impl]['aof_bytes_per_hold']:,.0f}" if s[impl]["aof_bytes_per_hold"] else "",
            s[impl]["aof_rewrites"] if impl != "ceiling" else "",
            s[impl]["rps_range"],
        ]
        for s in summary
        for impl in impls
    ]
    headers = [
        "implementation",
        "c",
        "holds/s",
        "vs ceiling",
        "p50",
        "p99",
        "p99.9",
        "server CPU µs/hold",
        "redis CPU µs/hold",
        "AOF bytes/hold",
        "AOF rewrites",
        "holds/s min..max",
    ]
    run_rows = [
        [
            r["impl"],
            r["c"],
            r["repeat"],
            f"{r['rps']:,.0f}",
            fmt_us(r["p99_us"]),
            sum(r["errors"].values()),
            r["check"].get("reservations_stored", ""),
            r["check"].get("units_held", ""),
            {True: "ok", False: "MISMATCH", None: ""}[r["check"].get("accounted")],
            r.get("aof", {}).get("rewrites", ""),
            "" if r.get("aof", {}).get("fork_ms") is None else f"{r['aof']['fork_ms']:.1f}",
        ]
        for r in runs
    ]
    body = (
        "## Results (median of repeats)\n\n"
        + md_table(headers, rows)
        + "\nCPU µs/hold = process utime+stime over the measured run / responses. AOF "
        "bytes/hold = growth of Redis's `aof_current_size` over the measured run / responses "
        "(runs without a rewrite). AOF rewrites = rewrites started in the measured runs.\n"
        + "\n### Every run\n\n"
        + md_table(
            [
                "impl",
                "c",
                "repeat",
                "holds/s",
                "p99",
                "errors",
                "reservations stored",
                "units held",
                "check",
                "AOF rewrites",
                "last fork (ms)",
            ],
            run_rows,
        )
        + f"\n### Setup\n\n- {args.skus} SKUs x {args.locations} locations, {STOCK:,} units "
        "each; one line of qty 1 per reservation, unique ids, priority checkout, no hold "
        "(standalone mode: confirmed at once, no outbox)\n"
        "- ours: `atp-service serve` (reserve.lua: idempotency check, ATP check, pending += qty, "
        "reservation hash, change-stream XADD; concurrent calls pipelined per loop tick)\n"
        "- naive: `benchmarks/baseline_naive_reserve.py` (aiohttp, one EVALSHA per request: "
        "idempotency check, stock check, HINCRBY, reservation hash)\n"
        "- HTTP ceiling: `benchmarks/baseline_bare.py` (aiohttp, reads and parses the body, "
        "answers a constant 201 reply of the same shape; no Redis): what one core can do for "
        "this POST at all\n"
        f"- Fresh redis-server (AOF {'off' if args.no_aof else 'everysec'}; no AOF rewrite "
        "but in the rewriting row) and server per "
        f"run; server `taskset -c {server_cpu}`, wrk (`-t 1`) and redis-server "
        f"`taskset -c {client_cpu}`; {repeats} repeat(s) x {duration:g}s after {warmup_s:g}s "
        "warm-up, implementations alternating\n"
    )
    if ceiling["rows"]:
        redis_md = (
            "\n### Redis ceiling (`redis-benchmark`)\n\n"
            + md_table(
                ["redis-benchmark", "calls/s"],
                [[k, f"{v:,.0f}"] for k, v in ceiling["rows"].items()],
            )
            + f"\nA script doing one HINCRBY (`{REDIS_SCRIPT}`), {ceiling['requests']:,} "
            "calls, 64 clients, on a fresh redis-server pinned like the runs' (the tool on "
            "the server's core): what Redis alone does per second with one round trip per "
            "call, and with 16-deep pipelines. Holds/s far below it means the limit is the "
            "HTTP server's core, not Redis.\n"
        )
        setup_at = body.index("\n### Setup")
        body = body[:setup_at] + redis_md + body[setup_at:]
    png = directory / "reserve.png"
    plot(png, summary, ceiling, impls)
    body += f"\n![reserve]({png.name})\n"
    data = {
        "machine": facts,
        "redis_benchmark": ceiling,
        "settings": {
            "duration_s": duration,
            "warmup_s": warmup_s,
            "repeats": repeats,
            "concurrency": conc,
            "skus": args.skus,
            "locations": args.locations,
            "aof": not args.no_aof,
            "aof_rewrite": "only in the 'rewriting' runs (Redis's default policy)",
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            "wrk_threads": 1,
            "versus": args.versus,
            "versus_python": args.versus_python,
            "versus_python_speed_ms": args.versus_python_speed_ms,
        },
        "summary": summary,
        "runs": runs,
    }
    write_results(
        "reserve",
        directory,
        "Reservation benchmark: ours vs naive per-request Redis",
        data,
        body,
        targets,
        quick,
    )
    return {"name": "reserve", "md": body, "targets": targets, "dir": str(directory)}


if __name__ == "__main__":
    main()
