"""A simulated ERP for demos, load tests and tests: ``atp-service erp-sim``.

It plays the ERP of contract.md: the reservation API the service calls (s4) behind a token
bucket, with lognormal latency and faults switchable at run time, a stock ledger that never
oversells, and the inventory events (s3) every stock change produces, kept in memory and
optionally posted to the service's ``/v1/events`` or produced to Kafka.

Modules: ``ledger`` (pure stock and reservations), ``ratelimit`` (token bucket), ``faults``
(faults and latency), ``events`` (event building, in-memory log), ``calls`` (call log),
``activity`` (background sales and receipts), ``catalogue`` (starting stock), ``schema``
(body decoding), ``publisher`` (HTTP and Kafka sinks), ``simulator`` (wiring), ``server``
(ERP endpoints, app factory), ``admin`` (``/admin``), ``config`` and ``launch`` (the command).
"""

from __future__ import annotations

from .config import SimConfig, SimConfigError
from .server import create_sim_app

__all__ = ["SimConfig", "SimConfigError", "create_sim_app"]
