"""One Jupyter kernel bound to one container directory: start, execute, interrupt, shut down.

Built on jupyter_client's async manager and client, with three deliberate departures from the
stock path: ZeroMQ ipc sockets in a private runtime directory (a bubblewrap sandbox has no
network, so tcp cannot work), interrupts by message (a SIGINT would reach bwrap and kill the
sandbox), and a readiness check of our own (kernel_info reply plus its IOPub idle), which is
several hundred milliseconds faster than ``wait_for_ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from cigate.exceptions import SandboxError
from cigate.sandbox import reaper
from cigate.sandbox.base import ExecutionResult
from cigate.sandbox.bwrap import LaunchPlan, kernel_env, wrap_command
from cigate.sandbox.output import Collector, PathRewriter

log = logging.getLogger(__name__)

KERNEL_NAME = "cigate-python"
#: How often a wait for output checks that the kernel process is still there.
LIVENESS_POLL = 0.25
#: After an interrupt, how long the kernel gets to report idle before it is killed.
INTERRUPT_GRACE = 3.0
#: Per escalation step of ``shutdown``: request, then SIGTERM, then SIGKILL.
SHUTDOWN_STEP_WAIT = 1.0
#: Unix socket paths are limited to 107 bytes; the runtime dir must leave room for "k-N".
_MAX_IPC_DIR = 90

_PRELOAD = """\
import importlib as _cigate_il
for _cigate_m in {modules!r}:
    try:
        _cigate_il.import_module(_cigate_m)
    except Exception:
        pass
