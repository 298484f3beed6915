"""A disk quota for ``/mnt/data``: each container's directory is its own small ext4 file system.

This kernel has no usable quota (ext4 quotas need ``CONFIG_QFMT_V2``, XFS quotas
``CONFIG_XFS_QUOTA``) and a tmpfs would keep the files in RAM, so a container's directory is
an ext4 image of ``size`` bytes mounted on a loop device at the directory's path:

* a write past the size fails with ``ENOSPC`` inside the sandbox, and the inode table is
  sized too (``inodes``); nothing outside the image grows;
* the image is sparse: an empty container costs ~150 KiB of disk; making one is a sparse copy
  of a template image (``mkfs.ext4`` runs once per pool), a ``LOOP_CONFIGURE`` and a
  ``mount`` (~6 ms, done by the pool's refill before the container is handed out);
* the mount lives in the manager's mount namespace, so the files stay readable by the manager
  after the kernel died, until the container is released (unmount, loop auto-clear, unlink);
* mounted ``nosuid,nodev``; the image has no journal (a crash loses the container anyway) and
  no ``lost+found``, and its root belongs to the sandbox's host uid.

Needs root (``/dev/loop-control``) and ``mkfs.ext4``/``debugfs`` (e2fsprogs); without them the
pool uses plain directories and ``RLIMIT_FSIZE`` (per file only) and says so. Images are named
``cigate-vol-<manager pid>-<hex>.img``: :func:`sweep` unmounts and removes those of managers
that died without cleaning up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import struct
import subprocess
from pathlib import Path

from cigate.sandbox import linux
from cigate.sandbox.reaper import pid_exists

log = logging.getLogger(__name__)

IMAGE_PREFIX = "cigate-vol-"
BYTES_PER_INODE = 16 << 10
_IMAGE = re.compile(rf"^{IMAGE_PREFIX}(\d+)-[0-9a-f]+\.img$")
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
_MOUNT_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOATIME
#: The image's holes read as zeros, so inode tables need no zeroing by the lazy-init thread
#: (which would write them out and make every sparse image dense).
_MOUNT_OPTIONS = "noinit_itable"


class VolumeError(OSError):
    """A volume could not be made or mounted."""


def available() -> str | None:
    """Why quota volumes cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not root (loop devices need root)"
    if not os.access("/dev/loop-control", os.R_OK | os.W_OK):
        return "no /dev/loop-control"
    for tool in ("mkfs.ext4", "debugfs"):
        if _tool(tool) is None:
            return f"{tool} not found (apt-get install e2fsprogs)"
    return None


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


class Volumes:
    """Makes and releases quota volumes under ``store`` (one template image per instance)."""

    def __init__(self, store: Path, *, size: int, inodes: int, owner: tuple[int, int]) -> None:
        self.store = store
        self.size = size
        #: One inode per 16 KiB at most (mkfs's own ratio): a small quota keeps its space.
        self.inodes = max(16, min(inodes, size // BYTES_PER_INODE))
        self.owner = owner
        self._template: Path | None = None

    def prepare(self) -> None:
        """Make the template image (once): ``mkfs.ext4`` and drop ``lost+found``."""
        self.store.mkdir(parents=True, exist_ok=True)
        template = self.store / f".template-{os.getpid()}-{secrets.token_hex(4)}.img"
        uid, gid = self.owner
        mkfs = [
            _tool("mkfs.ext4") or "mkfs.ext4",
            "-q",
            "-F",
            "-O",
            "^has_journal,^resize_inode",
            "-N",
            str(self.inodes),
            "-I",
            "128",
            "-m",
            "0",
            "-E",
            f"lazy_itable_init=1,nodiscard,root_owner={uid}:{gid}",
            str(template),
            str(max(1, self.size // 1024)) + "k",
        ]
        debugfs = [_tool("debugfs") or "debugfs", "-w", "-R", "rmdir lost+found", str(template)]
        try:
            for cmd in (mkfs, debugfs):
                done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
                if done.returncode != 0:
                    raise VolumeError(f"{cmd[0]} failed: {done.stderr.decode(errors='replace')}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            template.unlink(missing_ok=True)
            raise VolumeError(f"could not make the volume template: {exc}") from exc
        self._template = template

    def close(self) -> None:
        if self._template is not None:
            self._template.unlink(missing_ok=True)
            self._template = None

    def create(self, mountpoint: Path) -> Path:
        """A fresh volume mounted at ``mountpoint`` (made here); returns its image path."""
        if self._template is None:
            raise VolumeError("volumes not prepared")
        image = self.store / f"{IMAGE_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.img"
        try:
            _copy_sparse(self._template, image)
            mountpoint.mkdir()
            try:
                _mount_image(image, mountpoint)
            except BaseException:
                with contextlib.suppress(OSError):
                    mountpoint.rmdir()
                raise
        except BaseException:
            image.unlink(missing_ok=True)
            raise
        return image

    @staticmethod
    def release(mountpoint: Path, image: Path) -> None:
        """Unmount (lazily: nothing can block it) and delete the image and the mount point."""
        with contextlib.suppress(OSError):
            linux.umount(str(mountpoint), linux.MNT_DETACH)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
        image.unlink(missing_ok=True)


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy only the data extents of ``source`` (an empty ext4 image is mostly holes)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        dst = os.open(target, flags, 0o600)
        try:
            size = os.fstat(src).st_size
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                position = start
                while position < end:
                    copied = os.copy_file_range(src, dst, end - position, position, position)
                    if copied == 0:
                        break
                    position += copied
                offset = end
            os.ftruncate(dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _loop_config(backing_fd: int) -> bytes:
    """``struct loop_config`` with auto-clear: the device detaches at the last unmount."""
    info = struct.pack(
        "=QQQQQIIII64s64s32sQQ", 0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0
    )
    return struct.pack("=II", backing_fd, 0) + info + bytes(64)


def _mount_image(image: Path, mountpoint: Path) -> None:
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(64):  # another process may take the free device first: retry
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
                try:
                    device = os.open(f"/dev/loop{number}", os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    try:
                        fcntl.ioctl(device, _LOOP_CONFIGURE, _loop_config(backing))
                    except OSError as exc:
                        if exc.errno == errno.EBUSY:
                            continue
                        raise
                    path = f"/dev/loop{number}"
                    linux.mount(path, str(mountpoint), "ext4", _MOUNT_FLAGS, _MOUNT_OPTIONS)
                    return
                finally:
                    os.close(device)  # the mount holds the device; auto-clear detaches it later
            raise VolumeError("no free loop device")
        finally:
            os.close(control)
    finally:
        os.close(backing)


def sweep() -> int:
    """Unmount and delete volumes of managers that are gone; return how many."""
    removed = 0
    backing = {}
    with contextlib.suppress(OSError):
        for block in Path("/sys/block").iterdir():
            with contextlib.suppress(OSError):
                path = (block / "loop" / "backing_file").read_text().strip()
                backing[f"/dev/{block.name}"] = path
    mounts: list[tuple[str, str]] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            rfields = right.split()
            if len(rfields) >= 2 and rfields[1] in backing:
                mounts.append((rfields[1], left.split()[4]))
    for device, mountpoint in mounts:
        image = Path(backing[device].removesuffix(" (deleted)"))
        match = _IMAGE.match(image.name)
        if match is None or pid_exists(int(match.group(1))):
            continue
        Volumes.release(Path(mountpoint), image)
        removed += 1
    return removed
