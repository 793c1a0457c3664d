"""Where the server's CPU goes per request: user and system time, and socket calls.

Runs POST /v1/reservations (``reserve``) or GET /v1/availability/{sku} (``lookup``) with wrk at
one concurrency against several *variants* of our service and the HTTP ceiling, in paired
rounds (every variant once per round, the order reversed every other round), and reads each
process's ``/proc/PID/stat`` (utime, stime) and ``/proc/PID/io`` (read and write calls) around
the measured run. Per request: server user and system µs, server reads and writes, Redis user
and system µs. Medians of the rounds, and each round's rows, as JSON and Markdown.

A variant is ``NAME[=PYTHON][@PATCH]``: our service (the working tree, or ``--ref``) run on
another interpreter (a venv with the dependencies), and/or with one of :data:`PATCHES` applied
to a copy of ``atp_service``. ``--variant`` may be repeated; ``ours`` (this interpreter,
unpatched) and the ceiling always run.

    .venv/bin/python -m benchmarks.cpu_split                             # ours vs ceiling
    .venv/bin/python -m benchmarks.cpu_split --variant no-redis@no-redis  # the ablation
    .venv/bin/python -m benchmarks.cpu_split --variant no-hot@no-hot-routes --scenario lookup
    .venv/bin/python -m benchmarks.cpu_split --variant aio@aiohttp-response
    .venv/bin/python -m benchmarks.cpu_split --variant pyenv=/tmp/venv-pyenv/bin/python

Paired rounds and CPU time per request make a comparison that survives this shared box's
noise better than throughput: a neighbour slows every variant of a round alike, and CPU time
does not count waiting. The VM exposes no hardware counters, so instructions cannot be counted.
"""

from __future__ import annotations

import atexit
import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import lookup, reserve
from .common import (
    CODE,
    ROOT,
    TOKEN,
    Procs,
    Target,
    base_parser,
    cpu_times,
    cpus,
    http_json,
    interpreter_speed_ms,
    log,
    lua_script,
    machine_facts,
    md_table,
    median,
    out_dir,
    run_wrk,
    url,
    use_ref,
    workdir,
    write_results,
)

# Ablations: (file under atp_service/, text to find, replacement). ``no-redis`` answers a
# reservation after building its Redis command, awaiting a future the loop resolves at once
# instead of Redis's reply: what is left is the HTTP handling and the handler's own Python.
PATCHES: dict[str, tuple[str, str, str]] = {
    "no-redis": (
        "ledger.py",
        "        reply = await self.store.run_packed(command)\n",
        "        ready = asyncio.get_running_loop().create_future()\n"
        "        ready.get_loop().call_soon(ready.set_result, None)\n"
        "        await ready\n"
        "        return True, self._created_view(req, now)\n",
    ),
    # Every request through aiohttp's router, none through http/server.HotRoutes.
    "no-hot-routes": (
        "app.py",
        "                hot.add(method, path, route)\n",
        "                pass\n",
    ),
    # Every JSON answer written by aiohttp's web.Response, none by http/response.FastResponse.
    "aiohttp-response": (
        "http/response.py",
        "        return writer\n",
        "        return writer\n\n\nFastResponse = web.Response  # type: ignore[misc]\n",
    ),
}


def patched_copy(source: Path, patch: str) -> Path:
    """A copy of ``source/atp_service`` with one of :data:`PATCHES` applied (removed at
    exit)."""
    name, find, replace = PATCHES[patch]
    dest = Path(tempfile.mkdtemp(prefix=f"atp-bench-{patch}-"))
    atexit.register(shutil.rmtree, dest, True)
    shutil.copytree(source / "atp_service", dest / "atp_service")
    path = dest / "atp_service" / name
    text = path.read_text()
    if text.count(find) != 1:
        raise SystemExit(f"patch {patch!r} no longer applies to {name}: update PATCHES")
    path.write_text(text.replace(find, replace))
    return dest


def parse_variant(spec: str) -> dict[str, Any]:
    """``NAME[=PYTHON][@PATCH]`` -> {name, python, patch}."""
    head, _, patch = spec.partition("@")
    name, _, python = head.partition("=")
    if patch and patch not in PATCHES:
        raise SystemExit(f"unknown patch {patch!r}; known: {', '.join(PATCHES)}")
    return {"name": name, "python": python or None, "patch": patch or None}


