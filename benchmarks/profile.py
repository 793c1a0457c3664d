"""Profile our service under a benchmark load with py-spy (``pip install py-spy``).

Starts redis-server and ``atp-service serve`` (pinned like the benchmarks), seeds them, runs
wrk with the scenario's script and records the server with ``py-spy record`` meanwhile.
Writes the collapsed stacks (input for flamegraph.pl / speedscope) under
``benchmarks/results/tmp/profile/`` and prints the top functions by self and inclusive time.

    .venv/bin/python -m benchmarks.profile lookup  --seconds 10
    .venv/bin/python -m benchmarks.profile batch   --seconds 10
    .venv/bin/python -m benchmarks.profile reserve --seconds 10 --native
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

from . import lookup, reserve
from .common import (
    RESULTS_DIR,
    TOKEN,
    Procs,
    cpus,
    log,
    lua_script,
    run_wrk,
    url,
    use_ref,
    workdir,
)


def top(collapsed: Path, n: int = 25) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out = [f"samples: {total}", "", "-- self time"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in self_t.most_common(n)]
    out += ["", "-- inclusive time"]
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=("lookup", "batch", "reserve"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tmp" / "profile")
    parser.add_argument("--server-cpu", default=None)
    parser.add_argument("--client-cpu", default=None)
    parser.add_argument("--ref", default=None, help="profile atp_service as of this git ref")
    parser.add_argument("--code-dir", type=Path, default=None, help="or the package in this dir")
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    pyspy = shutil.which("py-spy") or str(Path(__file__).parent.parent / ".venv/bin/py-spy")
    server_cpu, client_cpu = cpus(args)
    args.out.mkdir(parents=True, exist_ok=True)
    with workdir("profile") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=client_cpu, aof=args.scenario == "reserve")
        svc = procs.service(rp.url, cpu=server_cpu, extra_env={"ATP_LOG_LEVEL": "warning"})
        if args.scenario == "reserve":
            reserve.seed_ours(url(svc, ""), 1000, 4)
            script = lua_script("reserve", tmp)
            wargs = [secrets.token_hex(3), "1000", "4", TOKEN]
            conns = args.connections or 64
        else:
            lookup.seed(url(svc, ""), 1000, 4)
            if args.scenario == "lookup":
                script = lua_script("lookup", tmp)
                wargs = ["1000", TOKEN]
                conns = args.connections or 16
            else:
                bodies = tmp / "bodies.jsonl"
                bodies.write_text(
                    "".join(json.dumps(b) + "\n" for b in lookup.batch_bodies(1000, 4))
                )
                script = lua_script("batch", tmp)
                wargs = [str(bodies), TOKEN]
                conns = args.connections or 1
        # warm-up; reservations under their own ids (the same ids again would be replays)
        warm = [wargs[0] + "w", *wargs[1:]] if args.scenario == "reserve" else wargs
        run_wrk(url(svc, "/"), script, warm, conns, 2, client_cpu)
        stem = args.out / f"{args.scenario}{'-native' if args.native else ''}"
        collapsed = stem.with_suffix(".txt")
        cmd = [
            pyspy,
            "record",
            "--pid",
            str(svc.pid),
            "--rate",
            str(args.rate),
            "--duration",
            str(int(args.seconds)),
            "--format",
            "raw",
            "-o",
            str(collapsed),
        ]
        if args.native:
            cmd.append("--native")
        spy = threading.Thread(
            target=subprocess.run, args=(cmd,), kwargs={"capture_output": True, "check": False}
        )
        spy.start()
        res = run_wrk(url(svc, "/"), script, wargs, conns, args.seconds + 1, client_cpu)
        spy.join()
        log(
            f"{args.scenario} c={conns}: {res.rps:,.0f} req/s p50={res.p50_us:,.0f}µs "
            f"p99={res.p99_us:,.0f}µs (under py-spy)"
        )
    report = top(collapsed)
    stem.with_suffix(".top.txt").write_text(report + "\n")
    print(report)
    print(f"\ncollapsed stacks: {collapsed}")


if __name__ == "__main__":
    main()
