"""``GET /ui``: the tenants' web page, three static files shipped with the package.

The page is plain HTML, CSS and one vanilla JavaScript module (no build step, no CDN, works
offline). It holds no data: it loads without a key and shows nothing until the tenant signs
in; the key stays in the tab's ``sessionStorage`` and goes out only as ``Authorization:
Bearer`` on ``fetch`` calls to the gateway's own API (``GET /files``, downloads, ``DELETE
/files/{id}``), never in a URL or a cookie, so there is nothing for a cross-site request to
ride on. Every string from a file (name, id, type) is put on the page as text, never as
markup, and the strict CSP below is the second line: even injected markup could run no
script, load nothing from elsewhere and send nothing anywhere but the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["CSP", "routes"]

#: The page's policy: its own script and style only, images from itself or ``blob:``
#: previews, ``fetch`` to the gateway only, never framed, no ``<base>``, no form posts.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_ASSETS = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/app.css": ("app.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return (resources.files("cigate.gateway") / "static" / name).read_bytes()


def _endpoint(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return Response(_asset(name), media_type=media_type, headers=_HEADERS)

    return serve


def routes() -> list[Route]:
    """The page and its two assets (``GET``/``HEAD``; no key needed, no data in them)."""
    return [
        Route(path, _endpoint(name, media_type), methods=["GET", "HEAD"])
        for path, (name, media_type) in _ASSETS.items()
    ]
