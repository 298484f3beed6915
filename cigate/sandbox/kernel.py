"""One container's kernel: execute, interrupt, notice its death, restart it, stop it.

A :class:`Kernel` is a container's kernel slot. Its process (:class:`~cigate.sandbox.factory.
Process`) is forked from the pool's template with the container's directory, cgroup and
limits; the slot outlives it:

* every execution has one monotonic deadline; only messages whose parent is our request count;
  the cell ends when the kernel reports idle for it;
* past the deadline the kernel is interrupted by message (its init sends it SIGINT) and gets
  ``INTERRUPT_GRACE`` seconds to go idle; a kernel that ignores the interrupt is killed;
* a kernel that dies while a cell runs (the memory cgroup's OOM killer, ``os._exit``, a
  crashing extension) ends that cell with an error the model can read (``MemoryError`` with
  the limit, or ``KernelDied``), at once: its exit is seen through a pidfd;
* the next cell starts a new kernel on the same directory (state reset, files kept), at most
  ``MAX_RESTARTS`` times;
* :meth:`shutdown` SIGKILLs the container's init, which takes every process of the
  container with it (pid 1 of its pid namespace; the cgroup is killed too when there is one);
  :meth:`discard` also removes the cgroup and the directory (unmounting its volume).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cigate.exceptions import SandboxError
from cigate.sandbox.base import ExecutionError, ExecutionResult
from cigate.sandbox.cgroups import Cgroup
from cigate.sandbox.factory import GONE, Process
from cigate.sandbox.limits import format_size
from cigate.sandbox.output import Collector, PathRewriter

log = logging.getLogger(__name__)

#: After an interrupt, how long the kernel gets to report idle before it is killed.
INTERRUPT_GRACE = 3.0
#: How long a killed container may take to be gone.
KILL_WAIT = 5.0
#: After the kernel's stream ended, how long its init may take to report and exit.
EXIT_REPORT_WAIT = 1.0
#: New kernels a container may get after its kernel died.
MAX_RESTARTS = 10
STATE_RESET = "its state was reset (variables and imports are gone; files in /mnt/data are kept)"

Spawn = Callable[["Kernel"], Awaitable[Process]]


class Kernel:
    """A container's kernel; implements ``cigate.sandbox.base.KernelSession``."""

    def __init__(
        self,
        *,
        spawn: Spawn,
        workdir: Path,
        isolated: bool,
        memory: int,
        cgroup: Cgroup | None = None,
        release: Callable[[Kernel], Awaitable[None]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.cgroup = cgroup
        self.memory = memory
        self.name = f"kernel-{secrets.token_hex(6)}"
        self._spawn = spawn
        self._isolated = isolated
        self._release = release
        self._rewriter = PathRewriter(None if isolated else str(workdir))
        self._process: Process | None = None
        self._lock = asyncio.Lock()
        self._stop_lock = asyncio.Lock()
        self._stopped: str | None = None  # the step that ended it, once shut down
        self._stopping = False
        self._discarded = False
        self.restarts = 0

    @property
    def isolated(self) -> bool:
        return self._isolated

    @property
    def pid(self) -> int | None:
        """The container's init as the host sees it (everything else runs below it)."""
        return None if self._process is None else self._process.pid

    @property
    def stopped(self) -> bool:
        """True once ``shutdown`` has run."""
        return self._stopped is not None

    async def is_alive(self) -> bool:
        return self._stopped is None and self._process is not None and self._process.alive

    async def start(self) -> None:
        """Fork the first process (the pool calls this before handing the kernel out)."""
        self._process = await self._spawn(self)

    def set_memory(self, limit: int) -> None:
        """The container's memory limit (its cgroup's; the message of an OOM quotes it)."""
        self.memory = limit
        if self.cgroup is not None:
            self.cgroup.set_memory(limit)

    # -- execute ---------------------------------------------------------------------------

    async def execute(self, code: str, *, timeout: float) -> ExecutionResult:  # noqa: ASYNC109
        """Run one cell under one monotonic deadline; interrupt it (by message) when it passes."""
        async with self._lock:
            started = time.monotonic()
            deadline = started + timeout
            process = await self._ready_process()
            result = await self._run(process, code, deadline)
            result.duration = time.monotonic() - started
            return self._rewriter.result(result)

    async def _ready_process(self) -> Process:
        if self._stopped is not None or self._stopping:
            raise SandboxError("cannot run code: the kernel was shut down")
        process = self._process
        if process is not None and process.alive:
            return process
        if self.restarts >= MAX_RESTARTS:
            raise SandboxError(f"cannot run code: the kernel died {self.restarts + 1} times")
        self.restarts += 1
        if process is not None:
            await process.close()
            self._process = None
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
        log.info("restarting the kernel of %s (restart %d)", self.workdir.name, self.restarts)
        self._process = await self._spawn(self)
        return self._process

    async def _run(self, process: Process, code: str, deadline: float) -> ExecutionResult:
        msg_id = secrets.token_hex(8)
        oom_before = self.cgroup.oom_kills() if self.cgroup is not None else 0
        request = {
            "msg_type": "execute_request",
            "id": msg_id,
            "content": {"code": self._rewriter.to_kernel(code)},
        }
        collector = Collector()
        process.expecting = msg_id
        try:
            await process.send(request)
        except (OSError, ConnectionError):
            return self._died(process, collector, oom_before)
        outcome = await self._collect(process, msg_id, collector, deadline)
        if outcome == "idle":
            return collector.result
        if outcome == "died":
            return self._died(process, collector, oom_before)
        collector.result.timed_out = True
        process.interrupt()
        grace = time.monotonic() + INTERRUPT_GRACE
        outcome = await self._collect(process, msg_id, collector, grace)
        if outcome == "idle":
            err = collector.result.error
            if err is not None and err.ename == "KeyboardInterrupt":
                collector.result.error = None  # our interrupt, reported as timed_out instead
            return collector.result
        if outcome == "timeout":
            log.warning("kernel of %s ignored an interrupt; killing it", self.workdir.name)
            process.kill()
            await process.wait_exit(KILL_WAIT)
            detail = "The code did not stop when interrupted, so the kernel was restarted"
            return self._with_error(collector, "KernelRestarted", f"{detail}; {STATE_RESET}.")
        return self._died(process, collector, oom_before)

    async def _collect(
        self, process: Process, msg_id: str, collector: Collector, deadline: float
    ) -> str:
        """Feed the kernel's messages for ``msg_id``: "idle", "timeout" or "died"."""
        while not collector.idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            try:
                frame = await process.next_frame(remaining)
            except TimeoutError:
                return "timeout"
            if frame is GONE:
                process.frames.put_nowait(GONE)  # later waits see it too
                # The stream ends when the kernel exits; its init reports how, then exits.
                if not await process.wait_exit(EXIT_REPORT_WAIT):
                    process.kill()  # the stream ended but the kernel lives on: end it
                    await process.wait_exit(KILL_WAIT)
                if self._stopping:
                    raise SandboxError("the kernel was shut down while code was running")
                return "died"
            if frame.get("parent") == msg_id:
                collector.feed(frame)
        return "idle"

    def _died(self, process: Process, collector: Collector, oom_before: int) -> ExecutionResult:
        if self._stopping:
            raise SandboxError("the kernel was shut down while code was running")
        oom = self.cgroup is not None and self.cgroup.oom_kills() > oom_before
        if oom:
            limit = format_size(self.memory)
            message = (
                f"The code used more than this container's memory limit ({limit}) and the "
                f"kernel was stopped; {STATE_RESET}."
            )
            log.info("kernel of %s ran out of memory (%s)", self.workdir.name, limit)
            return self._with_error(collector, "MemoryError", message)
        how = _describe(process.status)
        if process.protocol_error:
            how = f"it broke the kernel protocol: {process.protocol_error}"
        log.info("kernel of %s died: %s", self.workdir.name, how)
        message = f"The Python kernel died ({how}); {STATE_RESET}."
        return self._with_error(collector, "KernelDied", message)

    @staticmethod
    def _with_error(collector: Collector, ename: str, evalue: str) -> ExecutionResult:
        result = collector.result
        result.error = ExecutionError(ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
        return result

    # -- shutdown --------------------------------------------------------------------------

    async def shutdown(self) -> str:
        """Stop every process of the container; return "kill", or "exited" when none was left.

        Idempotent: later calls return the same step. The directory stays (see ``discard``).
        """
        return await self._stop(wait=True)

    async def _stop(self, *, wait: bool) -> str:
        async with self._stop_lock:
            if self._stopped is not None:
                return self._stopped
            self._stopping = True
            process, self._process = self._process, None
            step = "exited"
            if process is not None:
                if process.alive:
                    process.kill()
                    step = "kill"
                    if wait and not await process.wait_exit(KILL_WAIT):
                        log.error("kernel of %s survived SIGKILL", self.workdir.name)
                await process.close()
            if wait and self.cgroup is not None:
                await asyncio.to_thread(self.cgroup.kill_all)
            self._stopped = step
            return step

    async def discard(self) -> None:
        """Kill the container and give its cgroup and directory (its volume too) back to the
        pool, which waits for the processes to be gone and removes both in the background
        (``SandboxPool.settle`` waits for that; ``close()`` does): the kernel can no longer
        run code once this returns, and the caller no longer owns its files."""
        await self._stop(wait=self._release is None)
        if self._discarded:
            return
        self._discarded = True
        if self._release is not None:
            await self._release(self)
            return
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)


def _describe(status: int | None) -> str:
    if status is None:
        return "it exited"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(number).name}"
        return f"killed by signal {number}"
    if os.WIFEXITED(status):
        return f"it exited with status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"
