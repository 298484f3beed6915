"""How a kernel process is launched: the isolation decision, its environment and its command line.

Everything that decides what model-written code can see lives here, in one place, so the
hardening work (a dedicated uid via ``setpriv --reuid``, rlimits, cgroups) only has to extend
``wrap_command``. Today bubblewrap runs as whatever user cigate runs as; run as root, that maps the
sandboxed code to host root (still without network, host files or the host's environment).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cigate.exceptions import SandboxError
from cigate.sandbox.base import MOUNT_POINT

log = logging.getLogger(__name__)

ISOLATION_MODES = ("auto", "bwrap", "none")
UNISOLATED_WARNING = (
    "bubblewrap not found: running model code UNISOLATED; apt-get install bubblewrap"
)
#: matplotlib draws into the notebook: ``plt.show()`` sends ``display_data`` with ``image/png``.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: Read-only system directories every sandbox sees (symlinks such as ``/bin -> usr/bin`` kept).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: The few files under /etc that Python, numpy and matplotlib read; the rest of /etc stays hidden.
ETC_FILES = (
    "/etc/alternatives",
    "/etc/fonts",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/passwd",
)

_warned: set[str] = set()  # warnings already logged once


@dataclass(frozen=True)
class LaunchPlan:
    """The decided way to start kernels; computed once per pool."""

    bwrap: str | None  # absolute path of bwrap, or None for unisolated kernels

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None


@functools.cache
def probe_bwrap() -> str | None:
    """Absolute path of a bwrap that can really build a sandbox here, else None (probed once)."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("bubblewrap at %s does not work: %s", path, exc)
        return None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        log.warning("bubblewrap at %s does not work: %s", path, err)
        return None
    return path


def plan_launch(isolation: str) -> LaunchPlan:
    """Turn the ``isolation`` setting into a plan; fail loudly when bwrap is required but absent."""
    if isolation not in ISOLATION_MODES:
        raise SandboxError(
            f"unknown sandbox isolation {isolation!r}",
            hint="Use one of: " + ", ".join(ISOLATION_MODES) + ".",
        )
    if isolation == "none":
        return LaunchPlan(bwrap=None)
    path = probe_bwrap()
    if path is not None:
        return LaunchPlan(bwrap=path)
    if isolation == "bwrap":
        raise SandboxError("sandbox isolation 'bwrap' requested but bubblewrap is not usable")
    if "unisolated" not in _warned:
        _warned.add("unisolated")
        log.warning(UNISOLATED_WARNING)
    return LaunchPlan(bwrap=None)


def python_dirs() -> list[str]:
    """Directories the kernel's interpreter needs: the venv and the real Python it points into."""
    exe_dir = str(Path(os.path.realpath(sys.executable)).parent.parent)
    dirs: list[str] = []
    for d in (sys.prefix, sys.base_prefix, exe_dir):
        real = os.path.realpath(d)
        for candidate in (d, real):
            if candidate not in dirs and not _covered(candidate, dirs):
                dirs.append(candidate)
    return dirs


def _covered(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def kernel_env(
    *, mplconfigdir: str, home: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The whole environment a kernel gets: nothing inherited from the host (no API keys)."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own tmpfs (or the host /tmp unisolated)
        "MPLBACKEND": INLINE_BACKEND,
        "MPLCONFIGDIR": mplconfigdir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences ipykernel's frozen-modules warning
        "JPY_SESSION_NAME": "",
    }
    env.update(extra or {})
    return env


def wrap_command(
    plan: LaunchPlan,
    argv: list[str],
    *,
    workdir: Path,
    runtime_dir: Path,
    env: dict[str, str],
) -> list[str]:
    """The one seam that turns a kernel's argv into the command actually executed.

    Isolated: bubblewrap with no network, a clean environment, read-only system and Python
    directories, a private /tmp, the workdir at /mnt/data and the ipc runtime directory at its
    host path. Unisolated: a parent-death signal only (``setpriv --pdeathsig``, when available).
    Hardening (separate uid, rlimits, cgroups) goes here as a prefix to both branches.
    """
    if plan.bwrap is None:
        setpriv = shutil.which("setpriv")
        return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else list(argv)
    cmd = [
        plan.bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--hostname",
        "sandbox",
    ]
    for name, value in env.items():
        cmd += ["--setenv", name, value]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for f in ETC_FILES:
        cmd += ["--ro-bind-try", f, f]
    cmd += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",  # noqa: S108 - a private tmpfs, not the host's /tmp
    ]
    # After the tmpfs: a venv or checkout under /tmp must stay visible on top of it.
    for d in python_dirs():
        if not _covered(d, [s for s in SYSTEM_DIRS if not os.path.islink(s)]):
            cmd += ["--ro-bind", d, d]
    cmd += [
        "--bind",
        str(runtime_dir),
        str(runtime_dir),
        "--bind",
        str(workdir),
        MOUNT_POINT,
        "--remount-ro",  # the sandbox's own root (mount points, /etc copies) stays read-only
        "/",
        "--chdir",
        MOUNT_POINT,
        "--",
        *argv,
    ]
    return cmd
