"""Write-then-rename: a downloaded file appears complete, verified, or not at all.

Bytes go to a hidden temporary file in the target directory (same file system, so the final
step is a rename), are hashed on the way, fsynced, and only then linked to their final name.
``os.link`` fails instead of overwriting, which closes the race between two downloads choosing
the same name. A file already saved under that name with the same sha256 is reused (a re-run
does not make ``chart (1).png`` copies of identical bytes). Any failure or cancellation removes
the temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

import anyio.to_thread

from cigate.exceptions import StorageError
from cigate.harvest.naming import NameReserver, existing_variants

__all__ = ["TempFile"]

TEMP_PREFIX = ".cigate-"
TEMP_SUFFIX = ".part"


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp's 0600 surprises users)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


class TempFile:
    """A temporary file being filled by one download attempt."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.size = 0
        self.head = b""
        self._sha = hashlib.sha256()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)
        except OSError as exc:
            raise _storage_error(directory, exc) from exc
        self.path = Path(name)
        self._fh = os.fdopen(fd, "wb")

    @classmethod
    async def create(cls, directory: Path) -> TempFile:
        return await anyio.to_thread.run_sync(cls, directory)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    async def write(self, chunk: bytes) -> None:
        if len(self.head) < 4096:
            self.head += chunk[: 4096 - len(self.head)]
        self.size += len(chunk)
        # Hash and write in a worker thread: both release the GIL, so the event loop keeps
        # receiving the other downloads meanwhile.
        try:
            await anyio.to_thread.run_sync(self._hash_and_write, chunk)
        except OSError as exc:
            raise _storage_error(self.directory, exc) from exc

    def _hash_and_write(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._fh.write(chunk)

    def _flush(self) -> None:
        self._fh.flush()
        os.fchmod(self._fh.fileno(), FILE_MODE)
        os.fsync(self._fh.fileno())
        self._fh.close()

    async def commit(self, reserver: NameReserver, name: str) -> Path:
        """fsync, then give the file its final unique name inside the directory."""
        try:
            await anyio.to_thread.run_sync(self._flush)
            return await anyio.to_thread.run_sync(self._place, reserver, name)
        except OSError as exc:
            raise _storage_error(self.directory, exc) from exc

    def _place(self, reserver: NameReserver, name: str) -> Path:
        same = self._identical(reserver.directory, name)
        if same is not None:  # a re-run: the same bytes are already there under this name
            os.unlink(self.path)
            return same
        while True:
            final = reserver.reserve(name)
            if not reserver.inside(final):  # pragma: no cover - safe_name makes this impossible
                reserver.release(final)
                raise StorageError(f"refusing to write outside {reserver.directory}")
            try:
                os.link(self.path, final)
            except FileExistsError:
                continue  # someone else took it between reserve and link: next number
            except OSError:  # file systems without hard links
                if os.path.lexists(final):
                    continue
                os.replace(self.path, final)
            else:
                os.unlink(self.path)
            _fsync_dir(final.parent)
            return final

    def _identical(self, directory: Path, name: str) -> Path | None:
        """A file already saved as ``name`` (or ``name (n).ext``) with exactly these bytes."""
        for path in existing_variants(directory, name):
            try:
                st = os.stat(path, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_size != self.size:
                    continue
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    while chunk := fh.read(1024 * 1024):
                        digest.update(chunk)
            except OSError:
                continue
            if digest.hexdigest() == self.sha256:
                return path
        return None

    async def discard(self) -> None:
        """Remove the temporary file (idempotent; safe after commit)."""
        await anyio.to_thread.run_sync(self._discard)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _storage_error(directory: Path, exc: OSError) -> StorageError:
    """A local disk failure as a CigateError: recorded per file, not a crash of the harvest."""
    return StorageError(
        f"cannot write to {directory}: {exc.strerror or exc}",
        hint="Free some disk space, or choose a writable output directory with --out.",
    )


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
