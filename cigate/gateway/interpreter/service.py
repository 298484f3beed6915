"""The self-hosted interpreter of one gateway process: sandboxes, containers, responses, files.

One :class:`Interpreter` per gateway app (its lifespan starts and closes it). Containers are the
engine's (:class:`~cigate.engine.containers.ContainerBackend`) over the sandbox pool, each owned
by the tenant whose response or request made it, and counted against that tenant's cap of live
containers (``interpreter_tenant_containers``) as well as the host's. After every cell, each file
the cell created or changed is copied into the gateway's blob store and recorded for the tenant
(a ``stored`` row, never ``pending``: the resume sweep has nothing to fetch from the upstream),
so a file outlives its container and is served per tenant like every harvested file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from cigate.clock import Clock
from cigate.engine.containers import (
    CodeRun,
    Container,
    ContainerBackend,
    ContainerFile,
    KernelProvider,
)
from cigate.engine.errors import ApiError, NotFoundError
from cigate.engine.runner import ResponseRun
from cigate.engine.store import ResponsesBackend
from cigate.engine.workdir import RegularFile
from cigate.exceptions import CigateError
from cigate.gateway import quotas
from cigate.gateway.interpreter.model import UpstreamModel
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.harvest.content_types import guess_type
from cigate.sandbox.base import SandboxSettings
from cigate.storage.blobs import BlobStore
from cigate.storage.metadata import MetadataStore

__all__ = ["Interpreter", "StoringContainers", "wants_interpreter"]

log = logging.getLogger(__name__)

#: Seconds between sweeps for idle containers.
REAP_INTERVAL = 30.0
#: Seconds an expired container is still shown (``status: "expired"``) before it is forgotten.
FORGET_EXPIRED = 24 * 3600.0
#: Bytes per read when a container file is copied into the blob store.
_CHUNK = 1 << 20
#: Input files one request may name, and the largest one copied into a container.
MAX_INPUT_FILES = 20
#: Running containers one tenant may hold (with or without a kernel).
MAX_CONTAINERS_PER_TENANT = 256
MAX_INPUT_FILE = 512 * 1024 * 1024

#: File extension of a displayed image saved as a file, by MIME type.
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg"}


class OwnedPool(KernelProvider, Protocol):
    """A kernel provider the interpreter started itself, so it also stops it."""

    async def close(self) -> None: ...


OnChanged = Callable[[Container, Sequence[ContainerFile]], Awaitable[None]]


def wants_interpreter(body: Any) -> bool:
    """Whether a create body names the ``code_interpreter`` tool."""
    tools = body.get("tools") if isinstance(body, dict) else None
    return isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == "code_interpreter" for t in tools
    )


class StoringContainers(ContainerBackend):
    """Containers whose changed files are handed to ``on_changed`` after every cell, before
    the model hears of them: a file a reply links is in the store already.

    A figure the cell displayed is among them: the engine saves it as a file
    (``cfile_<id>.png``), as the hosted tool does, so the model can link it and it outlives
    the container.
    """

    def __init__(self, *, on_changed: OnChanged, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_changed = on_changed

    async def run_code(
        self,
        container: Container,
        code: str,
        *,
        timeout: float,  # noqa: ASYNC109 - the kernel's own deadline
        save_figures: bool = False,
    ) -> CodeRun:
        try:
            run = await super().run_code(
                container, code, timeout=timeout, save_figures=save_figures
            )
        except (ApiError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # The engine would put the exception's text in the response: host paths, cgroup
            # names, a kernel gateway's words. The log has them; the tenant gets a sentence.
            log.exception("running a cell in %s failed", container.id)
            raise ApiError(
                500, "The code interpreter could not run the code.", type="server_error"
            ) from exc
        if run.changed:
            await self.on_changed(container, run.changed)
        return run


class Interpreter:
    """Starts the sandbox pool and the engine backends; stores what the code writes."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        meta: MetadataStore,
        blobs: BlobStore,
        upstream: Upstream,
        kernels: KernelProvider | None = None,
    ) -> None:
        self.settings = settings
        self.meta = meta
        self.blobs = blobs
        self.upstream = upstream
        self._kernels = kernels
        self.clock = Clock()
        #: Tenant of every response this process made (the store checks it first; this is a
        #: second lock on the same door).
        self.tenant_of: dict[str, str] = {}
        self._response_of: dict[str, str] = {}
        #: Where the model is asked: the upstream, or a model server of its own.
        self.model_upstream = (
            upstream
            if not settings.interpreter_upstream
            else Upstream(settings.model_upstream(), client=None)
        )
        self._reaper: asyncio.Task[None] | None = None
        #: The pool this interpreter started (and closes); ``kernels`` given is the caller's.
        self._pool: OwnedPool | None = None
        self.containers: StoringContainers
        self.responses: ResponsesBackend

    async def start(self) -> None:
        root = self.settings.interpreter_path
        root.mkdir(parents=True, exist_ok=True)
        pool: KernelProvider | None = self._kernels
        if pool is None and self.settings.interpreter_kernels == "remote":
            from cigate.sandbox.remote import RemoteKernels

            pool = self._pool = RemoteKernels(
                self.settings.kernel_gateway_url,
                self.settings.kernel_gateway_token,
                root=root / "mirrors",
                kernel_name=self.settings.kernel_gateway_kernel,
                remote_root=self.settings.kernel_gateway_data_dir or None,
                max_kernels=self.settings.interpreter_max_containers,
                owner_limit=self.settings.interpreter_tenant_containers,
            )
        if pool is None:
            from cigate.sandbox.pool import SandboxPool

            cap = self.settings.interpreter_tenant_containers
            pool = self._pool = SandboxPool(
                SandboxSettings(
                    root=root / "sandbox",
                    pool_size=self.settings.interpreter_pool_size,
                    isolation=self.settings.interpreter_isolation,
                    max_containers=self.settings.interpreter_max_containers,
                ),
                owner_limit=lambda _owner: cap,
            )
            await self._pool.start()
        self.containers = StoringContainers(
            root=root / "containers",
            kernels=pool,
            clock=self.clock,
            idle_minutes=self.settings.interpreter_idle_minutes,
            on_changed=self._store,
        )
        self.responses = ResponsesBackend(
            containers=self.containers,
            files=None,
            clock=self.clock,
            exec_timeout=self.settings.interpreter_exec_timeout,
            model=UpstreamModel(self._post, api=self.settings.interpreter_api),
        )
        self._reaper = asyncio.create_task(self._reap(), name="cigate-interpreter-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.responses.close()
        await self.containers.close()
        if self._pool is not None:
            await self._pool.close()
        if self.model_upstream is not self.upstream:
            await self.model_upstream.aclose()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            try:
                await self.reap()
            except Exception:  # one bad sweep must not stop later ones
                log.exception("interpreter container reaper failed")

    async def reap(self) -> list[str]:
        """Expire idle containers; forget those expired for over ``FORGET_EXPIRED`` seconds
        (their records only: the files are gone already, the stored copies stay)."""
        expired = await self.containers.reap_expired()
        now = self.clock.now()
        for container in self.containers.list():
            idle = now - container.last_active_at - container.expires_after_minutes * 60
            if container.status == "expired" and idle > FORGET_EXPIRED:
                await self.containers.delete(container.id)
        return expired

    # -- responses ---------------------------------------------------------------------------

    async def create(self, body: Any, tenant_id: str) -> ResponseRun:
        """Start a response for ``tenant_id`` and record it (and its container) as theirs."""
        if _auto_container(body):
            self.check_room(tenant_id)
        files = await self.fetch_files(_named_file_ids(body))
        run = await self.responses.create(body, owner=tenant_id, files=files)
        await self._forget_oldest()
        self.tenant_of[run.id] = tenant_id
        containers = [run.container_id] if run.container_id is not None else []
        for container_id in containers:
            self._response_of[container_id] = run.id
        await self.meta.record_response(
            tenant_id,
            run.id,
            upstream=self.settings.upstream,
            model=run.plan.request.model,
            container_ids=containers,
        )
        return run

    async def _forget_oldest(self) -> None:
        """Keep at most ``interpreter_kept_responses`` responses: memory is bounded. The oldest
        finished ones go first (a running one is kept until it ends)."""
        excess = len(self.tenant_of) + 1 - self.settings.interpreter_kept_responses
        for response_id in list(self.tenant_of)[: max(excess, 0)]:
            with contextlib.suppress(ApiError):
                if not self.responses.get(response_id).finished.is_set():
                    continue
            with contextlib.suppress(ApiError):
                await self.responses.delete(response_id)
            del self.tenant_of[response_id]
        live = {c.id for c in self.containers.list()}
        for container_id in [c for c in self._response_of if c not in live]:
            del self._response_of[container_id]

    async def settled(self, run: ResponseRun, tenant_id: str) -> None:
        """Once the run is over: nothing for the resume sweep to list upstream."""
        await run.finished.wait()
        await self.meta.mark_listed(tenant_id, run.id)

    def handles(self, body: Any) -> bool:
        """Whether this create runs here: it names ``code_interpreter`` and its model is one
        ``self`` mode applies to (``CIGATE_GATEWAY_INTERPRETER_MODELS``; empty: all)."""
        models = self.settings.self_hosted_models
        return wants_interpreter(body) and (not models or body.get("model") in models)

    def owns(self, tenant_id: str, response_id: str) -> bool:
        return self.tenant_of.get(response_id) == tenant_id

    def check_room(self, tenant_id: str) -> None:
        """429 when the tenant already has ``MAX_CONTAINERS_PER_TENANT`` running containers:
        a container without a kernel is still a directory on this host."""
        mine = sum(
            1 for c in self.containers.list() if c.owner == tenant_id and c.status == "running"
        )
        if mine >= MAX_CONTAINERS_PER_TENANT:
            raise ApiError(
                429,
                f"Too many containers: at most {MAX_CONTAINERS_PER_TENANT} running per tenant. "
                "Delete containers you no longer need.",
                type="requests",
                code="rate_limit_exceeded",
            )

    def knows(self, container_id: str) -> bool:
        """Whether the id is one of the interpreter's containers (any owner, expired too)."""
        try:
            self.containers.get(container_id, allow_expired=True)
        except ApiError:
            return False
        return True

    def container(self, tenant_id: str, container_id: str) -> Container | None:
        """The tenant's container (expired too), or ``None`` for any other id."""
        try:
            container = self.containers.get(container_id, allow_expired=True)
        except ApiError:
            return None
        return container if container.owner == tenant_id else None

    async def fetch_files(self, file_ids: Sequence[str]) -> FetchedFiles:
        """Files-API files (``container.file_ids``, ``input_file``) from the upstream's Files
        API, at most ``MAX_INPUT_FILES``; the caller already checked they are the tenant's."""
        fetched = FetchedFiles()
        for file_id in list(dict.fromkeys(file_ids))[:MAX_INPUT_FILES]:
            meta = await self.upstream.send("GET", self.upstream.v1_url("files", file_id))
            if meta.status_code != 200:
                continue  # the engine answers "File '…' not found." with its param
            content = await self.upstream.send(
                "GET", self.upstream.v1_url("files", file_id, "content"), stream=True
            )
            if content.status_code != 200:
                await content.aclose()
                continue
            data = await _read_capped(content, MAX_INPUT_FILE)
            name = meta.json().get("filename") if isinstance(meta.json(), dict) else None
            fetched.add(file_id, name if isinstance(name, str) and name else file_id, data)
        return fetched

    # -- the upstream model ------------------------------------------------------------------

    async def _post(self, api: str, body: dict[str, Any]) -> tuple[int, Any]:
        segments = ("responses",) if api == "responses" else ("chat", "completions")
        answer = await self.model_upstream.send(
            "POST",
            self.model_upstream.v1_url(*segments),
            headers={"content-type": "application/json"},
            content=json.dumps(body).encode(),
        )
        try:
            parsed: Any = answer.json()
        except ValueError:
            parsed = None
        return answer.status_code, parsed

    # -- files -------------------------------------------------------------------------------

    async def _store(self, container: Container, changed: Sequence[ContainerFile]) -> None:
        """Copy each changed file into the blob store and record it ``stored`` for the owner."""
        tenant_id = container.owner
        if tenant_id is None:
            return
        for record in changed:
            try:
                await self._store_one(tenant_id, container, record)
            except CigateError as exc:
                log.error("storing %s of %s failed: %s", record.id, container.id, exc)
                raise ApiError(
                    503,
                    "The gateway could not store a file the code wrote; try again.",
                    type="server_error",
                ) from exc

    async def _store_one(self, tenant_id: str, container: Container, record: ContainerFile) -> None:
        row = await self.meta.upsert_file(
            tenant_id,
            kind="container",
            upstream_file_id=record.id,
            container_id=container.id,
            response_id=self._response_of.get(container.id),
            filename=record.filename,
            origin="listing",
            path=record.path,
        )
        worker, lease = self.settings.worker_id, self.settings.lease_seconds
        if await self.meta.claim_file(row.id, worker, lease) is None:
            return  # another copy of this row is under way
        try:
            opened = self.containers.open_file(container, record)
        except ApiError:  # the code removed it again before we got to it
            await self.meta.release(row.id, worker)
            return
        with opened:
            head = opened.pread(512, 0)
            size = opened.size  # what it held when the cell ended; later writes are the next's
            content_type = guess_type(record.filename, head)
            for _ in range(3):  # as the harvester: an erasure of the same bytes may take the blob
                info = await self.blobs.put_stream(_chunks(opened, size), expected_size=size)
                # The same record as a harvested copy: the tenant's quota, an erasure racing it.
                outcome = await self.meta.store_copy(
                    row.id,
                    info.sha256,
                    info.size,
                    content_type,
                    blob_present=functools.partial(quotas.blob_present, self.blobs, info),
                    delete_blob=self.blobs.delete,
                )
                if outcome.result != "blob_missing":
                    return


@dataclass(frozen=True)
class _FetchedFile:
    filename: str


class FetchedFiles:
    """The engine's :class:`~cigate.engine.store.FilesLookup` over files fetched for one
    request (anything else is not found)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[str, bytes]] = {}

    def add(self, file_id: str, filename: str, data: bytes) -> None:
        self._files[file_id] = (filename, data)

    def get(self, file_id: str) -> _FetchedFile:
        if file_id not in self._files:
            raise NotFoundError(f"File '{file_id}' not found.", param="file_ids")
        return _FetchedFile(self._files[file_id][0])

    def read_bytes(self, file_id: str) -> bytes:
        self.get(file_id)
        return self._files[file_id][1]


def _auto_container(body: Any) -> bool:
    """Whether a create body asks for an ``auto`` container (one may be made)."""
    tools = body.get("tools") if isinstance(body, dict) else None
    return any(
        isinstance(t, dict) and isinstance(t.get("container"), dict)
        for t in (tools if isinstance(tools, list) else ())
    )


def _named_file_ids(body: Any) -> list[str]:
    """File ids in ``tools[].container.file_ids`` and ``input[].content[].file_id``."""
    found: list[str] = []
    if not isinstance(body, dict):
        return found
    for tool in body.get("tools") or ():
        container = tool.get("container") if isinstance(tool, dict) else None
        if isinstance(container, dict) and isinstance(container.get("file_ids"), list):
            found += [f for f in container["file_ids"] if isinstance(f, str)]
    items = body.get("input")
    for item in items if isinstance(items, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("file_id"), str):
                found.append(part["file_id"])
    return found


async def _read_capped(response: httpx2.Response, limit: int) -> bytes:
    """The body, or a 413 past ``limit`` bytes (the response is closed either way)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"An input file is over {limit} bytes.", code="file_too_large")
            chunks.append(chunk)
    finally:
        await response.aclose()
    return b"".join(chunks)


async def _chunks(opened: RegularFile, size: int) -> AsyncIterator[bytes]:
    offset = 0
    while offset < size and (chunk := opened.pread(min(_CHUNK, size - offset), offset)):
        offset += len(chunk)
        yield chunk
