"""Shared helpers: machine facts, processes (redis-server, our service, baselines), wrk runs,
/metrics parsing and result files.

Every process is started here on a free port (never 6379 or 8080), optionally pinned to a
core with ``taskset``, and stopped when the :class:`Procs` context exits, even on error.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
RESULTS_DIR = BENCH_DIR / "results"
QUICK_DIR = RESULTS_DIR / "tmp" / "quick"
FORBIDDEN_PORTS = {6379, 8080}
TOKEN = "bench-" + secrets.token_hex(8)
API_KEYS = f"{TOKEN}:*"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------------------------------------
# Code under test: the working tree, or a git ref exported to a temporary directory (the
# working tree may be mid-edit while a benchmark runs; a ref gives one consistent version).

CODE: dict[str, Any] = {"dir": None, "desc": "working tree"}


def use_ref(ref: str | None, code_dir: Path | None = None) -> None:
    """Run ``atp_service`` from ``git archive <ref>`` (or from ``code_dir``, a directory holding
    an ``atp_service`` package, e.g. a patched copy) instead of the working tree."""
    if CODE["dir"] is not None:
        return
    if code_dir is not None:
        if not (code_dir / "atp_service" / "__init__.py").exists():
            raise SystemExit(f"{code_dir} holds no atp_service package")
        CODE["dir"] = code_dir.resolve()
        CODE["desc"] = f"source tree {CODE['dir']}"
        log(f"benchmarking atp_service from {CODE['desc']}")
        return
    if not ref:
        return
    dest, desc = export_ref(ref)
    CODE["dir"] = dest
    CODE["desc"] = desc
    log(f"benchmarking atp_service from {CODE['desc']} exported to {dest}")


def export_ref(ref: str) -> tuple[Path, str]:
    """``atp_service`` as of git ``ref``, extracted to a temporary directory (removed at
    exit): (directory, description)."""
    sha = _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", ref])
    dest = Path(tempfile.mkdtemp(prefix="atp-bench-src-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "atp_service"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    atexit.register(shutil.rmtree, dest, True)
    return dest, f"git {ref} ({sha})"


def code_env(code_dir: Path | None = None) -> tuple[dict[str, str], Path]:
    """(env, cwd) for a child that imports atp_service (and maybe benchmarks): from
    ``code_dir`` if given, else from what :func:`use_ref` chose."""
    directory = code_dir or CODE["dir"]
    if directory is None:
        return {}, ROOT
    path = f"{directory}{os.pathsep}{ROOT}"
    return {"PYTHONPATH": path}, Path(directory)


# ---------------------------------------------------------------------------------------------
# CLI, machine facts, results


def base_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: short durations, 1 repeat, output under results/tmp/quick",
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration")
    parser.add_argument("--out", type=Path, default=None, help="directory for the result files")
    parser.add_argument("--server-cpu", default=None, help="core(s) for the server (taskset -c)")
    parser.add_argument(
        "--client-cpu", default=None, help="core(s) for wrk and redis-server (taskset -c)"
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="benchmark atp_service as of this git ref (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--code-dir",
        type=Path,
        default=None,
        help="benchmark the atp_service package found in this directory (e.g. a patched copy)",
    )
    return parser


def out_dir(args: argparse.Namespace) -> Path:
    path: Path = args.out or (QUICK_DIR if args.quick else RESULTS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpus(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(server cores, client cores); no pinning on a one-core machine."""
    avail = sorted(os.sched_getaffinity(0))
    if len(avail) < 2:
        return args.server_cpu, args.client_cpu
    return (args.server_cpu or str(avail[0]), args.client_cpu or str(avail[1]))


def command_line() -> str:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


def _run_text(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout + out.stderr).strip()


def _libpython_shared() -> bool:
    """Whether this interpreter runs from a shared libpython (pyenv's builds, the official
    Docker images) rather than one static executable (Debian's and Ubuntu's ``python3``)."""
    with open("/proc/self/maps") as f:
        return "libpython" in f.read()


