"""FileRef -> verified bytes on disk, through the harvest core.

The download chain itself (content endpoint, listing fallback, retries with the server's delay,
error-in-200 and size checks) is :mod:`cigate.harvest.fetch`, shared with the gateway. This
module is its disk sink: each attempt's body streams in ~1 MiB batches to a temporary file,
hashed on the way, and only a body that passed every check is renamed into place
(:mod:`cigate.client._atomic`) — an error body is never saved as if it were the file. On top it
adds what a run needs: bounded concurrency, one download per file however often it is cited,
safe unique names, and progress callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx2

from cigate.client._atomic import TempFile
from cigate.client._config import ClientConfig
from cigate.client._results import DownloadResult, Harvest
from cigate.exceptions import CigateError
from cigate.harvest.content_types import extension_for
from cigate.harvest.fetch import CHUNK, Body, Fetcher, quoted_url
from cigate.harvest.naming import NameReserver
from cigate.harvest.refs import FileRef
from cigate.harvest.retry import RetryPolicy

__all__ = ["CHUNK", "DownloadObserver", "Downloader"]


class DownloadObserver(Protocol):
    """Progress callbacks (the CLI draws bars with them); every method is optional to act on."""

    def started(self, ref: FileRef, total: int | None) -> None: ...
    def advanced(self, ref: FileRef, nbytes: int) -> None: ...
    def finished(self, result: DownloadResult) -> None: ...


class QuietDownloadObserver:
    """Observes no download (the default); :class:`QuietObserver` extends it to whole runs."""

    def started(self, ref: FileRef, total: int | None) -> None:
        pass

    def advanced(self, ref: FileRef, nbytes: int) -> None:
        pass

    def finished(self, result: DownloadResult) -> None:
        pass


class _ConfigUpstream:
    """The client's settings as the harvest core's :class:`~cigate.harvest.fetch.UpstreamAPI`."""

    def __init__(self, config: ClientConfig, downloader: Downloader) -> None:
        self._config = config
        self._downloader = downloader

    @property
    def client(self) -> httpx2.AsyncClient:
        return self._downloader.client

    @property
    def default_query(self) -> Mapping[str, str]:
        return self._config.default_query

    @property
    def uses_entra(self) -> bool:
        return self._config.uses_entra

    def v1_url(self, *segments: str) -> str:
        return quoted_url(self._config.base_url, *segments)

    async def auth_headers(self) -> Mapping[str, str]:
        return await self._config.aauth_headers()


class Downloader:
    """Downloads FileRefs into one directory with bounded concurrency.

    Use as ``async with Downloader(config, out) as d: await d.fetch_all(refs)``. Pass
    ``client`` (an ``httpx2.AsyncClient``) to reuse a connection pool or to swap the transport
    in tests; otherwise one is created and closed with the downloader.
    """

    def __init__(
        self,
        config: ClientConfig,
        out: str | Path | None = None,
        *,
        client: httpx2.AsyncClient | None = None,
        observer: DownloadObserver | None = None,
    ) -> None:
        self.config = config
        self.out = Path(out if out is not None else config.out)
        self.policy = RetryPolicy(
            config.retries, config.backoff, config.backoff_max, config.max_retry_wait
        )
        self.observer: DownloadObserver = observer or QuietDownloadObserver()
        self._client = client
        self._owns_client = client is None
        self._names = NameReserver(self.out)
        self._limit = anyio.CapacityLimiter(config.concurrency)
        self.fetcher = Fetcher(_ConfigUpstream(config, self), self.policy, reuse_listings=True)
        self.done: dict[tuple[str | None, str], DownloadResult] = {}
        self._inflight: dict[tuple[str | None, str], anyio.Event] = {}

    async def __aenter__(self) -> Downloader:
        if self._client is None:
            timeout = httpx2.Timeout(self.config.timeout, connect=min(30.0, self.config.timeout))
            self._client = httpx2.AsyncClient(timeout=timeout, follow_redirects=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            raise RuntimeError("use Downloader inside `async with`")
        return self._client

    # -- public ------------------------------------------------------------------------------

    async def fetch_all(self, refs: Iterable[FileRef]) -> Harvest:
        """Fetch every ref concurrently (bounded); failures become results with ``error``."""
        unique: dict[tuple[str | None, str], FileRef] = {}
        for ref in refs:  # a file cited twice is fetched once
            unique.setdefault(ref.key, ref)
        refs = list(unique.values())
        results: list[DownloadResult | None] = [None] * len(refs)

        async def one(i: int, ref: FileRef) -> None:
            results[i] = await self.fetch(ref)

        async with anyio.create_task_group() as tg:
            for i, ref in enumerate(refs):
                tg.start_soon(one, i, ref)
        return Harvest([r for r in results if r is not None])

    async def fetch(self, ref: FileRef) -> DownloadResult:
        """Fetch one ref (never raises a CigateError: it is recorded in the result).

        A ref already fetched, or being fetched, is not fetched again: the same file cited
        twice is one download and one local file.
        """
        pending = self._inflight.get(ref.key)
        if pending is not None:
            await pending.wait()
            shared = self.done.get(ref.key)
            if shared is not None:
                return shared
        previous = self.done.get(ref.key)
        if previous is not None and previous.ok:
            return previous
        self._inflight[ref.key] = event = anyio.Event()
        try:
            async with self._limit:
                fetched = await self.fetcher.fetch(ref, self._to_disk)
            result = DownloadResult(
                ref=fetched.ref,
                strategy=fetched.strategy,
                attempts=fetched.attempts,
                error=fetched.error,
            )
            if fetched.stored is not None and fetched.error is None:
                result.path, result.sha256 = fetched.stored
                result.bytes, result.content_type = fetched.size, fetched.content_type
            self.done[ref.key] = result
        finally:
            del self._inflight[ref.key]
            event.set()
        self.observer.finished(result)
        return result

    async def save_bytes(self, ref: FileRef, data: bytes, content_type: str) -> DownloadResult:
        """Save bytes the response itself carried (a displayed figure) like a download:
        the same temporary file, hash and atomic rename, recorded in :attr:`done`."""
        result = DownloadResult(ref=ref, strategy="displayed", attempts=1)
        self.observer.started(ref, len(data))
        tmp = await TempFile.create(self.out)
        try:
            await tmp.write(data)
            sha = tmp.sha256
            result.path = await tmp.commit(self._names, ref.filename)
            result.bytes, result.sha256, result.content_type = len(data), sha, content_type
        except CigateError as exc:
            result.error = exc
        finally:
            if result.path is None:
                with anyio.CancelScope(shield=True):
                    await tmp.discard()
        self.done[ref.key] = result
        self.observer.finished(result)
        return result

    async def list_files(self, container_id: str) -> list[dict[str, Any]]:
        """The container's file records (all pages), with retries; raises a CigateError."""
        return await self.fetcher.list_files(container_id)

    async def _to_disk(self, body: Body) -> tuple[Path, str]:
        """The core's sink: one attempt's body into a temporary file, renamed once it passed
        every check (the core stops the ``async for`` before the end otherwise)."""
        ref = body.ref
        self.observer.started(ref, body.expected)
        tmp = await TempFile.create(self.out)
        path: Path | None = None
        try:
            async for batch in body:
                await tmp.write(batch)
                self.observer.advanced(ref, len(batch))
            name = extension_for(ref.filename, body.content_type)
            sha = tmp.sha256
            path = await tmp.commit(self._names, name)
            return path, sha
        finally:
            if path is None:
                # Shielded: a cancelled download (Ctrl-C, a failed run) must still remove its
                # temporary file; unshielded, this await is cancelled before the unlink runs.
                with anyio.CancelScope(shield=True):
                    await tmp.discard()
