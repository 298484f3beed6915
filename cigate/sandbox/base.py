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
        """Stop the kernel, escalating request -> SIGTERM -> SIGKILL; return the ending step."""
        ...


@dataclass(frozen=True)
class SandboxSettings:
    """How kernels are started and pooled."""

    #: Parent of every container's directory.
    root: Path
    #: Kernels kept started and idle, ready to hand out.
    pool_size: int = 2
    #: "auto": bubblewrap when available, else unisolated with a warning; "bwrap"; "none".
    isolation: str = "auto"
    #: Seconds a kernel may take to start before it counts as failed.
    start_timeout: float = 30.0
    #: Modules imported while a pooled kernel waits, so first cells are fast.
    preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot")
