"""Copies every file a response produces into the gateway's own storage, while it streams.

Each ``container_file_citation`` is written to the metadata store as ``pending`` the moment it
is seen (so a crash cannot forget it) and copied to the blob store by a task of its own, so N
files take about as long as the slowest one. At the end of the response the container's file
list is reconciled: files the code wrote but the model never cited are recorded and copied too.

A copy ends ``stored`` (bytes content-addressed by sha256) or ``failed`` with its error class and
the number of tries. Rows left ``pending`` by a crashed process are claimed with a lease by the
resume loop of any gateway process sharing the database, and finished while their container
lives. The same loop sends rows that failed for a transient reason (:data:`TRANSIENT_KINDS`)
back for another round after a backoff, until their tries reach a cap or the container is gone
(then the row ends ``failed`` as ``container_expired`` and is not tried again). A response
whose containers were never listed (its process died mid-stream) is listed by the same loop
once it is ``harvest_relist_after`` seconds old, so uncited files survive a crash too. Fetching
goes through the harvest core (:mod:`cigate.harvest.fetch`), the client's chain: a file is
``stored`` only when its bytes passed the client's checks (status, no error document delivered
with 200, size against the container's record), and its sha256 is the one of exactly those bytes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from typing import Any

from cigate.exceptions import (
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
)
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.harvest import classify
from cigate.harvest.content_types import is_json_name
from cigate.harvest.fetch import HEAD_BYTES, Body, Fetcher, suspect
from cigate.harvest.refs import FileRef
from cigate.harvest.retry import RetryPolicy
from cigate.storage.blobs import BlobStore
from cigate.storage.errors import BlobNotFoundError
from cigate.storage.metadata import MetadataStore
from cigate.storage.records import BlobInfo, FileRow

__all__ = ["TRANSIENT_KINDS", "Harvester", "walk_response"]

log = logging.getLogger(__name__)

#: Error kinds of a failed copy that the resume loop tries again later: the harvest core's
#: transient classes. Never an expired container, a missing file, a refused credential or bad
#: input: those do not heal.
TRANSIENT_KINDS = tuple(error.kind for error in classify.TRANSIENT)
#: Responses older than this are not listed by the sweep: their containers expired long ago.
RELIST_HORIZON = 24 * 3600.0
#: Seconds between clean-ups of the blob store's leftovers (also run at start-up).
BLOB_CLEANUP_INTERVAL = 3600.0


def walk_response(response: dict[str, Any]) -> tuple[set[str], list[dict[str, Any]]]:
    """Container ids and ``container_file_citation`` annotations in a Response object."""
    containers: set[str] = set()
    citations: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "code_interpreter_call" and item.get("container_id"):
            containers.add(str(item["container_id"]))
        for part in item.get("content") or ():
            if not isinstance(part, dict):
                continue
            for ann in part.get("annotations") or ():
                if isinstance(ann, dict) and ann.get("type") == "container_file_citation":
                    citations.append(ann)
                    if ann.get("container_id"):
                        containers.add(str(ann["container_id"]))
    return containers, citations


class Harvester:
    """Owns the copy tasks and the resume loop of one gateway process."""

    def __init__(
        self,
        meta: MetadataStore,
        blobs: BlobStore,
        upstream: Upstream,
        settings: GatewaySettings,
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.upstream = upstream
        self.settings = settings
        self.policy = RetryPolicy(
            attempts=settings.harvest_attempts, backoff=settings.harvest_backoff
        )
        self.fetcher = Fetcher(upstream, self.policy)
        self._slots = asyncio.Semaphore(settings.harvest_concurrency)
        self._copies: dict[str, asyncio.Task[FileRow]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resume: asyncio.Task[None] | None = None
        #: Responses whose stream this process is relaying: their own tap lists them.
        self.live: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loop that finishes ``pending`` rows (ours after a crash, or anyone's)."""
        self._resume = asyncio.create_task(self._resume_loop(), name="cigate-harvest-resume")

    async def stop(self) -> None:
        """Cancel everything; unfinished rows stay ``pending`` for the next process."""
        tasks = [*self._tasks, *self._copies.values()]
        if self._resume is not None:
            tasks.append(self._resume)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference and logging its failure."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("harvest task %s failed", task.get_name(), exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until no harvest work is running in this process (tests, shutdown)."""
        while self._tasks or self._copies:
            await asyncio.gather(*self._tasks, *self._copies.values(), return_exceptions=True)

    # -- recording -------------------------------------------------------------------------

    async def record_citation(
        self, tenant_id: str, response_id: str | None, annotation: dict[str, Any]
    ) -> FileRow | None:
        """Record one citation as ``pending`` and start its copy; returns the row."""
        container_id = annotation.get("container_id")
        file_id = annotation.get("file_id")
        if not isinstance(container_id, str) or not isinstance(file_id, str):
            return None
        row = await self.meta.upsert_file(
            tenant_id,
            kind="container",
            upstream_file_id=file_id,
            container_id=container_id,
            response_id=response_id,
            filename=str(annotation.get("filename") or file_id),
            origin="citation",
        )
        self.start_copy(row)
        return row

    async def reconcile(
        self, tenant_id: str, response_id: str | None, container_ids: Iterable[str]
    ) -> None:
        """Record and copy every file of the containers, cited or not.

        When every container was listed (or is gone: nothing left to find), the response is
        marked listed; otherwise the resume sweep lists it again later.
        """
        complete = True
        for container_id in sorted(set(container_ids)):
            try:
                listed = await self.fetcher.list_files(container_id)
            except (ContainerExpiredError, FileNotFoundInContainerError) as exc:
                log.info("container %s is gone: %s", container_id, exc.message)
                continue
            except CigateError as exc:
                log.warning("cannot list files of %s: %s", container_id, exc.message)
                complete = False
                continue
            for item in listed:
                listed_path = item.get("path") if isinstance(item.get("path"), str) else None
                path = listed_path or str(item["id"])
                row = await self.meta.upsert_file(
                    tenant_id,
                    kind="container",
                    upstream_file_id=str(item["id"]),
                    container_id=container_id,
                    response_id=response_id,
                    filename=path.rsplit("/", 1)[-1] or str(item["id"]),
                    origin="listing",
                    path=listed_path,
                )
                size = item.get("bytes")
                expected = size if isinstance(size, int) and size >= 0 else None
                self.start_copy(row, expected_size=expected)
                if expected is not None:
                    self.spawn(self._verify_size(row, expected), name=f"cigate-verify-{row.id}")
        if complete and response_id:
            await self.meta.mark_listed(tenant_id, response_id)

    async def _verify_size(self, row: FileRow, expected: int) -> None:
        """A copy (started before the listing, from a citation) whose size differs from the
        container's record is not kept as ``stored``: it is copied again against the record."""
        if task := self._copies.get(row.id):
            await asyncio.gather(task, return_exceptions=True)
        current = await self.meta.get_file(row.tenant_id, row.id)
        if current is None or current.state != "stored" or current.size == expected:
            return
        log.warning("%s: stored %s bytes, container lists %d", row.id, current.size, expected)
        failed = await self.meta.mark_failed(
            row.id,
            "integrity",
            f"stored {current.size} bytes, the container lists {expected}",
            current.tries,
        )
        self.start_copy(failed, retry_failed=True, expected_size=expected)

    async def harvest_response(
        self, tenant_id: str, response: dict[str, Any], upstream_name: str
    ) -> None:
        """Harvest a complete Response object (non-streaming calls, ``response.completed``)."""
        response_id = response.get("id") if isinstance(response.get("id"), str) else None
        containers, citations = walk_response(response)
        if response_id:
            await self.meta.record_response(
                tenant_id,
                response_id,
                upstream=upstream_name,
                model=response.get("model"),
                container_ids=sorted(containers),
            )
        for ann in citations:
            await self.record_citation(tenant_id, response_id, ann)
        await self.reconcile(tenant_id, response_id, containers)

    # -- copying ---------------------------------------------------------------------------

    def start_copy(
        self, row: FileRow, *, retry_failed: bool = False, expected_size: int | None = None
    ) -> asyncio.Task[FileRow] | None:
        """Start copying ``row`` unless it is stored, failed, or already being copied here.

        A ``failed`` row is tried again only on demand (``retry_failed``: someone asked for it).
        ``expected_size`` (the container's record) is checked against the bytes copied.
        """
        if row.state == "stored" or (row.state == "failed" and not retry_failed):
            return None
        task = self._copies.get(row.id)
        if task is None:
            task = asyncio.create_task(self._copy(row, expected_size), name=f"cigate-copy-{row.id}")
            self._copies[row.id] = task
            task.add_done_callback(functools.partial(self._forget_copy, row.id))
        return task

    def _forget_copy(self, file_id: str, _task: asyncio.Task[FileRow]) -> None:
        self._copies.pop(file_id, None)

    async def ensure_stored(self, row: FileRow, wait: float = 60.0) -> FileRow:
        """The row once its bytes are stored and verified (checking or copying now if needed)
        or its failure recorded."""
        if row.state == "stored" and row.verified_at is None:
            row = await self.verify(row)
        if row.state == "stored":
            return row
        task = self.start_copy(row, retry_failed=True)
        if task is None:  # pragma: no cover - None only for stored rows here
            return row
        return await asyncio.wait_for(asyncio.shield(task), wait)

    async def _copy(self, row: FileRow, expected_size: int | None = None) -> FileRow:
        """Lease the row (waiting while another process copies it), then copy it."""
        if row.state == "failed":
            row = await self.meta.requeue(row.id)  # asked for again: one more round
        worker, lease = self.settings.worker_id, self.settings.lease_seconds
        while True:
            claimed = await self.meta.claim_file(row.id, worker, lease)
            if claimed is not None:
                break
            current = await self.meta.get_file(row.tenant_id, row.id)
            if current is None or current.state != "pending":
                return current or row
            await asyncio.sleep(0.25)
        async with self._slots:
            renew = asyncio.create_task(self._renew_lease(row.id))
            try:
                return await self._copy_claimed(claimed, expected_size)
            finally:
                renew.cancel()

    async def _renew_lease(self, file_id: str) -> None:
        """Keep the lease while a long copy runs, so no other process starts it again."""
        interval = max(1.0, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            await self.meta.claim_file(
                file_id, self.settings.worker_id, self.settings.lease_seconds
            )

    async def _copy_claimed(self, row: FileRow, expected_size: int | None = None) -> FileRow:
        """Fetch through the harvest core into the blob store; record the outcome."""

        async def retrying(attempt: int, exc: CigateError) -> None:
            await self.meta.mark_retrying(
                row.id, row.tries + attempt, error_kind=exc.kind, message=exc.message
            )

        fetched = await self.fetcher.fetch(
            _ref(row, expected_size), self._into_blobs, on_retry=retrying
        )
        tries = row.tries + max(fetched.attempts, 1)
        if fetched.error is not None or fetched.stored is None:
            exc = fetched.error or IntegrityError(f"{row.upstream_file_id}: nothing was stored")
            log.warning("giving up on %s after %d tries: %s", row.id, tries, exc)
            return await self.meta.mark_failed(row.id, exc.kind, exc.message, tries)
        info = fetched.stored
        return await self.meta.mark_stored(row.id, info.sha256, info.size, fetched.content_type)

    async def _into_blobs(self, body: Body) -> BlobInfo:
        """The harvest core's sink: the checked bytes into the blob store (nothing on failure)."""
        info = await self.blobs.put_stream(aiter(body), expected_size=body.expected)
        if info.size != body.size:
            raise IntegrityError(
                f"{body.what}: the blob store kept {info.size} of {body.size} bytes"
            )
        return info

    # -- verification of rows stored before the harvest core ---------------------------------

    async def verify(self, row: FileRow) -> FileRow:
        """Check the bytes of a row stored before they were checked; returns the row as it is.

        Bytes that look like an error document (and a file whose name does not allow such
        content) are suspect: the row goes back to ``pending`` and is copied again through the
        core. For a JSON-named file only the upstream's record can tell: a size that differs
        from it is suspect; a container that is gone leaves the bytes as they are (they may be a
        JSON file with an ``error`` key); an upstream that cannot answer now leaves the row
        unverified, and unverified rows are not served.
        """
        if row.state != "stored" or row.sha256 is None or row.verified_at is not None:
            return row
        try:
            head = await self._blob_head(row.sha256, row.size or 0)
        except BlobNotFoundError:
            head = None
        problem: str | None = None
        if head is None:
            problem = "the stored bytes are missing from the blob store"
        elif suspect(head, row.filename):
            problem = "the stored bytes are an upstream error document, not the file"
        elif classify.looks_like_error_body(head) and is_json_name(row.filename):
            try:
                record = await self.fetcher.record(_ref(row, None))
            except (ContainerExpiredError, FileNotFoundInContainerError):
                record = {}  # nothing left to compare with: keep the bytes
            except CigateError as exc:
                log.info("cannot check %s against the upstream now: %s", row.id, exc.message)
                return row
            size = record.get("bytes")
            if isinstance(size, int) and size != row.size:
                problem = f"the stored {row.size} bytes differ from the upstream's {size}"
        if problem is None:
            return await self.meta.mark_verified(row.id, row.sha256)
        log.warning("%s: %s; copying it again", row.id, problem)
        again = await self.meta.mark_suspect(
            row.id, row.sha256, problem, self.settings.worker_id, self.settings.lease_seconds
        )
        if again.state == "pending":
            self.start_copy(again)
        return again

    async def _blob_head(self, sha256: str, size: int) -> bytes:
        if size <= 0:
            return b"".join([chunk async for chunk in await self.blobs.open(sha256)])
        end = min(size, HEAD_BYTES) - 1
        return b"".join([chunk async for chunk in await self.blobs.open(sha256, 0, end)])

    async def verify_stored(self) -> int:
        """Check a batch of rows stored before verification existed; returns how many."""
        rows = await self.meta.claim_unverified(
            self.settings.worker_id, self.settings.lease_seconds
        )
        for row in rows:
            await self.verify(row)
        return len(rows)

    # -- crash recovery --------------------------------------------------------------------

    async def resume_once(self) -> int:
        """Claim ``pending`` rows nobody is copying, and transiently ``failed`` rows whose
        backoff is over, and copy them; returns how many started."""
        worker, lease = self.settings.worker_id, self.settings.lease_seconds
        rows = await self.meta.claim_pending(worker, lease)
        if self.settings.harvest_retry_max_tries > 0:
            rows += await self.meta.claim_retryable(
                worker,
                lease,
                kinds=TRANSIENT_KINDS,
                max_tries=self.settings.harvest_retry_max_tries,
                delay=self.retry_delay,
            )
        started = 0
        for row in rows:
            if row.id not in self._copies:  # else a copy here has it (same worker, same lease)
                self.start_copy(row)
                started += 1
        await self._relist(worker, lease)
        await self.verify_stored()
        return started

    async def _relist(self, worker: str, lease: float) -> None:
        """List the containers of responses whose relaying process died before it could."""
        unlisted = await self.meta.claim_unlisted(
            worker,
            lease,
            older_than=self.settings.harvest_relist_after,
            horizon=RELIST_HORIZON,
        )
        for record in unlisted:
            if record.response_id in self.live:
                continue  # still streaming here; the lease runs out and the tap lists it
            log.info("listing %s: its relaying process never did", record.response_id)
            self.spawn(
                self.reconcile(record.tenant_id, record.response_id, record.container_ids),
                name=f"cigate-relist-{record.response_id}",
            )

    def retry_delay(self, tries: int) -> float:
        """Seconds a transiently failed row with ``tries`` tries waits for its next round:
        ``harvest_retry_delay`` after the first round, doubling per round, capped."""
        rounds = max(0, tries // self.settings.harvest_attempts - 1)
        delay = self.settings.harvest_retry_delay * 2.0 ** min(rounds, 32)
        return min(delay, self.settings.harvest_retry_max_delay)

    async def _resume_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_cleanup = loop.time()  # at start-up, then every BLOB_CLEANUP_INTERVAL
        while True:
            try:
                await self.resume_once()
            except Exception:  # a broken store or row must not end recovery for good
                log.exception("resume sweep failed")
            if loop.time() >= next_cleanup:
                await self._cleanup_blobs()
                next_cleanup = loop.time() + BLOB_CLEANUP_INTERVAL
            await asyncio.sleep(self.settings.resume_interval)

    async def _cleanup_blobs(self) -> None:
        """Remove what puts of crashed processes left in the blob store (the store's own grace
        keeps other processes' live puts: a day for Azure staging blobs, a lock locally)."""
        try:
            removed = await self.blobs.cleanup()
        except Exception:
            log.exception("blob store clean-up failed")
            return
        if removed:
            log.info("blob store clean-up removed %d leftover(s) of interrupted copies", removed)


def _ref(row: FileRow, expected_size: int | None) -> FileRef:
    """The harvest core's description of a file row."""
    return FileRef(
        file_id=row.upstream_file_id,
        filename=row.filename,
        container_id=row.container_id if row.kind == "container" else None,
        source="assistants" if row.kind == "files_api" else "citation",
        response_id=row.response_id,
        path=row.path,
        bytes=expected_size,
    )