del _cigate_il, _cigate_m
"""


class _OneSpec(KernelSpecManager):
    """Serves exactly one in-memory kernelspec, so nothing is read from or written to disk."""

    def __init__(self, spec: KernelSpec, **kw: Any) -> None:
        super().__init__(**kw)
        self._spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec


def _runtime_dir() -> Path:
    base = tempfile.gettempdir()
    if len(base) > _MAX_IPC_DIR - 20:
        base = "/tmp"  # noqa: S108 - a short path is required for unix sockets
    path = Path(tempfile.mkdtemp(prefix=reaper.RUNTIME_PREFIX, dir=base))
    (path / reaper.OWNER_FILE).write_text(str(os.getpid()))  # lets a later sweep find orphans
    return path


async def _discard(km: AsyncKernelManager) -> None:
    """Undo a ``start_kernel`` that did not return: kill its process, close its sockets."""
    prov = km.provisioner
    if prov is not None and prov.has_process:
        with contextlib.suppress(Exception):
            await prov.kill()
            await asyncio.wait_for(prov.wait(), SHUTDOWN_STEP_WAIT)
    with contextlib.suppress(Exception):
        await km.cleanup_resources()


class Kernel:
    """A started kernel; implements ``cigate.sandbox.base.KernelSession``."""

    def __init__(
        self,
        *,
        plan: LaunchPlan,
        workdir: Path,
        runtime_dir: Path,
        manager: AsyncKernelManager,
        client: AsyncKernelClient,
    ) -> None:
        self.workdir = workdir
        self.runtime_dir = runtime_dir
        self._plan = plan
        self._km = manager
        self._kc = client
        self._rewriter = PathRewriter(None if plan.isolated else str(workdir))
        self._lock = asyncio.Lock()
        self._stop_lock = asyncio.Lock()
        self._dead: str | None = None  # why the kernel can no longer run code
        self._stopped: str | None = None  # the step that ended it, once shut down
        self._stopping = False
        #: The launched process (bwrap when isolated); signals to it end the whole sandbox.
        self.pid: int | None = getattr(manager.provisioner, "pid", None)

    @property
    def isolated(self) -> bool:
        return self._plan.isolated

    @property
    def stopped(self) -> bool:
        """True once ``shutdown`` has run."""
        return self._stopped is not None

    async def is_alive(self) -> bool:
        return self._stopped is None and bool(await self._km.is_alive())

    # -- start -----------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        *,
        plan: LaunchPlan,
        workdir: Path,
        start_timeout: float = 30.0,
        preload: tuple[str, ...] = (),
    ) -> Kernel:
        """Start a kernel for ``workdir``; on any failure nothing is left running or on disk."""
        deadline = time.monotonic() + start_timeout
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        runtime_dir = await asyncio.to_thread(_runtime_dir)
        kernel: Kernel | None = None
        try:
            kernel = await cls._launch(plan, workdir, runtime_dir)
            await kernel._wait_ready(deadline)
            if preload:
                await kernel._run_silently(_PRELOAD.format(modules=list(preload)), deadline)
        except BaseException as exc:
            if kernel is not None:
                with contextlib.suppress(Exception):
                    await kernel.shutdown()
            shutil.rmtree(runtime_dir, ignore_errors=True)
            if isinstance(exc, SandboxError | asyncio.CancelledError | KeyboardInterrupt):
                raise
            raise SandboxError(f"kernel failed to start: {exc}") from exc
        return kernel

    @classmethod
    async def _launch(cls, plan: LaunchPlan, workdir: Path, runtime_dir: Path) -> Kernel:
        isolated = plan.isolated
        mpl = "/tmp/matplotlib" if isolated else str(runtime_dir / "mpl")  # noqa: S108
        env = kernel_env(mplconfigdir=mpl, home="/tmp" if isolated else str(runtime_dir))  # noqa: S108
        argv = [
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            "--HistoryManager.enabled=False",
        ]
        spec = KernelSpec(
            argv=wrap_command(plan, argv, workdir=workdir, runtime_dir=runtime_dir, env=env),
            name=KERNEL_NAME,
            display_name="cigate sandbox",
            language="python",
            interrupt_mode="message",
            env={},
            metadata={},
        )
        km = AsyncKernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=_OneSpec(spec),
            transport="ipc",
            ip=str(runtime_dir / "k"),
            connection_file=str(runtime_dir / "kernel.json"),
        )
        # The kernel's own stdout/stderr (start-up errors), quoted in SandboxErrors. Opened on
        # the loop: a file in our private runtime dir does not block, and a thread would leave
        # it open if the start were cancelled while the thread ran.
        logfile = open(runtime_dir / "kernel.log", "ab")  # noqa: ASYNC230, SIM115
        try:
            await km.start_kernel(
                env=env,
                cwd=str(runtime_dir if isolated else workdir),
                stdout=logfile,
                stderr=logfile,
            )
        except BaseException:
            # Cancelled or failed once the process may be up (start_kernel still awaits after
            # launching it): nobody else holds ``km``, so kill what it launched and close its
            # sockets here, or the process lives on and its zmq context is left to the GC.
            await _discard(km)
            raise
        finally:
            logfile.close()
        pid = getattr(km.provisioner, "pid", None)
        if isinstance(pid, int):
            reaper.track(pid)
        kc = km.client()
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)  # noqa: S604
        return cls(plan=plan, workdir=workdir, runtime_dir=runtime_dir, manager=km, client=kc)

    async def _wait_ready(self, deadline: float) -> None:
        """kernel_info reply, then its IOPub idle (retrying: early IOPub messages can be lost)."""
        while True:
            msg_id = self._kc.kernel_info()
            await self._await_shell_reply(msg_id, deadline, what="start")
            collector = Collector()
            if await self._collect(msg_id, collector, min(deadline, time.monotonic() + 0.25)):
                return
            if time.monotonic() >= deadline:
                raise SandboxError(f"kernel did not become ready in time{self._log_tail()}")

    async def _run_silently(self, code: str, deadline: float) -> None:
        msg_id = self._kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        if not await self._collect(msg_id, Collector(), deadline):
            raise SandboxError("kernel did not finish preloading modules in time")

    # -- execute ---------------------------------------------------------------------------

    async def execute(self, code: str, *, timeout: float) -> ExecutionResult:  # noqa: ASYNC109
        """Run one cell under one monotonic deadline; interrupt it by message when it passes."""
        async with self._lock:
            started = time.monotonic()
            deadline = started + timeout
            await self._ensure_alive()
            await self._drain_replies()
            try:
                result = await self._execute(code, deadline)
            except zmq.ZMQError as exc:
                raise SandboxError(f"lost the connection to the kernel: {exc}") from exc
            except asyncio.CancelledError:
                # Closing our sockets in shutdown() cancels their pending polls; only a
                # cancellation of this task itself is a real cancellation.
                task = asyncio.current_task()
                if self._stopping and task is not None and not task.cancelling():
                    raise SandboxError("the kernel was shut down while code was running") from None
                raise
            result.duration = time.monotonic() - started
            return self._rewriter.result(result)

    async def _execute(self, code: str, deadline: float) -> ExecutionResult:
        msg_id = self._kc.execute(
            self._rewriter.to_kernel(code), store_history=True, allow_stdin=False
        )
        collector = Collector()
        if await self._collect(msg_id, collector, deadline):
            return collector.result
        collector.result.timed_out = True
        self._control("interrupt_request")
        if await self._collect(msg_id, collector, time.monotonic() + INTERRUPT_GRACE):
            err = collector.result.error
            if err is not None and err.ename == "KeyboardInterrupt":
                collector.result.error = None  # our interrupt, reported as timed_out instead
            return collector.result
        self._dead = "the kernel ignored an interrupt after a timeout and was stopped"
        log.warning("kernel %s ignored an interrupt; stopping it", self.pid)
        await self.shutdown()
        return collector.result

    async def _ensure_alive(self) -> None:
        if self._dead is None and self._stopped is None and not await self._km.is_alive():
            self._dead = "the kernel process exited"
        if self._dead is not None or self._stopped is not None:
            reason = self._dead or "the kernel was shut down"
            raise SandboxError(f"cannot run code: {reason}{self._log_tail()}")

    async def _collect(self, msg_id: str, collector: Collector, deadline: float) -> bool:
        """Feed IOPub messages of ``msg_id`` until idle (True) or the deadline (False)."""
        while not collector.idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                msg = await self._kc.get_iopub_msg(timeout=min(remaining, LIVENESS_POLL))
            except queue.Empty:
                await self._check_process()
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                collector.feed(msg)
        return True

    async def _await_shell_reply(self, msg_id: str, deadline: float, *, what: str) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(f"kernel did not answer during {what}{self._log_tail()}")
            try:
                msg = await self._kc.get_shell_msg(timeout=min(remaining, LIVENESS_POLL))
            except queue.Empty:
                await self._check_process()
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return

    async def _check_process(self) -> None:
        if self._stopped is not None:
            raise SandboxError("the kernel was shut down while code was running")
        if not await self._km.is_alive():
            self._dead = "the kernel process died while running code"
            raise SandboxError(f"{self._dead}{self._log_tail()}")

    async def _drain_replies(self) -> None:
        """Discard replies nobody read (results come from IOPub), so they never pile up."""
        for get in (self._kc.get_shell_msg, self._kc.get_control_msg):
            with contextlib.suppress(queue.Empty):
                while True:
                    await get(timeout=0)

    def _log_tail(self) -> str:
        try:
            text = (self.runtime_dir / "kernel.log").read_text(errors="replace").strip()
        except OSError:
            return ""
        return f" (kernel log: {text[-500:]})" if text else ""

    # -- shutdown --------------------------------------------------------------------------

    async def shutdown(self) -> str:
        """Stop the kernel: request -> SIGTERM -> SIGKILL; return the step that ended it.

        "exited" when the process was already gone. Idempotent: later calls return the same step.
        """
        async with self._stop_lock:
            if self._stopped is not None:
                return self._stopped
            self._stopping = True
            try:
                step = await self._stop_process()
            finally:
                self._kc.stop_channels()
                with contextlib.suppress(Exception):
                    await self._km.cleanup_resources()
                if self.pid is not None:
                    reaper.untrack(self.pid)
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self._stopped = step
            self._dead = self._dead or "the kernel was shut down"
            return step

    async def _stop_process(self) -> str:
        prov = self._km.provisioner
        if prov is None or not await self._km.is_alive():
            await self._reap()
            return "exited"
        steps: list[tuple[str, Any]] = [
            ("request", self._request_shutdown),
            ("terminate", prov.terminate),
            ("kill", prov.kill),
        ]
        for name, action in steps:
            with contextlib.suppress(Exception):
                await action()
            if await self._wait_exit(SHUTDOWN_STEP_WAIT):
                await self._reap()
                return name
        raise SandboxError(f"kernel {self.pid} survived SIGKILL")

    async def _request_shutdown(self) -> None:
        # Through our own control channel: the manager's lazily connected control socket was
        # seen to lose the request now and then, leaving every shutdown to SIGTERM.
        self._control("shutdown_request", {"restart": False})

    def _control(self, msg_type: str, content: dict[str, Any] | None = None) -> None:
        """Send a control message (interrupts and shutdowns go by message, never by signal)."""
        msg = self._kc.session.msg(msg_type, content=content or {})
        self._kc.control_channel.send(msg)

    async def _wait_exit(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not await self._km.is_alive():
                return True
            await asyncio.sleep(0.02)
        return not await self._km.is_alive()

    async def _reap(self) -> None:
        if self._km.provisioner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._km.provisioner.wait(), 2.0)
