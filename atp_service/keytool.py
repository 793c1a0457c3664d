"""``atp-service hash-key``: an ``ATP_API_KEYS`` entry that stores only a secret's SHA-256.

The service never needs a secret itself: it looks keys up by the digest of what a caller
presents (``http.endpoint.Auth``), and ``ATP_API_KEYS`` accepts ``sha256=<hex>:scopes``. So the
operator generates a secret here, hands it to the client once, and puts only the digest in the
service's configuration: a leaked config, environment dump or manifest reveals no usable key.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

from .config import HOLD_QUOTA_SCOPE, SCOPES, ConfigError, parse_api_keys

DESCRIPTION = (
    "Print an ATP_API_KEYS entry (sha256=<hex>:scopes) that holds only the SHA-256 of a "
    "secret, so the service's configuration holds no usable key. Without SECRET a strong "
    "random secret is generated and printed once."
)
SECRET_BYTES = 32  # 256 bits of randomness, 43 URL-safe characters
FORBIDDEN = frozenset(":;,")  # ATP_API_KEYS separators; a secret may hold none of them


def generate_secret() -> str:
    """A fresh random secret: URL-safe base64, so it holds no ``: ; ,`` and no ``=``."""
    return secrets.token_urlsafe(SECRET_BYTES)


def entry(secret: str, scopes: str) -> str:
    """The ``ATP_API_KEYS`` entry for ``secret`` with ``scopes`` (``a,b`` or ``*``, and
    optionally ``hold_quota=N``), checked by parsing it back with the service's own parser."""
    if not secret or secret != secret.strip():
        raise ConfigError("the secret must be non-empty, without leading or trailing spaces")
    if FORBIDDEN & set(secret):
        raise ConfigError("the secret may not contain ':', ';' or ','")
    if secret.startswith("sha256="):
        raise ConfigError("the secret may not start with 'sha256=' (that marks a stored digest)")
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    known = (*SCOPES, "*")
    unknown = [s for s in wanted if s not in known and not s.startswith(HOLD_QUOTA_SCOPE)]
    if not wanted or unknown:
        raise ConfigError(f"unknown scope {unknown[0]!r}" if unknown else "give at least one scope")
    line = f"sha256={hashlib.sha256(secret.encode()).hexdigest()}:{','.join(wanted)}"
    parse_api_keys(line)  # the service must accept exactly what we print
    return line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "secret",
        nargs="?",
        default=None,
        help="the secret to hash; '-' reads it from standard input (keeps it out of the "
        "shell history and the process list); omitted: a strong random one is generated",
    )
    parser.add_argument(
        "--scopes",
        default="availability:read",
        help=f"comma-separated scopes ({', '.join(sorted(SCOPES))}) or '*' for all "
        "(default: availability:read); add hold_quota=N for the key's own cart-hold quota",
    )


def main(args: argparse.Namespace) -> int:
    generated = args.secret is None
    if generated:
        secret = generate_secret()
    elif args.secret == "-":
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = args.secret
    try:
        line = entry(secret, args.scopes)
    except ConfigError as exc:
        print(f"atp-service hash-key: {exc}", file=sys.stderr)
        return 2
    if generated:
        print(f"secret: {secret}")
    print(f"entry: {line}")
    print(
        ("Give the secret to the client now: it is shown only this once and stored nowhere. "
         if generated else "")
        + "Add the entry to ATP_API_KEYS (entries are separated by ';').",
        file=sys.stderr,
    )  # fmt: skip
    return 0
