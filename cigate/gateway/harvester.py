"""Copies files into the gateway's own storage, through the harvest core, and checks them.

A file row (recorded by :mod:`cigate.gateway.recorder`) is copied by a task of its own, so N
files take about as long as the slowest one. Fetching goes through the harvest core
(:mod:`cigate.harvest.fetch`), the client's chain: a file is ``stored`` only when its bytes
passed the client's checks (status, no error document delivered with 200, size against the
container's record), its sha256 is the one of exactly those bytes, and it is marked verified.
A copy ends ``stored`` or ``failed`` with its error class and the number of tries.

Copies are shared between gateway processes through leases on the rows: a process claims a
row before copying it (waiting while another one copies it) and renews the lease while the
copy runs, so a crashed process's rows come free for the resume sweep
(:mod:`cigate.gateway.sweep`). Rows stored before the core existed (migration 6) are checked
once (:meth:`Harvester.verify`) and never served before they are.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime

from opentelemetry.trace import Status, StatusCode

from cigate.exceptions import (
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
    UpstreamUnavailableError,
)
from cigate.gateway import metrics, quotas, tracing
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.tasks import TaskRegistry
from cigate.gateway.upstream import Upstream
from cigate.gateway.upstreams import Pool
from cigate.harvest import classify
from cigate.harvest.content_types import is_json_name
from cigate.harvest.fetch import HEAD_BYTES, Body, Fetcher, suspect
from cigate.harvest.refs import FileRef
from cigate.harvest.retry import RetryPolicy
from cigate.storage.blobs import BlobStore
from cigate.storage.errors import BlobNotFoundError, NotFoundError
from cigate.storage.metadata import MetadataStore
from cigate.storage.metadata_erasure import KIND_QUOTA
from cigate.storage.metadata_owners import PlacedKind
from cigate.storage.records import BlobInfo, FileRow

__all__ = ["Harvester"]

log = logging.getLogger(__name__)

#: Fetches of one copy when an erasure of the same bytes deletes the blob between the put and
#: the row (each race costs one fetch; the third loss is recorded as a transient failure).
_BLOB_RACES = 3
#: Seconds a client asking for a file whose copy outlasted its wait is told to wait.
_STILL_COPYING_RETRY_AFTER = 5.0


class Harvester:
    """The copies and checks of one gateway process."""

    def __init__(
        self,
        meta: MetadataStore,
        blobs: BlobStore,
        pool: Pool,
        settings: GatewaySettings,
        tasks: TaskRegistry,
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.pool = pool
        self.settings = settings
        self.tasks = tasks
        self.policy = RetryPolicy(
            attempts=settings.harvest_attempts, backoff=settings.harvest_backoff
        )
        #: One fetch chain per configured upstream.
        self._fetchers = {
            name: Fetcher(up.harvest, self.policy) for name, up in pool.members.items()
        }
        self._slots = asyncio.Semaphore(settings.harvest_concurrency)

    async def holder_of(self, kind: PlacedKind, object_id: str) -> Upstream:
        """The upstream that holds an object (recorded in the store; the default one for
        objects recorded before there were several)."""
        if not self.pool.several:
            return self.pool.default
        found = await self.meta.placements([(kind, object_id)])
        return self.pool.holder(found.get((kind, object_id)), f"{kind} '{object_id}'")

    def fetcher_for(self, upstream: Upstream) -> Fetcher:
        return self._fetchers[upstream.name]

    async def fetcher_of(self, kind: PlacedKind, object_id: str) -> Fetcher:
        """The fetch chain of the upstream that holds an object: a file is only ever fetched
        from the upstream whose container or run made it."""
        return self.fetcher_for(await self.holder_of(kind, object_id))

    async def _row_fetcher(self, row: FileRow) -> Fetcher:
        if row.kind == "container":
            return await self.fetcher_of("container", row.container_id or "")
        return await self.fetcher_of("file", row.upstream_file_id)

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
        return self.tasks.keyed(
            f"copy-{row.id}", lambda: self._copy(row, expected_size), name=f"cigate-copy-{row.id}"
        )

    def copying(self, file_id: str) -> bool:
        """Whether this process is copying the file now."""
        return self.tasks.running(f"copy-{file_id}") is not None

    async def ensure_stored(self, row: FileRow, wait: float = 60.0) -> FileRow:
        """The row once its bytes are stored and verified (checking or copying now if needed)
        or its failure recorded. A copy still running after ``wait`` seconds goes on in the
        background; the caller gets a 503 to try again (its client is waiting)."""
        if row.state == "stored" and row.verified_at is None:
            row = await self.verify(row)
        if row.state == "stored":
            return row
        task = self.start_copy(row, retry_failed=True)
        if task is None:  # pragma: no cover - None only for stored rows here
            return row
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            raise UpstreamUnavailableError(
                f"File '{row.id}' is still being copied from the upstream",
                status=503,
                hint="Try again shortly: the copy goes on, and the file is served once stored.",
                retry_after=_STILL_COPYING_RETRY_AFTER,
            ) from None

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
            except NotFoundError:
                log.info("%s was erased while it was being copied", row.id)
                return claimed
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

        if full := await quotas.quota_full(self.meta, row.tenant_id):
            log.warning("%s not copied: %s", row.id, full)
            metrics.FILES_FAILED.labels(KIND_QUOTA).inc()
            return await self.meta.mark_failed(row.id, KIND_QUOTA, full, row.tries)
        try:
            fetcher = await self._row_fetcher(row)
        except CigateError as gone:  # its upstream is not configured any more: not elsewhere
            log.warning("%s not copied: %s", row.id, gone.message)
            return await self.meta.mark_failed(row.id, gone.kind, gone.message, row.tries)
        with tracing.span("harvest copy", **{"cigate.file_id": row.id}) as sp:
            for _ in range(_BLOB_RACES):
                fetched = await fetcher.fetch(
                    _ref(row, expected_size), self._into_blobs, on_retry=retrying
                )
                tries = row.tries + max(fetched.attempts, 1)
                if fetched.error is not None or fetched.stored is None:
                    exc = fetched.error or IntegrityError(
                        f"{row.upstream_file_id}: nothing was stored"
                    )
                    log.warning("giving up on %s after %d tries: %s", row.id, tries, exc)
                    metrics.FILES_FAILED.labels(exc.kind).inc()
                    if sp is not None:
                        sp.set_status(Status(StatusCode.ERROR, exc.kind))
                    return await self.meta.mark_failed(row.id, exc.kind, exc.message, tries)
                info = fetched.stored
                present = functools.partial(quotas.blob_present, self.blobs, info)
                outcome = await self.meta.store_copy(
                    row.id,
                    info.sha256,
                    info.size,
                    fetched.content_type,
                    blob_present=present,
                    delete_blob=self.blobs.delete,
                )
                if outcome.result == "quota":
                    log.warning("%s not kept: its tenant's quota is full", row.id)
                    metrics.FILES_FAILED.labels(KIND_QUOTA).inc()
                if outcome.result != "blob_missing":
                    if outcome.result == "stored":
                        metrics.FILES_HARVESTED.inc()
                        metrics.BYTES_STORED.inc(info.size)
                        lag = (datetime.now(UTC) - _aware(row.created_at)).total_seconds()
                        metrics.HARVEST_LAG.observe(max(0.0, lag))
                    return outcome.row or row
                log.info(
                    "%s: an erasure took the shared blob %s; copying again", row.id, info.sha256
                )
        return await self.meta.mark_failed(
            row.id, "integrity", "erasures of the same bytes kept removing the copy", tries
        )

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
                record = await (await self._row_fetcher(row)).record(_ref(row, None))
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

    async def verify_size(self, row: FileRow, expected: int) -> None:
        """A copy (started before the listing, from a citation) whose size differs from the
        container's record is not kept as ``stored``: it is copied again against the record.

        ``row`` is the row as the listing just recorded it; a copy running here is waited for
        and its outcome checked (read again only if the copy failed to say)."""
        current: FileRow | None = row
        if task := self.tasks.running(f"copy-{row.id}"):
            outcome: list[object] = await asyncio.gather(task, return_exceptions=True)
            current = (
                outcome[0]
                if isinstance(outcome[0], FileRow)
                else await self.meta.get_file(row.tenant_id, row.id)
            )
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


def _aware(moment: datetime) -> datetime:
    """``moment`` in UTC (SQLite gives naive datetimes back)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
