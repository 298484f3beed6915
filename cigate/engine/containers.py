"""The containers backend: code-interpreter containers, their files on disk, kernels and expiry.

A container is a directory (seen by code as ``/mnt/data``) plus, once code first runs, a kernel
from the sandbox pool. Every file under the directory has a ``cfile_`` record; files the code
writes are discovered by diffing the directory around each execution. A container expires after
``expires_after_minutes`` without activity: its kernel is shut down and its files are deleted, as
on the real service, so later downloads get 404 and later responses get 400.

Shared by the emulator today and by the gateway's self-hosted interpreter later.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from cigate import ids
from cigate.clock import Clock
from cigate.engine.errors import (
    BadRequestError,
    container_expired,
    container_file_not_found,
    container_not_found,
)
from cigate.sandbox.base import MOUNT_POINT, ExecutionResult, KernelSession

log = logging.getLogger(__name__)

DEFAULT_IDLE_MINUTES = 20
MEMORY_LIMITS = ("1g", "4g", "16g", "64g")

FileSource = Literal["user", "assistant"]


class KernelProvider(Protocol):
    """What the backend needs from the sandbox: a kernel whose workdir we then own."""

    async def acquire(self) -> KernelSession: ...


@dataclass
class ContainerFile:
    """One file inside a container (``object: "container.file"``)."""

    id: str
    container_id: str
    relpath: str  # POSIX path relative to the container directory
    source: FileSource
    created_at: int
    bytes: int
    #: (size, mtime_ns) when last seen; used to tell changed files from untouched ones.
    signature: tuple[int, int] = (0, 0)

    @property
    def path(self) -> str:
        return str(PurePosixPath(MOUNT_POINT) / self.relpath)

    @property
    def filename(self) -> str:
        return PurePosixPath(self.relpath).name

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "container.file",
            "created_at": self.created_at,
            "bytes": self.bytes,
            "container_id": self.container_id,
            "path": self.path,
            "source": self.source,
        }


@dataclass
class Container:
    """A container's state; ``files`` is keyed by file id, in creation order."""

    id: str
    name: str
    created_at: int
    last_active_at: float
    expires_after_minutes: int
    memory_limit: str
    directory: Path
    network_policy: dict[str, Any] | None = None
    status: str = "running"
    files: dict[str, ContainerFile] = field(default_factory=dict)
    session: KernelSession | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "container",
            "created_at": self.created_at,
            "status": self.status,
            "expires_after": {"anchor": "last_active_at", "minutes": self.expires_after_minutes},
            "last_active_at": int(self.last_active_at),
            "memory_limit": self.memory_limit,
            "name": self.name,
        }
        if self.network_policy is not None:
            body["network_policy"] = self.network_policy
        return body

    def file_by_relpath(self, relpath: str) -> ContainerFile | None:
        for f in self.files.values():
            if f.relpath == relpath:
                return f
        return None


@dataclass(frozen=True)
class CodeRun:
    """One executed cell and the files it created or changed (in path order)."""

    result: ExecutionResult
    changed: list[ContainerFile]


