"""How the template process is launched: the isolation decision, its environment and command.

Everything that decides what the sandbox's file system looks like lives here, in one place.
Isolated, the template runs in bubblewrap as a non-root host uid (a root manager starts bwrap
through :mod:`cigate.sandbox.launch`, which drops to that uid): its own user namespace (uid 0
there, with the capabilities it needs to give each container namespaces of its own), its own
pid, network, IPC and UTS namespaces, a clean environment, the system and Python directories
read-only, a read-only root with an empty ``/mnt/data`` mount point, and synthetic
``/etc/passwd``/``/etc/group`` (host accounts stay hidden). What each container adds on top
is in :mod:`cigate.sandbox.confine`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cigate
from cigate.exceptions import SandboxError
from cigate.sandbox import launch
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
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
)
SANDBOX_USERS = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    "sandbox:x:1000:1000:sandbox:/tmp:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
SANDBOX_GROUPS = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n"

_warned: set[str] = set()  # warnings already logged once


@dataclass(frozen=True)
class LaunchPlan:
    """The decided way to start the template; computed once per pool."""

    bwrap: str | None  # absolute path of bwrap, or None for unisolated kernels
    #: Host uid/gid the sandbox runs as (isolated): the manager's own, or the configured
    #: ``sandbox_uid`` when the manager is root.
    uid: int = 0
    gid: int = 0

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    @property
    def via_launcher(self) -> bool:
        """A root manager starts bwrap through :mod:`cigate.sandbox.launch`."""
        return self.isolated and os.geteuid() == 0


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


def plan_launch(isolation: str, *, sandbox_uid: int = 65534) -> LaunchPlan:
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
        if os.geteuid() != 0:
            return LaunchPlan(bwrap=path, uid=os.getuid(), gid=os.getgid())
        if sandbox_uid <= 0:
            raise SandboxError(
                f"sandbox uid {sandbox_uid} would run model code as host root",
                hint="Set the sandbox uid to a dedicated non-root uid (default 65534).",
            )
        return LaunchPlan(bwrap=path, uid=sandbox_uid, gid=sandbox_uid)
    if isolation == "bwrap":
        raise SandboxError("sandbox isolation 'bwrap' requested but bubblewrap is not usable")
    if "unisolated" not in _warned:
        _warned.add("unisolated")
        log.warning(UNISOLATED_WARNING)
    return LaunchPlan(bwrap=None)


def python_dirs() -> list[str]:
    """Directories the kernel's interpreter needs: the venv, the real Python it points into,
    and cigate's own package (an editable install lives outside the venv)."""
    exe_dir = str(Path(os.path.realpath(sys.executable)).parent.parent)
    package = str(Path(cigate.__file__).resolve().parent)
    dirs: list[str] = []
    for d in (sys.prefix, sys.base_prefix, exe_dir, package):
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
        "XDG_CACHE_HOME": f"{home}/.cache",
        "IPYTHONDIR": f"{home}/.ipython",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # One BLAS/OpenMP thread: the template must hold no thread when it forks, and a
        # container's CPU quota is about one core anyway.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.update(extra or {})
    return env


def python_module(module: str) -> list[str]:
    """``python -I`` running ``module.main(argv)``, with cigate importable from where it was
    imported here (a checkout on ``PYTHONPATH`` included: ``-I`` ignores the environment)."""
    home = str(Path(cigate.__file__).resolve().parent.parent)
    bootstrap = (
        f"import sys; sys.path.insert(0, {home!r}); from {module} import main; main(sys.argv[1:])"
    )
    return [sys.executable, "-I", "-c", bootstrap]


@dataclass(frozen=True)
class Command:
    """A template command line, the descriptors it needs open, and its environment."""

    argv: list[str]
    env: dict[str, str]
    cwd: str


def template_command(
    plan: LaunchPlan, *, config: dict[str, object], control_fd: int, runtime_dir: Path
) -> Command:
    """The one seam that decides how the template (and so every kernel) is started."""
    python = python_module("cigate.sandbox.template")
    args = [json.dumps(config), str(control_fd)]
    if plan.bwrap is None:
        home = str(runtime_dir)
        env = kernel_env(mplconfigdir=str(runtime_dir / "mpl"), home=home)
        return Command(argv=[*python, *args], env=env, cwd=str(runtime_dir))
    (runtime_dir / "passwd").write_text(SANDBOX_USERS)
    (runtime_dir / "group").write_text(SANDBOX_GROUPS)
    env = kernel_env(mplconfigdir="/tmp/matplotlib", home="/tmp")  # noqa: S108
    sources: list[str] = []

    def source(path: str) -> str:
        if not plan.via_launcher:
            return path
        sources.append(path)
        return launch.stage_path(len(sources) - 1)

    cmd = [
        plan.bwrap,
        "--unshare-user",
        "--uid",
        "0",
        "--gid",
        "0",
        "--cap-add",
        "ALL",  # within the template's own user namespace only: see confine.py
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
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
            cmd += ["--ro-bind", source(d), d]
    for f in ETC_FILES:
        if os.path.exists(f):
            cmd += ["--ro-bind", source(f), f]
    cmd += ["--ro-bind", source(str(runtime_dir / "passwd")), "/etc/passwd"]
    cmd += ["--ro-bind", source(str(runtime_dir / "group")), "/etc/group"]
    # /dev read-only: one tmpfs shared by every container (each mounts its own shm and pts).
    cmd += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
    # After the tmpfs: a venv or checkout under /tmp must stay visible on top of it.
    for d in python_dirs():
        if not _covered(d, [s for s in SYSTEM_DIRS if not os.path.islink(s)]):
            cmd += ["--ro-bind", source(d), d]
    cmd += ["--dir", MOUNT_POINT, "--remount-ro", "/", "--chdir", "/", "--", *python, *args]
    if plan.via_launcher:
        prefix = [*python_module("cigate.sandbox.launch"), str(plan.uid)]
        prefix += [str(plan.gid), str(len(sources)), *sources, "--"]
        cmd = prefix + cmd
    return Command(argv=cmd, env={}, cwd="/")  # bwrap --clearenv: the kernel env is --setenv
