"""``atp-service``: the command line (serve, erp-sim, and the operator commands of
:mod:`atp_service.ops_cli`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

import uvloop
from aiohttp import web

from . import keytool, loader, ops_cli
from .app import create_app
from .config import ConfigError, Settings
from .embedded import EmbeddedRedisError
from .erpsim import config as erpsim_config
from .erpsim import launch as erpsim_launch
from .http.server import ProblemRunner
from .logs import setup_logging

log = logging.getLogger("atp.cli")


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context from ATP_TLS_CERT / ATP_TLS_KEY (TLS 1.2 and up, the
    standard library's server defaults), or None for plain HTTP."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def _serve(settings: Settings, tls: ssl.SSLContext | None = None) -> None:
    app = create_app(settings)
    runner = ProblemRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.http_host, settings.http_port, backlog=1024, ssl_context=tls
    )
    await site.start()
    addr = runner.addresses[0] if runner.addresses else (settings.http_host, settings.http_port)
    scheme = "https" if tls is not None else "http"
    log.info("atp-service listening on %s://%s:%s", scheme, addr[0], addr[1])
    if settings.dev_key:
        print(f"dev API key (all scopes; set ATP_API_KEYS in production): {settings.dev_key}",
              file=sys.stderr, flush=True)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atp-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API (settings from ATP_* variables)")
    erp_sim = sub.add_parser(
        "erp-sim",
        help="run a simulated ERP (options also as ERPSIM_* variables)",
        description="A simulated ERP: the reservation API, stock ledger and inventory events.",
    )
    erpsim_config.add_arguments(erp_sim)
    ops_cli.add_commands(sub)
    hash_key = sub.add_parser(
        "hash-key",
        help="make an ATP_API_KEYS entry that stores only the SHA-256 of a secret",
        description=keytool.DESCRIPTION,
    )
    keytool.add_arguments(hash_key)
    load = sub.add_parser(
        "load",
        help="bulk-load events (.jsonl) or snapshots (.csv) into a running service",
        description="Sends the file to POST /v1/events in batches, with a progress bar; safe "
        "to re-run (events apply once by (sku, location, seq)). CSV header: sku, location, "
        "on_hand, seq [, allocated, safety_stock, occurred_at, event_id]. Exit status: 0 all "
        "taken, 3 some rows refused (listed), 1 the load could not finish.",
    )
    loader.add_arguments(load)
    args = parser.parse_args(argv)
    if args.command == "erp-sim":
        return erpsim_launch.main(args)
    if args.command == "hash-key":
        return keytool.main(args)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"atp-service: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.command in ops_cli.COMMANDS:
        return ops_cli.main(args, settings)
    if args.command == "load":
        return loader.main(args, settings)
    if args.command == "serve":
        try:
            tls = _tls_context(settings)
        except (ssl.SSLError, OSError) as exc:
            print(f"atp-service: configuration error: ATP_TLS_CERT/ATP_TLS_KEY: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            uvloop.run(_serve(settings, tls))
        except EmbeddedRedisError as exc:  # its data directory taken, no redis-server, ...
            print(f"atp-service: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
