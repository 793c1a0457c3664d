"""Lookup benchmark: GET /v1/availability/{sku} and a 100-item POST /v1/availability on our
service, against the bare aiohttp + uvloop + orjson ceiling (``baseline_bare.py``).

Both servers run at once, pinned to the same core (``taskset -c 0``); wrk runs on the other
core (``taskset -c 1``) with one thread, and so does the (idle) redis-server. Runs alternate
between the two servers, and for each (server, concurrency) the median of the repeats is
reported. Our service is seeded through ``POST /v1/events`` (SKUs x locations snapshots);
wrk rotates requests over every seeded SKU (``lua/lookup.lua``). The baseline answers a
constant body copied from a real response of ours, so both send the same bytes.

Server-side handling time comes from our ``/metrics`` histogram ``atp_http_handle_seconds``
(route ``availability.get``): scraped before and after each run, diffed, and the p99 taken
as the upper bound of the bucket holding it (the buckets are 25, 50, 100, 250 µs, ...).

    .venv/bin/python -m benchmarks.lookup            # default: ~4 minutes
    .venv/bin/python -m benchmarks.lookup --quick    # smoke run: seconds
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import (
    TOKEN,
    Procs,
    Target,
    base_parser,
    cpus,
    fmt_us,
    histogram_add,
    histogram_diff,
    histogram_quantile_bound,
    http_json,
    log,
    lua_script,
    machine_facts,
    md_table,
    median,
    out_dir,
    require_matplotlib,
    run_wrk,
    scrape_histogram,
    spread,
    url,
    use_ref,
    workdir,
    write_results,
)

ROUTE = "availability.get"
BATCH_ROUTE = "availability.batch"
BATCH_ITEMS = 100
N_BODIES = 16


def seed_events(n_skus: int, n_locs: int) -> list[dict[str, Any]]:
    events = []
    for s in range(n_skus):
        for loc in range(n_locs):
            events.append(
                {
                    "event_id": f"seed-{s}-{loc}",
                    "type": "snapshot",
                    "sku": f"SKU-{s:06d}",
                    "location": f"LOC-{loc:02d}",
                    "seq": 1,
                    "on_hand": 50 + (s * 7 + loc * 13) % 900,
                    "allocated": (s + loc) % 7,
                    "safety_stock": 2,
                    "occurred_at": "2026-11-22T10:00:00Z",
                }
            )
    return events


def seed(service_url: str, n_skus: int, n_locs: int) -> None:
    events = seed_events(n_skus, n_locs)
    for i in range(0, len(events), 2000):
        status, body = http_json(
            "POST", service_url + "/v1/events", {"events": events[i : i + 2000]}
        )
        result = json.loads(body)
        if status != 200 or result["rejected"]:
            raise RuntimeError(f"seeding failed: {status} {body[:300]!r}")


def batch_bodies(n_skus: int, n_locs: int) -> list[dict[str, Any]]:
    """100 items each: every other item names a location, the rest ask for the whole sku."""
    bodies = []
    for b in range(N_BODIES):
        items: list[dict[str, Any]] = []
        for k in range(BATCH_ITEMS):
            item: dict[str, Any] = {"sku": f"SKU-{(b * 101 + k * 7) % n_skus:06d}", "qty": 1}
            if k % 2 == 0:
                item["location"] = f"LOC-{(k // 2) % n_locs:02d}"
            items.append(item)
        bodies.append({"items": items})
    return bodies


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,16,64", help="wrk connections, comma list")
    parser.add_argument("--batch-concurrency", default="1,16")
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=4)
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    require_matplotlib()  # fail now, not after the run
    quick = args.quick
    duration = args.duration or (1.0 if quick else 8.0)
    batch_duration = args.duration or (1.0 if quick else 6.0)
    repeats = args.repeats or (1 if quick else 3)
    warmup_s = 1.0 if quick else 2.0
    conc = [int(c) for c in args.concurrency.split(",")]
    bconc = [int(c) for c in args.batch_concurrency.split(",")]
    server_cpu, client_cpu = cpus(args)
    directory = out_dir(args)
    facts = machine_facts()

    runs: list[dict[str, Any]] = []
    with workdir("lookup") as tmp, Procs(tmp) as procs:
        redis = procs.redis(cpu=client_cpu, aof=False)
        ours = procs.service(redis.url, cpu=server_cpu, extra_env={"ATP_LOG_LEVEL": "warning"})
        log(f"service up on :{ours.port}; seeding {args.skus} x {args.locations} keys")
        seed(url(ours, ""), args.skus, args.locations)

        # A real response of ours for the baseline's constant bodies.
        status, get_body = http_json("GET", url(ours, "/v1/availability/SKU-000000"))
        assert status == 200, get_body
        bodies = batch_bodies(args.skus, args.locations)
        status, post_body = http_json("POST", url(ours, "/v1/availability"), bodies[0])
        assert status == 200, post_body
        (tmp / "get.json").write_bytes(get_body)
        (tmp / "post.json").write_bytes(post_body)
        bodies_file = tmp / "bodies.jsonl"
        bodies_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
        base = procs.python_server(
            "baseline_bare",
            "benchmarks.baseline_bare",
            ["--get-body", str(tmp / "get.json"), "--post-body", str(tmp / "post.json")],
            cpu=server_cpu,
        )
        servers = {"ours": ours, "bare": base}
        get_lua = lua_script("lookup", tmp)
        batch_lua = lua_script("batch", tmp)
        get_args = [str(args.skus), TOKEN]
        batch_args = [str(bodies_file), TOKEN]

        def one_run(kind: str, server: str, c: int, rep: int, secs: float) -> dict[str, Any]:
            proc = servers[server]
            route = ROUTE if kind == "get" else BATCH_ROUTE
            metrics = url(ours, "/metrics")
            before = scrape_histogram(metrics, route) if server == "ours" else None
            lua, wargs = (get_lua, get_args) if kind == "get" else (batch_lua, batch_args)
            res = run_wrk(
                url(proc, "/"), lua, wargs, c, secs, client_cpu, watch={"server": proc.pid}
            )
            proc.check()
            row: dict[str, Any] = {
                "kind": kind,
                "server": server,
                "c": c,
                "repeat": rep,
                **res.as_json(),
                "cpu_us": res.extra["cpu_us_per_req_server"],
            }
            if before is not None:
                hist = histogram_diff(before, scrape_histogram(metrics, route))
                row["server_hist"] = hist
                row["server_p99_bound_s"] = histogram_quantile_bound(hist, 0.99)
                row["server_p50_bound_s"] = histogram_quantile_bound(hist, 0.50)
                row["server_mean_s"] = hist["sum"] / hist["count"] if hist["count"] else None
            log(
                f"{kind:5s} {server:5s} c={c:<3d} rep={rep}: {res.rps:,.0f} req/s "
                f"p50={res.p50_us:,.0f}µs p99={res.p99_us:,.0f}µs errors={res.errors}"
            )
            return row

        log("warm-up runs")
        for server in servers:
            one_run("get", server, 16, -1, warmup_s)
            one_run("batch", server, 4, -1, warmup_s)
        for rep in range(repeats):
            order = ["ours", "bare"] if rep % 2 == 0 else ["bare", "ours"]
            for c in conc:
                for server in order:
                    runs.append(one_run("get", server, c, rep, duration))
            for c in bconc:
                for server in order:
                    runs.append(one_run("batch", server, c, rep, batch_duration))

    # ---- aggregate
    def pick(kind: str, server: str, c: int) -> list[dict[str, Any]]:
        return [r for r in runs if r["kind"] == kind and r["server"] == server and r["c"] == c]

    summary: list[dict[str, Any]] = []
    for kind, levels in (("get", conc), ("batch", bconc)):
        for c in levels:
            o, b = pick(kind, "ours", c), pick(kind, "bare", c)
            hist = None
            for r in o:
                hist = histogram_add(hist, r["server_hist"])
            s: dict[str, Any] = {
                "kind": kind,
                "c": c,
                "ours_rps": median([r["rps"] for r in o]),
                "bare_rps": median([r["rps"] for r in b]),
                "ours_rps_range": spread([r["rps"] for r in o]),
                "bare_rps_range": spread([r["rps"] for r in b]),
                "ours_p50_us": median([r["p50_us"] for r in o]),
                "ours_p99_us": median([r["p99_us"] for r in o]),
                "bare_p50_us": median([r["p50_us"] for r in b]),
                "bare_p99_us": median([r["p99_us"] for r in b]),
                "ours_p99_us_range": spread([r["p99_us"] for r in o]),
                "server_p99_bound_s": median([r["server_p99_bound_s"] for r in o]),
                "server_p99_bound_pooled_s": histogram_quantile_bound(hist, 0.99) if hist else None,
                "server_p50_bound_s": median([r["server_p50_bound_s"] for r in o]),
                "server_mean_s": median([r["server_mean_s"] for r in o]),
                "ours_cpu_us": median([r["cpu_us"] for r in o]),
                "bare_cpu_us": median([r["cpu_us"] for r in b]),
                "ours_bytes": median([r["bytes_per_response"] for r in o]),
                "bare_bytes": median([r["bytes_per_response"] for r in b]),
                "errors": sum(sum(r["errors"].values()) for r in o + b),
                "pooled_hist": hist,
            }
            s["ratio"] = s["ours_rps"] / s["bare_rps"] if s["bare_rps"] else float("nan")
            s["cpu_ratio"] = s["bare_cpu_us"] / s["ours_cpu_us"] if s["ours_cpu_us"] else None
            summary.append(s)

    def row_of(kind: str, c: int) -> dict[str, Any]:
        return next(s for s in summary if s["kind"] == kind and s["c"] == c)

    targets: list[Target] = []
    for c in conc:
        s = row_of("get", c)
        targets.append(
            Target(
                f"GET throughput vs ceiling, c={c}",
                ">= 0.85x",
                f"{s['ratio']:.2f}x ({s['ours_rps']:,.0f} / {s['bare_rps']:,.0f} req/s)",
                s["ratio"] >= 0.85,
            )
        )
    if 16 in conc:
        s = row_of("get", 16)
        targets.append(
            Target(
                "GET end-to-end p99, c=16",
                "<= 1 ms",
                fmt_us(s["ours_p99_us"]),
                s["ours_p99_us"] <= 1000,
            )
        )
    pooled = None
    for s in summary:
        if s["kind"] == "get":
            pooled = histogram_add(pooled, s["pooled_hist"])
    p99_all = histogram_quantile_bound(pooled, 0.99) if pooled else float("nan")
    targets.append(
        Target(
            "GET server-side p99 (all GET runs pooled)",
            "<= 100 µs",
            f"<= {fmt_us(p99_all, 's')} (bucket bound)",
            p99_all <= 100e-6,
        )
    )
    for c in bconc:
        s = row_of("batch", c)
        note = "" if c == min(bconc) else " (closed loop: includes queueing behind 15 others)"
        targets.append(
            Target(
                f"100-item batch p99, c={c}{note}",
                "<= 2 ms",
                fmt_us(s["ours_p99_us"]),
                s["ours_p99_us"] <= 2000,
            )
        )

    headers = [
        "Request",
        "c",
        "ours req/s",
        "ceiling req/s",
        "ratio",
        "ours p50",
        "ours p99",
        "ceiling p50",
        "ceiling p99",
        "server p50 / p99 (bucket ≤)",
        "server mean",
        "CPU µs/req ours / ceiling",
    ]
    table_rows = []
    for s in summary:
        table_rows.append(
            [
                "GET /v1/availability/{sku}"
                if s["kind"] == "get"
                else "POST /v1/availability (100)",
                s["c"],
                f"{s['ours_rps']:,.0f}",
                f"{s['bare_rps']:,.0f}",
                f"{s['ratio']:.2f}",
                fmt_us(s["ours_p50_us"]),
                fmt_us(s["ours_p99_us"]),
                fmt_us(s["bare_p50_us"]),
                fmt_us(s["bare_p99_us"]),
                f"{fmt_us(s['server_p50_bound_s'], 's')} / {fmt_us(s['server_p99_bound_s'], 's')}",
                fmt_us(s["server_mean_s"], "s"),
                f"{s['ours_cpu_us']:.0f} / {s['bare_cpu_us']:.0f}",
            ]
        )
    spread_rows = [
        [
            s["kind"],
            s["c"],
            s["ours_rps_range"],
            s["bare_rps_range"],
            s["ours_p99_us_range"],
            f"{s['ours_bytes']:.0f} / {s['bare_bytes']:.0f}",
            s["errors"],
        ]
        for s in summary
    ]
    body = (
        "## Results (median of repeats)\n\n"
        f"{md_table(headers, table_rows)}\n"
        "Ceiling = bare aiohttp + uvloop + orjson handler returning a constant body of the same "
        "size (`benchmarks/baseline_bare.py`). Latencies are wrk's (closed loop, one thread); "
        "server p50/p99 are the upper bounds of the `atp_http_handle_seconds` buckets holding "
        "them (buckets 25/50/100/250 µs...), server mean = histogram sum / count. CPU µs/req = "
        "server process utime+stime over the run / responses (robust to a noisy neighbour; "
        "ceiling/ours CPU is the throughput ratio a dedicated core would give).\n\n"
        "### Spread across repeats and response sizes\n\n"
        + md_table(
            [
                "kind",
                "c",
                "ours req/s min..max",
                "ceiling req/s min..max",
                "ours p99 µs min..max",
                "bytes/response ours / ceiling",
                "errors",
            ],
            spread_rows,
        )
        + f"\n### Setup\n\n- {args.skus} SKUs x {args.locations} locations seeded via "
        "POST /v1/events; GET rotates over all SKUs (`benchmarks/lua/lookup.lua`); the batch "
        f"rotates over {N_BODIES} bodies of {BATCH_ITEMS} items, half with a location, half "
        "whole-sku (`benchmarks/lua/batch.lua`)\n"
        f"- Servers pinned with `taskset -c {server_cpu}`; wrk (`-t 1`) and redis-server with "
        f"`taskset -c {client_cpu}`\n"
        f"- {repeats} repeat(s) x {duration:g}s per GET run, {batch_duration:g}s per batch run, "
        f"alternating servers; {warmup_s:g}s warm-up per server first\n"
    )
    png = directory / "lookup.png"
    plot(png, summary, runs)
    body += f"\n![lookup]({png.name})\n"
    for s in summary:
        s.pop("pooled_hist", None)
    data = {
        "machine": facts,
        "settings": {
            "duration_s": duration,
            "batch_duration_s": batch_duration,
            "repeats": repeats,
            "concurrency": conc,
            "batch_concurrency": bconc,
            "skus": args.skus,
            "locations": args.locations,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            "wrk_threads": 1,
        },
        "summary": summary,
        "server_p99_pooled_bound_s": p99_all,
        "runs": runs,
    }
    write_results(
        "lookup",
        directory,
        "Lookup benchmark: ours vs bare aiohttp ceiling",
        data,
        body,
        targets,
        quick,
    )
    return {"name": "lookup", "md": body, "targets": targets, "dir": str(directory)}


def plot(path: Path, summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """Per request kind (GET, 100-item batch): wrk latency percentiles by concurrency, ours
    and the ceiling (medians of repeats, plus our server-side p99 bucket bound); throughput by
    concurrency, ours against the bare-aiohttp ceiling."""
    plt = require_matplotlib()
    kinds = [k for k in ("get", "batch") if any(s["kind"] == k for s in summary)]
    titles = {"get": "GET /v1/availability/{sku}", "batch": "POST /v1/availability (100 items)"}
    fig, axes = plt.subplots(len(kinds), 2, figsize=(13, 4.6 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        rows = [s for s in summary if s["kind"] == kind]
        levels = [s["c"] for s in rows]
        xs = list(range(len(levels)))
        ax = axes[row][0]
        for server, style in (("ours", "-"), ("bare", "--")):
            for q, color in (("p50", "tab:blue"), ("p90", "tab:orange"), ("p99", "tab:red")):
                ys = [
                    median([r[f"{q}_us"] / 1000 for r in runs
                            if r["kind"] == kind and r["server"] == server and r["c"] == c])
                    for c in levels
                ]  # fmt: skip
                name = "ours" if server == "ours" else "ceiling"
                ax.plot(xs, ys, style, marker="o", color=color, label=f"{name} {q}")
        ax.plot(xs, [s["server_p99_bound_s"] * 1000 for s in rows], ":", marker="s",
                color="k", label="ours server-side p99 (bucket bound)")  # fmt: skip
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(c) for c in levels])
        ax.set_xlabel("wrk connections")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{titles[kind]}: latency percentiles (wrk, median of repeats)")
        ax.legend(fontsize=7, ncol=2)
        ax = axes[row][1]
        width = 0.38
        ours = [s["ours_rps"] for s in rows]
        bare = [s["bare_rps"] for s in rows]
        ax.bar([x - width / 2 for x in xs], ours, width, label="ours", color="tab:blue")
        ax.bar([x + width / 2 for x in xs], bare, width, label="bare aiohttp ceiling",
               color="0.7")  # fmt: skip
        for x, o, b in zip(xs, ours, bare, strict=True):
            ax.annotate(f"{o / b:.2f}x" if b else "", (x - width / 2, o), ha="center",
                        va="bottom", fontsize=8)  # fmt: skip
        ax.set_xticks(xs, [str(c) for c in levels])
        ax.set_xlabel("wrk connections")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{titles[kind]}: throughput, ours / ceiling")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
