"""The pool: fresh, limited kernels handed out in milliseconds, and a cap on live containers.

At start the pool decides the isolation, finds which limits the kernel can enforce here
(cgroups, quota volumes; :attr:`SandboxPool.enforcement`, logged line by line), and starts one
template process (``template.py``) that has the IPython shell and the preload modules loaded.
Each kernel is a fork of that template with its own directory (a quota volume), its own
cgroup and its own namespaces: ~10-20 ms instead of a second, and a few MiB of memory of its
own instead of ~100. ``pool_size`` kernels are kept forked and idle; ``acquire`` hands one out
(or forks one at once), sets the container's memory limit and refills in the background.

The pool is also the registry of every kernel it made: ``close()`` stops them all, handed out
or not, and removes their directories, cgroups and volumes. Live kernels (handed out and not
stopped) are capped per host (``max_containers``) and, through ``owner_limit``, per owner (a
tenant): ``acquire`` raises :class:`~cigate.exceptions.SandboxCapacityError` at the cap, and
the caller (the containers backend) evicts an idle container and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from cigate.exceptions import SandboxCapacityError, SandboxError
from cigate.sandbox import cgroups, reaper, seccomp, volumes
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.bwrap import LaunchPlan, plan_launch
from cigate.sandbox.factory import Process, Template
from cigate.sandbox.kernel import Kernel
from cigate.sandbox.limits import Enforcement, format_size

log = logging.getLogger(__name__)

#: Kernels the refill starts at the same time.
REFILL_PARALLEL = 4


class SandboxPool:
    """Hands out started kernels (``acquire``) and guarantees none outlives it (``close``)."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        owner_limit: Callable[[str], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.owner_limit = owner_limit
        self.enforcement = Enforcement()
        self.last_error: BaseException | None = None
        self._plan: LaunchPlan | None = None
        self._template: Template | None = None
        self._cgroups: cgroups.CgroupSystem | None = None
        self._volumes: volumes.Volumes | None = None
        self._images: dict[Path, Path] = {}  # workdir -> its volume's image
        self._runtime_dir: Path | None = None
        self._idle: list[Kernel] = []
        self._handed: dict[Kernel, str | None] = {}  # kernel -> owner
        self._reserved = 0
        self._cleanups: set[asyncio.Task[None]] = set()
        self._refill_task: asyncio.Task[None] | None = None
        self._warm = asyncio.Event()
        self._closed = False

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
        """Decide the isolation and the limits' mechanisms, then start the template and refill."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        if self._plan is not None:
            return
        settings = self.settings
        reaper.raise_nofile_limit()
        plan = await asyncio.to_thread(
            plan_launch, settings.isolation, sandbox_uid=settings.sandbox_uid
        )
        await asyncio.to_thread(_sweep)
        settings.root.mkdir(parents=True, exist_ok=True)
        self._runtime_dir = await asyncio.to_thread(reaper.make_runtime_dir)
        self._cgroups = await asyncio.to_thread(_probe_cgroups, not plan.isolated)
        self._volumes = await asyncio.to_thread(self._probe_volumes, plan)
        self._plan = plan
        self.enforcement = self._report()
        for line in self.enforcement.lines():
            log.info("sandbox %s", line)
        for warning in self.enforcement.warnings:
            log.warning("sandbox limit weaker than intended: %s", warning)
        self._template = Template(
            plan,
            runtime_dir=self._runtime_dir,
            preload=settings.preload,
            start_timeout=settings.start_timeout,
        )
        self._refill()

    def _probe_volumes(self, plan: LaunchPlan) -> volumes.Volumes | None:
        why = volumes.available()
        if why is not None:
            log.info("no disk-quota volumes: %s", why)
            return None
        owner = (plan.uid, plan.gid) if plan.isolated else (os.getuid(), os.getgid())
        made = volumes.Volumes(
            self.settings.root / ".volumes",
            size=self.settings.disk_quota,
            inodes=self.settings.disk_inodes,
            owner=owner,
        )
        try:
            made.prepare()
        except volumes.VolumeError as exc:
            log.warning("no disk-quota volumes: %s", exc)
            return None
        return made

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

    @property
    def live_count(self) -> int:
        """Kernels handed out and not stopped (what ``max_containers`` caps)."""
        return sum(1 for k in self._handed if not k.stopped)

    def status(self) -> dict[str, Any]:
        """What is enforced, and how full the pool is (for a status endpoint)."""
        return {
            **self.enforcement.to_json(),
            "live_containers": self.live_count,
            "max_containers": self.settings.max_containers,
            "idle_kernels": self.idle_count,
            "template_starts": 0 if self._template is None else self._template.starts,
        }

    async def acquire(self, *, memory: int | None = None, owner: str | None = None) -> Kernel:
        """A started kernel with a fresh workdir and ``memory`` bytes (capped by the operator's
        ``memory_cap``); the caller owns it until it ``discard``-s it (or the pool closes)."""
        await self.start()
        self._reserve(owner)
        try:
            limit = min(memory or self.settings.memory_default, self.settings.memory_cap)
            kernel = await self._take_idle()
            if kernel is None:
                kernel = await self._make_kernel()
            if self._closed:  # closed while we were starting it
                await kernel.discard()
                raise SandboxError("the sandbox pool is closed")
            try:
                kernel.set_memory(limit)
            except OSError as exc:
                await kernel.discard()
                raise SandboxError(f"could not set the container's memory limit: {exc}") from exc
        finally:
            self._reserved -= 1
        self._handed[kernel] = owner
        self._refill()
        return kernel

    def _reserve(self, owner: str | None) -> None:
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        cap = self.settings.max_containers
        if self.live_count + self._reserved >= cap:
            raise SandboxCapacityError(
                f"this host already runs its maximum of {cap} live containers"
            )
        if owner is not None and self.owner_limit is not None:
            own_cap = self.owner_limit(owner)
            mine = sum(1 for k, o in self._handed.items() if o == owner and not k.stopped)
            if own_cap is not None and mine >= own_cap:
                raise SandboxCapacityError(
                    f"{owner!r} already runs its maximum of {own_cap} live containers"
                )
        self._reserved += 1

    async def wait_warm(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Wait until ``pool_size`` kernels are idle (benchmarks and tests)."""
        async with asyncio.timeout(timeout):
            while len(self._idle) < self.settings.pool_size:
                if self.last_error is not None and self._refill_task is None:
                    raise SandboxError(f"the pool could not start kernels: {self.last_error}")
                self._warm.clear()
                await self._warm.wait()

    async def close(self) -> None:
        """Stop every kernel this pool started and remove every directory (``shutdown_all``)."""
        await self.shutdown_all()

    async def shutdown_all(self) -> dict[str, int]:
        """Stop refilling, stop every kernel and clean up; return how many ended at each step."""
        self._closed = True
        task, self._refill_task = self._refill_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        kernels = [*self._idle, *self._handed]
        self._idle, self._handed = [], {}
        results = await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)
        steps: dict[str, int] = {}
        for kernel, result in zip(kernels, results, strict=True):
            if isinstance(result, BaseException):
                log.error("kernel %s did not shut down: %s", kernel.pid, result)
                key = "failed"
            else:
                key = result
            steps[key] = steps.get(key, 0) + 1
        await asyncio.gather(*(k.discard() for k in kernels), return_exceptions=True)
        await self.settle()
        if self._template is not None:
            await self._template.close()
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.close)
        if self._volumes is not None:
            self._volumes.close()
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
        self._warm.set()
        return steps

    # -- kernels -------------------------------------------------------------------------------

    async def _take_idle(self) -> Kernel | None:
        while self._idle:
            kernel = self._idle.pop(0)
            if await kernel.is_alive():
                return kernel
            log.warning("discarding pooled kernel %s: it died while idle", kernel.pid)
            await kernel.discard()
        return None

    async def _make_kernel(self) -> Kernel:
        """A new kernel with its own directory (volume), cgroup and process."""
        assert self._plan is not None
        name = f"kernel-{secrets.token_hex(8)}"
        workdir = self.settings.root / name
        # Made in a thread that a cancellation cannot interrupt: what it made is undone.
        made = asyncio.ensure_future(asyncio.to_thread(self._prepare, name, workdir))
        try:
            group = await asyncio.shield(made)
        except asyncio.CancelledError:
            made.add_done_callback(lambda done: self._undo_prepare(done, workdir))
            raise
        kernel = Kernel(
            spawn=self._spawn,
            workdir=workdir,
            isolated=self._plan.isolated,
            memory=min(self.settings.memory_default, self.settings.memory_cap),
            cgroup=group,
            release=self._release_workdir,
        )
        try:
            await kernel.start()
        except BaseException:
            await asyncio.shield(kernel.discard())
            raise
        return kernel

    def _prepare(self, name: str, workdir: Path) -> cgroups.Cgroup | None:
        self._make_workdir(workdir)
        try:
            return self._make_cgroup(name) if self._cgroups is not None else None
        except BaseException:
            self._release_workdir_path(workdir)
            raise

    def _undo_prepare(self, done: asyncio.Future[cgroups.Cgroup | None], workdir: Path) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        task = asyncio.ensure_future(asyncio.to_thread(self._remove, done.result(), workdir))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _make_workdir(self, workdir: Path) -> None:
        assert self._plan is not None
        if self._volumes is not None:
            self._images[workdir] = self._volumes.create(workdir)
            return
        workdir.mkdir(mode=0o755)
        if self._plan.isolated and os.geteuid() == 0:
            os.chown(workdir, self._plan.uid, self._plan.gid)

    def _make_cgroup(self, name: str) -> cgroups.Cgroup:
        assert self._cgroups is not None
        group = self._cgroups.create(name)
        try:
            group.set_memory(min(self.settings.memory_default, self.settings.memory_cap))
            group.set_pids(self.settings.pids_max)
            group.set_cpu(self.settings.cpu_limit)
        except OSError:
            group.remove()
            raise
        return group

    async def _release_workdir(self, kernel: Kernel) -> None:
        """A discarded kernel's cgroup and directory go in the background: unmounting and
        removing cgroups wait on the kernel (RCU), and nothing needs them any more."""
        self._handed.pop(kernel, None)
        group, workdir = kernel.cgroup, kernel.workdir
        task = asyncio.create_task(asyncio.to_thread(self._remove, group, workdir))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _remove(self, group: cgroups.Cgroup | None, workdir: Path) -> None:
        if group is not None:
            group.kill_all()  # returns once the (already killed) processes are gone
            group.remove()
        self._release_workdir_path(workdir)

    async def settle(self) -> None:
        """Wait until every discarded kernel's cgroup and directory are removed."""
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    def _release_workdir_path(self, workdir: Path) -> None:
        image = self._images.pop(workdir, None)
        if image is not None:
            volumes.Volumes.release(workdir, image)  # the files go with the image
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _spawn(self, kernel: Kernel) -> Process:
        assert self._template is not None
        group = kernel.cgroup

        def place(pid: int) -> None:
            if group is not None:
                group.add(pid)

        return await self._template.spawn(kernel.workdir, self._spec(), place)

    def _spec(self) -> dict[str, Any]:
        """Limits every kernel process gets at fork (what no cgroup covers falls to rlimits)."""
        settings = self.settings
        has = self._cgroups.has if self._cgroups is not None else (lambda _: False)
        rlimits: dict[str, int] = {"NOFILE": settings.nofile, "CORE": 0}
        if self._volumes is None:
            rlimits["FSIZE"] = settings.disk_quota
        if not has("memory"):
            rlimits["AS"] = settings.memory_cap
        if not has("pids") and self._plan is not None and self._dedicated_uid():
            rlimits["NPROC"] = settings.pids_max
        return {
            "tmp_size": settings.tmp_size,
            "tmp_inodes": settings.tmp_inodes,
            "shm_size": settings.shm_size,
            "rlimits": rlimits,
            "nice": 0 if has("cpu") else 10,
        }

    def _dedicated_uid(self) -> bool:
        return self._plan is not None and self._plan.isolated and os.geteuid() == 0

    def _refill(self) -> None:
        if self._closed or self.settings.pool_size <= 0:
            return
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.create_task(self._refill_loop(), name="sandbox-refill")

    async def _refill_loop(self) -> None:
        """Fork kernels until ``pool_size`` are idle, up to ``REFILL_PARALLEL`` at a time (most
        of a start is waiting on other processes); stop on a failure."""
        starting: set[asyncio.Task[Kernel]] = set()
        try:
            while not self._closed:
                wanted = self.settings.pool_size - len(self._idle) - len(starting)
                while wanted > 0 and len(starting) < REFILL_PARALLEL:
                    starting.add(asyncio.create_task(self._make_kernel()))
                    wanted -= 1
                if not starting:
                    return
                done, starting = await asyncio.wait(starting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    try:
                        kernel = task.result()
                    except SandboxError as exc:
                        self.last_error = exc
                        log.warning("could not pre-start a kernel: %s", exc)
                        continue
                    if self.closed:  # closed while the kernel started
                        await kernel.discard()
                        continue
                    self.last_error = None
                    self._idle.append(kernel)
                    self._warm.set()
                if self.last_error is not None and not starting:
                    return
        finally:
            for task in starting:
                task.cancel()
            for task in starting:
                with contextlib.suppress(BaseException):
                    kernel = await task
                    await kernel.discard()
            if self._refill_task is asyncio.current_task():
                self._refill_task = None
            self._warm.set()

    # -- the report ------------------------------------------------------------------------

    def _report(self) -> Enforcement:
        settings, plan = self.settings, self._plan
        assert plan is not None
        has = self._cgroups.mechanisms if self._cgroups is not None else {}
        report = Enforcement()
        if plan.isolated:
            report.isolation = {
                "mode": "bubblewrap",
                "uid": f"1000 in the container's own user namespace, host uid {plan.uid}",
                "capabilities": "none",
                "namespaces": "user, pid, mount, network, ipc, uts (one set per container)",
                "seccomp": f"{len(seccomp.denied_here())} system calls refused, no new namespaces",
                "network": "loopback only",
            }
        else:
            report.isolation = {"mode": "none (UNISOLATED: host files and network visible)"}
        cap = f"cap {format_size(settings.memory_cap)}"
        if "memory" in has:
            report.set("memory", settings.memory_default, f"{has['memory']} ({cap})")
        else:
            report.set(
                "memory",
                settings.memory_cap,
                "RLIMIT_AS",
                weak="per process, at the cap: no memory cgroup is writable here",
            )
        if "pids" in has:
            report.set("processes", settings.pids_max, f"{has['pids']} pids.max")
        elif self._dedicated_uid():
            report.set(
                "processes",
                settings.pids_max,
                "RLIMIT_NPROC",
                weak="counted for all containers together: no pids cgroup",
            )
        else:
            report.set("processes", None, "none", weak="no pids cgroup and no dedicated uid")
        if "cpu" in has:
            report.set("cpu", settings.cpu_limit, f"{has['cpu']} quota (cores per period)")
        else:
            report.set("cpu", settings.cpu_limit, "nice 10", weak="no CPU quota: no cpu cgroup")
        if self._volumes is not None:
            report.set("disk", settings.disk_quota, "ext4 volume per container (loop device)")
        else:
            report.set(
                "disk",
                settings.disk_quota,
                "RLIMIT_FSIZE",
                weak="per file only, no total: quota volumes need root and loop devices",
            )
        if plan.isolated:
            report.set("tmp", settings.tmp_size, "tmpfs size (counted in memory)")
        else:
            report.set("tmp", None, "none", weak="unisolated kernels use the host's /tmp")
        report.set("containers", settings.max_containers, "pool cap (idle containers evicted)")
        kill = "pid namespace" if plan.isolated else "parent-death signal"
        if "kill" in has:
            kill += f" + {has['kill']}"
        elif not plan.isolated:
            report.warnings.append("kill: background processes may survive (no cgroup)")
        report.set("kill", "all processes", kill)
        return report


def _probe_cgroups(freezer: bool) -> cgroups.CgroupSystem | None:
    system = cgroups.CgroupSystem.probe(freezer=freezer)
    if not system.mechanisms:
        system.close()
        return None
    return system


def _sweep() -> None:
    """Clean up after managers that were SIGKILLed (runtime dirs, cgroups, volumes)."""
    reaper.sweep_orphaned_runtime_dirs()
    cgroups.sweep()
    if os.geteuid() == 0:
        volumes.sweep()
