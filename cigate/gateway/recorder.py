"""What the gateway knows of each response, written to the store in one place.

A relayed answer is observed — streamed (by :mod:`cigate.gateway.tap`) or read whole (a plain
JSON response, an Assistants body) — and its facts go into one :class:`Sighting`: the response
id and model, the containers it used, the files it cited, its final state. Only this module
writes those facts: the response row (with its containers, claimed for the tenant), a
``pending`` file row per citation (its copy started at once, :mod:`cigate.gateway.harvester`),
and, once the response is over, every file of its containers, for the files the code wrote but
the answer never cited. Then the response is marked listed and the resume sweep leaves it alone.

Each relayed stream has a :class:`Keeper`: one background task that writes the sighting's new
facts as they come, so the relay never waits for the store (except where :meth:`Keeper.flush`
is asked for), and that concludes the response when the stream is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cigate.exceptions import CigateError, ContainerExpiredError, FileNotFoundInContainerError
from cigate.gateway.harvester import Harvester
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.tasks import TaskRegistry
from cigate.harvest.refs import FileRef, RefCollector
from cigate.storage.metadata import MetadataStore
from cigate.storage.records import FileRow

__all__ = ["Keeper", "Recorder", "Sighting", "walk_response"]

log = logging.getLogger(__name__)

#: Statuses of a response the upstream is still working on.
UNFINISHED = ("queued", "in_progress")
#: Seconds a keeper waits for the upstream to finish a response whose stream ended early;
#: after that the resume sweep looks at it again, once per lease.
SETTLE_WAIT = 3600.0


def walk_response(response: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Container ids and ``container_file_citation`` annotations in a Response object."""
    containers: dict[str, None] = {}
    citations: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "code_interpreter_call" and isinstance(
            item.get("container_id"), str
        ):
            containers[item["container_id"]] = None
        for part in item.get("content") or ():
            if not isinstance(part, dict):
                continue
            for ann in part.get("annotations") or ():
                if isinstance(ann, dict) and ann.get("type") == "container_file_citation":
                    citations.append(ann)
                    if isinstance(ann.get("container_id"), str):
                        containers[ann["container_id"]] = None
    return list(containers), citations


