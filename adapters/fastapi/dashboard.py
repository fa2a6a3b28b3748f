"""The operators' dashboard: `GET /` and its script and style sheet, files shipped in the
`dashboard/` folder beside this module (no build step, nothing fetched from elsewhere).

The page is open and holds no secret: it asks for the token when a REST route answers 401 and
reads everything through the token-guarded routes, like any other client. The content security
policy lets the page run its own files only (no inline script, no other origin).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new version of the server ships new files: the browser asks again every time.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("dashboard", name).read_bytes()


def router() -> APIRouter:
    """`/` (the page) and `/dashboard/app.js`, `/dashboard/style.css`; read once, at build."""
    files = {name: _read(name) for name in FILES}
    api = APIRouter(include_in_schema=False)

    def answer(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @api.get("/")
    async def page() -> Response:
        return answer("index.html")

    @api.get("/dashboard/app.js")
    async def script() -> Response:
        return answer("app.js")

    @api.get("/dashboard/style.css")
    async def style() -> Response:
        return answer("style.css")

    return api
