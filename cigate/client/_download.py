"""FileRef -> verified bytes on disk, surviving Azure's download failures.

The strategy chain follows api-reference §6.4: fetch from the same base URL and credential that
produced the response, on the v1 container content path (``api-version=preview`` only when the
setup asks for it); retry 429/5xx/cut-off bodies with backoff that honours the server's delay;
when the content endpoint keeps failing (404, empty body, 5xx), list the container's files and
match by path; never send a ``cfile_`` id to ``/files``. Every body streams in ~1 MiB batches to a
temporary file, is checked against the container's file record (size) and hashed, then renamed
atomically — an error body is never saved as if it were the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import httpx2

from cigate.client._atomic import TempFile
from cigate.client._config import ClientConfig
from cigate.client._results import DownloadResult, Harvest
from cigate.exceptions import (
    AccessDeniedError,
    ApiVersionError,
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
    RateLimitedError,
    StorageError,
    UpstreamUnavailableError,
)
from cigate.harvest import classify
from cigate.harvest.content_types import extension_for, guess_type, is_json_name
from cigate.harvest.naming import NameReserver
from cigate.harvest.refs import FileRef
from cigate.harvest.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

__all__ = ["CHUNK", "DownloadObserver", "Downloader"]

CHUNK = 1024 * 1024
#: Errors another attempt cannot fix, and errors a container listing cannot route around.
_FINAL = (AccessDeniedError, ApiVersionError, ContainerExpiredError)
_NO_FALLBACK = (*_FINAL, IntegrityError, RateLimitedError, StorageError)
_ERROR_BODY_CAP = 64 * 1024


class DownloadObserver(Protocol):
    """Progress callbacks (the CLI draws bars with them); every method is optional to act on."""

    def started(self, ref: FileRef, total: int | None) -> None: ...
    def advanced(self, ref: FileRef, nbytes: int) -> None: ...
    def finished(self, result: DownloadResult) -> None: ...


class _Quiet:
    def started(self, ref: FileRef, total: int | None) -> None:
        pass

    def advanced(self, ref: FileRef, nbytes: int) -> None:
        pass

    def finished(self, result: DownloadResult) -> None:
        pass


class _Failure(Exception):
    """One failed attempt; ``retryable`` says whether another attempt may help."""

    def __init__(self, error: CigateError, *, retryable: bool, delay: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.delay = delay


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
        self.observer: DownloadObserver = observer or _Quiet()
        self._client = client
        self._owns_client = client is None
        self._names = NameReserver(self.out)
        self._limit = anyio.CapacityLimiter(config.concurrency)
        self._listings: dict[str, list[dict[str, Any]] | CigateError] = {}
        self._listing_locks: dict[str, asyncio.Lock] = {}
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

    def _url(self, *parts: str) -> str:
        return self.config.base_url + "/".join(quote(p, safe="") for p in parts)

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
        result = DownloadResult(ref=ref)
        self._inflight[ref.key] = event = anyio.Event()
        try:
            async with self._limit:
                try:
                    if ref.is_container_file:
                        await self._fetch_container_file(ref, result)
                    else:
                        await self._fetch_files_api(ref, result)
                except CigateError as exc:
                    result.error = exc
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
        records: list[dict[str, Any]] = []
        seen: set[Any] = set()
        after: str | None = None
        while True:
            params: dict[str, str] = {"limit": "100", "order": "asc", **self.config.default_query}
            if after:
                params["after"] = after
            page = await self._retrying(
                lambda p=params: self._get_json(
                    self._url("containers", container_id, "files"), p, "list container files"
                )
            )
            data = [r for r in page.get("data", []) if isinstance(r, dict)]
            fresh = [r for r in data if r.get("id") not in seen]
            records.extend(fresh)
            seen.update(r.get("id") for r in fresh)
            # Stop on the last page, and on a server that ignores ``after`` (the same page
            # again with has_more: true would otherwise loop forever).
            if not fresh or not page.get("has_more"):
                return records
            after = str(fresh[-1].get("id"))

    # -- strategies ----------------------------------------------------------------------------

    async def _fetch_container_file(self, ref: FileRef, result: DownloadResult) -> None:
        assert ref.container_id is not None
        record = await self._record(ref)
        size = _size(record) if record else ref.bytes
        url = self._url("containers", ref.container_id, "files", ref.file_id, "content")
        try:
            await self._download(url, ref, size, result, "container")
            return
        except CigateError as first:
            if isinstance(first, _NO_FALLBACK) or (
                first.status is not None and first.status not in (404, *RETRYABLE_STATUSES)
            ):
                raise
            error: CigateError = first
        # Fallback: list the container and match by id, then by path basename.
        try:
            listing = await self._listing(ref.container_id, refresh=True)
        except (ContainerExpiredError, UpstreamUnavailableError) as exc:
            raise exc if isinstance(exc, ContainerExpiredError) else error from None
        except CigateError:
            raise error from None
        match = _match(listing, ref)
        if match is None:
            raise FileNotFoundInContainerError(
                f"{ref.filename} ({ref.file_id}) is not among the {len(listing)} files of "
                f"container {ref.container_id}; the content endpoint said: {error.message}",
                status=error.status,
            ) from error
        alt_url = self._url("containers", ref.container_id, "files", str(match["id"]), "content")
        await self._download(alt_url, ref, _size(match), result, "container-listing")

    async def _fetch_files_api(self, ref: FileRef, result: DownloadResult) -> None:
        """``assistant-…``/``file-…`` ids (Assistants API): the Files content endpoint."""
        size = ref.bytes
        name = ref.filename
        try:
            record = await self._get_json(self._url("files", ref.file_id), {}, "retrieve file")
            size = _size(record)
            if name == ref.file_id and record.get("filename"):
                name = PurePosixPath(str(record["filename"])).name
        except _Failure:
            record = None
        if name != ref.filename:
            ref = FileRef(ref.file_id, name, ref.container_id, ref.source, ref.response_id)
            result.ref = ref
        await self._download(self._url("files", ref.file_id, "content"), ref, size, result, "files")

    async def _record(self, ref: FileRef) -> dict[str, Any] | None:
        """The container's record of the file (for its size), best effort."""
        assert ref.container_id is not None
        try:
            listing = await self._listing(ref.container_id)
        except CigateError:
            listing = None
        if listing is not None:
            found = next((r for r in listing if r.get("id") == ref.file_id), None)
            if found is not None:
                return found
        url = self._url("containers", ref.container_id, "files", ref.file_id)
        try:
            return await self._get_json(url, dict(self.config.default_query), "retrieve file")
        except _Failure:
            return None

    async def _listing(self, container_id: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        lock = self._listing_locks.setdefault(container_id, asyncio.Lock())
        async with lock:
            cached = self._listings.get(container_id)
            if cached is None or refresh:
                try:
                    cached = await self.list_files(container_id)
                except CigateError as exc:
                    cached = exc
                self._listings[container_id] = cached
        if isinstance(cached, CigateError):
            raise cached
        return cached

    # -- transfer ------------------------------------------------------------------------------

    async def _download(
        self, url: str, ref: FileRef, size: int | None, result: DownloadResult, strategy: str
    ) -> None:
        async def attempt() -> None:
            result.attempts += 1
            await self._stream_once(url, ref, size, result)

        await self._retrying(attempt)
        result.strategy = strategy

    async def _stream_once(
        self, url: str, ref: FileRef, size: int | None, result: DownloadResult
    ) -> None:
        what = f"download {ref.filename} ({ref.file_id})"
        headers = {"Accept": "application/binary", **await self.config.aauth_headers()}
        tmp: TempFile | None = None
        try:
            async with self.client.stream(
                "GET", url, params=self.config.default_query, headers=headers
            ) as resp:
                if resp.status_code != 200:
                    body = await _read_capped(resp)
                    raise self._http_failure(resp.status_code, body, resp.headers, what)
                length = resp.headers.get("content-length")
                self.observer.started(ref, size if size is not None else _int(length))
                tmp = await TempFile.create(self.out)
                # Take the body as the socket delivers it and hand ~1 MiB batches (one join)
                # to the writer thread: ``aiter_bytes(CHUNK)`` re-chunks through a BytesIO,
                # copying each byte twice on the event loop that every download shares.
                batch: list[bytes] = []
                pending = 0
                async for chunk in resp.aiter_bytes():
                    batch.append(chunk)
                    pending += len(chunk)
                    if pending >= CHUNK:
                        await tmp.write(b"".join(batch))
                        self.observer.advanced(ref, pending)
                        batch, pending = [], 0
                if batch:
                    await tmp.write(b"".join(batch))
                    self.observer.advanced(ref, pending)
            self._verify(tmp, ref, size, what)
            mime = guess_type(ref.filename, tmp.head)
            name = extension_for(ref.filename, mime)
            sha, nbytes = tmp.sha256, tmp.size
            result.path = await tmp.commit(self._names, name)
            result.bytes, result.sha256, result.content_type = nbytes, sha, mime
            result.error = None
        except httpx2.RequestError as exc:  # transport, decoding, redirect loops
            if tmp is None:  # nothing arrived: the service is unreachable or hung up at once
                raise _Failure(classify.from_transport(exc, what=what), retryable=True) from exc
            broke = (
                "the body could not be decoded"
                if isinstance(exc, httpx2.DecodingError)
                else "the connection dropped"
            )
            cut = IntegrityError(
                f"{what}: {broke} after {tmp.size:,} of "
                f"{'?' if size is None else f'{size:,}'} bytes ({type(exc).__name__})"
            )
            raise _Failure(cut, retryable=True) from exc
        finally:
            if tmp is not None and result.path is None:
                # Shielded: a cancelled download (Ctrl-C, a failed run) must still remove its
                # temporary file; unshielded, this await is cancelled before the unlink runs.
                with anyio.CancelScope(shield=True):
                    await tmp.discard()

    def _verify(self, tmp: TempFile, ref: FileRef, size: int | None, what: str) -> None:
        """Reject error bodies delivered with 200 and short or long bodies."""
        if classify.looks_like_error_body(tmp.head) and not is_json_name(ref.filename):
            message, _ = classify.error_message(tmp.head)
            bad = UpstreamUnavailableError(f"{what}: HTTP 200 carrying an error: {message}")
            raise _Failure(bad, retryable=True)
        if size is not None and tmp.size != size:
            err = IntegrityError(
                f"{what}: received {tmp.size} bytes, the container's record says {size}"
            )
            raise _Failure(err, retryable=True)

    def _http_failure(
        self, status: int, body: bytes, headers: httpx2.Headers, what: str
    ) -> _Failure:
        hdrs = dict(headers.items())
        error = classify.from_http(status, body, hdrs, what=what, uses_entra=self.config.uses_entra)
        delay = parse_retry_after(hdrs)
        retryable = (status in RETRYABLE_STATUSES or (status == 404 and not body.strip())) and (
            not isinstance(error, _FINAL)
        )
        return _Failure(error, retryable=retryable, delay=delay)

    async def _get_json(self, url: str, params: dict[str, str], what: str) -> dict[str, Any]:
        headers = {"Accept": "application/json", **await self.config.aauth_headers()}
        try:
            resp = await self.client.get(url, params=params, headers=headers)
        except httpx2.RequestError as exc:  # transport, decoding, redirect loops
            raise _Failure(classify.from_transport(exc, what=what), retryable=True) from exc
        if resp.status_code != 200:
            raise self._http_failure(resp.status_code, resp.content, resp.headers, what)
        try:
            data = resp.json()
        except ValueError as exc:
            err = classify.from_http(502, resp.content, dict(resp.headers.items()), what=what)
            raise _Failure(err, retryable=True) from exc
        if not isinstance(data, dict) or "error" in data:
            err = classify.from_http(502, resp.content, dict(resp.headers.items()), what=what)
            raise _Failure(err, retryable=True)
        return data

    async def _retrying(self, op: Any) -> Any:
        """Run ``op`` until it succeeds or the policy says stop; raise the CigateError."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await op()
            except _Failure as failure:
                if not failure.retryable or not self.policy.should_retry(attempt, failure.delay):
                    if failure.delay is not None and failure.delay > self.policy.max_wait:
                        failure.error.hint = (
                            f"The service asks to wait {failure.delay:.0f} s, longer than "
                            f"--max-retry-wait; {failure.error.hint}"
                        )
                    raise failure.error from None
                await anyio.sleep(self.policy.delay(attempt, failure.delay))


async def _read_capped(resp: httpx2.Response) -> bytes:
    body = b""
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) >= _ERROR_BODY_CAP:
            break
    return body[:_ERROR_BODY_CAP]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _size(record: dict[str, Any] | None) -> int | None:
    value = (record or {}).get("bytes")
    return value if isinstance(value, int) and value >= 0 else None


def _match(listing: list[dict[str, Any]], ref: FileRef) -> dict[str, Any] | None:
    by_id = next((r for r in listing if r.get("id") == ref.file_id), None)
    if by_id is not None:
        return by_id
    for record in listing:
        if PurePosixPath(str(record.get("path", ""))).name == ref.filename:
            return record
    return None
