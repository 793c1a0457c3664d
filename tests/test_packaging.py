"""The declared lower bounds stay true: pyproject.toml's runtime dependencies and the pins
scripts/test-lowest runs the suite on (scripts/lowest.txt) name the same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bounds() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]+\])?>=([0-9.]+)", dep)
        assert m, f"{dep!r}: every runtime dependency needs a plain >= lower bound"
        out[m[1].lower()] = m[2]
    return out


def _pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "scripts" / "lowest.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def test_lowest_pins_are_the_declared_lower_bounds() -> None:
    assert _pins() == _bounds()


def test_the_script_installs_and_checks_the_pins() -> None:
    script = (ROOT / "scripts" / "test-lowest").read_text()
    assert "-c scripts/lowest.txt" in script and "not the lowest versions" in script
