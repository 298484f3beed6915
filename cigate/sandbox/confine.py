"""What a container's processes do to themselves, in the template's forks, before any model code.

Runs inside the sandbox, in two steps (see ``template.py`` for who calls them):

1. :func:`enter_container` — the container's init, pid 1 of a new pid namespace, still holding
   the capabilities of the template's user namespace: a new mount, network, IPC and UTS
   namespace; the container's own directory (a detached mount tree from the manager) at
   ``/mnt/data`` and nothing else of the host's disk; a sized ``/tmp`` and ``/dev/shm``, a new
   ``devpts`` instance, a ``/proc`` of its own pid namespace with ``sys``, ``sysrq-trigger``,
   ``irq`` and ``bus`` read-only (as bubblewrap does); hostname ``sandbox``; loopback up.
2. :func:`drop_privileges` — the kernel process, just forked from the init: a user namespace
   of its own in which it is uid/gid 1000 (the template's uid outside, a non-root host uid),
   every capability dropped from every set, the resource limits of the spawn request,
   ``no_new_privs`` and the seccomp filter (:mod:`cigate.sandbox.seccomp`).

Mounts made by the init belong to the template's user namespace; the kernel, in a child user
namespace without capabilities there, can change none of them (and seccomp refuses the calls).
"""

from __future__ import annotations

import os
import resource
from typing import Any

from cigate.sandbox import linux, seccomp
from cigate.sandbox.base import MOUNT_POINT

#: The uid and gid model-written code runs as, inside its own user namespace.
SANDBOX_UID = 1000
HOSTNAME = "sandbox"
#: /proc entries that stay read-only (bubblewrap's list).
PROC_COVERED = ("sys", "sysrq-trigger", "irq", "bus")
_NS_FLAGS = linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
_RLIMITS = {
    "AS": resource.RLIMIT_AS,
    "CORE": resource.RLIMIT_CORE,
    "FSIZE": resource.RLIMIT_FSIZE,
    "NOFILE": resource.RLIMIT_NOFILE,
    "NPROC": resource.RLIMIT_NPROC,
}


def enter_container(tree_fd: int, spec: dict[str, Any], *, keep: tuple[str, ...] = ()) -> None:
    """Namespaces and mounts of the container's init (pid 1 of a fresh pid namespace).

    ``keep``: read-only binds under /tmp (a venv or checkout there) that the container's own
    /tmp must not hide: they are cloned first and attached again on top of it.
    """
    linux.unshare(_NS_FLAGS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.move_mount(tree_fd, MOUNT_POINT)
    nosuid = linux.MS_NOSUID | linux.MS_NODEV
    linux.mount(None, MOUNT_POINT, None, linux.MS_REMOUNT | linux.MS_BIND | nosuid)
    tmp = f"size={int(spec['tmp_size'])},nr_inodes={int(spec['tmp_inodes'])},mode=1777"
    kept = [(path, linux.open_tree(path)) for path in keep]
    linux.mount("tmpfs", "/tmp", "tmpfs", nosuid, tmp)  # noqa: S108 - the container's own
    for path, tree in kept:
        os.makedirs(path, mode=0o755, exist_ok=True)
        linux.move_mount(tree, path)
        os.close(tree)
    shm_dir = "/dev/shm"  # noqa: S108 - the container's own, mounted here
    if os.path.isdir(shm_dir):
        shm = f"size={int(spec['shm_size'])},nr_inodes=4096,mode=1777"
        linux.mount("tmpfs", shm_dir, "tmpfs", nosuid | linux.MS_NOEXEC, shm)
    if os.path.isdir("/dev/pts"):
        pts = "newinstance,ptmxmode=0666,mode=620"
        linux.mount("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, pts)
    linux.sethostname(HOSTNAME)
    linux.loopback_up()
    linux.mount("proc", "/proc", "proc", nosuid | linux.MS_NOEXEC)
    for name in PROC_COVERED:
        path = f"/proc/{name}"
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | nosuid | linux.MS_NOEXEC
            linux.mount(None, path, None, flags)


def drop_privileges(spec: dict[str, Any], *, isolated: bool) -> None:
    """The kernel's last steps before model code: uid, capabilities, limits, seccomp."""
    if isolated:
        linux.unshare(linux.CLONE_NEWUSER)
        linux.write_id_maps(SANDBOX_UID, 0)
        linux.drop_capabilities()
    apply_limits(spec)
    if isolated:
        os.chdir(MOUNT_POINT)
        seccomp.install()


def apply_limits(spec: dict[str, Any]) -> None:
    """The spawn request's rlimits (soft = hard, so code cannot raise them) and niceness."""
    for name, value in (spec.get("rlimits") or {}).items():
        limit = _RLIMITS[name]
        _, hard = resource.getrlimit(limit)
        wanted = int(value)
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(limit, (wanted, wanted))
    nice = int(spec.get("nice") or 0)
    if nice:
        os.nice(nice)
