"""A container's directory as the server touches it: by descriptor, never by path.

Model-written code owns everything under a container's directory (``/mnt/data`` in the sandbox)
and can change it at any moment, in a tight loop, while the server reads it: a listed file
becomes a symlink to ``/proc/self/environ``, to a host file or to another container's file and
back; a directory becomes a symlink to ``/``; a FIFO, a socket or a device node appears under a
listed name; a million entries or a tree thousands of levels deep are created. Only the
directory itself is the server's (its path has no component the code can change). So every
operation here obeys these rules, and the functions' docstrings say which one they rely on:

1. **Resolve from a descriptor, never follow a link.** A relative path is resolved from a
   descriptor of the container's directory without following a symlink at any component:
   ``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
   RESOLVE_NO_XDEV`` where the kernel has it (Linux >= 5.6), else ``O_NOFOLLOW`` on each
   component opened from its parent's descriptor. Empty, ``.``, ``..`` and absolute components
   are refused before any system call.
2. **Look before you open.** The last component is opened ``O_PATH`` first (no FIFO blocks, no
   device driver runs), ``fstat``-ed, and only a regular file is reopened for reading through
   that very descriptor (``/proc/self/fd/N``, ``O_NONBLOCK | O_NOCTTY``) and checked again
   (same device and inode). The caller reads from the descriptor it got: whatever the name
   points to a microsecond later, the bytes are that regular file's.
3. **Bounded walks.** :func:`scan` lists regular files with ``lstat`` semantics, descending
   through directory descriptors opened ``O_NOFOLLOW``; it visits at most ``max_entries``
   entries of any kind and ``max_depth`` levels, and says when it stopped early.
4. **Writes land whole, beside nothing the code controls.** :func:`write_file` creates the
   bytes ``O_CREAT | O_EXCL | O_NOFOLLOW`` in a staging directory only the server uses and
   ``renameat``-s them into place: a symlink planted at the target name is replaced, never
   followed; a directory there makes the write fail.
5. **Removal by descriptor.** :func:`unlink` removes from the parent's descriptor; whole trees
   go with ``shutil.rmtree``, which on Linux works from descriptors and never follows a
   symlink (``shutil.rmtree.avoids_symlink_attacks``; checked at import).

Names are bytes (Linux allows any byte but ``/`` and NUL in a name); callers decide how to
show them. A name that is simply gone, or is not (any more) what the operation needs, gives
``None``/``False``: it is the caller's 404, never an exception that could become a 500.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "RegularFile",
    "Scan",
    "directory",
    "move_files",
    "open_directory",
    "open_regular",
    "scan",
    "split_relpath",
    "stat_regular",
    "unlink",
    "using_openat2",
    "write_file",
]

log = logging.getLogger(__name__)

if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - true on every Linux
    raise ImportError("shutil.rmtree is not descriptor-based on this platform")

#: Entries of any kind one :func:`scan` visits before it stops (a directory's own entry
#: counts, and so does every symlink, FIFO and file).
MAX_ENTRIES = 20_000
#: Directory levels below the container's directory that :func:`scan` descends into.
MAX_DEPTH = 32

#: Errors that mean "not there, or not what we need": a swapped name, a symlink, a loop, an
#: escape attempt, a name too long. Anything else (EMFILE, EIO...) is the server's problem.
_GONE = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.EXDEV,
        errno.EAGAIN,
        errno.EACCES,
        errno.EPERM,
        errno.ENXIO,
        errno.ENAMETOOLONG,
        errno.EISDIR,
        errno.EINVAL,
    }
)

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


# -- openat2 -------------------------------------------------------------------------------

_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_NO_XDEV | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH
#: ``openat2`` has the same number on every architecture that has it (unified table).
_SYS_OPENAT2 = 437


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def _load_openat2() -> Callable[[int, bytes, int], int] | None:
    """``openat2(dir_fd, path, flags)`` with the resolve flags of rule 1, or ``None``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):  # pragma: no cover - no libc syscall()
        return None
    syscall.restype = ctypes.c_long

    def openat2(dir_fd: int, path: bytes, flags: int) -> int:
        how = _OpenHow(flags, 0, _RESOLVE)
        fd = syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return int(fd)

    # Probe once: ENOSYS (old kernel) or EPERM (a seccomp policy) means "use the fallback".
    root = os.open("/", _DIR_FLAGS)
    try:
        os.close(openat2(root, b".", _DIR_FLAGS))
    except OSError as exc:
        log.info("openat2 is unavailable (%s): resolving one component at a time", exc)
        return None
    finally:
        os.close(root)
    return openat2


_openat2 = _load_openat2()


def using_openat2() -> bool:
    """True when paths are resolved by ``openat2`` (else by the per-component fallback)."""
    return _openat2 is not None


# -- resolving -----------------------------------------------------------------------------


