"""Last-resort guarantees that no kernel outlives cigate, and process-wide limits kernels need.

Kernels normally die with their session (``shutdown``) or with their parent (bwrap
``--die-with-parent``, ``setpriv --pdeathsig``). This registry covers the rest: an interpreter
that exits without closing its pool kills every kernel it still knows about.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import resource
import signal
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
_live: set[int] = set()
_atexit_hook: list[bool] = []  # non-empty once kill_all is registered


def track(pid: int) -> None:
    """Remember a kernel process so interpreter exit kills it if nothing else did."""
    with _lock:
        _live.add(pid)
        if not _atexit_hook:
            atexit.register(kill_all)
            _atexit_hook.append(True)


def untrack(pid: int) -> None:
    with _lock:
        _live.discard(pid)


def tracked() -> set[int]:
    """Pids of kernels started and not yet known to be gone."""
    with _lock:
        return set(_live)


def kill_all() -> None:
    """SIGKILL every tracked kernel (atexit hook; also safe to call directly)."""
    with _lock:
        pids = list(_live)
        _live.clear()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one (~25 fds per kernel); return the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise RLIMIT_NOFILE from %s to %s: %s", soft, target, exc)
        return soft
    return target
