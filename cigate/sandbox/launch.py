"""Start bubblewrap as the sandbox's non-root host uid, with sources only root can reach.

``python -m cigate.sandbox.launch UID GID N SRC1 .. SRCN -- bwrap ...`` is what a root
manager runs instead of bwrap itself. Run as root, bwrap would map the sandbox to host uid 0;
run as an unprivileged uid, it cannot read bind sources behind a root-only directory (a
Python under ``/root/.pyenv``, say), and its ``--bind-fd`` resolves the path again. So this
launcher, still root:

1. enters a private mount namespace (nothing it mounts is visible to the host),
2. mounts a small tmpfs on ``/mnt`` and bind-mounts each source at ``/mnt/<i>`` (the bwrap
   command refers to those paths),
3. drops to ``UID``/``GID`` with no supplementary groups and ``exec``-s bwrap.

bwrap then builds the sandbox from ``/mnt/<i>`` as that uid, in a user namespace of its own.
"""

from __future__ import annotations

import os
import shutil
import sys

from cigate.sandbox import linux

STAGE = "/mnt"


def stage_path(index: int) -> str:
    """Where source ``index`` is visible to bwrap."""
    return f"{STAGE}/{index}"


def main(argv: list[str]) -> None:
    uid, gid, count = int(argv[0]), int(argv[1]), int(argv[2])
    sources = argv[3 : 3 + count]
    if argv[3 + count] != "--":
        raise SystemExit("usage: launch UID GID N SRC... -- COMMAND...")
    command = argv[4 + count :]
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", STAGE, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=64k")
    for index, source in enumerate(sources):
        target = stage_path(index)
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            with open(target, "w"):
                pass
        linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    executable = shutil.which(command[0]) or command[0]
    os.execv(executable, command)  # noqa: S606 - bwrap itself, by absolute path


if __name__ == "__main__":
    main(sys.argv[1:])
