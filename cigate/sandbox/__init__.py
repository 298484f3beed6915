"""Code-interpreter containers: kernels forked from a preloaded template, isolated and limited.

``SandboxPool`` is imported lazily: it needs the ``emulator`` extra (IPython, numpy...), while
the contract in ``cigate.sandbox.base`` must stay importable without it. See docs/sandbox.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cigate.sandbox.base import (
    MOUNT_POINT,
    DisplayImage,
    ExecutionError,
    ExecutionResult,
    KernelSession,
    SandboxSettings,
)

if TYPE_CHECKING:
    from cigate.sandbox.pool import SandboxPool

__all__ = [
    "MOUNT_POINT",
    "DisplayImage",
    "ExecutionError",
    "ExecutionResult",
    "KernelSession",
    "SandboxPool",
    "SandboxSettings",
]


def __getattr__(name: str) -> Any:
    if name == "SandboxPool":
        from cigate.sandbox.pool import SandboxPool

        return SandboxPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
