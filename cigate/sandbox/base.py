"""The sandbox contract: what the engine asks of a code-interpreter container's kernel.

The engine only sees ``SandboxPool.acquire()`` -> ``KernelSession`` -> ``execute()``. How kernels
are started (bubblewrap or unisolated), pooled and stopped is the sandbox package's business, so
the gateway's future self-hosted interpreter can reuse it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: Where model-written code sees its files, as on the real service.
MOUNT_POINT = "/mnt/data"


@dataclass(frozen=True)
class DisplayImage:
    """A figure the code displayed (``plt.show()``, ``display(img)``): raw bytes + mime type."""

    mime_type: str
    data: bytes


@dataclass(frozen=True)
class ExecutionError:
    """An exception raised by the cell, as the kernel reported it."""

    ename: str
    evalue: str
    traceback: list[str]  # lines with ANSI colour codes already stripped


@dataclass
class ExecutionResult:
    """Everything one cell produced, in the order the kernel sent it."""

    stdout: str = ""
    stderr: str = ""
    #: text/plain of the cell's value (``Out[n]``), if any: the real tool logs it.
    result_text: str | None = None
    images: list[DisplayImage] = field(default_factory=list)
    error: ExecutionError | None = None
    timed_out: bool = False
    duration: float = 0.0

    @property
    def logs(self) -> str:
        """The text the real tool returns as ``{"type": "logs"}``: output, value, traceback."""
        parts = [self.stdout, self.stderr]
        if self.result_text is not None:
            parts.append(self.result_text + "\n")
        if self.error is not None:
            parts.append("\n".join(self.error.traceback) + "\n")
        if self.timed_out:
            parts.append("Execution timed out and was interrupted.\n")
        return "".join(parts).rstrip("\n")


class KernelSession(Protocol):
    """A live, stateful kernel bound to one container's directory."""

    #: Host directory that the code sees as ``/mnt/data``.
    workdir: Path

    @property
    def isolated(self) -> bool:
        """True when the kernel runs inside bubblewrap."""
        ...

    async def execute(self, code: str, *, timeout: float) -> ExecutionResult:  # noqa: ASYNC109
        """Run one cell; interrupt it (by message) when ``timeout`` seconds pass."""
        ...

    async def shutdown(self) -> str:
        """Stop every process of the container; return "kill", or "exited" if none was left.
        The workdir and its files stay (a container's files outlive its kernel)."""
        ...

    async def discard(self) -> None:
        """Shut down and remove the workdir with its files (its disk-quota volume too)."""
        ...


GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class SandboxSettings:
    """How kernels are started, pooled and limited (sizes in bytes).

    Each limit is enforced by the kernel where this machine allows it (cgroups, a sized ext4
    volume, tmpfs sizes, rlimits); ``SandboxPool.enforcement`` reports the mechanism used.
    """

    #: Parent of every container's directory.
    root: Path
    #: Kernels kept forked and idle, ready to hand out.
    pool_size: int = 2
    #: "auto": bubblewrap when available, else unisolated with a warning; "bwrap"; "none".
    isolation: str = "auto"
    #: Seconds the template (including its preload) or a kernel may take to start.
    start_timeout: float = 30.0
    #: Modules the template imports once; every kernel is forked with them loaded.
    preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot")
    #: Memory of a container that asks for no tier (the API's default "1g").
    memory_default: int = GIB
    #: The most memory any container gets, whatever tier it asks for (operator cap).
    memory_cap: int = 4 * GIB
    #: Processes and threads of one container together.
    pids_max: int = 256
    #: CPU cores one container may use (a quota per 100 ms period).
    cpu_limit: float = 1.0
    #: Bytes of /mnt/data (a container's files) and files/directories in it.
    disk_quota: int = 2 * GIB
    disk_inodes: int = 65_536
    #: Bytes and inodes of the container's private /tmp (counted in its memory too).
    tmp_size: int = GIB
    tmp_inodes: int = 65_536
    #: Bytes of /dev/shm (counted in memory too).
    shm_size: int = 64 * MIB
    #: Open files per process.
    nofile: int = 4096
    #: Live containers (kernels handed out and not discarded) on this host.
    max_containers: int = 128
    #: Host uid (and gid) of sandboxed code when the manager runs as root; never 0.
    sandbox_uid: int = 65534
