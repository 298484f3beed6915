"""A warm pool of kernels, so a new container answers its first cell in milliseconds.

Starting a kernel costs ~0.4-1 s (more with pandas and matplotlib preloaded); a pooled one is
handed out at once and the pool refills in the background, one kernel at a time so the refill
competes as little as possible with the code that is running. The pool is also the registry of
every kernel it started: ``close()`` stops them all, handed out or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from cigate.exceptions import SandboxError
from cigate.sandbox import reaper
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.bwrap import LaunchPlan, plan_launch
from cigate.sandbox.kernel import Kernel

log = logging.getLogger(__name__)


class SandboxPool:
    """Hands out started kernels (``acquire``) and guarantees none outlives it (``close``)."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._plan: LaunchPlan | None = None
        self._idle: list[Kernel] = []
        self._handed: set[Kernel] = set()
        self._refill_task: asyncio.Task[None] | None = None
        self._warm = asyncio.Event()
        self._closed = False
        self.last_error: BaseException | None = None

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Decide the isolation (probing bwrap once), then begin filling the pool."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        if self._plan is not None:
            return
        reaper.raise_nofile_limit()
        await asyncio.to_thread(reaper.sweep_orphaned_runtime_dirs)
        self._plan = await asyncio.to_thread(plan_launch, self.settings.isolation)
        self.settings.root.mkdir(parents=True, exist_ok=True)
        self._refill()

    @property
    def isolated(self) -> bool:
        """True when kernels run inside bubblewrap (known once started)."""
        return self._plan is not None and self._plan.isolated

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self) -> Kernel:
        """A started kernel with a fresh workdir; the caller owns the workdir from now on."""
        await self.start()
        kernel = await self._take_idle()
        if kernel is None:
            kernel = await self._start_kernel(preload=())  # pool empty: start one on demand
        if self._closed:  # closed while we were starting it
            await kernel.shutdown()
            raise SandboxError("the sandbox pool is closed")
        self._handed = {k for k in self._handed if not k.stopped}
        self._handed.add(kernel)
        self._refill()
        return kernel

    async def wait_warm(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Wait until ``pool_size`` kernels are idle (benchmarks and tests)."""
        async with asyncio.timeout(timeout):
            while len(self._idle) < self.settings.pool_size:
                if self.last_error is not None and self._refill_task is None:
                    raise SandboxError(f"the pool could not start kernels: {self.last_error}")
                self._warm.clear()
                await self._warm.wait()

    async def close(self) -> None:
        """Stop every kernel this pool started, including ones handed out (``shutdown_all``)."""
        await self.shutdown_all()

    async def shutdown_all(self) -> dict[str, int]:
        """Stop refilling and shut every kernel down; return how many stopped at each step."""
        self._closed = True
        task, self._refill_task = self._refill_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        idle, self._idle = self._idle, []
        handed, self._handed = self._handed, set()
        kernels = [*idle, *handed]
        results = await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)
        for kernel in idle:  # never handed out: the workdir is still ours
            shutil.rmtree(kernel.workdir, ignore_errors=True)
        steps: dict[str, int] = {}
        for kernel, result in zip(kernels, results, strict=True):
            if isinstance(result, BaseException):
                log.error("kernel %s did not shut down: %s", kernel.pid, result)
                key = "failed"
            else:
                key = result
            steps[key] = steps.get(key, 0) + 1
        self._warm.set()
        return steps

    # -- internals ---------------------------------------------------------------------------

    async def _take_idle(self) -> Kernel | None:
        while self._idle:
            kernel = self._idle.pop(0)
            if not kernel.stopped and await kernel.is_alive():
                return kernel
            log.warning("discarding pooled kernel %s: it died while idle", kernel.pid)
            await kernel.shutdown()
            shutil.rmtree(kernel.workdir, ignore_errors=True)
        return None

    def _new_workdir(self) -> Path:
        return self.settings.root / f"kernel-{secrets.token_hex(8)}"

    async def _start_kernel(self, *, preload: tuple[str, ...]) -> Kernel:
        assert self._plan is not None
        workdir = self._new_workdir()
        try:
            return await Kernel.start(
                plan=self._plan,
                workdir=workdir,
                start_timeout=self.settings.start_timeout,
                preload=preload,
            )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _refill(self) -> None:
        if self._closed or self.settings.pool_size <= 0:
            return
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.create_task(self._refill_loop(), name="sandbox-refill")

    async def _refill_loop(self) -> None:
        """Start kernels one after another until ``pool_size`` are idle; stop on a failure."""
        try:
            while not self._closed and len(self._idle) < self.settings.pool_size:
                try:
                    kernel = await self._start_kernel(preload=self.settings.preload)
                except SandboxError as exc:
                    self.last_error = exc
                    log.warning("could not pre-start a kernel: %s", exc)
                    return
                if self.closed:  # closed while the kernel started
                    await kernel.shutdown()
                    shutil.rmtree(kernel.workdir, ignore_errors=True)
                    return
                self.last_error = None
                self._idle.append(kernel)
                self._warm.set()
        finally:
            if self._refill_task is asyncio.current_task():
                self._refill_task = None
            self._warm.set()
