"""``create_app(settings)``: the emulator as one Starlette app.

The lifespan owns every shared resource and stores it on ``app.state``: ``settings``, ``clock``,
``pool`` (warm kernels), ``containers``, ``files``, ``faults`` and whatever the resource modules'
``startup(app)`` hooks attach (``responses``). A reaper sweeps expired containers every
``settings.reaper_interval`` seconds; shutdown stops every kernel so none outlives the app.

Layers, outermost first: request ids (so even crashes and faults carry them), the canonical
path edge (``cigate.web.paths``: a path any component could read differently is refused
before faults or routing see it), faults (before routing), the body guard
(``cigate.web.bodies``: size caps, ``Content-Length``, strict JSON), error rendering, then the
control plane, the three API prefixes and Foundry's project prefixes (``routing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp

from cigate.clock import Clock
from cigate.emulator import containers, control, files
from cigate.emulator.errors import EXCEPTION_HANDLERS, refuse_body, refuse_path
from cigate.emulator.faults import CONTROL_PREFIX, FaultMiddleware, FaultStore
from cigate.emulator.request_ids import RequestIdMiddleware
from cigate.emulator.routing import EDGE_PREFIXES, api_mounts, project_mounts
from cigate.emulator.settings import EmulatorSettings
from cigate.engine.containers import ContainerBackend
from cigate.sandbox.base import KernelSession, SandboxSettings
from cigate.web.bodies import BodyGuard
from cigate.web.paths import CanonicalPathMiddleware

log = logging.getLogger(__name__)

#: Resource modules owned by other authors; each exports ``ROUTES`` and optional hooks.
_PLUGGABLE = ("cigate.emulator.responses", "cigate.emulator.assistants", "cigate.emulator.foundry")


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

    async def acquire(self, *, memory: int | None = None) -> KernelSession:
        raise RuntimeError(
            "the emulator cannot run code: cigate.sandbox.pool is not importable "
            "(install cigate-toolkit[emulator] and check the sandbox package)"
        )


def make_pool(settings: EmulatorSettings) -> Any:
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


def _optional_modules() -> list[ModuleType]:
    found = []
    for name in _PLUGGABLE:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


async def _reaper(app: Starlette, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await app.state.containers.reap_expired()
        except Exception:  # one bad sweep must not stop later ones
            log.exception("container reaper failed")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: EmulatorSettings = app.state.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    app.state.clock = clock
    pool = make_pool(settings)
    await pool.start()
    app.state.pool = pool
    app.state.containers = ContainerBackend(
        root=settings.data_dir / "container-dirs",
        kernels=pool,
        clock=clock,
        idle_minutes=settings.idle_minutes,
    )
    app.state.files = files.FilesBackend(root=settings.data_dir / "files", clock=clock)
    modules: list[ModuleType] = app.state.resource_modules
    started: list[ModuleType] = []
    reaper: asyncio.Task[None] | None = None
    try:
        for module in modules:
            startup = getattr(module, "startup", None)
            if startup is not None:
                await startup(app)
            started.append(module)
        reaper = asyncio.create_task(_reaper(app, settings.reaper_interval))
        yield
    finally:
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        for module in reversed(started):
            shutdown = getattr(module, "shutdown", None)
            if shutdown is not None:
                try:
                    await shutdown(app)
                except Exception:
                    log.exception("shutdown hook of %s failed", module.__name__)
        await app.state.containers.close()
        await pool.close()


def create_app(settings: EmulatorSettings | None = None) -> Starlette:
    """The emulator app; enter its lifespan (uvicorn, ``TestClient`` as a context manager)."""
    settings = settings or EmulatorSettings.from_env()
    modules = _optional_modules()
    plugged: list[BaseRoute] = [r for m in modules for r in getattr(m, "ROUTES", [])]
    v1_routes = [*plugged, *containers.ROUTES, *files.ROUTES]
    legacy_routes = [*plugged, *files.ROUTES]
    # Foundry projects: the classic agents surface (and the v2 agents) is each module's
    # PROJECT_ROUTES; the project's /openai/v1 is the v1 table.
    classic = [r for m in modules for r in getattr(m, "PROJECT_ROUTES", [])]
    app = EmulatorApp(
        routes=[
            Mount("/_emulator", routes=control.ROUTES),
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
    app.state.settings = settings
    app.state.faults = FaultStore()
    app.state.resource_modules = modules
    return app
