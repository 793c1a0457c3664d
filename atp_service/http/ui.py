"""The stock page for sales reps (``GET /ui/stock``) and its two static assets.

Plain files from ``atp_service/static`` (no build step), read once at start-up and served from
memory with an ETag, so a revisit costs a 304. Loading the page needs no key: the page asks
for one, keeps it in the tab's ``sessionStorage`` and calls the JSON API with it, so the API's
own scopes decide what the page may see. A strict Content-Security-Policy allows only this
origin's script, style and API calls (no inline script, no third-party anything).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from ..config import ApiKey
from ..errors import NotFound

PAGE = "stock.html"
ASSETS = {"stock.js": "text/javascript", "stock.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (cheap: ETag) so a deploy shows at once
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _load(name: str, content_type: str) -> StaticFile:
    body = (resources.files("atp_service") / "static" / name).read_bytes()
    return StaticFile(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


class Ui:
    def __init__(self) -> None:
        self.page_file = _load(PAGE, "text/html")
        self.assets = {name: _load(name, ctype) for name, ctype in ASSETS.items()}

    def _serve(self, request: web.Request, item: StaticFile) -> web.Response:
        headers = {**SECURITY_HEADERS, "ETag": item.etag}
        if request.headers.get("If-None-Match") == item.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=item.body, content_type=item.content_type, charset="utf-8", headers=headers
        )

    async def page(self, request: web.Request, _key: ApiKey | None) -> web.Response:
        return self._serve(request, self.page_file)

    async def asset(self, request: web.Request, _key: ApiKey | None) -> web.Response:
        item = self.assets.get(request.match_info["name"])
        if item is None:
            raise NotFound("no such asset")
        return self._serve(request, item)
