"""`atp-service hash-key`: the printed entry parses with the service's own parser, and the
secret it was made from authenticates against an app configured with only that entry."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from typing import Any

import pytest

from atp_service import keytool
from atp_service.cli import main
from atp_service.config import SCOPES, ConfigError, parse_api_keys

from .test_auth import bearer, serve


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str], str]:
    """``atp-service hash-key ARGS`` in process -> (exit code, {label: value}, stderr)."""
    code = main(["hash-key", *args])
    out, err = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    return code, lines, err


def test_generated_secret_and_entry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--scopes", "availability:read,reservations:write")
    assert code == 0
    assert set(out) == {"secret", "entry"}
    secret, entry = out["secret"], out["entry"]
    assert len(secret) >= 43 and not set(secret) & set(":;,=")  # 256 bits, URL-safe
    assert secret not in entry
    (key,) = parse_api_keys(entry)
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert key.scopes == {"availability:read", "reservations:write"}
    assert entry == f"sha256={key.digest}:availability:read,reservations:write"
    assert "only this once" in err


def test_entry_with_a_hold_quota(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--scopes", "reservations:write,hold_quota=500")
    assert code == 0
    (key,) = parse_api_keys(out["entry"])
    assert key.scopes == {"reservations:write"} and key.hold_quota == 500


def test_every_run_generates_a_new_secret(capsys: pytest.CaptureFixture[str]) -> None:
    secrets = {run(capsys)[1]["secret"] for _ in range(5)}
    assert len(secrets) == 5


def test_default_scope_is_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = parse_api_keys(run(capsys)[1]["entry"])
    assert key.scopes == {"availability:read"}


def test_given_secret_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "s3cret-value", "--scopes", "*")
    assert code == 0 and set(out) == {"entry"}
    assert "s3cret-value" not in out["entry"]
    (key,) = parse_api_keys(out["entry"])
    assert key.digest == hashlib.sha256(b"s3cret-value").hexdigest()
    assert key.scopes == SCOPES


def test_secret_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin\n"))
    code, out, _ = run(capsys, "-", "--scopes", "events:write")
    assert code == 0
    (key,) = parse_api_keys(out["entry"])
    assert key.digest == hashlib.sha256(b"from-stdin").hexdigest()


@pytest.mark.parametrize(
    ("secret", "scopes", "message"),
    [
        ("a:b", "*", "may not contain"),
        ("a;b", "*", "may not contain"),
        ("a,b", "*", "may not contain"),
        (" padded", "*", "leading or trailing"),
        ("sha256=" + "0" * 64, "*", "sha256="),
        ("fine", "availability:write", "unknown scope"),
        ("fine", ",", "at least one scope"),
        ("fine", "*,hold_quota=x", "not an integer"),
        ("fine", "hold_quota=5", "no scope"),
    ],
)
def test_refused(
    capsys: pytest.CaptureFixture[str], secret: str, scopes: str, message: str
) -> None:
    code, out, err = run(capsys, secret, "--scopes", scopes)
    assert code == 2 and not out
    assert message in err
    with pytest.raises(ConfigError):
        keytool.entry(secret, scopes)


def test_console_script_has_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "atp_service.cli", "hash-key", "--scopes", "admin"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    (key,) = parse_api_keys(lines["entry"])
    assert key.scopes == {"admin"}


async def test_secret_authenticates_against_an_app_with_the_entry(
    redis_proc: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, reader, _ = run(capsys, "--scopes", "availability:read")
    _, writer, _ = run(capsys, "--scopes", "reservations:write")
    keys = f"{reader['entry']};{writer['entry']}"
    async with serve(redis_proc.url, ATP_API_KEYS=keys) as client:
        lookup = "/v1/availability/NOPE"
        # authenticated and allowed: the unknown sku is a 404, not a 401
        response = await client.get(lookup, headers=bearer(reader["secret"]))
        assert response.status == 404, await response.text()
        # authenticated, wrong scope: 403
        response = await client.get(lookup, headers=bearer(writer["secret"]))
        assert response.status == 403, await response.text()
        response = await client.get("/v1/reservations/r-none", headers=bearer(writer["secret"]))
        assert response.status == 404, await response.text()
        # neither the stored entry nor the digest is a key
        for wrong in (reader["entry"], reader["entry"].split(":", 1)[0],
                      reader["entry"].removeprefix("sha256=").split(":", 1)[0], "x"):  # fmt: skip
            response = await client.get(lookup, headers=bearer(wrong))
            assert response.status == 401, wrong
