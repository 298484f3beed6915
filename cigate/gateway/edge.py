"""The gateway's edge: every request path made canonical once, and the API path it names.

:class:`~cigate.web.paths.CanonicalPathMiddleware` runs before any route (outermost of
the app's middleware), so the scoped routes, the pass-through catch-all and every prefix see
only canonical paths; a refusal is a 404 in the OpenAI envelope (``code: "invalid_path"``)
and never reaches a route or the upstream.

:func:`api_path` reads the one canonical path back as an :class:`ApiPath` (URL form and
decoded segments after the prefix). Every forwarding handler builds its upstream URL from
exactly those segments with :meth:`~cigate.gateway.upstream.Upstream.url`, so the path the
gateway checked is the path the upstream gets, spelled by :func:`cigate.web.paths.encode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from cigate.gateway.errors import render
from cigate.web.paths import (
    AmbiguousQueryError,
    CanonicalPathMiddleware,
    NonCanonicalPathError,
)

__all__ = [
    "LEGACY",
    "PREFIXES",
    "ApiPath",
    "Form",
    "api_path",
    "edge_middleware",
    "parse_api_path",
]

LEGACY = "/openai"
#: Longest first: ``/openai/v1/x`` must not be read as the legacy ``/openai`` + ``v1/x``.
PREFIXES = ("/openai/v1", "/v1", LEGACY)
#: ``v1``: ``/openai/v1`` and ``/v1``; ``legacy``: Azure's dated ``/openai/…?api-version``.
Form = Literal["v1", "legacy"]


@dataclass(frozen=True)
class ApiPath:
    """A canonical path under an API prefix: its URL form and decoded segments after it."""

    prefix: str
    segments: tuple[str, ...]

    @property
    def form(self) -> Form:
        return "legacy" if self.prefix == LEGACY else "v1"

    @property
    def family(self) -> str:
        """The first segment after the prefix (``containers``, ``vector_stores``, …)."""
        return self.segments[0] if self.segments else ""

    @property
    def rest(self) -> str:
        """The segments after the prefix joined by ``/`` (decoded; for matching, not URLs)."""
        return "/".join(self.segments)


def parse_api_path(path: str) -> ApiPath | None:
    """The :class:`ApiPath` of a canonical decoded ``path``, or None outside the prefixes."""
    for prefix in PREFIXES:
        if path.startswith(prefix + "/"):
            return ApiPath(prefix, tuple(path[len(prefix) + 1 :].split("/")))
    return None


def api_path(request: Request) -> ApiPath:
    """The API path of a request the routes matched under a prefix (the edge made
    ``scope["path"]`` canonical and decoded, so its ``/`` are exactly the separators)."""
    parsed = parse_api_path(request.scope["path"])
    if parsed is None:
        raise AssertionError(f"not an API path: {request.scope['path']!r}")  # routes guarantee
    return parsed


def _refuse(scope: Scope, exc: NonCanonicalPathError | AmbiguousQueryError) -> Response:
    return render(exc)


def edge_middleware() -> Middleware:
    """The canonical-path layer, first in the gateway's middleware list."""
    return Middleware(CanonicalPathMiddleware, refuse=_refuse, prefixes=PREFIXES)
