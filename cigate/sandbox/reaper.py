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
import shutil
import signal
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: Pool runtime directories (template log, /etc files) are ``<tmp>/cigate-k-*``.
RUNTIME_PREFIX = "cigate-k-"
#: File in a runtime directory holding the pid of the process that manages the kernel.
OWNER_FILE = "owner"

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
    """Raise the soft open-files limit to the hard one; return the new soft.

    Kernels hold ~25 fds each, and the gateway two per relayed stream (``cigate gateway
    serve`` calls this too): a usual soft limit of 1,024 would run out long before either."""
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


def make_runtime_dir() -> Path:
    """A private directory for one pool (template log, synthetic /etc files), marked with our
    pid so a later sweep can tell it was orphaned."""
    base = tempfile.gettempdir()
    if len(base) > 70:
        base = "/tmp"  # noqa: S108 - keep paths short
    path = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX, dir=base))
    path.chmod(0o755)  # the sandbox's uid reads the files staged from here
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def sweep_orphaned_runtime_dirs() -> int:
    """Remove runtime dirs whose managing process is gone (it was SIGKILLed); return how many."""
    removed = 0
    for base in {tempfile.gettempdir(), "/tmp"}:  # noqa: S108 - where _runtime_dir puts them
        for path in Path(base).glob(RUNTIME_PREFIX + "*"):
            try:
                owner = int((path / OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # not ours to judge
            if owner == os.getpid() or pid_exists(owner):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def pid_exists(pid: int) -> bool:
    """True while a process with this pid exists (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