def split_relpath(relpath: bytes) -> list[bytes]:
    """The components of a relative path; ``ValueError`` for anything rule 1 refuses."""
    parts = relpath.split(b"/")
    if not relpath or relpath.startswith(b"/") or b"\0" in relpath:
        raise ValueError(f"not a relative path: {relpath!r}")
    if any(p in (b"", b".", b"..") for p in parts):
        raise ValueError(f"not a plain relative path: {relpath!r}")
    return parts


def _resolve(root_fd: int, parts: list[bytes], flags: int) -> int:
    """Open ``parts`` beneath ``root_fd`` with ``flags`` (plus ``O_NOFOLLOW``), never
    following a symlink at any component (rule 1). Raises ``OSError``."""
    if _openat2 is not None:
        return _openat2(root_fd, b"/".join(parts), flags | os.O_NOFOLLOW)
    fd = root_fd
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = child
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        if fd != root_fd:
            os.close(fd)


def _gone(exc: OSError) -> bool:
    return exc.errno in _GONE


def open_directory(path: Path | str) -> int:
    """A descriptor of a container's own directory (its path is the server's: no component of
    it is under the code's control); the last component must not be a symlink."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


@contextlib.contextmanager
def directory(path: Path | str) -> Iterator[int]:
    """:func:`open_directory`, closed on exit."""
    fd = open_directory(path)
    try:
        yield fd
    finally:
        os.close(fd)


def stat_regular(root_fd: int, relpath: bytes) -> os.stat_result | None:
    """The ``fstat`` of the regular file at ``relpath`` beneath ``root_fd``, or ``None`` when
    nothing is there or it is not a regular file (rules 1 and 2; nothing is opened for
    reading, so a FIFO or device is never touched)."""
    parts = split_relpath(relpath)
    try:
        fd = _resolve(root_fd, parts, _PATH_FLAGS)
    except OSError as exc:
        if _gone(exc):
            return None
        raise
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st if stat.S_ISREG(st.st_mode) else None


class RegularFile:
    """An open regular file: the descriptor to read from and the ``fstat`` taken from it.

    Reads use ``pread`` at explicit offsets (no shared position), so one open file can serve
    a range. Closing is idempotent; a forgotten file is closed when collected.
    """

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd: int | None = fd
        self.stat = st

    @property
    def size(self) -> int:
        return self.stat.st_size

    def pread(self, size: int, offset: int) -> bytes:
        if self.fd is None:
            raise ValueError("the file is closed")
        return os.pread(self.fd, size, offset)

    def read_all(self, limit: int | None = None) -> bytes:
        """Every byte from offset 0 up to EOF (at most ``limit``): the file as it is now."""
        chunks, offset = [], 0
        while limit is None or offset < limit:
            want = 1 << 20 if limit is None else min(1 << 20, limit - offset)
            chunk = self.pread(want, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RegularFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _reopen_for_reading(path_fd: int, parts: list[bytes], root_fd: int) -> int:
    """A readable descriptor of the same file as ``path_fd`` (an ``O_PATH`` descriptor).

    Through ``/proc/self/fd``, which names the open file itself, not a path; without a
    mounted ``/proc``, the path is resolved again (rule 1) and the caller compares inodes.
    """
    try:
        return os.open(f"/proc/self/fd/{path_fd}", _READ_FLAGS)
    except FileNotFoundError:  # pragma: no cover - /proc not mounted
        return _resolve(root_fd, parts, _READ_FLAGS)


def open_regular(root_fd: int, relpath: bytes) -> RegularFile | None:
    """The regular file at ``relpath`` beneath ``root_fd``, open for reading, or ``None``
    (rules 1 and 2): no symlink is followed at any component, a FIFO, socket, device or
    directory is never opened for reading, and the returned descriptor is checked to be the
    regular file that was looked at (same device, same inode)."""
    parts = split_relpath(relpath)
    try:
        path_fd = _resolve(root_fd, parts, _PATH_FLAGS)
    except OSError as exc:
        if _gone(exc):
            return None
        raise
    try:
        seen = os.fstat(path_fd)
        if not stat.S_ISREG(seen.st_mode):
            return None
        try:
            fd = _reopen_for_reading(path_fd, parts, root_fd)
        except OSError as exc:
            if _gone(exc):
                return None
            raise
    finally:
        os.close(path_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)  # pragma: no cover - only the /proc-less fallback can get here
        return None
    return RegularFile(fd, st)


# -- walking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found: regular files by relative path (bytes) with their ``lstat``,
    how many entries it visited, and whether it saw everything (``complete``)."""

    files: dict[bytes, os.stat_result]
    entries: int
    complete: bool


