"""Run every benchmark (lookup, reserve, warmup) and combine their tables into
``benchmarks/results/summary.md``.

    .venv/bin/python -m benchmarks              # defaults: ~10 minutes in all
    .venv/bin/python -m benchmarks --quick      # smoke run of all three: ~30 s
    .venv/bin/python -m benchmarks.run_all --only lookup,reserve
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from . import lookup, reserve, warmup
from .common import (
    QUICK_DIR,
    RESULTS_DIR,
    Target,
    command_line,
    log,
    machine_facts,
    machine_md,
    md_table,
)

BENCHMARKS = {"lookup": lookup.main, "reserve": reserve.main, "warmup": warmup.main}
TITLES = {
    "lookup": "Lookups: ours vs bare aiohttp ceiling",
    "reserve": "Reservations: ours vs naive per-request Redis",
    "warmup": "Warm-up and memory",
}


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
    for name in names:
        log(f"=== {name}")
        results.append(BENCHMARKS[name](common))
    facts = machine_facts()
    all_targets: list[list[str]] = []
    sections = []
    for res in results:
        targets: list[Target] = res["targets"]
        all_targets += [[res["name"], *t.row()] for t in targets]
        body = res["md"].replace("\n## ", "\n### ").replace("\n### Setup", "\n#### Setup")
        if body.startswith("## "):
            body = "#" + body
        sections.append(
            f"## {TITLES[res['name']]}\n\nDetails: [`{res['name']}.md`]({res['name']}.md), "
            f"raw: [`{res['name']}.json`]({res['name']}.json)\n\n{body}"
        )
    failed = sum(1 for row in all_targets if "FAIL" in row[-1])
    text = (
        "# Benchmark summary\n\n"
        + ("**Quick smoke run: figures are not meaningful.**\n\n" if args.quick else "")
        + f"Command: `{command_line()}` ({time.monotonic() - started:.0f} s)\n\n"
        + machine_md(facts)
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
