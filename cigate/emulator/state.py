"""The emulator's shared state, typed: one object per app that every handler reads.

Why one object: handlers, middleware and the control plane all reach the same backends. Keeping
them as loose ``app.state`` attributes, set by start-up hooks in several modules, hid which ones
exist when, and gave each reader an untyped ``Any``. Here ``create_app`` makes an
``EmulatorState`` (settings and fault rules, which work before start-up), the lifespan fills its
``running`` part once every backend exists, and readers use ``emulator_state(app)`` or
``backends(request)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.requests import Request

    from cigate.clock import Clock
    from cigate.emulator.faults import FaultStore
    from cigate.emulator.files import FilesBackend
    from cigate.emulator.settings import EmulatorSettings
    from cigate.engine.assistants import AssistantsBackend
    from cigate.engine.containers import ContainerBackend
    from cigate.engine.model import Model
    from cigate.engine.store import ResponsesBackend
    from cigate.sandbox.base import KernelSession

log = logging.getLogger(__name__)


class KernelPool(Protocol):
    """What the emulator needs of the sandbox's warm kernel pool."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

    async def acquire(
        self, *, memory: int | None = None, owner: str | None = None
    ) -> KernelSession: ...


@dataclass(frozen=True)
class Backends:
    """Everything the lifespan starts, in the order it starts them."""

    clock: Clock
    pool: KernelPool
    containers: ContainerBackend
    files: FilesBackend
    responses: ResponsesBackend
    assistants: AssistantsBackend

    async def reset(self) -> None:
        """Forget every response, run, container and file, and set the clock back."""
        await self.responses.reset()
        await self.assistants.reset()
        await self.containers.reset()
        self.files.reset()
        self.clock.reset()

    async def close(self) -> None:
        """Stop runs before the kernels they use, then the kernels; one failure stops no other."""
        for name, stop in (
            ("responses", self.responses.close),
            ("assistants", self.assistants.close),
            ("containers", self.containers.close),
            ("pool", self.pool.close),
        ):
            try:
                await stop()
            except Exception:
                log.exception("closing the emulator's %s failed", name)


@dataclass
class EmulatorState:
    """One emulator app's state: configuration and faults at once, backends while it runs."""

    settings: EmulatorSettings
    faults: FaultStore
    #: The model behind both APIs; ``None`` is the scripted one (``cigate.engine.model``).
    model: Model | None = None
    running: Backends | None = field(default=None)

    async def reset(self) -> None:
        """``POST /_emulator/reset``: every backend forgets, and no fault rule is left."""
        await self.backends().reset()
        self.faults.reset()

    def backends(self) -> Backends:
        if self.running is None:
            raise RuntimeError(
                "the emulator has not started: enter its lifespan (uvicorn, or TestClient as a "
                "context manager) before sending requests"
            )
        return self.running


def emulator_state(app: Any) -> EmulatorState:
    """The state ``create_app`` attached to ``app`` (a Starlette app or ``scope["app"]``)."""
    state = getattr(app.state, "emulator", None)
    if not isinstance(state, EmulatorState):
        raise RuntimeError("not an emulator app: build it with cigate.emulator.create_app")
    return state


def backends(request: Request) -> Backends:
    """The running backends of the app serving ``request``."""
    return emulator_state(request.app).backends()
