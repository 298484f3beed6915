"""The resume sweep: what any gateway process sharing the store finishes for the others.

Every ``resume_interval`` seconds, one sweep per process:

* claims ``pending`` rows nobody copies (their process died) and copies them;
* sends rows that failed for a transient reason (:data:`TRANSIENT_KINDS`) back for another
  round after a backoff, until their tries reach a cap (a gone container ends them for good);
* concludes responses nobody concluded (their process died mid-stream), once they are
  ``harvest_relist_after`` seconds old (:meth:`cigate.gateway.recorder.Recorder.sweep_unlisted`);
* checks rows stored before the harvest core checked every copy (migration 6);
* and, at start-up and then hourly, removes what interrupted blob writes left behind.

Rows and responses are claimed with leases, so of several processes exactly one takes each.
"""

from __future__ import annotations

import asyncio
import logging

from cigate.gateway.harvester import Harvester
from cigate.gateway.recorder import Recorder
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.tasks import TaskRegistry
from cigate.harvest import classify
from cigate.storage.blobs import BlobStore
from cigate.storage.metadata import MetadataStore

__all__ = ["BLOB_CLEANUP_INTERVAL", "RELIST_HORIZON", "TRANSIENT_KINDS", "Sweep"]

log = logging.getLogger(__name__)

#: Error kinds of a failed copy that the sweep tries again later: the harvest core's transient
#: classes. Never an expired container, a missing file, a refused credential or bad input.
TRANSIENT_KINDS = tuple(error.kind for error in classify.TRANSIENT)
#: Responses older than this are not concluded by the sweep: their containers expired long ago.
RELIST_HORIZON = 24 * 3600.0
#: Seconds between clean-ups of the blob store's leftovers (also run at start-up).
BLOB_CLEANUP_INTERVAL = 3600.0


class Sweep:
    """The resume loop of one gateway process."""

    def __init__(self, harvester: Harvester, recorder: Recorder) -> None:
        self.harvester = harvester
        self.recorder = recorder
        self.meta: MetadataStore = harvester.meta
        self.blobs: BlobStore = harvester.blobs
        self.tasks: TaskRegistry = harvester.tasks
        self.settings: GatewaySettings = harvester.settings

    def start(self) -> None:
        self.tasks.spawn(self._loop(), name="cigate-sweep", daemon=True)

    async def once(self) -> int:
        """One sweep; returns how many copies it started."""
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
            if not self.harvester.copying(row.id):  # else a copy here has it (same lease)
                self.harvester.start_copy(row)
                started += 1
        await self.recorder.sweep_unlisted(RELIST_HORIZON)
        await self.harvester.verify_stored()
        return started

    def retry_delay(self, tries: int) -> float:
        """Seconds a transiently failed row with ``tries`` tries waits for its next round:
        ``harvest_retry_delay`` after the first round, doubling per round, capped."""
        rounds = max(0, tries // self.settings.harvest_attempts - 1)
        delay = self.settings.harvest_retry_delay * 2.0 ** min(rounds, 32)
        return min(delay, self.settings.harvest_retry_max_delay)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_cleanup = loop.time()  # at start-up, then every BLOB_CLEANUP_INTERVAL
        while True:
            try:
                await self.once()
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
