"""``create_app(settings)``: the emulator as one Starlette app.

Shared state is one typed ``EmulatorState`` (``cigate.emulator.state``): settings and fault rules
from the start, and the backends the lifespan builds (clock, warm kernel pool, containers, files,
responses, assistants). A reaper sweeps expired containers every ``settings.reaper_interval``
seconds; shutdown stops every run and kernel so none outlives the app.

Layers, outermost first: request ids (so even crashes and faults carry them), the canonical
path edge (``cigate.web.paths``: a path any component could read differently is refused
before faults or routing see it), faults (before routing), the body guard
(``cigate.web.bodies``: size caps, ``Content-Length``, strict JSON), error rendering, then the
control plane, the three API prefixes and Foundry's project prefixes (``routing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from cigate.clock import Clock
from cigate.emulator import assistants, chat, containers, control, files, foundry, responses
from cigate.emulator.errors import EXCEPTION_HANDLERS, refuse_body, refuse_path
from cigate.emulator.faults import CONTROL_PREFIX, FaultMiddleware, FaultStore
from cigate.emulator.request_ids import RequestIdMiddleware
from cigate.emulator.routing import EDGE_PREFIXES, api_mounts, project_mounts
from cigate.emulator.settings import EmulatorSettings
from cigate.emulator.state import Backends, EmulatorState, KernelPool, emulator_state
from cigate.engine.assistants import AssistantsBackend
from cigate.engine.containers import ContainerBackend
from cigate.engine.model import Model
from cigate.engine.store import ResponsesBackend
from cigate.sandbox.base import KernelSession, SandboxSettings
from cigate.web.bodies import BodyGuard
from cigate.web.paths import CanonicalPathMiddleware

log = logging.getLogger(__name__)


class EmulatorApp(Starlette):
    """A Starlette app whose request-id middleware wraps even the server-error layer."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIdMiddleware(super().build_middleware_stack())


class MissingPool:
    """Stands in until ``cigate.sandbox.pool`` exists: containers work, running code fails."""

    async def start(self) -> None:
        log.warning("cigate.sandbox.pool is not available: code execution is disabled")

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"isolation": {"mode": "unavailable"}, "limits": {}, "warnings": []}

    async def acquire(
        self, *, memory: int | None = None, owner: str | None = None
    ) -> KernelSession:
        raise RuntimeError(
            "the emulator cannot run code: cigate.sandbox.pool is not importable "
            "(install cigate-toolkit[emulator] and check the sandbox package)"
        )


def make_pool(settings: EmulatorSettings) -> KernelPool:
    """The sandbox's warm kernel pool for these settings."""
    sandbox = SandboxSettings(
        root=settings.data_dir / "containers",
        pool_size=settings.pool_size,
        isolation=settings.isolation,
        **settings.sandbox_overrides(),
    )
    try:
        from cigate.sandbox.pool import SandboxPool  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        log.warning("no kernel pool (%s)", exc)
        return MissingPool()
    return SandboxPool(sandbox)


async def _reaper(containers: ContainerBackend, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await containers.reap_expired()
        except Exception:  # one bad sweep must not stop later ones
            log.exception("container reaper failed")


async def _start(settings: EmulatorSettings, model: Model | None) -> Backends:
    """Every backend, each over the ones it needs; the data directory is made here."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    pool = make_pool(settings)
    await pool.start()
    containers = ContainerBackend(
        root=settings.data_dir / "container-dirs",
        kernels=pool,
        clock=clock,
        idle_minutes=settings.idle_minutes,
    )
    stored = files.FilesBackend(root=settings.data_dir / "files", clock=clock)
    common: dict[str, Any] = {
        "containers": containers,
        "clock": clock,
        "exec_timeout": settings.exec_timeout,
        "deployments": settings.deployments,
        "model": model,
    }
    return Backends(
        clock=clock,
        pool=pool,
        containers=containers,
        files=stored,
        responses=ResponsesBackend(files=stored, **common),
        assistants=AssistantsBackend(files=stored, **common),
    )


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    state = emulator_state(app)
    running = await _start(state.settings, state.model)
    state.running = running
    reaper = asyncio.create_task(_reaper(running.containers, state.settings.reaper_interval))
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await running.close()
        state.running = None


#: The event loop a served emulator runs on, by uvicorn's name: always asyncio's own, also where
#: uvloop is installed (the gateway's extra brings it), so ``cigate emulator serve`` and the demo
#: behave the same in every environment.
SERVER_LOOP = "asyncio"


def create_app(
    settings: EmulatorSettings | None = None, *, model: Model | None = None
) -> Starlette:
    """The emulator app; enter its lifespan (uvicorn, ``TestClient`` as a context manager).

    ``model`` answers both the Responses and the Assistants API instead of the scripted model.
    """
    settings = settings or EmulatorSettings.from_env()
    plugged: list[BaseRoute] = [*responses.ROUTES, *assistants.ROUTES, *foundry.ROUTES]
    v1_routes = [*plugged, *chat.ROUTES, *containers.ROUTES, *files.ROUTES]
    legacy_routes = [*plugged, *chat.LEGACY_ROUTES, *files.ROUTES]
    # Foundry projects: the classic agents surface (and the v2 agents) is each module's
    # PROJECT_ROUTES; the project's /openai/v1 is the v1 table.
    classic = [*assistants.PROJECT_ROUTES, *foundry.PROJECT_ROUTES]
    app = EmulatorApp(
        routes=[
            Mount("/_emulator", routes=control.ROUTES),
            Route("/readyz", control.readyz, methods=["GET"]),
            *project_mounts(v1_routes, [*classic, *files.ROUTES]),
            *api_mounts(v1_routes, legacy_routes),
        ],
        middleware=[
            Middleware(
                CanonicalPathMiddleware,
                refuse=refuse_path,
                prefixes=(*EDGE_PREFIXES, CONTROL_PREFIX),
            ),
            Middleware(FaultMiddleware),
            Middleware(
                BodyGuard,
                json_limit=settings.max_json_body,
                upload_limit=settings.max_upload_body,
                refuse=refuse_body,
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan,
    )
    # A redirect to "<path>/" could only lead to the edge's refusal (no trailing slashes): an
    # unknown path is a JSON 404 at once (azure-ai-agents cannot read an empty error body).
    app.router.redirect_slashes = False
    app.state.emulator = EmulatorState(settings=settings, faults=FaultStore(), model=model)
    return app
