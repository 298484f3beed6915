"""The containers backend: code-interpreter containers, their files on disk, kernels and expiry.

A container is a directory (seen by code as ``/mnt/data``) plus, once code first runs, a kernel
from the sandbox pool. Every regular file under the directory has a ``cfile_`` record; files the
code writes are discovered by diffing the directory around each execution. A container expires
after ``expires_after_minutes`` without activity: its kernel is shut down and its files are
deleted, as on the real service, so later downloads get 404 and later responses get 400.

The directory belongs to model-written code, which can swap any name for a symlink, a FIFO or a
directory at any moment. Everything here touches it through :mod:`cigate.engine.workdir` only
(descriptors, no symlink followed, bounded walks, writes renamed into place), and a record
whose name is not a regular file any more is neither listed nor served: 404, as for a file the
code deleted. Every name is kept: hidden files, any bytes; a name that is not UTF-8 is shown
with U+FFFD in its place (JSON carries text), while the record keeps its bytes to open it.

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
from cigate.engine import workdir
from cigate.engine.errors import (
    ApiError,
    BadRequestError,
    container_expired,
    container_file_not_found,
    container_not_found,
)
from cigate.exceptions import SandboxCapacityError
from cigate.sandbox.base import MOUNT_POINT, ExecutionResult, KernelSession

log = logging.getLogger(__name__)

#: File name suffix of a displayed figure saved into its container, by image type.
_FIGURE_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif"}

DEFAULT_IDLE_MINUTES = 20
#: The longest name (bytes) a Linux file can have: upload names are cut to fit.
NAME_MAX = 255
MEMORY_LIMITS = ("1g", "4g", "16g", "64g")

FileSource = Literal["user", "assistant"]
#: (size, mtime_ns, inode) of a regular file when last seen.
Signature = tuple[int, int, int]


class KernelProvider(Protocol):
    """What the backend needs from the sandbox: a kernel whose workdir we then own.

    ``memory`` is the container's memory limit in bytes (its ``memory_limit`` tier; the
    provider may cap it); ``owner`` (a tenant) is counted against the provider's per-owner
    cap. At either cap the provider raises ``SandboxCapacityError``.
    """

    async def acquire(
        self, *, memory: int | None = None, owner: str | None = None
    ) -> KernelSession: ...


@dataclass
class ContainerFile:
    """One file inside a container (``object: "container.file"``)."""

    id: str
    container_id: str
    #: POSIX path relative to the container directory, as the API shows it (valid Unicode).
    relpath: str
    source: FileSource
    created_at: int
    bytes: int
    #: When last seen; used to tell changed files from untouched ones.
    signature: Signature = (0, 0, 0)
    #: The same path as bytes on disk (a name need not be UTF-8); defaults to ``relpath``'s.
    raw: builtins.bytes = b""

    def __post_init__(self) -> None:
        if not self.raw:
            self.raw = self.relpath.encode("utf-8")

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
    #: Who the kernel is counted against (the gateway's tenant; ``None`` in the emulator).
    owner: str | None = None
    status: str = "running"
    files: dict[str, ContainerFile] = field(default_factory=dict)
    session: KernelSession | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: File id by on-disk path, the index of ``files``.
    by_raw: dict[bytes, str] = field(default_factory=dict)

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

    def file_by_raw(self, raw: bytes) -> ContainerFile | None:
        file_id = self.by_raw.get(raw)
        return None if file_id is None else self.files[file_id]

    def add_record(self, record: ContainerFile) -> None:
        self.files[record.id] = record
        self.by_raw[record.raw] = record.id

    def drop_record(self, file_id: str) -> None:
        record = self.files.pop(file_id)
        self.by_raw.pop(record.raw, None)

    def clear_records(self) -> None:
        self.files.clear()
        self.by_raw.clear()


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
        #: Where uploads are written before they are renamed into a container (server-only;
        #: what a crashed process left there is removed).
        self._staging = root / ".staging"
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging.mkdir(parents=True)

    # -- lifecycle -------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        network_policy: dict[str, Any] | None = None,
        owner: str | None = None,
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
            owner=owner,
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

    @contextlib.contextmanager
    def _directory(self, container: Container) -> Iterator[int]:
        """A descriptor of the container's directory; 404 when it is gone (deleted or
        expired while this request ran)."""
        try:
            fd = workdir.open_directory(container.directory)
        except FileNotFoundError:
            raise container_not_found(container.id) from None
        try:
            yield fd
        finally:
            os.close(fd)

    def add_file(
        self,
        container: Container,
        filename: str,
        data: bytes,
        *,
        source: FileSource = "user",
        file_id: str | None = None,
    ) -> ContainerFile:
        """Store an uploaded file; uploads get a content-hash prefix as on the real service.

        ``filename`` must be one plain name (client uploads are checked by
        :func:`cigate.engine.upload_names.check_upload_name` first). The bytes are renamed into
        place whole: a symlink the code planted under the target name is replaced, never
        followed; a directory there is a 400. ``file_id``: the id to give a new record (a
        displayed figure is saved as ``<its id>.png``).
        """
        name = _component(filename)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        raw = _fit(f"{digest}-".encode() + name if source == "user" else name)
        try:
            with (
                self._directory(container) as dir_fd,
                workdir.directory(self._staging) as staging_fd,
            ):
                st = workdir.write_file(dir_fd, raw, data, staging_fd=staging_fd)
        except IsADirectoryError:
            raise BadRequestError(
                f"Cannot write {_show(raw)!r}: a directory of that name exists in the container.",
                param="file",
            ) from None
        existing = container.file_by_raw(raw)
        if existing is not None:
            existing.bytes, existing.signature = len(data), _signature(st)
            return existing
        record = ContainerFile(
            id=file_id or ids.container_file_id(),
            container_id=container.id,
            relpath=_show(raw),
            source=source,
            created_at=self.clock.now_int(),
            bytes=len(data),
            signature=_signature(st),
            raw=raw,
        )
        container.add_record(record)
        self.touch(container)
        return record

    def get_file(self, container: Container, file_id: str) -> ContainerFile:
        """The record, or 404 when there is none or its name is not a regular file now."""
        record = container.files.get(file_id)
        if record is None:
            raise container_file_not_found(container.id, file_id)
        with self._directory(container) as dir_fd:
            st = workdir.stat_regular(dir_fd, record.raw)
        if st is None:
            raise container_file_not_found(container.id, file_id)
        record.bytes = st.st_size
        return record

    def list_files(self, container: Container) -> builtins.list[ContainerFile]:
        """Records whose name is a regular file now, in creation order, sizes as they are."""
        out = []
        with self._directory(container) as dir_fd:
            for record in container.files.values():
                st = workdir.stat_regular(dir_fd, record.raw)
                if st is not None:
                    record.bytes = st.st_size
                    out.append(record)
        return sorted(out, key=lambda f: f.created_at)  # stable: creation order

    def open_file(self, container: Container, record: ContainerFile) -> workdir.RegularFile:
        """The file open for reading (the caller closes it), or 404: opened by descriptor
        beneath the container's directory, no symlink followed, regular files only."""
        with self._directory(container) as dir_fd:
            opened = workdir.open_regular(dir_fd, record.raw)
        if opened is None:
            raise container_file_not_found(container.id, record.id)
        return opened

    def read_file(self, container: Container, record: ContainerFile) -> bytes:
        """Every byte of the file as it is now (see :meth:`open_file`)."""
        with self.open_file(container, record) as opened:
            return opened.read_all()

    def delete_file(self, container: Container, file_id: str) -> ContainerFile:
        record = container.files.get(file_id)
        if record is None:
            raise container_file_not_found(container.id, file_id)
        with self._directory(container) as dir_fd:
            workdir.unlink(dir_fd, record.raw)
        container.drop_record(file_id)
        return record

    # -- code ----------------------------------------------------------------------------

    async def run_code(
        self,
        container: Container,
        code: str,
        *,
        timeout: float,  # noqa: ASYNC109 - the kernel's own deadline, passed on to execute()
        save_figures: bool = False,
    ) -> CodeRun:
        """Run one cell in the container's kernel and register what it wrote; with
        ``save_figures`` (the Responses API's tool) each displayed image becomes a file too."""
        async with container.lock:
            if container.status != "running":
                raise container_expired()
            session = await self._session(container)
            self.touch(container)
            before = await asyncio.to_thread(_snapshot, container.directory)
            result = await session.execute(code, timeout=timeout)
            self.touch(container)
            after = await asyncio.to_thread(_snapshot, container.directory)
            changed = self._register_changes(container, before, after)
            if save_figures:
                changed += self._save_figures(container, result)
        return CodeRun(result=result, changed=changed)

    def _save_figures(
        self, container: Container, result: ExecutionResult
    ) -> builtins.list[ContainerFile]:
        """Each displayed image saved into the container as ``cfile_<id>.png``, as the service
        does (seed 000's ``filename: cfile_689df4….png``): listed, downloadable and cited like
        any file the code wrote. A figure the code also saved keeps both files."""
        saved = []
        for image in result.images:
            file_id = ids.container_file_id()
            suffix = _FIGURE_SUFFIX.get(image.mime_type, ".png")
            try:
                saved.append(
                    self.add_file(
                        container, file_id + suffix, image.data, source="assistant", file_id=file_id
                    )
                )
            except OSError as exc:  # a full /mnt/data: the figure stays in the call's outputs
                log.warning("a figure of container %s was not saved: %s", container.id, exc)
        return saved

    async def _session(self, container: Container) -> KernelSession:
        if container.session is None:
            session = await self._acquire(container)
            # The kernel's workdir is where /mnt/data lives: move what was uploaded in.
            with (
                workdir.directory(container.directory) as src,
                workdir.directory(session.workdir) as dst,
                workdir.directory(self._staging) as staging,
            ):
                workdir.move_files(src, dst, staging_fd=staging)
                # Copied onto the kernel's volume (another file system): new inodes, same files.
                for record in container.files.values():
                    st = workdir.stat_regular(dst, record.raw)
                    if st is not None:
                        record.signature = _signature(st)
            # Off the event loop: removing a directory can wait on the file system's journal.
            await asyncio.to_thread(shutil.rmtree, container.directory, True)
            container.directory = session.workdir
            container.session = session
        return container.session

    async def _acquire(self, container: Container) -> KernelSession:
        """A kernel with the container's memory tier; at the cap, the longest-idle container
        of the same owner that is not running code expires to make room (as it would have
        later), and when there is none the answer is the service's 429. One owner's request
        never expires another owner's container."""
        memory = int(container.memory_limit.removesuffix("g")) << 30
        for _ in range(2):
            try:
                return await self.kernels.acquire(memory=memory, owner=container.owner)
            except SandboxCapacityError as exc:
                full = exc
            idle = [
                c
                for c in self._containers.values()
                if c is not container
                and c.owner == container.owner
                and c.session is not None
                and not c.lock.locked()
            ]
            if not idle:
                break
            victim = min(idle, key=lambda c: c.last_active_at)
            log.info("container %s expired early: the live-container cap was reached", victim.id)
            self._mark_expired(victim)
            await self._release(victim)
        raise ApiError(
            429,
            f"Too many active containers: {full} and every one is running code. "
            "Try again later, or delete containers you no longer need.",
            type="requests",
            code="rate_limit_exceeded",
        )

    def _register_changes(
        self, container: Container, before: workdir.Scan, after: workdir.Scan
    ) -> builtins.list[ContainerFile]:
        changed: list[ContainerFile] = []
        for raw in sorted(after.files):
            sig = _signature(after.files[raw])
            record = container.file_by_raw(raw)
            if record is None:
                record = ContainerFile(
                    id=ids.container_file_id(),
                    container_id=container.id,
                    relpath=_show(raw),
                    source="assistant",
                    created_at=self.clock.now_int(),
                    bytes=sig[0],
                    signature=sig,
                    raw=raw,
                )
                container.add_record(record)
                changed.append(record)
            elif _signature_of(before, raw) != sig or record.signature != sig:
                record.bytes, record.signature = sig[0], sig
                changed.append(record)
        unseen = [r for r in container.files.values() if r.raw not in after.files]
        if unseen and not after.complete:
            # The walk stopped at its bound: keep records whose file is still there.
            with self._directory(container) as dir_fd:
                unseen = [r for r in unseen if workdir.stat_regular(dir_fd, r.raw) is None]
        for record in unseen:
            container.drop_record(record.id)
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
        container.clear_records()

    async def _release(self, container: Container) -> None:
        session, container.session = container.session, None
        if session is not None:
            try:  # stops every process; its directory (container.directory) goes with it
                await session.discard()
            except Exception:  # a kernel that will not stop must not block the others
                log.exception("kernel of %s did not shut down cleanly", container.id)
            if container.directory == session.workdir:
                return
        shutil.rmtree(container.directory, ignore_errors=True)