def python_speed_ms(rounds: int = 5) -> float:
    """Milliseconds (best of ``rounds``) this interpreter takes for a fixed pure-Python load
    shaped like a request's work: JSON in and out, dict and str building, a %-format, a
    SHA-256. The services under test run on the same interpreter, so this tells how fast it
    is: pyenv's default build (no PGO or LTO, shared libpython) took 29% longer than Debian's
    python3.11 (static, PGO) on one host. How much of that reaches our service could not be
    shown there (README, Deploying)."""
    import hashlib

    import orjson

    body = {"reservation_id": "r-1", "priority": "checkout",
            "lines": [{"sku": "S-1", "location": "L", "qty": 1}]}  # fmt: skip

    def load() -> None:
        for i in range(20_000):
            x = orjson.loads(orjson.dumps(body))
            hashlib.sha256(f"{x['reservation_id']}|{i}".encode()).hexdigest()
            copy = {k: v for k, v in x.items()}
            copy["tag"] = b"%b-%d" % (b"a", i)
            tuple(copy)

    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        load()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def interpreter_speed_ms(python: str) -> float:
    """:func:`python_speed_ms` of another interpreter (which has orjson installed)."""
    code = "from benchmarks.common import python_speed_ms; print(python_speed_ms())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    return float(out.stdout.strip())


