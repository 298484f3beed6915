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

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import httpx2
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.engine.containers import KernelProvider
from cigate.engine.errors import ApiError
from cigate.exceptions import CigateError
from cigate.gateway import (
    agents,
    assistants,
    audit,
    conversations,
    files,
    links,
    passthrough,
    probes,
    proxy,
    scoped,
    tracing,
    webpage,
)
from cigate.gateway.context import Services
from cigate.gateway.edge import V1_PREFIXES, ProjectGate, edge_middleware
from cigate.gateway.entra import EntraCallers, EntraConfig
from cigate.gateway.errors import handle_cigate_error, render
from cigate.gateway.harvester import Harvester
from cigate.gateway.interpreter import containers as interpreter_containers
from cigate.gateway.interpreter.responses import handle_api_error
from cigate.gateway.interpreter.service import Interpreter
from cigate.gateway.observe import ObserveMiddleware
from cigate.gateway.recorder import Recorder
from cigate.gateway.retention import RetentionSweep
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.sweep import Sweep
from cigate.gateway.tasks import TaskRegistry
from cigate.gateway.tenancy import check_routes
from cigate.gateway.tenants import TenantResolver
from cigate.gateway.upstream import TokenCredential, Upstream
from cigate.gateway.upstreams import Pool, load_upstreams
from cigate.storage.blobs import open_blob_store
from cigate.storage.metadata import MetadataStore
from cigate.web.bodies import BodyGuard

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_GET_HEAD = ["GET", "HEAD"]


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Nothing else is checked (see ``readyz``)."""
    return JSONResponse({"status": "ok"})


def _routes(*, self_hosted: bool = False) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", probes.readyz, methods=["GET"]),
        Route("/metrics", probes.metrics_endpoint, methods=["GET"]),
        # The gateway's own endpoints.
        Route("/files", files.list_files, methods=["GET"]),  # the tenant's stored files
        *webpage.routes(),  # the tenants' web page (issue 14): no data, no key needed
        Route("/files/{file_id}", files.file_metadata, methods=["GET"]),
        Route("/files/{file_id}", files.delete_file, methods=["DELETE"]),  # erasure
        Route("/audit", audit.audit_log, methods=["GET"]),
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
        # The self-hosted interpreter's own containers first, in ``self`` mode (issue 15).
        *(interpreter_containers.routes() if self_hosted else []),
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


#: Collector thresholds of a served gateway (see ``quiet_gc`` of :func:`create_app`).
QUIET_GC_THRESHOLDS = (10_000, 20, 20)

#: The event loop a served gateway runs on, by uvicorn's name: uvloop where it is installed (the
#: ``gateway`` extra installs it wherever it builds), else asyncio's own. Every relayed event
#: wakes the loop twice (upstream read, client write). In ``bench/load.py`` at 200 streams
#: with its upstream on uvloop it cut the added p50 from 0.64–0.81 to 0.41–0.58 ms and the
#: CPU an event by a fifth or more; with that upstream on asyncio's loop no change showed
#: (docs/gateway.md, Performance).
SERVER_LOOP = "auto"


def create_app(
    settings: GatewaySettings,
    *,
    upstream_client: httpx2.AsyncClient | None = None,
    kernels: KernelProvider | None = None,
    upstream_credential: TokenCredential | None = None,
    tracer_provider: TracerProvider | None = None,
    quiet_gc: bool = False,
) -> Starlette:
    """The gateway app; ``upstream_client`` and ``upstream_credential`` let tests swap the
    transport and the Entra credential, ``tracer_provider`` the span exporter (STYLE rule 2;
    by default traces go where the ``OTEL_*`` variables say, or nowhere); ``kernels`` is the
    self-hosted interpreter's sandbox pool (one shared by many apps).

    ``quiet_gc`` (``cigate gateway serve``: one app per process) keeps the cyclic garbage
    collector's pauses short, because each pause stalls every stream the process relays. Once
    started, what start-up made (modules, tables, settings) is hidden from it
    (:func:`gc.freeze`), and it runs after 10,000 new objects instead of 700. In
    ``bench/load.py`` (200 streams) pauses of 16–72 ms became at most 3 ms. Tests that build
    many apps in one process leave it off."""
    configs = load_upstreams(settings)  # the one --upstream, or the list: checked now
    entra_config = EntraConfig.from_settings(settings)  # Entra callers: checked now
    provider = tracer_provider if tracer_provider is not None else tracing.provider_from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        link_secret = links.load_link_secret(settings)  # before anything needs closing
        meta = await MetadataStore.open(settings.database_url, migrate=settings.migrate)
        blobs = open_blob_store(settings.blobs_url)
        pool = Pool(
            configs,
            [
                Upstream(
                    c.settings(settings),
                    # A swapped client and credential (tests) are the first upstream's.
                    client=upstream_client if i == 0 else None,
                    credential=upstream_credential if i == 0 else None,
                    name=c.name,
                )
                for i, c in enumerate(configs)
            ],
            down_seconds=settings.upstream_down_seconds,
        )
        upstream = pool.default
        if provider is not None:  # the sweep's copies are traced too
            tracing.TRACER.set(provider.get_tracer("cigate.gateway"))
        tasks = TaskRegistry()
        harvester = Harvester(meta, blobs, pool, settings, tasks)
        recorder = Recorder(meta, harvester, tasks, settings)
        interpreter = None
        if settings.code_interpreter == "self":
            interpreter = Interpreter(
                settings, meta=meta, blobs=blobs, upstream=upstream, kernels=kernels
            )
            await interpreter.start()
        entra = EntraCallers(meta, entra_config) if entra_config is not None else None
        app.state.services = Services(
            settings=settings,
            meta=meta,
            blobs=blobs,
            upstream=upstream,
            pool=pool,
            harvester=harvester,
            recorder=recorder,
            tasks=tasks,
            tenants=TenantResolver(meta, entra=entra),
            link_secret=link_secret,
            interpreter=interpreter,
        )
        Sweep(harvester, recorder).start()
        RetentionSweep(meta, blobs, tasks, settings.retention_interval).start()
        if quiet_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*QUIET_GC_THRESHOLDS)
        try:
            yield
        finally:
            if interpreter is not None:  # its runs and kernels first: they use the stores
                await interpreter.close()
            await tasks.shutdown()  # unfinished rows stay pending for the next process
            await pool.aclose()
            if entra is not None:
                await entra.aclose()
            await blobs.close()
            await meta.close()
            if provider is not None and tracer_provider is None:
                provider.shutdown()  # flush the spans still queued

    return Starlette(
        routes=_routes(self_hosted=settings.code_interpreter == "self"),
        middleware=[
            # Request id, access line, metrics and the request span: around everything.
            Middleware(ObserveMiddleware, provider=provider),
            # --metrics-port: that listener serves /metrics (and /healthz), no other does.
            Middleware(probes.MetricsPortGate, port=settings.metrics_port),
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
            ApiError: handle_api_error,  # the self-hosted interpreter's engine
            HTTPException: passthrough.not_found_route,  # unknown paths: OpenAI-shaped 404
        },
    )
