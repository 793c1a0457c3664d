"""Fault tests: the ``slow`` ones are skipped unless a ``-m`` expression selects them
(``-m slow`` for those alone, ``-m 'slow or not slow'`` for the full set), and every test can
record what its fault did into the report written when ``ATP_FAULT_REPORT`` is set."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .report import FaultRecord, write

REPORT_ENV = "ATP_FAULT_REPORT"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr"):
        return  # the caller chose what runs
    skip = pytest.mark.skip(reason="slow fault test: run with -m slow or -m 'slow or not slow'")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        for record in item.stash.get(_RECORDS_KEY, []):
            record.outcome = report.outcome


_RECORDS_KEY = pytest.StashKey[list[FaultRecord]]()


@pytest.fixture(scope="session")
def _fault_records() -> Iterator[list[FaultRecord]]:
    records: list[FaultRecord] = []
    started = time.monotonic()
    yield records
    target = os.environ.get(REPORT_ENV)
    if target and records:
        write(Path(target), records, time.monotonic() - started)


@pytest.fixture
def fault_report(
    request: pytest.FixtureRequest, _fault_records: list[FaultRecord]
) -> Callable[[str], FaultRecord]:
    """``rec = fault_report("what the fault is")``: a record for this test's fault."""

    def make(fault: str) -> FaultRecord:
        record = FaultRecord(request.node.nodeid, fault)
        _fault_records.append(record)
        request.node.stash.setdefault(_RECORDS_KEY, []).append(record)
        return record

    return make