def machine_facts() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for mod in ("aiohttp", "uvloop", "orjson", "msgspec", "redis", "numpy", "hiredis"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    git = _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = bool(_run_text(["git", "-C", str(ROOT), "status", "--porcelain", "atp_service"]))
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "python_executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "libpython_shared": _libpython_shared(),
        "python_speed_ms": python_speed_ms(),
        "wrk": _run_text(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else None,
        "redis_server": _run_text(["redis-server", "--version"]),
        "packages": versions,
        "git_commit": git + ("-dirty(atp_service)" if dirty else ""),
        "code_under_test": CODE["desc"]
        if CODE["dir"]
        else "working tree" + (" (atp_service has uncommitted changes)" if dirty else ""),
        "loadavg_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def machine_md(facts: dict[str, Any]) -> str:
    pk = facts["packages"]
    return (
        f"- Machine: {facts['nproc']} CPUs ({facts['cpu_model']}), {facts['mem_gib']} GiB, "
        f"Linux {facts['kernel']}, load avg at start "
        f"{', '.join(f'{x:.2f}' for x in facts['loadavg_at_start'])}\n"
        f"- Python {facts['python']} ({facts.get('python_executable', '?')}"
        f"{', shared libpython' if facts.get('libpython_shared') else ''}; speed index "
        f"{facts.get('python_speed_ms', '?')} ms, lower is faster); "
        f"aiohttp {pk['aiohttp']}, uvloop {pk['uvloop']}, "
        f"orjson {pk['orjson']}, msgspec {pk.get('msgspec')}, redis-py {pk['redis']}, "
        f"hiredis {pk['hiredis']}, "
        f"numpy {pk['numpy']}\n"
        f"- {facts['wrk']}; {facts['redis_server'].split(' sha=')[0]}\n"
        f"- Commit {facts['git_commit']}; code under test: {facts['code_under_test']}; "
        f"{facts['date_utc']}\n"
    )


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    ok: bool | None  # None: not measurable in this run

    def row(self) -> list[str]:
        verdict = "n/a" if self.ok is None else ("PASS" if self.ok else "**FAIL**")
        return [self.name, self.goal, self.measured, verdict]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "goal": self.goal, "measured": self.measured, "pass": self.ok}


def targets_md(targets: Sequence[Target]) -> str:
    return md_table(["Target", "Goal", "Measured", "Result"], [t.row() for t in targets])


def write_results(
    name: str,
    directory: Path,
    title: str,
    data: dict[str, Any],
    body_md: str,
    targets: Sequence[Target],
    quick: bool,
) -> tuple[Path, Path]:
    data = {
        "benchmark": name,
        "quick": quick,
        "command": command_line(),
        "cwd": os.getcwd(),
        **data,
        "targets": [t.as_json() for t in targets],
    }
    jpath = directory / f"{name}.json"
    jpath.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = [f"# {title}\n"]
    if quick:
        md.append("\n**Quick smoke run (short, 1 repeat): figures are not meaningful.**\n")
    md.append(f"\nCommand: `{data['command']}`\n\n")
    md.append(machine_md(data["machine"]))
    md.append("\n## Targets\n\n" + targets_md(targets))
    md.append("\n" + body_md)
    mpath = directory / f"{name}.md"
    mpath.write_text("".join(md))
    print(f"wrote {jpath} and {mpath}", flush=True)
    return jpath, mpath


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def spread(values: Sequence[float]) -> str:
    """min..max of repeats, for the tables."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return ""
    return f"{min(vals):,.0f}..{max(vals):,.0f}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in FORBIDDEN_PORTS:
            return port


def pinned(cmd: Sequence[str], cpu: str | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", cpu, *cmd]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s (last error: {last!r})")


def alive_and(proc: Proc, probe: Callable[[], bool]) -> Callable[[], bool]:
    """A wait_until predicate: raises at once if ``proc`` died, else ``probe()``."""

    def predicate() -> bool:
        proc.check()
        return probe()

    return predicate


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int | None = None
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text()[-2000:] if self.log and self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}\n{tail}")

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (seconds)."""
    return sum(cpu_times(pid))


def proc_status_kb(pid: int | str, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


class Procs:
    """Starts processes and stops every one of them (in reverse order) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.started:
            self.started.remove(proc)

    def spawn(
        self,
        name: str,
        cmd: Sequence[str],
        env: dict[str, str] | None = None,
        cpu: str | None = None,
        port: int | None = None,
        cwd: Path = ROOT,
    ) -> Proc:
        logpath = self.workdir / f"{name}.log"
        out = open(logpath, "ab")  # noqa: SIM115 - handed to the child
        try:
            popen = subprocess.Popen(
                pinned(cmd, cpu),
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=out,
                cwd=cwd,
            )
        finally:
            out.close()
        proc = Proc(name, popen, port, logpath)
        self.started.append(proc)
        return proc

    def redis(
        self, name: str = "redis", cpu: str | None = None, aof: bool = True, rewrite: bool = True
    ) -> RedisProc:
        """``rewrite=False``: no automatic AOF rewrite (``auto-aof-rewrite-percentage 0``), as
        on a Redis whose rewrites are kept out of the peak window (docs/scaling.md)."""
        port = free_port()
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(d),
            "--appendonly",
            "yes" if aof else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(d / "redis.log"),
            *(() if rewrite else ("--auto-aof-rewrite-percentage", "0")),
        ]
        proc = self.spawn(name, cmd, cpu=cpu, port=port)
        rp = RedisProc(proc, port)
        wait_until(alive_and(proc, rp.ping), 10)
        return rp

    def service(
        self,
        redis_url: str,
        name: str = "service",
        cpu: str | None = None,
        wait_ready: bool = True,
        extra_env: dict[str, str] | None = None,
        code_dir: Path | None = None,
        python: str | None = None,
    ) -> Proc:
        """``python``: the interpreter to run it on (default: this one); it needs the
        service's dependencies installed."""
        port = free_port()
        env = {
            "ATP_REDIS_URL": redis_url,
            "ATP_HTTP_PORT": str(port),
            "ATP_API_KEYS": API_KEYS,
            "ATP_LOG_LEVEL": "info",
            **(extra_env or {}),
        }
        code, cwd = code_env(code_dir)
        cmd = [python or sys.executable, "-m", "atp_service.cli", "serve"]
        proc = self.spawn(name, cmd, env={**env, **code}, cpu=cpu, port=port, cwd=cwd)
        if wait_ready:
            wait_ready_http(proc, 60)
        return proc

    def python_server(
        self, name: str, module: str, args: Sequence[str], cpu: str | None = None
    ) -> Proc:
        port = free_port()
        proc = self.spawn(
            name, [sys.executable, "-m", module, "--port", str(port), *args], cpu=cpu, port=port
        )
        wait_until(alive_and(proc, lambda: http_status(url(proc, "/healthz")) == 200), 30)
        return proc


@dataclass
class RedisProc:
    proc: Proc
    port: int
    db: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")


def url(proc: Proc, path: str) -> str:
    return f"http://127.0.0.1:{proc.port}{path}"


def http_status(address: str, timeout: float = 2) -> int:
    try:
        with urllib.request.urlopen(address, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def http_json(
    method: str,
    address: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(address, data=data, method=method)
    for k, v in {**AUTH, **(headers or {})}.items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_ready_http(proc: Proc, timeout: float) -> None:
    wait_until(alive_and(proc, lambda: http_status(url(proc, "/readyz")) == 200), timeout)


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"atp-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    rps: float
    requests: int
    duration_s: float
    p50_us: float
    p75_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float
    errors: dict[str, int]
    bytes_per_response: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def lua_script(name: str, directory: Path, *more: str) -> Path:
    """benchmarks/lua/<name>.lua (then each of ``more``, e.g. ``spread``) + the shared report
    hook, as one file for wrk."""
    path = directory / f"wrk-{'-'.join((name, *more))}.lua"
    parts = [(LUA_DIR / f"{n}.lua").read_text() for n in (name, *more, "report")]
    path.write_text("\n".join(parts))
    return path


def run_wrk(
    address: str,
    script: Path,
    script_args: Sequence[str],
    connections: int,
    duration: float,
    cpu: str | None,
    threads: int = 1,
    timeout_s: int = 5,
    watch: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> WrkResult:
    """One wrk run; ``watch`` = {name: pid}: CPU µs per response of those processes go into
    ``extra`` as ``cpu_us_per_req_<name>`` (a load-independent cost measure), and wrk's own
    as ``cpu_us_per_req_wrk``. ``env``: extra environment for wrk (e.g. ``WRK_PORTS``)."""
    cpu0 = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
    threads = max(1, min(threads, connections))
    cmd = pinned(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "--timeout",
            f"{timeout_s}s",
            "-s",
            str(script),
            address,
            "--",
            *script_args,
        ],
        cpu,
    )
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    secs = r["duration_us"] / 1e6
    n = r["requests"]
    extra = {
        f"cpu_us_per_req_{name}": (cpu_seconds(pid) - cpu0[name]) * 1e6 / n if n else None
        for name, pid in (watch or {}).items()
    }
    extra["cpu_us_per_req_wrk"] = wrk_cpu * 1e6 / n if n else None
    return WrkResult(
        rps=n / secs if secs else 0.0,
        requests=n,
        duration_s=secs,
        p50_us=r["p50"],
        p75_us=r["p75"],
        p90_us=r["p90"],
        p99_us=r["p99"],
        p999_us=r["p999"],
        max_us=r["lat_max"],
        mean_us=r["lat_mean"],
        errors={
            k: r[k]
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        },
        bytes_per_response=r["bytes"] / n if n else 0.0,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# /metrics: the atp_http_handle_seconds histogram

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape_histogram(
    metrics_url: str, route: str, name: str = "atp_http_handle_seconds"
) -> dict[str, Any]:
    """{'buckets': [(le, cumulative)], 'count': n, 'sum': s} for one route."""
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        text = r.read().decode()
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        if labels.get("route") != route:
            continue
        value = float(m["value"])
        if m["name"] == name + "_bucket":
            buckets.append((float(labels["le"]), value))
        elif m["name"] == name + "_count":
            count = value
        elif m["name"] == name + "_sum":
            total = value
    buckets.sort()
    return {"buckets": buckets, "count": count, "sum": total}


def histogram_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    old = dict(before["buckets"])
    return {
        "buckets": [(le, c - old.get(le, 0.0)) for le, c in after["buckets"]],
        "count": after["count"] - before["count"],
        "sum": after["sum"] - before["sum"],
    }


def histogram_add(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    if a is None:
        return b
    other = dict(b["buckets"])
    return {
        "buckets": [(le, c + other.get(le, 0.0)) for le, c in a["buckets"]],
        "count": a["count"] + b["count"],
        "sum": a["sum"] + b["sum"],
    }


def histogram_quantile_bound(hist: dict[str, Any], q: float) -> float:
    """Upper bound (seconds) of the bucket holding the q-quantile, from cumulative counts."""
    total = hist["count"]
    if not total:
        return float("nan")
    for le, cumulative in hist["buckets"]:
        if cumulative >= q * total:
            return float(le)
    return float("inf")


def fmt_us(seconds_or_us: float, unit: str = "us") -> str:
    us = seconds_or_us * 1e6 if unit == "s" else seconds_or_us
    if us != us:  # nan
        return "n/a"
    if us == float("inf"):
        return "inf"
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    if us >= 1000:
        return f"{us / 1000:,.2f} ms"
    return f"{us:,.0f} µs"


def scrape_samples(
    metrics_url: str, name: str, timeout: float = 5
) -> list[tuple[dict[str, str], float]]:
    """Every sample of one metric (exact name, e.g. ``atp_events_total``): (labels, value)."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as r:
        return parse_samples(r.read().decode(), name)


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of one metric in a Prometheus text page: (labels, value)."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = _SAMPLE.match(line)
        if m and m["name"] == name:
            found.append((dict(_LABEL.findall(m["labels"] or "")), float(m["value"])))
    return found


def scrape_value(metrics_url: str, name: str, **labels: str) -> float:
    """The value of one sample (0.0 if absent), matched on the given labels."""
    return sum(
        v
        for got, v in scrape_samples(metrics_url, name)
        if all(got.get(k) == want for k, want in labels.items())
    )


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib: the ``bench`` extra)

BENCH_EXTRA_HINT = (
    "matplotlib is missing: the benchmarks draw their plots with it. Install the bench extra: "
    ".venv/bin/pip install -e '.[bench]'"
)


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` with the file-only Agg backend; exits with a clear message when
    matplotlib is not installed. Called at the start of a benchmark, before any process runs,
    so a missing extra costs seconds, not a whole run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(BENCH_EXTRA_HINT) from None
    return plt
