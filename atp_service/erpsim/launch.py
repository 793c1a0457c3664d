"""Running the simulator as a process: ``atp-service erp-sim`` (uvloop, signals, logs)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from ..logs import setup_logging
from .config import SimConfig, SimConfigError, from_args
from .replies import SIM
from .schema import BadBody
from .server import create_sim_app

log = logging.getLogger("atp.erpsim")


def main(args: argparse.Namespace) -> int:
    """Run until SIGINT / SIGTERM; 2 on a configuration or seed-data error."""
    try:
        config = from_args(args)
    except SimConfigError as exc:
        print(f"atp-service erp-sim: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    try:
        uvloop.run(serve(config))
    except (BadBody, SimConfigError) as exc:
        print(f"atp-service erp-sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"atp-service erp-sim: cannot listen on {config.host}:{config.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


async def serve(config: SimConfig) -> None:
    app = create_sim_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2] if runner.addresses else (config.host, config.port)
        sim = app[SIM]
        log.info(
            "erp-sim listening on http://%s:%s (rate %g/s, burst %g, %d keys, events to %s)",
            host, port, config.rate, config.burst, len(sim.ledger.stock),
            ", ".join(s.target for s in sim.sinks) or "memory only",
        )  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("erp-sim shutting down")
    finally:
        await runner.cleanup()