def _component(filename: str) -> bytes:
    """``filename`` as one on-disk name; a 400 for what cannot be one."""
    try:
        raw = filename.encode("utf-8")
    except UnicodeEncodeError:
        raw = b""
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        raise BadRequestError(f"Invalid file name {filename!r:.300}.", param="file")
    return raw


def _fit(raw: bytes) -> bytes:
    """``raw`` cut to the 255 bytes a Linux name may have, keeping a short extension and
    never splitting a UTF-8 character."""
    if len(raw) <= NAME_MAX:
        return raw
    stem, dot, ext = raw.rpartition(b".")
    if not dot or not stem or len(ext) > 16:
        stem, dot, ext = raw, b"", b""
    keep = NAME_MAX - len(dot) - len(ext)
    cut = stem[:keep].decode("utf-8", "ignore").encode("utf-8")
    return cut + dot + ext


def _show(raw: bytes) -> str:
    """How the API shows an on-disk path: UTF-8, with U+FFFD for bytes that are not."""
    return raw.decode("utf-8", "replace")


def _signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _signature_of(scan: workdir.Scan, raw: bytes) -> Signature | None:
    st = scan.files.get(raw)
    return None if st is None else _signature(st)


def _snapshot(directory: Path) -> workdir.Scan:
    """Every regular file under the directory, hidden ones included (bounded: see
    :func:`cigate.engine.workdir.scan`); a walk cut short is logged."""
    with workdir.directory(directory) as dir_fd:
        found = workdir.scan(dir_fd, max_entries=workdir.MAX_ENTRIES, max_depth=workdir.MAX_DEPTH)
    if not found.complete:
        log.warning(
            "%s: stopped listing after %d entries (bounds: %d entries, %d levels); "
            "files past the bound are not registered",
            directory,
            found.entries,
            workdir.MAX_ENTRIES,
            workdir.MAX_DEPTH,
        )
    return found
