"""The one error hierarchy; each class carries its HTTP status and RFC 9457 problem type.

::

    AtpError                      500 internal (never shown with details)
     +-- BadRequest               400 invalid-request   (decoders: body, query, identifiers)
     |    +-- UnknownGroup        400 unknown-group
     +-- Unauthorized             401 unauthorized
     +-- Forbidden                403 forbidden
     +-- NotFound                 404 not-found
     +-- MethodNotAllowed         405 method-not-allowed
     +-- Conflict                 409 (abstract)
     |    +-- InsufficientStock   409 insufficient-stock   (+ "lines")
     |    +-- IdempotencyConflict 409 idempotency-conflict
     |    +-- NotCommittable      409 not-committable
     |    +-- HoldQuotaExceeded   409 hold-quota-exceeded  (+ "held", "quota")
     +-- PayloadTooLarge          413 payload-too-large
     +-- UnsupportedMediaType     415 unsupported-media-type
     +-- Throttled                429 throttled            (+ Retry-After)
     +-- Unavailable              503 unavailable          (+ Retry-After; Redis unreachable)

The HTTP layer turns any of these into a problem response in one place (``http/problem.py``).
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://atp-service.dev/problems/"


class AtpError(Exception):
    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(AtpError):
    status, slug, title = 400, "invalid-request", "Invalid request"


class UnknownGroup(BadRequest):
    slug, title = "unknown-group", "Unknown location group"


class Unauthorized(AtpError):
    status, slug, title = 401, "unauthorized", "Missing or unknown API key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="atp-service"'}


class Forbidden(AtpError):
    status, slug, title = 403, "forbidden", "API key lacks the required scope"


class NotFound(AtpError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(AtpError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"

    def __init__(self, detail: str = "", allowed: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class Conflict(AtpError):
    status, slug, title = 409, "conflict", "Conflict"


class InsufficientStock(Conflict):
    slug, title = "insufficient-stock", "Insufficient stock"


class IdempotencyConflict(Conflict):
    slug, title = "idempotency-conflict", "Reservation id already used with another body"


class NotCommittable(Conflict):
    slug, title = "not-committable", "Reservation can no longer be committed"


class HoldQuotaExceeded(Conflict):
    slug, title = "hold-quota-exceeded", "Cart-hold quota of this API key exceeded"


class PayloadTooLarge(AtpError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(AtpError):
    status, slug, title = 415, "unsupported-media-type", "Request body must be application/json"


class _RetryLater(AtpError):
    def __init__(self, detail: str = "", retry_after: float = 1.0, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = max(1, int(-(-retry_after // 1)))  # whole seconds, rounded up

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Throttled(_RetryLater):
    status, slug, title = 429, "throttled", "ERP backlog for this priority is over budget"


class Unavailable(_RetryLater):
    status, slug, title = 503, "unavailable", "Shared state temporarily unreachable"
