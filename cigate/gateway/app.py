"""``create_app(settings)``: the gateway as an ASGI app, its routes and its lifespan.

The lifespan opens the metadata store (applying migrations), the blob store and the upstream
client, starts the resume sweep, and closes all of them again (every background task of the
process lives in one registry, cancelled first); tests enter the app
as a context manager so both run (STYLE rule 3). Misconfiguration fails here, at start-up.

Every request body passes :class:`cigate.web.bodies.BodyGuard` (``Content-Length`` checked,
JSON and other non-multipart bodies capped at ``max_json_body``, a body sent as JSON parsed
strictly when a handler first reads it): a body the gateway cannot read one way only is
refused here with a 400/413 and never reaches the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.exceptions import CigateError
from cigate.gateway import (
    agents,
    assistants,
    conversations,
    files,
    links,
    passthrough,
    proxy,
    scoped,
)
from cigate.gateway.context import Services, services
from cigate.gateway.edge import V1_PREFIXES, ProjectGate, edge_middleware
from cigate.gateway.errors import handle_cigate_error, render
from cigate.gateway.harvester import Harvester
from cigate.gateway.recorder import Recorder
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.sweep import Sweep
from cigate.gateway.tasks import TaskRegistry
from cigate.gateway.tenancy import check_routes
from cigate.gateway.tenants import TenantResolver
from cigate.gateway.upstream import Upstream
from cigate.storage.blobs import open_blob_store
from cigate.storage.metadata import MetadataStore
from cigate.web.bodies import BodyGuard

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Seconds each readiness check may take before it counts as unavailable.
_READY_TIMEOUT = 5.0
_GET_HEAD = ["GET", "HEAD"]


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Nothing else is checked (see ``readyz``)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the metadata store answers and the blob store takes writes (503 otherwise).

    Unauthenticated, for load balancers and orchestrators: it names the failing part, never
    the error (which may carry host names); the gateway's log has the details.
    """
    svc = services(request)
    checks: dict[str, str] = {}
    for name, check in (("database", svc.meta.check), ("blobs", svc.blobs.check)):
        try:
            await asyncio.wait_for(check(), _READY_TIMEOUT)
            checks[name] = "ok"
        except (CigateError, TimeoutError) as exc:
            log.warning("readiness: %s is not ready: %s", name, exc)
            checks[name] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        # The gateway's own endpoints.
        Route("/files/{file_id}", files.file_metadata, methods=["GET"]),
        Route("/files/{file_id}/content", files.file_content, methods=_GET_HEAD),
        Route("/files/{file_id}/links", links.create_link, methods=["POST"]),
        Route("/files/{file_id}/links/{link_id}", links.revoke_link, methods=["DELETE"]),
        Route("/links/{link_id}", links.serve_link, methods=_GET_HEAD),
        Route("/responses/{response_id}/files", files.response_files, methods=["GET"]),
        Route(
            "/responses/{response_id}/files/by-path/{path:path}",
            files.file_by_path,
            methods=_GET_HEAD,
        ),
        # Legacy Azure form: /openai/responses?api-version=...
        Route("/openai/responses", proxy.create_response, methods=["POST"]),
        Route(
            "/openai/responses/{response_id}",
            proxy.response_subresource,
            methods=["GET", "DELETE"],
        ),
        Route(
            "/openai/responses/{response_id}/{sub:path}",
            proxy.response_subresource,
            methods=["GET", "POST"],
        ),
    ]
    for prefix in V1_PREFIXES:  # the legacy form is above
        routes += [
            Route(f"{prefix}/responses", proxy.create_response, methods=["POST"]),
            Route(
                f"{prefix}/responses/{{response_id}}",
                proxy.response_subresource,
                methods=["GET", "DELETE"],
            ),
            Route(
                f"{prefix}/responses/{{response_id}}/{{sub:path}}",
                proxy.response_subresource,
                methods=["GET", "POST"],
            ),
        ]
    routes = [
        *routes,
        # Containers and Files-API files, tenant-scoped (store first where it has the bytes).
        *scoped.routes(),
        *assistants.routes(),  # Assistants pass-through + harvest (issue 5)
        *conversations.routes(),  # Conversations, tenant-scoped (issue 12)
        *agents.routes(),  # Foundry agents v2, tenant-scoped by name (issue 12)
        # Every other OpenAI path under /openai/v1, /v1 and /openai: relayed unchanged.
        *passthrough.catch_all_routes(),
    ]
    check_routes(routes)  # a route the tenancy table does not classify fails start-up
    return routes


def create_app(
    settings: GatewaySettings,
    *,
    upstream_client: httpx2.AsyncClient | None = None,
) -> Starlette:
    """The gateway app; ``upstream_client`` lets tests swap the transport (STYLE rule 2)."""
    settings.require_upstream()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        meta = await MetadataStore.open(settings.database_url)
        blobs = open_blob_store(settings.blobs_url)
        upstream = Upstream(settings, client=upstream_client)
        tasks = TaskRegistry()
        harvester = Harvester(meta, blobs, upstream, settings, tasks)
        recorder = Recorder(meta, harvester, tasks, settings)
        app.state.services = Services(
            settings=settings,
            meta=meta,
            blobs=blobs,
            upstream=upstream,
            harvester=harvester,
            recorder=recorder,
            tasks=tasks,
            tenants=TenantResolver(meta),
            link_secret=links.load_link_secret(settings),
        )
        Sweep(harvester, recorder).start()
        try:
            yield
        finally:
            await tasks.shutdown()  # unfinished rows stay pending for the next process
            await upstream.aclose()
            await blobs.close()
            await meta.close()

    return Starlette(
        routes=_routes(),
        middleware=[
            # Outermost: no route, not even the catch-all, sees a path that is not canonical.
            edge_middleware(),
            Middleware(ProjectGate, project=settings.upstream_project),
            # Multipart uploads stream to the upstream unparsed: its own caps apply to them.
            Middleware(
                BodyGuard, json_limit=settings.max_json_body, upload_limit=None, refuse=render
            ),
        ],
        lifespan=lifespan,
        exception_handlers={
            CigateError: handle_cigate_error,
            HTTPException: passthrough.not_found_route,  # unknown paths: OpenAI-shaped 404
        },
    )
