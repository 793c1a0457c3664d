"""The operator commands (atp_service/ops_cli.py) through ``atp-service``'s own argument parser:
status against real replicas (two of them count each other by heartbeat; a frozen Redis makes
the answer ``degraded``, not late), inspect and reservations against a real Redis, and
replay-dlq against a real Kafka-protocol broker."""

from __future__ import annotations

import io
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from atp_service import cli, keys, ops_cli
from atp_service.config import Settings

from .kafka import Broker
from .procs import ADMIN, KEYS, RedisProc, ServiceProc, adjustment, snapshot
from .test_feed import TOPIC


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "setup_logging", lambda level: None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cells(line: str) -> list[str]:
    """A table row's cells (columns are two or more spaces apart; a cell may hold one)."""
    return re.split(r"\s{2,}", line.strip())


def post(url: str, path: str, body: Any, headers: dict[str, str] = ADMIN) -> Any:
    request = urllib.request.Request(
        url + path, data=orjson.dumps(body), method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        return orjson.loads(r.read())


# -- helpers ----------------------------------------------------------------------------------


def test_table_aligns_numbers_right_and_text_left() -> None:
    text = ops_cli.table(["NAME", "QTY", "AGE"], [["a", 5, "1.0 s"], ["bbbb", 120, "12 s"]])
    assert text.splitlines() == [
        "NAME  QTY    AGE",
        "a       5  1.0 s",
        "bbbb  120   12 s",
    ]
    assert ops_cli.table(["A"], []) == "A"
    assert ops_cli.table(["X", "Y"], [[None, True]]) == "X  Y\n-  yes"


@pytest.mark.parametrize(
    "text, secs", [("90", 90), ("60s", 60), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5m", 90)]
)
def test_durations(text: str, secs: float) -> None:
    assert ops_cli.duration(text) == secs


def test_progress_bar() -> None:
    stream = io.StringIO()
    bar = ops_cli.Progress(4, "reading", stream, width=8)
    for _ in range(4):
        bar.advance()
    bar.close()
    assert stream.getvalue().rstrip().endswith("reading [########] 100% 4/4")


# -- status -----------------------------------------------------------------------------------


def test_status_of_two_replicas(
    services: Callable[..., ServiceProc], capsys: pytest.CaptureFixture[str]
) -> None:
    a = services()
    services()
    post(
        a.url, "/v1/events", {"events": [snapshot("S1", "DC1", 1, 10), snapshot("S1", "ST1", 1, 3)]}
    )
    deadline = time.monotonic() + 10
    while True:
        code, out, err = run(capsys, "status", "--url", a.url, "--key", "test-read")
        if "Replicas seen (last 10 s): 2" in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 0, err
    assert out.startswith("Service OK"), out
    assert "Replicas seen (last 10 s): 2" in out
    assert "FEED  not configured" in out and "ERP  mode standalone" in out
    lines = out.splitlines()
    cache = lines[lines.index(next(x for x in lines if x.startswith("CACHE"))) + 1]
    assert cache.split()[:4] == ["this", "replica", "2", "yes"], cache
    assert any(x.split() == ["EAST", "DC1,", "ST1"] for x in lines), out
    assert any(x.split()[:3] == ["checkout", "0", "0.0"] for x in lines), out


def test_status_refused_and_unreachable(
    services: Callable[..., ServiceProc], capsys: pytest.CaptureFixture[str]
) -> None:
    svc = services()
    code, out, err = run(capsys, "status", "--url", svc.url, "--key", "wrong")
    assert code == 1 and out == ""
    assert "answered 401 (Missing or unknown API key: unknown API key)" in err
    code, _, err = run(capsys, "status", "--url", svc.url, "--key", "test-events")
    assert code == 1 and "answered 403" in err
    code, _, err = run(capsys, "status", "--url", "http://127.0.0.1:1", "--key", "k")
    assert code == 1 and "cannot reach http://127.0.0.1:1" in err


def test_status_with_redis_frozen_is_degraded_not_late(
    services: Callable[..., ServiceProc], redis_proc: RedisProc,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    svc = services()
    redis_proc.pause()
    try:
        time.sleep(2.5)  # past ATP_STALE_AFTER: the tailer has not read for a while
        started = time.monotonic()
        code, out, err = run(capsys, "status", "--url", svc.url, "--key", "test-read")
        took = time.monotonic() - started
    finally:
        redis_proc.resume()
    assert code == 3, (out, err)
    assert out.startswith("Service DEGRADED"), out
    assert "! Redis did not answer within 0.5 s" in out
    assert "Replicas seen (last 10 s): unknown" in out and "queues unknown" in out
    assert took < 2.0, took


# -- inspect and reservations -----------------------------------------------------------------


def test_inspect_a_key(
    redis_proc: RedisProc, services: Callable[..., ServiceProc],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    svc = services()
    events = [snapshot("S1", "DC1", 1, 100, 5, 2), adjustment("S1", "DC1", 2, -3),
              adjustment("S1", "DC1", 5, -1), snapshot("S1", "ST1", 1, 4)]  # fmt: skip
    assert post(svc.url, "/v1/events", {"events": events})["buffered"] == 1  # seq 5: a gap
    res = {"reservation_id": "o-1", "priority": "checkout",
           "lines": [{"sku": "S1", "location": "DC1", "qty": 2}]}  # fmt: skip
    assert post(svc.url, "/v1/reservations", res)["status"] == "confirmed"
    # a settlement line as the ERP gateway writes it (member format: keys.SETTLE)
    redis = ops_cli.redis.Redis.from_url(redis_proc.url)
    redis.zadd(keys.SETTLE, {b"S1|DC1\x00" + b"%016d" % 7 + b"\x00o-1\x002": 0})
    monkeypatch.setenv("ATP_REDIS_URL", redis_proc.url)

    code, out, err = run(capsys, "inspect", "S1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "ATP", "ON_HAND", "ALLOCATED", "SAFETY", "PENDING", "SEQ",
                                "VER", "FLAGS", "UPDATED", "(UTC)"]  # fmt: skip
    dc1 = lines[1].split()
    assert dc1[:8] == ["S1|DC1", "88", "97", "5", "2", "2", "2", dc1[7]]
    assert dc1[8] == "snapshot,GAP"
    assert lines[2].split()[:7] == ["S1|ST1", "4", "4", "0", "0", "0", "1"]
    assert "S1|DC1: 1 buffered event(s), 1 unsettled line(s)" in out
    buffered = lines[lines.index(next(x for x in lines if "ON_HAND_DELTA" in x)) + 1]
    assert buffered.split() == ["5", "-1", "0"]
    settle = lines[lines.index(next(x for x in lines if "ERP_SEQ" in x)) + 1]
    assert settle.split() == ["7", "o-1", "2"]
    changes = [x for x in lines if x.startswith("20") and "-" in x.split()[2]]
    assert len(changes) == 3  # DC1: events, reservation (newest first); ST1: its snapshot
    assert changes[0].split()[3] == "88"  # the newest change of S1|DC1: the reservation

    code, out, _ = run(capsys, "inspect", "S1", "ST1", "--changes", "1")
    assert code == 0 and "S1|DC1" not in out and "S1|ST1: 0 buffered" in out
    code, _, err = run(capsys, "inspect", "NOPE")
    assert code == 1 and "no record for NOPE" in err


def test_reservations_listing(
    redis_proc: RedisProc, services: Callable[..., ServiceProc],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    svc = services()
    post(svc.url, "/v1/events", {"events": [snapshot("S1", "DC1", 1, 100)]})
    line = [{"sku": "S1", "location": "DC1", "qty": 3}]
    post(svc.url, "/v1/reservations", {"reservation_id": "cart-1", "priority": "checkout",
                                       "lines": line, "hold_seconds": 600})  # fmt: skip
    post(svc.url, "/v1/reservations", {"reservation_id": "order-1", "priority": "sales",
                                       "lines": line + line})  # fmt: skip
    monkeypatch.setenv("ATP_REDIS_URL", redis_proc.url)

    code, out, err = run(capsys, "reservations")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "2 reservation(s), of 2 in Redis"
    assert cells(lines[1]) == ["ID", "STATUS", "PRIORITY", "AGE", "CART", "EXPIRES IN", "LINES",
                               "QTY", "OWNER", "REASON"]  # fmt: skip
    rows = {cells(x)[0]: cells(x) for x in lines[2:]}
    assert rows["cart-1"][1:3] == ["held", "checkout"] and rows["cart-1"][4:8] == [
        "yes", "10 min", "1", "3"
    ]  # fmt: skip
    assert rows["order-1"][1:3] == ["confirmed", "sales"]
    assert rows["order-1"][4:8] == ["no", "-", "1", "6"]  # repeated lines are summed
    assert re.fullmatch(r"[0-9a-f]{16}", rows["order-1"][8])  # the creating key's id

    code, out, _ = run(capsys, "reservations", "--status", "held")
    assert code == 0 and out.splitlines()[0] == "1 held reservation(s), of 2 in Redis"
    assert "cart-1" in out and "order-1" not in out
    code, out, _ = run(capsys, "reservations", "--status", "held", "--older-than", "60s")
    assert out.strip() == "0 held reservation(s) created more than 1 min ago, of 2 in Redis"
    time.sleep(1.1)
    code, out, _ = run(capsys, "reservations", "--older-than", "1s", "--limit", "1")
    assert out.splitlines()[0].startswith("2 reservation(s) created more than 1.0 s ago")
    assert "... and 1 more (--limit)" in out


def test_holds_by_api_key(
    redis_proc: RedisProc, services: Callable[..., ServiceProc],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    svc = services(ATP_HOLD_QUOTA="10")
    post(svc.url, "/v1/events", {"events": [snapshot("S1", "DC1", 1, 100)]})
    monkeypatch.setenv("ATP_REDIS_URL", redis_proc.url)
    monkeypatch.setenv("ATP_API_KEYS", KEYS)
    code, out, err = run(capsys, "holds")
    assert code == 0, err
    assert out.strip() == (
        "0 API key(s) with units in uncommitted cart holds; ATP_HOLD_QUOTA: not set here "
        "(no limit, nothing counted)"
    )

    def cart(rid: str, qty: int, headers: dict[str, str]) -> None:
        line = [{"sku": "S1", "location": "DC1", "qty": qty}]
        body = {"reservation_id": rid, "priority": "checkout", "lines": line, "hold_seconds": 600}
        post(svc.url, "/v1/reservations", body, headers)

    cart("w-1", 3, {"Authorization": "Bearer test-write"})
    cart("w-2", 4, {"Authorization": "Bearer test-write"})
    cart("a-1", 2, ADMIN)
    post(
        svc.url,
        "/v1/reservations",
        {
            "reservation_id": "order",
            "priority": "sales",
            "lines": [{"sku": "S1", "location": "DC1", "qty": 5}],
        },
    )
    monkeypatch.setenv("ATP_HOLD_QUOTA", "10")
    code, out, err = run(capsys, "holds")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "2 API key(s) with units in uncommitted cart holds; ATP_HOLD_QUOTA: 10 units per key"
    )
    assert cells(lines[1]) == ["KEY", "OWNER", "UNITS", "QUOTA", "OF QUOTA"]
    write, admin = cells(lines[2]), cells(lines[3])
    # keys are named by their place in ATP_API_KEYS: test-write is the third
    assert (write[0], write[2], write[3], write[4]) == ("key3", "7", "10", "70%")
    assert (admin[0], admin[2], admin[3], admin[4]) == ("key1", "2", "10", "20%")
    assert re.fullmatch(r"[0-9a-f]{16}", write[1])

    # A key with a quota of its own (hold_quota=N in its entry) is shown against that.
    monkeypatch.setenv("ATP_API_KEYS", KEYS.replace("test-write:", "test-write:hold_quota=28,"))
    code, out, err = run(capsys, "holds")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("10 units per key; 1 key(s) with a quota of their own")
    assert cells(lines[2])[3:] == ["28", "25%"] and cells(lines[3])[3:] == ["10", "20%"]

    monkeypatch.setenv("ATP_API_KEYS", "other:*")  # those keys are not configured here
    code, out, _ = run(capsys, "holds")
    assert [cells(x)[0] for x in out.splitlines()[2:]] == ["?", "?"]


def test_redis_unreachable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATP_REDIS_URL", "redis://127.0.0.1:1/0")
    code, _, err = run(capsys, "reservations")
    assert code == 1 and "cannot reach Redis at redis://127.0.0.1:1/0" in err


# -- replay-dlq -------------------------------------------------------------------------------


async def _topic_records(b: Broker, topic: str, n: int, timeout: float = 15) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=None,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out += records
    finally:
        await consumer.stop()
    return out


async def test_replay_dlq_dry_run_then_apply(broker: Broker) -> None:
    good = snapshot("S7", "DC1", 3, 12)
    bad = {**snapshot("S7", "DC1", 4, 1), "on_hand": -1}
    await broker.produce(TOPIC + ".dlq", [good, bad], raw=[b"{not json"])
    settings = Settings.from_env(
        {"ATP_KAFKA_BOOTSTRAP": broker.bootstrap, "ATP_KAFKA_TOPIC": TOPIC, "ATP_API_KEYS": "k:*"}
    )
    bars = io.StringIO()

    def progress(n: int, label: str) -> ops_cli.Progress:
        return ops_cli.Progress(n, label, bars)

    text = await ops_cli.replay_dlq(settings, False, 20, progress)
    lines = text.splitlines()
    assert lines[0] == (f"3 record(s) in {TOPIC}.dlq: 1 now valid would be re-published (dry "
                        "run: add --apply); 2 still invalid")  # fmt: skip
    assert any("/on_hand: must be between 0 and 1000000000" in x for x in lines)
    assert any("invalid JSON" in x for x in lines)
    assert "3/3" in bars.getvalue()
    assert await _topic_records(broker, TOPIC, 1, timeout=2) == []  # dry run: nothing written

    text = await ops_cli.replay_dlq(settings, True, 20, progress)
    assert "1 now valid re-published" in text
    published = await _topic_records(broker, TOPIC, 1)
    assert len(published) == 1
    assert published[0].key == b"S7|DC1" and orjson.loads(published[0].value) == good
    origin = dict(published[0].headers)["dlq.replayed.from"].decode()
    assert origin.startswith(TOPIC + ".dlq:0:")


async def test_replay_dlq_needs_kafka() -> None:
    settings = Settings.from_env({"ATP_API_KEYS": "k:*"})
    with pytest.raises(ops_cli.OpsError, match="ATP_KAFKA_BOOTSTRAP"):
        await ops_cli.replay_dlq(settings, False, 1)
