"""The OpenAPI 3.0 document served at /openapi.json (placeholder, completed below)."""

from __future__ import annotations

from typing import Any


def document() -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "ATP service", "version": "1"}, "paths": {}}
