"""Blobs in a local directory: ``ROOT/aa/bb/<sha256>``, written crash-safely.

A put writes to ``ROOT/.tmp/put-*.part`` while hashing, fsyncs, then renames the file to its
content address (atomic on one filesystem) and fsyncs the directory, so a reader sees a
whole blob or none. Each ``.part`` file is ``flock``-ed by its writer for its whole life:
:meth:`LocalBlobStore.cleanup` (run when the store opens) deletes only the ``.part`` files
whose lock it can take, i.e. those of dead processes, and never a live put of another
gateway process sharing the directory.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cigate.exceptions import IntegrityError, StorageError
from cigate.storage.blobs import CHUNK_SIZE, check_range, check_sha256
from cigate.storage.errors import BlobNotFoundError
from cigate.storage.records import BlobInfo

__all__ = ["LocalBlobStore"]

_TMP = ".tmp"


class LocalBlobStore:
    """A :class:`~cigate.storage.blobs.BlobStore` on the local filesystem.

    Blocking filesystem calls run in worker threads so the event loop keeps serving. Writes
    are coalesced to 1 MiB before each thread hop, whatever size the upstream chunks are.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        try:
            (self.root / _TMP).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the blob directory {self.root}: {exc}") from exc
        self._cleanup_sync()

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def put_stream(
        self, chunks: AsyncIterator[bytes], *, expected_size: int | None = None
    ) -> BlobInfo:
        # Not in a thread: a cancellation must not be able to orphan a locked temp file.
        try:
            fd, tmp = self._new_temp()
        except OSError as exc:
            raise StorageError(f"cannot create a temp file under {self.root}: {exc}") from exc
        done = False
        try:
            digest = hashlib.sha256()
            size = 0
            pending = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    raise IntegrityError(
                        f"received more than the expected {expected_size} bytes; nothing was kept"
                    )
                pending += chunk
                if len(pending) >= CHUNK_SIZE:
                    block, pending = bytes(pending), bytearray()
                    await self._io(_write, fd, digest, block)
            if pending:
                await self._io(_write, fd, digest, bytes(pending))
            if expected_size is not None and size != expected_size:
                raise IntegrityError(
                    f"received {size} bytes, expected {expected_size}; nothing was kept"
                )
            sha = digest.hexdigest()
            await self._io(self._commit, fd, tmp, sha)
            done = True
            return BlobInfo(sha, size)
        finally:
            # Synchronous on purpose: this also runs while the task is being cancelled.
            os.close(fd)
            if not done:
                tmp.unlink(missing_ok=True)

    async def open(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path(sha256)
        info = await self.stat(sha256)
        if info is None:
            raise BlobNotFoundError(f"blob {sha256} is not stored")
        begin, stop = check_range(info.size, start, end)
        return _read(path, begin, stop)

    async def stat(self, sha256: str) -> BlobInfo | None:
        path = self.path(sha256)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat blob {sha256}: {exc}") from exc
        return BlobInfo(sha256, st.st_size)

    async def check(self) -> None:
        tmp = self.root / _TMP
        ok = await asyncio.to_thread(lambda: tmp.is_dir() and os.access(tmp, os.W_OK | os.X_OK))
        if not ok:
            raise StorageError(f"the blob directory {self.root} is gone or not writable")

    async def delete(self, sha256: str) -> None:
        path = self.path(sha256)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete blob {sha256}: {exc}") from exc

    async def cleanup(self, older_than: float | None = None) -> int:
        return await asyncio.to_thread(self._cleanup_sync)

    async def list_names(self) -> list[str]:
        def walk() -> list[str]:
            return sorted(
                str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
            )

        return await asyncio.to_thread(walk)

    async def close(self) -> None:
        return None

    # -- blocking helpers (run in threads) ---------------------------------------------------

    async def _io(self, func: Callable[..., None], *args: Any) -> None:
        """Run our own blocking I/O in a thread; errors of the byte source stay unwrapped."""
        try:
            await asyncio.to_thread(func, *args)
        except OSError as exc:
            raise StorageError(f"writing a blob under {self.root} failed: {exc}") from exc

    def _new_temp(self) -> tuple[int, Path]:
        """Create and lock a ``.part`` file; retry if a concurrent cleanup removed it first."""
        while True:
            tmp = self.root / _TMP / f"put-{secrets.token_hex(12)}.part"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Between create and lock, a cleanup could have taken the lock and unlinked it.
            if os.fstat(fd).st_nlink > 0:
                return fd, tmp
            os.close(fd)

    def _commit(self, fd: int, tmp: Path, sha: str) -> None:
        """Publish the temp file under its digest; the caller closes ``fd``."""
        final = self.path(sha)
        if final.exists():
            # Same digest, same bytes: keep the existing blob (content addressing).
            tmp.unlink()
            return
        os.fsync(fd)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def _cleanup_sync(self) -> int:
        removed = 0
        for tmp in (self.root / _TMP).glob("put-*.part"):
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live put in some process holds it
                continue
            tmp.unlink(missing_ok=True)
            os.close(fd)
            removed += 1
        return removed


def _write(fd: int, digest: hashlib._Hash, block: bytes) -> None:
    digest.update(block)
    view = memoryview(block)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _read(path: Path, start: int, stop: int) -> AsyncIterator[bytes]:
    """Yield ``path[start:stop]`` in chunks of at most 1 MiB, reading in a worker thread."""
    if start >= stop:
        return
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError as exc:
        raise BlobNotFoundError(f"blob {path.name} disappeared") from exc
    try:
        await asyncio.to_thread(handle.seek, start)
        remaining = stop - start
        while remaining > 0:
            data = await asyncio.to_thread(handle.read, min(CHUNK_SIZE, remaining))
            if not data:
                raise StorageError(f"blob {path.name} is shorter than recorded")
            remaining -= len(data)
            yield data
    finally:
        handle.close()