def scan(root_fd: int, *, max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH) -> Scan:
    """Every regular file beneath ``root_fd`` (rule 3), in no particular order.

    Symlinks, FIFOs, sockets and devices are skipped (they are entries, so they count); a
    directory is entered through a descriptor opened ``O_NOFOLLOW``, so a directory swapped
    for a symlink between listing and entering is skipped, never followed. The walk stops
    after ``max_entries`` entries (``complete=False``); directories deeper than
    ``max_depth`` are not entered (``complete=False``). Which files are missing from an
    incomplete scan is unspecified. Entries that vanish mid-walk are simply not reported.
    """
    files: dict[bytes, os.stat_result] = {}
    visited = 0
    complete = True

    def visit(dir_fd: int, prefix: bytes, depth: int) -> None:
        nonlocal visited, complete
        subdirs: list[bytes] = []
        try:
            entries = os.scandir(dir_fd)
        except OSError as exc:
            if _gone(exc):
                return
            raise
        with entries:
            for entry in entries:
                if visited >= max_entries:
                    complete = False
                    break
                visited += 1
                name = os.fsencode(entry.name)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(name)
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            files[prefix + name] = st
                except OSError as exc:
                    if not _gone(exc):
                        raise
        for name in subdirs:
            if depth >= max_depth:
                complete = False
                break
            if visited >= max_entries:
                complete = False
                break
            try:
                child = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
            except OSError as exc:
                if _gone(exc):
                    continue
                raise
            try:
                visit(child, prefix + name + b"/", depth + 1)
            finally:
                os.close(child)

    visit(root_fd, b"", 0)
    return Scan(files=files, entries=visited, complete=complete)


# -- writing, moving, removing -------------------------------------------------------------


def write_file(dir_fd: int, name: bytes, data: bytes, *, staging_fd: int) -> os.stat_result:
    """Put ``data`` at ``name`` (one component) in ``dir_fd``, whole, and return its ``fstat``
    (rule 4).

    The bytes are written to a fresh ``O_CREAT | O_EXCL | O_NOFOLLOW`` file in ``staging_fd``
    (the server's own directory, on the same file system) and renamed onto ``name``: a symlink
    the code planted there is replaced, not followed. Raises ``IsADirectoryError`` when a
    directory has the name; nothing is left behind on any failure. When staging and target
    are on different file systems, the temporary file is made in ``dir_fd`` itself instead.
    """
    split_relpath(name)
    if b"/" in name:
        raise ValueError(f"not a single name: {name!r}")
    try:
        return _write_via(staging_fd, dir_fd, name, data)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    return _write_via(dir_fd, dir_fd, name, data)


def _write_via(tmp_dir_fd: int, dir_fd: int, name: bytes, data: bytes) -> os.stat_result:
    tmp = b".cigate-upload-" + secrets.token_hex(8).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=tmp_dir_fd)
    try:
        try:
            _give_to_owner_of(dir_fd, fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=tmp_dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=tmp_dir_fd)
        raise
    return st


def _owner_of(dir_fd: int) -> tuple[int, int] | None:
    """The (uid, gid) files written into ``dir_fd`` should get: its owner's, when the server
    runs as root and the directory belongs to someone else (a sandbox's unprivileged uid, so
    the code can change the files it was given); else None (nothing to change)."""
    if os.geteuid() != 0:
        return None
    st = os.fstat(dir_fd)
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def _give_to_owner_of(dir_fd: int, fd: int) -> None:
    owner = _owner_of(dir_fd)
    if owner is not None:
        os.fchown(fd, *owner)


def move_files(src_fd: int, dst_fd: int, *, staging_fd: int) -> int:
    """Move the regular files at the top of ``src_fd`` into ``dst_fd`` (``renameat``; a copy
    through :func:`write_file` across file systems); return how many. Anything else in
    ``src_fd`` (the server wrote only files there) is left for the caller's ``rmtree``."""
    moved = 0
    with os.scandir(src_fd) as entries:
        names = [os.fsencode(e.name) for e in entries if e.is_file(follow_symlinks=False)]
    for name in names:
        try:
            os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            owner = _owner_of(dst_fd)
            if owner is not None:
                os.chown(name, *owner, dir_fd=dst_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            opened = open_regular(src_fd, name)
            if opened is None:
                continue
            with opened:
                write_file(dst_fd, name, opened.read_all(), staging_fd=staging_fd)
            os.unlink(name, dir_fd=src_fd)
        moved += 1
    return moved


def unlink(root_fd: int, relpath: bytes) -> bool:
    """Remove the non-directory entry at ``relpath`` beneath ``root_fd`` (rule 5): its parent
    is resolved without following symlinks and the name is removed from that descriptor, so
    a parent swapped for a symlink cannot make the server remove a file elsewhere. ``False``
    when there was nothing (or a directory) to remove."""
    parts = split_relpath(relpath)
    parent = root_fd
    try:
        if len(parts) > 1:
            parent = _resolve(root_fd, parts[:-1], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        os.unlink(parts[-1], dir_fd=parent)
    except OSError as exc:
        if _gone(exc):
            return False
        raise
    finally:
        if parent != root_fd:
            os.close(parent)
    return True
