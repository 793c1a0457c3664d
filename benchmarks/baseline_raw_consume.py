"""The ingest baseline: how fast one Python process can merely *read* the topic with aiokafka.

A plain ``AIOKafkaConsumer`` (no group: the partitions are assigned by hand, so the broker's
group-join delay is not measured), ``getmany`` in a loop until ``--count`` records have been
read. The clock starts at the first non-empty batch, like the service's measurement.

``--mode raw`` does nothing with the records (the ceiling of the Kafka client itself);
``--mode decode`` also does what any consumer of the contract must do in Python before
touching Redis: ``orjson.loads`` every value and validate it with ``atp_service.decode.event``
(the service's own validator, imported, not changed).

Prints one line ``RESULT {"count", "seconds", "rate", "cpu_s"}``.

    python -m benchmarks.baseline_raw_consume --bootstrap 127.0.0.1:P --topic T --count N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


async def consume(bootstrap: str, topic: str, count: int, mode: str) -> dict[str, float]:
    from atp_service import decode  # the service's validator: mode "decode" only
    from atp_service.errors import BadRequest

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        while not parts:
            await consumer.topics()  # a metadata fetch
            parts = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        got = bad = 0
        started = cpu0 = 0.0
        while got < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batch:
                continue
            if not started:
                started, cpu0 = time.perf_counter(), time.process_time()
            for records in batch.values():
                got += len(records)
                if mode == "decode":
                    for record in records:
                        try:
                            decode.event(orjson.loads(record.value or b""))
                        except (orjson.JSONDecodeError, BadRequest):
                            bad += 1
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
    return {"count": got, "seconds": seconds, "rate": got / seconds, "cpu_s": cpu, "bad": bad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mode", choices=("raw", "decode"), default="raw")
    args = parser.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.topic, args.count, args.mode))
    result["pid"] = os.getpid()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
