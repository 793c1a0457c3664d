"""Reservation routes: create (hold), read, commit, release; and ERP event push."""

from __future__ import annotations

from aiohttp import web

from .. import decode
from ..config import ApiKey
from ..errors import BadRequest, Unavailable
from ..ingest import Ingest
from ..ledger import Ledger
from ..metrics import Metrics
from ..trace import Context
from .endpoint import TRACE, json_response, read_json


def _rid(request: web.Request) -> str:
    rid = request.match_info["reservation_id"]
    if not decode.is_identifier(rid):
        raise BadRequest("reservation_id must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
    return rid


def owner_of(key: ApiKey | None) -> str:
    """Reservation ids are scoped to the calling key: its stable id (a digest prefix, never
    the secret, and unchanged when ATP_API_KEYS is reordered)."""
    return key.digest[:16] if key else ""


def viewer(key: ApiKey | None) -> str:
    """Whose reservations a key may read and change: its own; an ``admin`` key, all ('')."""
    return "" if key is None or key.allows("admin") else owner_of(key)


class Reservations:
    def __init__(self, ledger: Ledger, ingest: Ingest, metrics: Metrics) -> None:
        self.ledger = ledger
        self.ingest = ingest
        self.metrics = metrics
        self._count = metrics.reservations.inc

    async def create(self, request: web.Request, key: ApiKey | None) -> web.Response:
        req = decode.reservation_request(await read_json(request))
        try:
            created, state = await self.ledger.reserve(
                req, owner_of(key), request.get(TRACE), key.hold_quota if key else None
            )
        except Unavailable as exc:
            self._count(req.priority, exc.slug)
            # The write may have reached Redis before the link failed: only a retry with the
            # same id can tell, and it is safe (idempotent on reservation_id).
            raise Unavailable(
                f"{exc.detail}; the reservation may or may not have been taken: retry with "
                "the same reservation_id and body",
                retry_after=exc.retry_after,
            ) from None
        except Exception as exc:
            self._count(req.priority, getattr(exc, "slug", "error"))
            raise
        self._count(req.priority, "created" if created else "replayed")
        return json_response(state, status=201 if created else 200)

    async def get(self, request: web.Request, key: ApiKey | None) -> web.Response:
        return json_response(await self.ledger.get(_rid(request), viewer(key)))

    async def commit(self, request: web.Request, key: ApiKey | None) -> web.Response:
        return json_response(await self._transition(request, "commit", key))

    async def release(self, request: web.Request, key: ApiKey | None) -> web.Response:
        return json_response(await self._transition(request, "release", key, request.get(TRACE)))

    async def _transition(
        self, request: web.Request, action: str, key: ApiKey | None, trace: Context | None = None
    ) -> dict[str, object]:
        rid = _rid(request)
        try:
            state = await self.ledger.transition(rid, action, viewer(key), trace)
        except Exception as exc:
            self.metrics.transitions.labels(action, getattr(exc, "slug", "error")).inc()
            raise
        self.metrics.transitions.labels(action, state["status"]).inc()
        return state

    async def events(self, request: web.Request, _key: ApiKey | None) -> web.Response:
        raw = decode.events_envelope(await read_json(request))
        result = await self.ingest.apply(raw, "http")
        return json_response(result.as_json())
