"""atheris fuzz target for the decoders (atp_service/decode.py): bytes in, through orjson as in
the service, then into one decoder; the only exception allowed out is BadRequest. Where
``decode.event_arg`` (the ingestion fast path) exists, it must agree with ``decode.event``.

The first byte picks the decoder, the rest is the JSON body. ``corpus/`` holds valid bodies
to start from. Run it by hand for as long as you like::

    mkdir -p /tmp/fuzz-corpus
    .venv/bin/python tests/fuzz/fuzz_decoders.py -max_total_time=600 /tmp/fuzz-corpus \\
        tests/fuzz/corpus

(libFuzzer writes new inputs to the first directory, and a crashing input to ``crash-*`` in
the working directory unless ``-artifact_prefix=`` says elsewhere). ``tests/test_decoders.py``
runs it briefly in CI.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import atheris
import orjson

with atheris.instrument_imports(include=["atp_service"]):
    from atp_service import decode
    from atp_service.errors import BadRequest

DECODERS: list[Callable[[Any], Any]] = [
    decode.event,
    decode.reservation_request,
    decode.availability_items,
    decode.events_envelope,
]
FAST_PATH: Callable[[Any], Any] | None = getattr(decode, "event_arg", None)


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        value = orjson.loads(data[1:])
    except orjson.JSONDecodeError:
        return
    decoder = DECODERS[data[0] % len(DECODERS)]
    try:
        result = decoder(value)
    except BadRequest as exc:
        result = exc
    if decoder is decode.event and FAST_PATH is not None:
        _agree(FAST_PATH, value, result)


def _agree(fast_path: Callable[[Any], Any], value: Any, slow: Any) -> None:
    try:
        fast = fast_path(value)
    except BadRequest as exc:
        if not isinstance(slow, BadRequest) or exc.extra != slow.extra:
            raise AssertionError(f"event_arg refused, event said {slow!r}") from exc
        return
    if isinstance(slow, BadRequest):
        raise AssertionError(f"event_arg took {fast!r}, event refused: {slow.detail}")
    if fast[:2] != (f"{slow.sku}|{slow.location}", slow.seq):
        raise AssertionError(f"event_arg {fast!r} != event {slow!r}")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
