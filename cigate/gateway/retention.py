"""The retention sweep: files older than their tenant's retention period are erased.

A tenant's ``retention_days`` (``cigate gateway tenant limits NAME --retention-days N``) is
unset by default: files are kept. When set, every ``retention_interval`` seconds one sweep
per gateway process erases the tenant's files created more than that many days ago, exactly as
``DELETE /files/{id}`` would (blob reference counting, tombstone, an audit record with the
actor ``retention``). Several processes may sweep at once: an erasure of a file another
process erased already does nothing. Each sweep also forgets the signed links of erased files
that have expired (kept until then so that they answer the file's 404).
"""

from __future__ import annotations

import asyncio
import logging

from cigate.gateway.erasure import erase
from cigate.gateway.tasks import TaskRegistry
from cigate.storage.blobs import BlobStore
from cigate.storage.metadata import MetadataStore

__all__ = ["RetentionSweep"]

log = logging.getLogger(__name__)

#: Files read per query, and queries per tenant and sweep (the next sweep continues after
#: 10,000 files, so one tenant's backlog cannot hold up the others for long).
_BATCH = 500
_BATCHES = 20


class RetentionSweep:
    """The retention loop of one gateway process."""

    def __init__(
        self, meta: MetadataStore, blobs: BlobStore, tasks: TaskRegistry, interval: float
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.tasks = tasks
        self.interval = interval

    def start(self) -> None:
        if self.interval > 0:
            self.tasks.spawn(self._loop(), name="cigate-retention", daemon=True)

    async def once(self) -> int:
        """One sweep over every tenant with a retention period; returns how many it erased."""
        erased = 0
        for tenant in await self.meta.list_tenants():
            if tenant.retention_days is None:
                continue
            for _ in range(_BATCHES):
                rows = await self.meta.files_older_than(
                    tenant.id, tenant.retention_days, limit=_BATCH
                )
                for row in rows:
                    if await erase(
                        self.meta, self.blobs, row, actor="retention", reason="retention"
                    ):
                        erased += 1
                if len(rows) < _BATCH:
                    break
        if erased:
            log.info("retention sweep erased %d file(s)", erased)
        await self.meta.forget_expired_erased_links()
        return erased

    async def _loop(self) -> None:
        while True:
            try:
                await self.once()
            except Exception:  # a broken store must not end retention for good
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval)
