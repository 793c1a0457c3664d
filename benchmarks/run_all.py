"""Run every benchmark (lookup, reserve, warmup, ingest, degradation, scale) and combine their
tables into ``benchmarks/results/summary.md``: one headline table across all of them, every
target, then each benchmark's own section (plots included).

    .venv/bin/python -m benchmarks              # defaults: ~35 minutes in all
    .venv/bin/python -m benchmarks --quick      # smoke run of all six: ~8 minutes
    .venv/bin/python -m benchmarks.run_all --only lookup,reserve

With ``--only``, the benchmarks not run this time keep their section in ``summary.md``,
rebuilt from their existing ``<name>.json`` / ``<name>.md`` in the same directory and marked
with the command and date of the run that produced them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import (
    QUICK_DIR,
    RESULTS_DIR,
    Target,
    command_line,
    log,
    machine_facts,
    machine_md,
    md_table,
    require_matplotlib,
)

# name -> module (benchmarks.<name>, imported when it runs: one benchmark's missing optional
# dependency or file never stops the others)
BENCHMARKS = ("lookup", "reserve", "warmup", "ingest", "degradation", "scale")
TITLES = {
    "lookup": "Lookups: ours vs bare aiohttp ceiling",
    "reserve": "Reservations: ours vs naive per-request Redis",
    "warmup": "Warm-up and memory",
    "ingest": "Ingest: Kafka to lookups vs raw aiokafka consume",
    "degradation": "Degradation: 10x overload of the ERP, ours vs naive synchronous calls",
    "scale": "Scale: 1..3 replicas on one box, one shared Redis",
}


def headlines(name: str, data: dict[str, Any]) -> list[list[str]]:
    """The few figures that say how a benchmark went: [benchmark, measure, ours, baseline,
    ours / baseline]. Read from ``<name>.json``; a figure missing there is left out."""
    s = data.get("summary", {})
    rows: list[list[str]] = []

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else ""

    try:
        if name == "lookup":
            for x in s:
                what = "GET" if x["kind"] == "get" else "100-item batch"
                rows.append([name, f"{what} req/s, c={x['c']} (vs bare aiohttp)",
                             f"{x['ours_rps']:,.0f}", f"{x['bare_rps']:,.0f}",
                             ratio(x["ours_rps"], x["bare_rps"])])  # fmt: skip
        elif name == "reserve":
            for x in s:
                o, n, c = x["ours"], x["naive"], x["ceiling"]
                rows.append([name, f"holds/s, c={x['c']} (vs naive EVALSHA per request)",
                             f"{o['rps']:,.0f}", f"{n['rps']:,.0f}",
                             ratio(o["rps"], n["rps"])])  # fmt: skip
                rows.append([name, f"holds/s, c={x['c']} (vs HTTP ceiling, no Redis)",
                             f"{o['rps']:,.0f}", f"{c['rps']:,.0f}",
                             ratio(o["rps"], c["rps"])])  # fmt: skip
            rb = data.get("redis_benchmark") or {}
            for label, v in rb.get("rows", {}).items():
                rows.append([name, f"redis-benchmark {label} (Redis ceiling)", "",
                             f"{v:,.0f}/s", ""])  # fmt: skip
        elif name == "warmup":
            ip, e2e = s["in_process"], s["end_to_end"]
            rows.append([name, "bytes per key in memory (vs dict of dicts)",
                         f"{ip['ours']['bytes_per_key']:,.0f}",
                         f"{ip['dict_of_dicts']['bytes_per_key']:,.0f}",
                         ratio(ip["ours"]["bytes_per_key"],
                               ip["dict_of_dicts"]["bytes_per_key"])])  # fmt: skip
            rows.append([name, f"ready with {data['settings']['keys']:,} keys, end to end (s)",
                         f"{e2e['ready_s']:.1f}", "", ""])  # fmt: skip
        elif name == "ingest":
            rows.append([name, "events/s end to end (vs raw aiokafka getmany)",
                         f"{s['rate']:,.0f}", f"{s['raw_consume_rate']:,.0f}",
                         ratio(s["rate"], s["raw_consume_rate"])])  # fmt: skip
        elif name == "degradation":
            o, n = s["ours"], s["naive"]
            for p in ("checkout", "sales", "background"):
                rows.append([name, f"{p} accepted of {o[p]['offered']:,} (vs naive)",
                             f"{o[p]['accepted']:,}", f"{n[p]['accepted']:,}",
                             ratio(o[p]["accepted"], n[p]["accepted"])])  # fmt: skip
            rows.append([name, "checkout confirm p99 (s)",
                         f"{s['checkout_confirm_p99_s']:.1f}",
                         f"{n['checkout']['confirm_p99']:.1f}", ""])  # fmt: skip
            rows.append([name, "ERP calls/s during the load (limit "
                         f"{data['settings']['erp_rate']:g})",
                         f"{s['erp_ours']['calls_per_s_load']:.1f}",
                         f"{s['erp_naive']['calls_per_s_load']:.1f}", ""])  # fmt: skip
        elif name == "scale":
            for x in s:
                what = "lookups/s" if x["kind"] == "lookup" else "reservations/s"
                rows.append([name, f"{what}, {x['replicas']} replica(s) (vs 1 replica)",
                             f"{x['rps']:,.0f}", "", f"{x['speedup']:.2f}x"])  # fmt: skip
    except (KeyError, TypeError, IndexError):
        pass
    return rows


def runner(name: str) -> Callable[[list[str]], dict[str, Any]]:
    main: Callable[[list[str]], dict[str, Any]] = importlib.import_module(f"benchmarks.{name}").main
    return main


def previous(directory: Path, name: str) -> dict[str, Any] | None:
    """A benchmark's section and targets from the result files of an earlier run."""
    jpath, mpath = directory / f"{name}.json", directory / f"{name}.md"
    if not (jpath.exists() and mpath.exists()):
        return None
    data = json.loads(jpath.read_text())
    md = mpath.read_text()
    _head, sep, rest = md.partition("\n## Targets\n\n")
    if not sep:
        return None
    _table, _, body = rest.partition("\n\n")
    targets = [Target(t["name"], t["goal"], t["measured"], t["pass"]) for t in data["targets"]]
    date = data.get("machine", {}).get("date_utc", "?")
    note = f"*Not rerun this time: from `{data.get('command', '?')}` ({date}).*\n\n"
    return {"name": name, "md": body, "targets": targets, "note": note}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma list")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--ref",
        default=None,
        help="benchmark atp_service as of this git ref (default: working tree)",
    )
    parser.add_argument("--code-dir", type=Path, default=None, help="or the package in this dir")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    require_matplotlib()  # fail now, not half an hour in
    common: list[str] = []
    if args.quick:
        common.append("--quick")
    if args.ref:
        common += ["--ref", args.ref]
    if args.code_dir:
        common += ["--code-dir", str(args.code_dir)]
    if args.out:
        common += ["--out", str(args.out)]
    directory: Path = args.out or (QUICK_DIR if args.quick else RESULTS_DIR)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    for name in BENCHMARKS:
        if name in names:
            log(f"=== {name}")
            results.append(runner(name)(common))
        else:
            earlier = previous(directory, name)
            if earlier is not None:
                results.append(earlier)
    facts = machine_facts()
    all_targets: list[list[str]] = []
    heads: list[list[str]] = []
    sections = []
    for res in results:
        jpath = directory / f"{res['name']}.json"
        if jpath.exists():
            heads += headlines(res["name"], json.loads(jpath.read_text()))
        targets: list[Target] = res["targets"]
        all_targets += [[res["name"], *t.row()] for t in targets]
        body = res["md"].replace("\n## ", "\n### ").replace("\n### Setup", "\n#### Setup")
        if body.startswith("## "):
            body = "#" + body
        sections.append(
            f"## {TITLES[res['name']]}\n\nDetails: [`{res['name']}.md`]({res['name']}.md), "
            f"raw: [`{res['name']}.json`]({res['name']}.json)\n\n{res.get('note', '')}{body}"
        )
    failed = sum(1 for row in all_targets if "FAIL" in row[-1])
    text = (
        "# Benchmark summary\n\n"
        + ("**Quick smoke run: figures are not meaningful.**\n\n" if args.quick else "")
        + f"Command: `{command_line()}` ({time.monotonic() - started:.0f} s)\n\n"
        + machine_md(facts)
        + "\n## Headlines\n\n"
        + md_table(["Benchmark", "Measure", "Ours", "Baseline", "Ours / baseline"], heads)
        + f"\n## Targets ({len(all_targets) - failed} pass or n/a, {failed} fail)\n\n"
        + md_table(["Benchmark", "Target", "Goal", "Measured", "Result"], all_targets)
        + "\n"
        + "\n".join(sections)
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.md").write_text(text)
    print(f"wrote {directory / 'summary.md'}", flush=True)


if __name__ == "__main__":
    main()