@dataclass
class Sighting:
    """Everything one relayed answer showed of one response; facts only ever accumulate."""

    tenant_id: str
    upstream: str
    response_id: str | None = None
    model: str | None = None
    containers: list[str] = field(default_factory=list)
    citations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: The terminal Response object (``response.completed``/``failed``/``incomplete``, or a
    #: whole JSON answer), when the answer carried one.
    final: dict[str, Any] | None = None
    #: The answer is over: complete, broken off, or abandoned by the client.
    ended: bool = False
    #: Bumped by every new fact; the keeper writes up to the version it saw.
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _bump(self) -> None:
        self.version += 1
        self.changed.set()

    def see_response(self, response: dict[str, Any]) -> None:
        """A Response object (a lifecycle event's, or a whole answer)."""
        if self.response_id is None and isinstance(response.get("id"), str):
            self.response_id = response["id"]
            self._bump()
        if self.model is None and isinstance(response.get("model"), str):
            self.model = response["model"]
        containers, citations = walk_response(response)
        for container_id in containers:
            self.see_container(container_id)
        for annotation in citations:
            self.see_citation(annotation)
        if response.get("status") not in UNFINISHED:  # a Response without status too
            self.final = response
            self._bump()

    def see_container(self, container_id: str) -> None:
        if container_id not in self.containers:
            self.containers.append(container_id)
            self._bump()

    def see_citation(self, annotation: dict[str, Any]) -> None:
        container_id, file_id = annotation.get("container_id"), annotation.get("file_id")
        if not isinstance(container_id, str) or not isinstance(file_id, str):
            return
        self.see_container(container_id)
        if (container_id, file_id) not in self.citations:
            self.citations[(container_id, file_id)] = annotation
            self._bump()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._bump()


class Keeper:
    """The background task that writes one sighting's facts and concludes its response."""

    def __init__(self, recorder: Recorder, sighting: Sighting) -> None:
        self.recorder = recorder
        self.sighting = sighting
        self.synced = -1
        self._written: set[Any] = set()
        self._flushed = asyncio.Condition()
        sighting.changed.set()  # write what is known already
        self.task = recorder.tasks.spawn(self._run(), name=f"cigate-keep-{id(sighting):x}")

    async def _run(self) -> None:
        s = self.sighting
        try:
            while True:
                await s.changed.wait()
                s.changed.clear()
                target = s.version
                try:
                    await self.recorder.write(s, self._written)
                except Exception:  # a store outage: the sweep finishes what is recorded
                    log.exception("recording %s failed", s.response_id)
                await self._synced(target)
                if s.ended and self.synced >= s.version:
                    break
            await self.recorder.conclude(s, self._written)
        finally:
            await self._synced(s.version)

    async def _synced(self, version: int) -> None:
        async with self._flushed:
            self.synced = max(self.synced, version)
            self._flushed.notify_all()

    async def flush(self) -> None:
        """Wait until every fact seen so far is written (failures are logged only)."""
        target = self.sighting.version
        self.sighting.changed.set()
        async with self._flushed:
            await self._flushed.wait_for(lambda: self.synced >= target or self.task.done())


class Recorder:
    """Writes sightings to the store and concludes responses; one per gateway process."""

    def __init__(
        self,
        meta: MetadataStore,
        harvester: Harvester,
        tasks: TaskRegistry,
        settings: GatewaySettings,
    ) -> None:
        self.meta = meta
        self.harvester = harvester
        self.tasks = tasks
        self.settings = settings
        #: Responses this process is keeping: the sweep leaves them to their keeper.
        self.live: set[str] = set()

    def keep(self, sighting: Sighting) -> Keeper:
        """Start writing ``sighting`` in the background; conclude it once it has ended."""
        if sighting.response_id:
            self.live.add(sighting.response_id)
        return Keeper(self, sighting)

    async def write(self, s: Sighting, written: set[Any]) -> None:
        """Write the facts of ``s`` not in ``written`` yet (and add them to it)."""
        if s.response_id:
            self.live.add(s.response_id)
        else:
            for container_id in s.containers:  # no response id (yet): claim them at least
                if ("claimed", container_id) not in written:
                    await self.meta.claim(s.tenant_id, "container", container_id, s.upstream)
                    written.add(("claimed", container_id))
        # Containers are claimed at first sight, long before a citation: the client may use
        # them (list, download) while the stream runs; on the response row they let the sweep
        # find its files should this process die.
        await self._write_unwritten(
            s.tenant_id,
            s.response_id,
            model=s.model,
            containers=s.containers,
            upstream=s.upstream,
            citations=list(s.citations.values()),
            written=written,
        )

    async def _write_unwritten(
        self,
        tenant_id: str,
        response_id: str | None,
        *,
        model: str | None,
        containers: Iterable[str],
        upstream: str,
        citations: Iterable[dict[str, Any]],
        written: set[Any],
    ) -> None:
        """Write what ``written`` does not hold yet, and add it there: the response row with
        the containers not on it yet, then each citation. A keeper's set spares its
        conclusion writing the same again: each write is a turn of the one SQLite writer,
        which many streams share."""
        if response_id:
            new = [c for c in containers if ("on-response", c) not in written]
            if ("response", response_id) not in written or new:
                await self.record_response(tenant_id, response_id, model, new, upstream)
                written.add(("response", response_id))
                written.update(("on-response", c) for c in new)
        for annotation in citations:
            key = ("citation", annotation.get("container_id"), annotation.get("file_id"))
            if key not in written:
                await self.record_citation(tenant_id, response_id, annotation)
                written.add(key)

    async def record_response(
        self,
        tenant_id: str,
        response_id: str,
        model: str | None,
        containers: Iterable[str],
        upstream: str,
    ) -> None:
        """The one place a response row is written (containers merged and claimed, with the
        configured name of the upstream that made them)."""
        await self.meta.record_response(
            tenant_id,
            response_id,
            upstream=upstream,
            model=model,
            container_ids=list(containers),
        )

    async def record_citation(
        self, tenant_id: str, response_id: str | None, annotation: dict[str, Any]
    ) -> FileRow | None:
        """Record one citation as ``pending`` and start its copy; returns the row."""
        container_id = annotation.get("container_id")
        file_id = annotation.get("file_id")
        if not isinstance(container_id, str) or not isinstance(file_id, str):
            return None
        row = await self.meta.record_file(
            tenant_id,
            kind="container",
            upstream_file_id=file_id,
            container_id=container_id,
            response_id=response_id,
            filename=str(annotation.get("filename") or file_id),
            origin="citation",
            citation=True,
        )
        if row is None:
            return None  # erased, and not cited by a new response
        self.harvester.start_copy(row)
        return row

    # -- concluding ----------------------------------------------------------------------------

    async def conclude(self, s: Sighting, written: set[Any]) -> None:
        """The answer is over: record every file of the response's containers (``written``:
        what the keeper already wrote of ``s``, not written again).

        An answer that ended without the final Response (the stream broke off, the client
        left) does not mean the response is over: the upstream keeps running its code. Its
        containers are listed only once the upstream says it is done (:meth:`settle`).
        """
        try:
            if s.final is not None:
                await self.conclude_final(s.tenant_id, s.final, s.upstream, written)
            elif s.response_id:
                await self.settle(s.tenant_id, s.response_id, s.containers, wait=SETTLE_WAIT)
        finally:
            if s.response_id:
                self.live.discard(s.response_id)

    async def settle(
        self, tenant_id: str, response_id: str, containers: Iterable[str], *, wait: float
    ) -> bool:
        """Read the response from the upstream and conclude it once it is over.

        While it is ``queued`` or ``in_progress`` (or cannot be read) it is read again, with
        backoff, for up to ``wait`` seconds; then it is left unlisted for a later sweep and
        ``False`` returned. A response the upstream does not keep (404: ``store: false``, or
        deleted) is concluded with the containers known here.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.25
        try:  # the upstream that made the response, never another
            upstream = await self.harvester.holder_of("response", response_id)
        except CigateError as exc:
            log.warning("cannot conclude %s: %s", response_id, exc.message)
            return False
        fetcher = self.harvester.fetcher_for(upstream)
        while True:
            try:
                response = await fetcher.get_json(
                    upstream.v1_url("responses", response_id),
                    {},
                    f"retrieve response {response_id}",
                )
            except CigateError as exc:
                if exc.status == 404:
                    log.info("%s is not kept upstream: listing what is known", response_id)
                    await self.reconcile(tenant_id, response_id, containers)
                    return True
                log.info("cannot read %s now: %s", response_id, exc.message)
                response = None
            if response is not None and response.get("status") not in UNFINISHED:
                await self.conclude_final(tenant_id, response, upstream.name)
                return True
            if loop.time() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def conclude_final(
        self,
        tenant_id: str,
        response: dict[str, Any],
        upstream: str,
        written: set[Any] | None = None,
    ) -> None:
        """A finished Response object (made by ``upstream``): its citations, then every file
        of its containers. Facts in ``written`` (a keeper's) are in the store already."""
        response_id = response.get("id") if isinstance(response.get("id"), str) else None
        containers, citations = walk_response(response)
        # Citations before the listing, so their rows keep origin and cited name.
        await self._write_unwritten(
            tenant_id,
            response_id,
            model=response.get("model"),
            containers=containers,
            upstream=upstream,
            citations=citations,
            written=written if written is not None else set(),
        )
        await self.reconcile(tenant_id, response_id, containers)

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
                fetcher = await self.harvester.fetcher_of("container", container_id)
                listed = await fetcher.list_files(container_id)
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
                row = await self.meta.record_file(
                    tenant_id,
                    kind="container",
                    upstream_file_id=str(item["id"]),
                    container_id=container_id,
                    response_id=response_id,
                    filename=path.rsplit("/", 1)[-1] or str(item["id"]),
                    origin="listing",
                    path=listed_path,
                    citation=False,
                )
                if row is None:
                    continue  # erased: a listing never brings a file back
                size = item.get("bytes")
                expected = size if isinstance(size, int) and size >= 0 else None
                self.harvester.start_copy(row, expected_size=expected)
                if expected is not None:
                    self.tasks.spawn(
                        self.harvester.verify_size(row, expected), name=f"cigate-size-{row.id}"
                    )
        if complete and response_id:
            await self.meta.mark_listed(tenant_id, response_id)

    async def sweep_unlisted(self, horizon: float) -> None:
        """Conclude responses whose relaying process died before it could (the sweep's part)."""
        unlisted = await self.meta.claim_unlisted(
            self.settings.worker_id,
            self.settings.lease_seconds,
            older_than=self.settings.harvest_relist_after,
            horizon=horizon,
        )
        for record in unlisted:
            if record.response_id in self.live:
                continue  # still kept here; the lease runs out and its keeper concludes it
            log.info("concluding %s: its relaying process never did", record.response_id)
            self.tasks.spawn(
                self.settle(record.tenant_id, record.response_id, record.container_ids, wait=0.0),
                name=f"cigate-settle-{record.response_id}",
            )

    # -- Assistants ----------------------------------------------------------------------------

    async def record_assistants(self, tenant_id: str, body: Any, upstream: str) -> int:
        """Record and start copying every Files-API file cited in ``body`` (an answer of
        ``upstream``, the configured name); returns how many.

        The files are recorded under the run's id (``/responses/{run_id}/files`` lists them).
        A file another tenant already owns is left alone, as for on-demand adoption.
        """
        refs = [r for r in RefCollector().feed(body) if r.source == "assistants"]
        if not refs:
            return 0
        run_ids = {str(rid) for rid in _run_ids(body)}
        run_id = next(iter(run_ids)) if len(run_ids) == 1 else None
        if run_id is not None:
            await self.record_response(tenant_id, run_id, None, (), upstream)
            # A run has no containers to list: its files are the ones its messages cite.
            await self.meta.mark_listed(tenant_id, run_id)
        count = 0
        for ref in refs:
            if await self.meta.files_api_owner(ref.file_id) not in (None, tenant_id):
                continue
            row = await self.meta.record_file(
                tenant_id,
                kind="files_api",
                upstream_file_id=ref.file_id,
                container_id=None,
                response_id=run_id,
                filename=await self._filename(ref, upstream),
                origin="assistants",
                upstream=upstream,
                citation=True,
            )
            if row is None:
                continue  # erased, and not cited by a new run
            self.harvester.start_copy(row)
            count += 1
        return count

    async def _filename(self, ref: FileRef, upstream: str) -> str:
        """The name the upstream gave the file (an ``image_file`` block cites only its id)."""
        if ref.filename != ref.file_id:
            return ref.filename
        holder = self.harvester.pool.members.get(upstream, self.harvester.pool.default)
        try:
            record = await self.harvester.fetcher_for(holder).record(ref)
        except CigateError as exc:
            log.info("no metadata for %s: %s", ref.file_id, exc.message)
            return ref.file_id
        return str(record.get("filename") or ref.file_id)


def _run_ids(node: Any) -> set[Any]:
    """Every ``run_id`` in a message, step or list of them."""
    if isinstance(node, list):
        return set().union(*(_run_ids(x) for x in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["run_id"]} if isinstance(node.get("run_id"), str) else set()
    if isinstance(node.get("data"), list):
        found |= _run_ids(node["data"])
    return found
