"""``loadtests/run``: the whole peak test in one command (see loadtests/README.md).

Starts a redis-server (free port), the ATP service and the ERP simulator with a generated
catalogue; waits until the simulator's snapshots are applied (it publishes them to the
service's ``POST /v1/events``); stocks the flash-sale SKUs low; turns the simulator's event
storm on (background sales and receipts, published to the service while Locust measures);
runs Locust headless with the chosen shape; turns the storm off; runs the SLO gate (which
waits for the ERP queue to drain); stops everything it started, by PID; exits with the gate's
code (0 PASS, 1 FAIL, 2 the gate's input was unusable; 3 the stack did not come up).

With ``--host URL --key KEY`` it starts nothing and tests that deployed service; the gate
still checks what it can (latency, errors, reservation end states; the ERP checks and the
storm need ``--erp-url`` of a simulator).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # beside this file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PUBLISH_KEY = "loadtest-erp-publisher"


class StackError(Exception):
    """The stack did not come up: exit 3."""


RUN_LOG: list[Path] = []  # where say() also writes, once the output directory exists


def say(text: str) -> None:
    line = f"[run {time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    for path in RUN_LOG:
        with path.open("a") as f:
            f.write(line + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:  # fmt: skip
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


class Procs:
    """Every process this run started, stopped in reverse order by PID."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              log: bool = True) -> subprocess.Popen[bytes]:  # fmt: skip
        out: IO[bytes] | int = open(self.out / f"{name}.log", "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if not isinstance(out, int):
                out.close()
        self.adopt(name, proc)
        return proc

    def adopt(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.started.append((name, proc))
        with (self.out / "pids.txt").open("a") as f:
            f.write(f"{name} {proc.pid}\n")

    def stop_all(self) -> None:
        for name, proc in reversed(self.started):
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                say(f"{name} (pid {proc.pid}) ignored SIGTERM: SIGKILL")
                proc.kill()
                proc.wait(5)
        self.started.clear()


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise StackError(f"{what}: the process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.1)
    raise StackError(f"{what}: not within {timeout:g}s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="loadtests/run",
        description="Start the stack, run a Locust peak shape, gate it on the SLOs, stop.",
        epilog="Arguments after -- go to Locust as they are. Workload options (popularity, "
        "weights, think times, ...) are ATP_LOAD_* variables: see loadtests/README.md.",
    )
    p.add_argument(
        "--shape",
        default=os.environ.get("ATP_SHAPE") or "flash",
        choices=("flash", "ramp", "soak"),
        help="load shape (default %(default)s)",
    )
    p.add_argument("--duration", default="60", help="test length: 60, 90s, 5m (default 60)")
    p.add_argument("--users", type=int, default=300, help="peak users (default %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Locust worker processes (0 = one "
        "process; N = a master and N workers on this machine)",
    )
    p.add_argument(
        "--catalogue",
        default="10000x20",
        help="SKUSxLOCATIONS the simulator "
        "generates (default %(default)s; e.g. 50000x20 for the full size)",
    )
    p.add_argument("--on-hand", type=int, default=100, help="on_hand per key (default 100)")
    p.add_argument(
        "--flash-skus", default="5", help="flash-sale SKUs: a count or a comma list (default 5)"
    )
    p.add_argument(
        "--flash-on-hand",
        type=int,
        default=4,
        help="on_hand per location of a flash-sale SKU, so it sells out (default 4)",
    )
    p.add_argument(
        "--erp-rate",
        type=float,
        default=50.0,
        help="the ERP's calls/s limit = ATP_ERP_RATE (default 50)",
    )
    p.add_argument(
        "--erp-burst",
        type=float,
        default=1.0,
        help="the ERP's token bucket size "
        "(default 1: calls must be evenly spaced, as contract.md s4 says)",
    )
    p.add_argument(
        "--erp-latency-ms", type=float, default=20.0, help="ERP median latency (default 20; p99 4x)"
    )
    p.add_argument(
        "--storm-sales",
        type=float,
        default=200.0,
        help="ERP background sales/s during the test (default 200; 0 = no storm)",
    )
    p.add_argument(
        "--storm-receipts",
        type=float,
        default=20.0,
        help="ERP receipts/s during the test (default 20)",
    )
    p.add_argument(
        "--redis",
        default="spawn",
        help="'spawn' (a redis-server on a free port, "
        "default), 'embedded' (the service's own) or a redis:// URL",
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="extra environment for the service (repeatable)",
    )
    p.add_argument("--slo", default=str(HERE / "slo.toml"), help="budgets file")
    p.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds the gate waits for the ERP queue (default: slo.toml)",
    )
    p.add_argument("--out", help="output directory (default loadtests/out/<timestamp>)")
    p.add_argument("--host", help="test an already deployed service at this URL; start nothing")
    p.add_argument("--key", help="with --host: API key (availability:read, reservations:write)")
    p.add_argument("--erp-url", help="with --host: the ERP simulator's URL (storm, ledger)")
    p.add_argument("locust_args", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.host and not args.key:
        p.error("--host needs --key")
    if args.users < 1 or args.workers < 0:
        p.error("--users >= 1 and --workers >= 0")
    return args


def duration_seconds(raw: str) -> int:
    raw = raw.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(raw[-1:])
    value = float(raw[:-1] if scale else raw) * (scale or 1)
    if value <= 0:
        raise ValueError("duration must be positive")
    return max(1, round(value))


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(args.out) if args.out else HERE / "out" / stamp
        self.out.mkdir(parents=True, exist_ok=True)
        RUN_LOG[:] = [self.out / "run.log"]
        self.procs = Procs(self.out)
        skus, _, locs = args.catalogue.lower().partition("x")
        self.skus, self.n_locations = int(skus), int(locs or 1)
        self.locations = workload.location_names(str(self.n_locations))
        self.groups = workload.location_groups(
            os.environ.get("ATP_LOAD_GROUPS") or "auto", self.locations
        )
        self.flash = workload.flash_skus(args.flash_skus, self.skus)
        self.key = args.key or "loadtest-" + os.urandom(6).hex()
        self.service = args.host.rstrip("/") if args.host else ""
        self.erp = (args.erp_url or "").rstrip("/")
        self.run_id = time.strftime("%d%H%M%S")
        self.duration = duration_seconds(args.duration)
        self.python = sys.executable
        self.scratch = self.out / "state"

    # -- the stack --------------------------------------------------------------------------

    def start_stack(self) -> None:
        args = self.args
        env = {**os.environ, "ATP_HTTP_HOST": "127.0.0.1"}
        if args.redis == "spawn":
            redis_port = free_port()
            redis_dir = self.scratch / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            binary = shutil.which("redis-server")
            if binary is None:
                raise StackError("redis-server is not installed (or use --redis embedded)")
            proc = self.procs.start("redis", [
                binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            ])  # fmt: skip
            wait_for("redis-server", lambda: _pong(redis_port), 15, proc, self.out / "redis.log")
            env["ATP_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            say(f"redis-server pid {proc.pid} on port {redis_port}")
        elif args.redis == "embedded":
            env.pop("ATP_REDIS_URL", None)
            env["ATP_DATA_DIR"] = str(self.scratch / "atp-data")
        else:
            env["ATP_REDIS_URL"] = args.redis
        svc_port, erp_port = free_port(), free_port()
        self.service = f"http://127.0.0.1:{svc_port}"
        self.erp = f"http://127.0.0.1:{erp_port}"
        env.update({
            "ATP_HTTP_PORT": str(svc_port),
            "ATP_API_KEYS": f"{self.key}:availability:read,reservations:write;"
                            f"{PUBLISH_KEY}:events:write",
            "ATP_ERP_URL": self.erp,
            "ATP_ERP_RATE": f"{args.erp_rate:g}",
            "ATP_LOCATION_GROUPS": workload.groups_env(self.groups),
        })  # fmt: skip
        for item in args.service_env:
            name, sep, value = item.partition("=")
            if not sep:
                raise StackError(f"--service-env {item!r}: expected VAR=VALUE")
            env[name] = value
        proc = self.procs.start("service", [self.python, "-m", "atp_service.cli", "serve"], env)
        wait_for("the ATP service", lambda: http("GET", self.service + "/readyz")[0] == 200, 60,
                 proc, self.out / "service.log")  # fmt: skip
        say(f"service pid {proc.pid} at {self.service}")
        started = time.monotonic()
        sim = self.procs.start("erp-sim", [
            self.python, "-m", "atp_service.cli", "erp-sim", "--port", str(erp_port),
            "--rate", f"{args.erp_rate:g}", "--burst", f"{args.erp_burst:g}",
            "--latency-ms", f"{args.erp_latency_ms:g}", "--catalogue", args.catalogue,
            "--on-hand", str(args.on_hand), "--publish-url", self.service,
            "--publish-key", PUBLISH_KEY, "--log-level", "warning",
        ])  # fmt: skip
        keys = self.skus * self.n_locations
        wait_for("the ERP simulator", lambda: http("GET", self.erp + "/healthz")[0] == 200,
                 60 + keys / 10_000, sim, self.out / "erp-sim.log")  # fmt: skip
        say(f"erp-sim pid {sim.pid} at {self.erp} ({self.skus} SKUs x {self.n_locations} "
            f"locations = {keys} keys; rate {args.erp_rate:g}/s)")  # fmt: skip
        if self.flash:
            items = [{"sku": sku, "location": loc, "on_hand": args.flash_on_hand}
                     for sku in self.flash for loc in self.locations]  # fmt: skip
            status, body = http("POST", self.erp + "/admin/stock", {"items": items})
            if status != 200:
                raise StackError(f"flash-sale stock: HTTP {status}: {body}")
        wait_for("the catalogue seed", self._seeded, 120 + keys / 5_000, sim,
                 self.out / "erp-sim.log")  # fmt: skip
        say(
            f"catalogue seeded in {time.monotonic() - started:.1f}s; flash-sale SKUs "
            f"{', '.join(self.flash) or 'none'} at {args.flash_on_hand}/location"
        )

    def _seeded(self) -> bool:
        status, body = http("GET", self.erp + "/admin/status")
        sink = body["sinks"][0]
        if status != 200 or sink["queued"] or sink["delivered"] < body["counts"]["events"]:
            return False
        auth = {"Authorization": f"Bearer {self.key}"}
        last = workload.sku_name(self.skus, self.skus)
        if http("GET", f"{self.service}/v1/availability/{last}", headers=auth)[0] != 200:
            return False
        if self.flash:
            status, view = http("GET", f"{self.service}/v1/availability/{self.flash[0]}",
                                headers=auth)  # fmt: skip
            expected = self.args.flash_on_hand * self.n_locations
            return status == 200 and view["total_atp"] == expected
        return True

    def storm(self, on: bool) -> None:
        if not self.erp or (self.args.storm_sales <= 0 and self.args.storm_receipts <= 0):
            return
        body = {"sales_rate": self.args.storm_sales if on else 0,
                "receipts_rate": self.args.storm_receipts if on else 0}  # fmt: skip
        status, reply = http("POST", self.erp + "/admin/storm", body)
        if status != 200:
            say(f"storm {'on' if on else 'off'}: HTTP {status}: {reply}")
        else:
            say(f"ERP event storm {'on: ' + json.dumps(reply) if on else 'off'}")

    # -- Locust -----------------------------------------------------------------------------

    def locust(self) -> int:
        args = self.args
        binary = Path(self.python).parent / "locust"
        locust = str(binary) if binary.exists() else shutil.which("locust") or "locust"
        env = {
            **os.environ,
            "ATP_LOAD_KEY": self.key,
            "ATP_LOAD_SKUS": str(self.skus),
            "ATP_LOAD_LOCATIONS": ",".join(self.locations),
            "ATP_LOAD_GROUPS": workload.groups_env(self.groups) or "none",
            "ATP_LOAD_FLASH_SKUS": ",".join(self.flash),
            "ATP_LOAD_RESERVATION_LOG": str(self.out / "reservations"),
            "ATP_LOAD_RUN_ID": self.run_id,
            "PYTHONUNBUFFERED": "1",
        }
        files = f"{HERE / 'locustfile.py'},{HERE / 'shapes.py'}"
        common = [locust, "-f", files, "--host", self.service]
        main = [*common, "--headless", "--shape", args.shape, "--users", str(args.users),
                "--run-time", f"{self.duration}s", "--csv", str(self.out / "locust"),
                "--html", str(self.out / "report.html"), "--only-summary",
                *args.locust_args]  # fmt: skip
        workers: list[subprocess.Popen[bytes]] = []
        if args.workers:
            port = free_port()
            main += ["--master", "--master-bind-port", str(port),
                     "--expect-workers", str(args.workers)]  # fmt: skip
            for n in range(args.workers):
                argv = [*common, "--worker", "--master-port", str(port)]
                workers.append(self.procs.start(f"locust-worker-{n}", argv, env))
        (self.out / "run.json").write_text(json.dumps({
            "args": vars(args), "service": self.service, "erp": self.erp, "locust": main,
            "groups": self.groups, "flash_skus": self.flash, "run_id": self.run_id,
        }, indent=2, default=str))  # fmt: skip
        say(
            f"locust: {args.shape} shape, {args.users} users, {self.duration}s"
            + (f", {args.workers} workers" if args.workers else "")
        )
        proc = subprocess.Popen(main, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.adopt("locust", proc)
        with open(self.out / "locust.log", "ab") as log:
            pump = threading.Thread(target=_tee, args=(proc.stdout, log), daemon=True)
            pump.start()
            code = proc.wait()
            pump.join(10)
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.terminate()
        return code

    # -- the gate ---------------------------------------------------------------------------

    def gate(self) -> int:
        argv = [self.python, str(HERE / "slo_gate.py"), "--csv", str(self.out / "locust"),
                "--slo", self.args.slo, "--reservations", str(self.out / "reservations.*.jsonl"),
                "--service", self.service, "--key", self.key]  # fmt: skip
        if self.erp:
            argv += ["--erp", self.erp, "--save-ledger", str(self.out / "erp-ledger.json"),
                     "--erp-rate", f"{self.args.erp_rate:g}"]  # fmt: skip
        if self.args.drain_timeout is not None:
            argv += ["--drain-timeout", f"{self.args.drain_timeout:g}"]
        say("SLO gate (waits for the ERP queue to drain)")
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.adopt("slo-gate", proc)
        with open(self.out / "gate.txt", "ab") as log:
            _tee(proc.stdout, log)
        return proc.wait()

    def snapshot(self) -> None:
        """Keep the service's metrics and the simulator's status with the report."""
        if self.service:
            try:
                with urllib.request.urlopen(self.service + "/metrics", timeout=10) as resp:
                    (self.out / "service-metrics.txt").write_bytes(resp.read())
            except OSError as exc:
                say(f"service /metrics: {exc}")
        if self.erp:
            try:
                _, body = http("GET", self.erp + "/admin/status")
                (self.out / "erp-status.json").write_text(json.dumps(body, indent=2))
                _, calls = http("GET", self.erp + "/admin/calls", timeout=60)
                (self.out / "erp-calls.json").write_text(json.dumps(calls))
                self._rejections()
            except OSError as exc:
                say(f"erp /admin/status: {exc}")

    def _rejections(self) -> None:
        """For each reservation the ERP refused: the history of its keys, at the ERP and in
        the service, to tell a race with the ERP's own sales from a service fault."""
        path = self.out / "erp-ledger.json"
        if not path.exists():
            return
        book = json.loads(path.read_text())
        refused = {rid: r for rid, r in book.get("reservations", {}).items()
                   if r.get("status") == "rejected"}  # fmt: skip
        if not refused:
            return
        auth = {"Authorization": f"Bearer {self.key}"}
        keys = {(line["sku"], line["location"]) for r in refused.values() for line in r["lines"]}
        history = {}
        for sku, loc in sorted(keys)[:50]:
            _, events = http("GET", f"{self.erp}/admin/events?sku={sku}&location={loc}&limit=500")
            _, view = http("GET", f"{self.service}/v1/availability/{sku}?location={loc}",
                           headers=auth)  # fmt: skip
            history[f"{sku}|{loc}"] = {"erp_events": events.get("events", []), "service": view}
        (self.out / "erp-rejections.json").write_text(
            json.dumps({"reservations": refused, "keys": history}, indent=2)
        )
        say(f"{len(refused)} reservations refused by the ERP: see erp-rejections.json")

    def main(self) -> int:
        say(f"output in {self.out}")
        if not self.args.host:
            self.start_stack()
        else:
            say(f"testing the deployed service at {self.service} (starting nothing)")
        self.storm(True)
        try:
            code = self.locust()
        finally:
            self.storm(False)
        if not (self.out / "locust_stats.csv").exists():
            raise StackError(f"locust exited with {code} and wrote no stats")
        gate = self.gate()
        self.snapshot()
        say(f"report: {self.out / 'report.html'}")
        say(f"SLO gate exit code {gate}")
        return gate


def _pong(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def _tee(stream: IO[bytes] | None, log: IO[bytes]) -> None:
    if stream is None:
        return
    for line in stream:
        log.write(line)
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args)

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        return run.main()
    except StackError as exc:
        say(f"error: {exc}")
        return 3
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        run.procs.stop_all()
        shutil.rmtree(run.scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