class ContainerBackend:
    """Holds every container; raises ``ApiError``s the hosting app renders."""

    def __init__(
        self,
        *,
        root: Path,
        kernels: KernelProvider,
        clock: Clock,
        idle_minutes: int = DEFAULT_IDLE_MINUTES,
    ) -> None:
        self.root = root
        self.kernels = kernels
        self.clock = clock
        self.idle_minutes = idle_minutes
        self._containers: dict[str, Container] = {}
        root.mkdir(parents=True, exist_ok=True)

    # -- lifecycle -------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        network_policy: dict[str, Any] | None = None,
    ) -> Container:
        if memory_limit is not None and memory_limit not in MEMORY_LIMITS:
            raise BadRequestError(
                f"Invalid value: '{memory_limit}'. Supported values are: "
                + ", ".join(f"'{m}'" for m in MEMORY_LIMITS)
                + ".",
                param="memory_limit",
                code="invalid_value",
            )
        cid = ids.container_id()
        directory = self.root / cid
        directory.mkdir(parents=True)
        now = self.clock.now()
        container = Container(
            id=cid,
            name=name,
            created_at=int(now),
            last_active_at=now,
            expires_after_minutes=expires_after_minutes or self.idle_minutes,
            memory_limit=memory_limit or "1g",
            directory=directory,
            network_policy=network_policy,
        )
        self._containers[cid] = container
        return container

    def get(self, container_id: str, *, allow_expired: bool = False) -> Container:
        """The container, or 404; an expired one is 400 "Container is expired." unless allowed."""
        container = self._containers.get(container_id)
        if container is None or container.status == "deleted":
            raise container_not_found(container_id)
        self._expire_if_idle(container)
        if container.status == "expired" and not allow_expired:
            raise container_expired()
        return container

    def get_live(self, container_id: str) -> Container:
        """For file operations: an expired container's files are gone, so 404 as on Azure."""
        container = self._containers.get(container_id)
        if container is None or container.status == "deleted":
            raise container_not_found(container_id)
        self._expire_if_idle(container)
        if container.status == "expired":
            raise container_not_found(container_id)
        return container

    def list(self) -> list[Container]:
        """Every container that was not deleted, oldest first."""
        out = []
        for c in self._containers.values():
            if c.status == "deleted":
                continue
            self._expire_if_idle(c)
            out.append(c)
        return out

    async def delete(self, container_id: str) -> Container:
        container = self.get(container_id, allow_expired=True)
        container.status = "deleted"
        await self._release(container)
        del self._containers[container_id]
        return container

    def touch(self, container: Container) -> None:
        container.last_active_at = self.clock.now()

    async def reap_expired(self) -> builtins.list[str]:
        """Shut down kernels and delete files of containers idle past their limit."""
        expired = []
        for c in list(self._containers.values()):
            if c.status == "running" and self._is_idle(c):
                self._mark_expired(c)
            if c.status == "expired" and (c.session is not None or c.directory.exists()):
                await self._release(c)
                expired.append(c.id)
        return expired

    async def close(self) -> None:
        """Shut every kernel down (server stop)."""
        await asyncio.gather(*(self._release(c) for c in self._containers.values()))
        self._containers.clear()

    async def reset(self) -> None:
        await self.close()

    # -- files ---------------------------------------------------------------------------

    def add_file(
        self, container: Container, filename: str, data: bytes, *, source: FileSource = "user"
    ) -> ContainerFile:
        """Store an uploaded file; uploads get a content-hash prefix as on the real service."""
        safe = _upload_name(filename)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        relpath = f"{digest}-{safe}" if source == "user" else safe
        target = container.directory / relpath
        target.write_bytes(data)
        existing = container.file_by_relpath(relpath)
        if existing is not None:
            existing.bytes, existing.signature = len(data), _signature(target)
            return existing
        record = ContainerFile(
            id=ids.container_file_id(),
            container_id=container.id,
            relpath=relpath,
            source=source,
            created_at=self.clock.now_int(),
            bytes=len(data),
            signature=_signature(target),
        )
        container.files[record.id] = record
        self.touch(container)
        return record

    def get_file(self, container: Container, file_id: str) -> ContainerFile:
        record = container.files.get(file_id)
        if record is None or not (container.directory / record.relpath).is_file():
            raise container_file_not_found(container.id, file_id)
        return record

    def file_path(self, container: Container, record: ContainerFile) -> Path:
        """Host path of a file, guarded against escaping the container directory."""
        base = container.directory.resolve()
        path = (base / record.relpath).resolve()
        if os.path.commonpath([base, path]) != str(base):
            raise container_file_not_found(container.id, record.id)
        return path

    def delete_file(self, container: Container, file_id: str) -> ContainerFile:
        record = self.get_file(container, file_id)
        with contextlib.suppress(FileNotFoundError):
            (container.directory / record.relpath).unlink()
        del container.files[file_id]
        return record

    # -- code ----------------------------------------------------------------------------

    async def run_code(
        self,
        container: Container,
        code: str,
        *,
        timeout: float,  # noqa: ASYNC109 - the kernel's own deadline, passed on to execute()
    ) -> CodeRun:
        """Run one cell in the container's kernel and register what it wrote."""
        async with container.lock:
            if container.status != "running":
                raise container_expired()
            session = await self._session(container)
            self.touch(container)
            before = _snapshot(container.directory)
            result = await session.execute(code, timeout=timeout)
            self.touch(container)
            changed = self._register_changes(container, before)
        return CodeRun(result=result, changed=changed)

    async def _session(self, container: Container) -> KernelSession:
        if container.session is None:
            session = await self.kernels.acquire()
            # The kernel's workdir is where /mnt/data lives: move what was uploaded in.
            for entry in container.directory.iterdir():
                shutil.move(str(entry), session.workdir / entry.name)
            container.directory.rmdir()
            container.directory = session.workdir
            container.session = session
        return container.session

    def _register_changes(
        self, container: Container, before: dict[str, tuple[int, int]]
    ) -> builtins.list[ContainerFile]:
        after = _snapshot(container.directory)
        changed: list[ContainerFile] = []
        for relpath in sorted(after):
            sig = after[relpath]
            record = container.file_by_relpath(relpath)
            if record is None:
                record = ContainerFile(
                    id=ids.container_file_id(),
                    container_id=container.id,
                    relpath=relpath,
                    source="assistant",
                    created_at=self.clock.now_int(),
                    bytes=sig[0],
                    signature=sig,
                )
                container.files[record.id] = record
                changed.append(record)
            elif before.get(relpath) != sig or record.signature != sig:
                record.bytes, record.signature = sig[0], sig
                changed.append(record)
        for fid, record in list(container.files.items()):
            if record.relpath not in after:
                del container.files[fid]
        return changed

    # -- expiry --------------------------------------------------------------------------

    def _is_idle(self, container: Container) -> bool:
        return self.clock.now() - container.last_active_at > container.expires_after_minutes * 60

    def _expire_if_idle(self, container: Container) -> None:
        if container.status == "running" and self._is_idle(container):
            self._mark_expired(container)

    def _mark_expired(self, container: Container) -> None:
        log.info("container %s expired", container.id)
        container.status = "expired"
        container.files.clear()

    async def _release(self, container: Container) -> None:
        session, container.session = container.session, None
        if session is not None:
            try:
                await session.shutdown()
            except Exception:  # a kernel that will not stop must not block the others
                log.exception("kernel of %s did not shut down cleanly", container.id)
        shutil.rmtree(container.directory, ignore_errors=True)


def _upload_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name.strip()
    name = "".join(ch for ch in name if ch.isprintable())
    if name in ("", ".", ".."):
        raise BadRequestError("Invalid file name.", param="file")
    return name[:200]


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def _walk(directory: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Regular files under the directory (hidden ones and symlinks skipped) -> signature."""
    out: dict[str, tuple[int, int]] = {}
    for path in _walk(directory):
        if path.is_symlink() or not path.is_file():
            continue
        out[path.relative_to(directory).as_posix()] = _signature(path)
    return out
