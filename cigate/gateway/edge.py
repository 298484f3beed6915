"""The gateway's edge: every request path made canonical once, and the API path it names.

:class:`~cigate.web.paths.CanonicalPathMiddleware` runs before any route (outermost of
the app's middleware), so the scoped routes, the pass-through catch-all and every prefix see
only canonical paths; a refusal is a 404 in the OpenAI envelope (``code: "invalid_path"``)
and never reaches a route or the upstream.

:func:`api_path` reads the one canonical path back as an :class:`ApiPath` (URL form and
decoded segments after the prefix). Every forwarding handler builds its upstream URL from
exactly those segments with :meth:`~cigate.gateway.upstream.Upstream.url`, so the path the
gateway checked is the path the upstream gets, spelled by :func:`cigate.web.paths.encode`.

Foundry project endpoints add two prefixes with a name in them, ``/api/projects/{project}``
(the classic agents surface) and ``/api/projects/{project}/openai/v1``. The gateway fronts one
project (its upstream URL is that project's endpoint), so :class:`ProjectGate` answers a path
naming any other project, or any project when the upstream is not one, with a 404 before any
route: a tenant cannot steer the gateway's credential to another project of the resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cigate.exceptions import BadInputError, CigateError
from cigate.gateway.errors import render
from cigate.web.paths import (
    AmbiguousQueryError,
    CanonicalPathMiddleware,
    NonCanonicalPathError,
)

__all__ = [
    "LEGACY",
    "PREFIXES",
    "PROJECT",
    "PROJECT_V1",
    "V1_PREFIXES",
    "ApiPath",
    "Form",
    "ProjectGate",
    "api_path",
    "edge_middleware",
    "parse_api_path",
]

LEGACY = "/openai"
#: A Foundry project's classic agents surface (assistants, threads, runs, files).
PROJECT = "/api/projects/{project}"
#: A Foundry project's OpenAI v1 surface.
PROJECT_V1 = f"{PROJECT}/openai/v1"
#: Longest first: ``/openai/v1/x`` must not be read as the legacy ``/openai`` + ``v1/x``, nor
#: ``/api/projects/p/openai/v1/x`` as the classic surface's family ``openai``.
PREFIXES = (PROJECT_V1, PROJECT, "/openai/v1", "/v1", LEGACY)
#: The prefixes of the OpenAI v1 surface (the Responses API lives there).
V1_PREFIXES = (PROJECT_V1, "/openai/v1", "/v1")
#: Spelt exactly at the edge, shorter forms included (``/API/projects/p`` is refused too).
_EDGE_PREFIXES = (*PREFIXES, "/api/projects", f"{PROJECT}/openai")
#: ``v1``: ``/openai/v1``, ``/v1`` and a project's ``/openai/v1``; ``legacy``: Azure's dated
#: ``/openai/…?api-version``; ``project``: a project's classic agents surface.
Form = Literal["v1", "legacy", "project"]


#: Each of :data:`PREFIXES` with its segments, split once (every API request is parsed).
_PREFIX_PARTS = tuple((t, t.split("/")[1:]) for t in PREFIXES)


@dataclass(frozen=True)
class ApiPath:
    """A canonical path under an API prefix: its URL form and decoded segments after it."""

    prefix: str
    segments: tuple[str, ...]
    #: The :data:`PREFIXES` entry ``prefix`` fills (``/api/projects/{project}``); ``prefix``
    #: itself when it has no name in it.
    template: str = ""
    #: The project a project prefix names, else None.
    project: str | None = None

    @property
    def form(self) -> Form:
        template = self.template or self.prefix
        if template == LEGACY:
            return "legacy"
        return "project" if template == PROJECT else "v1"

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
    parts = tuple(path.split("/")[1:])
    for template, wanted in _PREFIX_PARTS:
        if len(parts) <= len(wanted):
            continue
        head = parts[: len(wanted)]
        if all(w in (s, "{project}") for w, s in zip(wanted, head, strict=True)):
            project = head[wanted.index("{project}")] if "{project}" in wanted else None
            return ApiPath(
                "/" + "/".join(head), parts[len(wanted) :], template=template, project=project
            )
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
    return Middleware(CanonicalPathMiddleware, refuse=_refuse, prefixes=_EDGE_PREFIXES)


class ProjectGate:
    """After the canonical-path layer: a project path must name the upstream's own project.

    ``project`` is the upstream's (:attr:`GatewaySettings.upstream_project`), None when the
    upstream is not a Foundry project endpoint: then every project path is refused. The
    caller's gateway key is checked first (a 401 without one), so the answer tells nobody
    without a key which project the gateway fronts.
    """

    def __init__(self, app: ASGIApp, *, project: str | None) -> None:
        self.app = app
        self.project = project

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            api = parse_api_path(scope["path"])
            if api is not None and api.project is not None and api.project != self.project:
                try:  # the caller's key first, as everywhere: no name is told to strangers
                    request = Request(scope)
                    await request.app.state.services.tenants.tenant_id(request)
                except CigateError as exc:
                    await render(exc)(scope, receive, send)
                    return
                what = (
                    "this gateway's upstream is not a Foundry project endpoint"
                    if self.project is None
                    else "the project does not exist"
                )
                refusal = BadInputError(
                    f"Invalid URL ({scope['method']} {scope['path']}): {what}.",
                    hint="Use the gateway's own project name, that of its upstream project "
                    "endpoint (docs/gateway.md).",
                    status=404,
                )
                await render(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)