def stat(pid: int) -> tuple[float, float, int, int]:
    """(user seconds, system seconds, read calls, write calls) of a process so far."""
    with open(f"/proc/{pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    return *cpu_times(pid), int(io["syscr"]), int(io["syscw"])


def one_run(variant: dict[str, Any], args: Any, rnd: int, nonce: str) -> dict[str, Any]:
    server_cpu, client_cpu = cpus(args)
    scenario = args.scenario
    with workdir(f"cpu-{variant['name']}") as tmp, Procs(tmp) as procs:
        rp = procs.redis(cpu=client_cpu, aof=scenario == "reserve")
        if variant["name"] == "ceiling":
            body = tmp / "body.json"
            if scenario == "reserve":
                body.write_text(json.dumps(reserve.RESERVE_REPLY))
            else:
                body.write_bytes(args.get_body)  # a real answer of ours, same size
            flag = "--reserve-body" if scenario == "reserve" else "--get-body"
            server = procs.python_server(
                "ceiling", "benchmarks.baseline_bare", [flag, str(body)], cpu=server_cpu
            )
        else:
            server = procs.service(
                rp.url, cpu=server_cpu, extra_env={"ATP_LOG_LEVEL": "warning"},
                code_dir=variant.get("code_dir"), python=variant["python"],
            )  # fmt: skip
            if scenario == "reserve":
                reserve.seed_ours(url(server, ""), args.skus, args.locations)
            else:
                lookup.seed(url(server, ""), args.skus, args.locations)
        if scenario == "reserve":
            script = lua_script("reserve", tmp)
            tag = f"{nonce}{rnd}{variant['name'][:3]}"
            warm_args = [tag + "w", str(args.skus), str(args.locations), TOKEN]
            run_args = [tag + "m", str(args.skus), str(args.locations), TOKEN]
        else:
            script = lua_script("lookup", tmp)
            warm_args = run_args = [str(args.skus), TOKEN]
        target = url(server, "/")
        run_wrk(target, script, warm_args, args.connections, 2, client_cpu)
        before, redis_before = stat(server.pid), stat(rp.proc.pid)
        res = run_wrk(target, script, run_args, args.connections, args.seconds, client_cpu)
        after, redis_after = stat(server.pid), stat(rp.proc.pid)
        server.check()
    n = max(res.requests, 1)
    row = {
        "variant": variant["name"],
        "round": rnd,
        "rps": res.rps,
        "errors": sum(res.errors.values()),
        "user_us": (after[0] - before[0]) / n * 1e6,
        "sys_us": (after[1] - before[1]) / n * 1e6,
        "reads": (after[2] - before[2]) / n,
        "writes": (after[3] - before[3]) / n,
        "redis_us": (redis_after[0] + redis_after[1] - redis_before[0] - redis_before[1])
        / n * 1e6,
    }  # fmt: skip
    log(
        f"{scenario} {variant['name']:10s} round {rnd}: {res.rps:,.0f}/s user "
        f"{row['user_us']:.1f} µs sys {row['sys_us']:.1f} µs reads {row['reads']:.2f} writes "
        f"{row['writes']:.2f} redis {row['redis_us']:.1f} µs errors {row['errors']}"
    )
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=("reserve", "lookup"), default="reserve")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[=PY][@PATCH]")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 6)")
    parser.add_argument("--seconds", type=float, default=None, help="wrk seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=4)
    args = parser.parse_args(argv)
    use_ref(args.ref, args.code_dir)
    rounds = args.rounds or (1 if args.quick else 6)
    args.seconds = args.seconds or (2.0 if args.quick else 8.0)
    source = CODE["dir"] or ROOT
    variants: list[dict[str, Any]] = [{"name": "ours", "python": None, "patch": None}]
    variants += [parse_variant(v) for v in args.variant]
    variants.append({"name": "ceiling", "python": None, "patch": None})
    for v in variants:
        v["code_dir"] = patched_copy(source, v["patch"]) if v["patch"] else CODE["dir"]
        if v["python"]:
            v["speed_index_ms"] = interpreter_speed_ms(v["python"])
    if len({v["name"] for v in variants}) != len(variants):
        raise SystemExit("variant names must differ from each other and from ours/ceiling")
    if args.scenario == "lookup":  # the ceiling answers a real body of ours
        with workdir("cpu-body") as tmp, Procs(tmp) as procs:
            rp = procs.redis(cpu=cpus(args)[1], aof=False)
            svc = procs.service(rp.url, extra_env={"ATP_LOG_LEVEL": "warning"})
            lookup.seed(url(svc, ""), args.skus, args.locations)
            status, answer = http_json("GET", url(svc, "/v1/availability/SKU-000000"))
            assert status == 200, answer
            args.get_body = answer
    facts = machine_facts()
    nonce = secrets.token_hex(3)
    rows = []
    for rnd in range(rounds):
        order = variants if rnd % 2 == 0 else variants[::-1]
        rows += [one_run(v, args, rnd, nonce) for v in order]

    fields = ("rps", "user_us", "sys_us", "reads", "writes", "redis_us")
    summary = {
        v["name"]: {f: median([r[f] for r in rows if r["variant"] == v["name"]]) for f in fields}
        for v in variants
    }
    ours = summary["ours"]
    table = md_table(
        ["variant", "req/s", "user µs/req", "sys µs/req", "CPU vs ours", "reads/req",
         "writes/req", "redis µs/req", "interpreter / patch"],
        [
            [v["name"], f"{s['rps']:,.0f}", f"{s['user_us']:.1f}", f"{s['sys_us']:.1f}",
             f"{(s['user_us'] + s['sys_us']) / (ours['user_us'] + ours['sys_us']):.2f}x",
             f"{s['reads']:.2f}", f"{s['writes']:.2f}",
             f"{s['redis_us']:.1f}" if v["name"] != "ceiling" else "",
             " ".join(x for x in (
                 v["python"] and f"{v['python']} (speed index {v['speed_index_ms']} ms)",
                 v["patch"] and f"patch {v['patch']}") if x) or "this one"]
            for v in variants
            for s in [summary[v["name"]]]
        ],
    )  # fmt: skip
    runs = md_table(
        ["variant", "round", "req/s", "user µs", "sys µs", "reads", "writes", "redis µs", "errors"],
        [[r["variant"], r["round"], f"{r['rps']:,.0f}", f"{r['user_us']:.1f}",
          f"{r['sys_us']:.1f}", f"{r['reads']:.2f}", f"{r['writes']:.2f}",
          f"{r['redis_us']:.1f}", r["errors"]] for r in rows],
    )  # fmt: skip

    def cpu(name: str, rnd: int) -> float:
        (row,) = [r for r in rows if r["variant"] == name and r["round"] == rnd]
        return float(row["user_us"] + row["sys_us"])

    wins = {
        v["name"]: sum(cpu(v["name"], rnd) < cpu("ours", rnd) for rnd in range(rounds))
        for v in variants
        if v["name"] != "ours"
    }
    body = (
        f"## Medians of {rounds} paired rounds ({args.scenario}, c={args.connections}, "
        f"{args.seconds:g} s each)\n\n{table}\n"
        "Rounds in which a variant used less server CPU per request than ours: "
        + ", ".join(f"{name} {n} of {rounds}" for name, n in wins.items())
        + ".\n\n## Every run\n\n"
        + runs
    )
    directory = out_dir(args)
    name = f"cpu_split_{args.scenario}"
    for v in variants:
        v["code_dir"] = str(v["code_dir"]) if v["code_dir"] else None
    data = {
        "machine": facts,
        "settings": {"scenario": args.scenario, "rounds": rounds, "seconds": args.seconds,
                     "connections": args.connections, "variants": variants},
        "summary": summary,
        "wins": wins,
        "runs": rows,
    }  # fmt: skip
    ceiling = summary["ceiling"]
    report = Target(
        "server CPU per request, ours vs the HTTP ceiling",
        "report",
        f"{ours['user_us'] + ours['sys_us']:.0f} vs "
        f"{ceiling['user_us'] + ceiling['sys_us']:.0f} µs",
        None,
    )
    title = f"CPU per request: {args.scenario}"
    write_results(name, directory, title, data, body, [report], args.quick)
    return data


if __name__ == "__main__":
    main()
