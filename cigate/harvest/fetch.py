"""The upstream download of a FileRef, for the client and the gateway alike: one chain, any sink.

The chain follows api-reference §6.4. A container file is fetched from the same base URL and
credential that produced the response, on the v1 content path; failures are classified once
(:mod:`~cigate.harvest.classify`) and retried by the one policy (:mod:`~cigate.harvest.retry`),
the server's ``retry-after`` honoured. When the content endpoint keeps failing (404, empty
body, 5xx) the container is listed (:meth:`Fetcher.list_files`, the one paginator) and the file
matched by id, then by path basename; a ``cfile_`` id never goes to ``/files``. Files-API ids
(``assistant-…``/``file-…``) take the Files content endpoint.

Every body reaches the caller's *sink* (the client's temporary file, the gateway's blob store)
as a :class:`Body`: ~1 MiB batches, checked on the way. Its first batch is held back until it
is known not to be an error document delivered with status 200, and its end is not reached
(the ``async for`` does not finish) unless the transfer was complete and its size equals the
container's record. A sink that keeps only what it read to the end therefore never keeps bytes
that failed a check, and on failure it must leave nothing behind (the sink's contract).

The upstream is a small protocol (:class:`UpstreamAPI`): this module knows neither the client's
configuration nor the gateway's ``Upstream``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx2

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
from cigate.harvest.content_types import guess_type, is_json_name
from cigate.harvest.refs import FileRef
from cigate.harvest.retry import RETRYABLE_STATUSES, OnRetry, RetryPolicy

__all__ = [
    "CHUNK",
    "HEAD_BYTES",
    "MAX_LIST_PAGES",
    "Body",
    "Fetched",
    "Fetcher",
    "Sink",
    "UpstreamAPI",
    "quoted_url",
    "suspect",
]

#: Batch size handed to sinks: large enough that writes and thread hops stay few.
CHUNK = 1024 * 1024
#: How much of a body's start the error-in-200 check and content sniffing look at.
HEAD_BYTES = 4096
#: A listing stops after this many pages (100 files each) whatever the server says.
MAX_LIST_PAGES = 1000
_ERROR_BODY_CAP = 64 * 1024

T = TypeVar("T")


class UpstreamAPI(Protocol):
    """What the chain needs of an upstream: URLs, credentials, and an HTTP client."""

    @property
    def client(self) -> httpx2.AsyncClient:
        """The client every request goes through (its pool, timeouts and transport)."""
        ...

    @property
    def default_query(self) -> Mapping[str, str]:
        """Query parameters every request carries (``api-version`` when one is set)."""
        ...

    @property
    def uses_entra(self) -> bool:
        """Whether the credential is a Microsoft Entra ID token (for the 401 hint)."""
        ...

    def v1_url(self, *segments: str) -> str:
        """The URL of a v1 resource, e.g. ``v1_url("containers", cid, "files")``."""
        ...

    async def auth_headers(self) -> Mapping[str, str]:
        """The credential's headers, fresh (tokens are refreshed before they expire)."""
        ...


def quoted_url(base_url: str, *segments: str) -> str:
    """``base_url`` (ending in ``/``) plus each segment percent-encoded, ``/`` included."""
    return base_url + "/".join(quote(s, safe="") for s in segments)


def suspect(head: bytes, filename: str) -> bool:
    """Whether a body starting with ``head`` is an error document rather than the file.

    A JSON object with an ``error`` key is what a failing service or proxy sends, sometimes
    with status 200. A file whose name says JSON may legitimately look so: for it only the
    size against the container's record can tell (see :class:`Body`).
    """
    return classify.looks_like_error_body(head) and not is_json_name(filename)


class Body:
    """One attempt's upstream body, iterated once by the sink (``async for batch in body``).

    ``expected`` is the size the bytes must have (the container's record, else the declared
    ``content-length``). ``head``, ``size`` and :attr:`content_type` describe what was read.
    """

    def __init__(
        self, response: httpx2.Response, ref: FileRef, expected: int | None, what: str
    ) -> None:
        self.ref = ref
        self.expected = expected
        self.what = what
        self.head = b""
        self.size = 0
        #: True once every byte was read and every check passed.
        self.complete = False
        self._response = response
        self._started = False

    @property
    def content_type(self) -> str:
        """The file's MIME type, from its name, else from its first bytes."""
        return guess_type(self.ref.filename, self.head)

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError("a Body can be read only once")
        self._started = True
        return self._batches()

    async def _batches(self) -> AsyncIterator[bytes]:
        # Take the body as the socket delivers it and hand ~1 MiB batches (one join) to the
        # sink: ``aiter_bytes(CHUNK)`` re-chunks through a BytesIO, copying every byte twice on
        # the event loop that all downloads share.
        batch: list[bytes] = []
        pending = 0
        try:
            async for chunk in self._response.aiter_bytes():
                batch.append(chunk)
                pending += len(chunk)
                if pending >= CHUNK:
                    yield self._take(batch, last=False)
                    batch, pending = [], 0
        except httpx2.RequestError as exc:  # transport, decoding: the body is cut short
            broke = (
                "the body could not be decoded"
                if isinstance(exc, httpx2.DecodingError)
                else "the connection dropped"
            )
            total = "?" if self.expected is None else f"{self.expected:,}"
            raise IntegrityError(
                f"{self.what}: {broke} after {self.size + pending:,} of {total} bytes "
                f"({type(exc).__name__})"
            ) from exc
        last = self._take(batch, last=True)
        self.complete = True
        if last:
            yield last

    def _take(self, batch: list[bytes], *, last: bool) -> bytes:
        """Join a batch and run the checks due before it may reach the sink."""
        data = b"".join(batch)
        first = self.size == 0
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.size += len(data)
        if first and suspect(self.head, self.ref.filename):
            message, _ = classify.error_message(self.head)
            raise UpstreamUnavailableError(f"{self.what}: HTTP 200 carrying an error: {message}")
        if last and self.expected is not None and self.size != self.expected:
            raise IntegrityError(
                f"{self.what}: received {self.size} bytes, the container's record says "
                f"{self.expected}"
            )
        return data


#: Consumes one :class:`Body` and returns what it stored; on any failure it leaves nothing.
Sink = Callable[[Body], Awaitable[T]]


@dataclass
class Fetched(Generic[T]):
    """The outcome of one :meth:`Fetcher.fetch`: what the sink stored, or the error."""

    ref: FileRef
    #: Download attempts that reached the upstream: a wait for a free connection of this
    #: process's pool is none, also past the retry policy's budget for such waits.
    attempts: int = 0
    #: ``container``, ``container-listing`` (matched in the listing) or ``files``.
    strategy: str | None = None
    stored: T | None = None
    size: int = 0
    head: bytes = b""
    content_type: str | None = None
    error: CigateError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.strategy is not None


#: Errors a container listing cannot route around.
_NO_FALLBACK = (
    ContainerExpiredError,
    IntegrityError,
    RateLimitedError,
    StorageError,
    AccessDeniedError,
    ApiVersionError,
)


@dataclass
class Fetcher:
    """Fetches FileRefs from one upstream with one retry policy.

    ``reuse_listings`` keeps each container's listing for the fetcher's life (a client run:
    one listing serves every file's size check); otherwise each file's own record is read
    (a long-lived gateway, whose containers keep changing).
    """

    upstream: UpstreamAPI
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    reuse_listings: bool = False
    _listings: dict[str, list[dict[str, Any]] | CigateError] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    # -- records -------------------------------------------------------------------------------

    async def list_files(self, container_id: str) -> list[dict[str, Any]]:
        """The container's file records, every page, with retries; raises a CigateError.

        Pages are read oldest first; paging stops on ``has_more: false``, an empty page, a
        page with no id not seen before (a server that ignores ``after`` would otherwise loop
        forever), or after :data:`MAX_LIST_PAGES`. A missing ``has_more`` means "ask again",
        as the SDK does.
        """
        records: list[dict[str, Any]] = []
        seen: set[Any] = set()
        url = self.upstream.v1_url("containers", container_id, "files")
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params = {"limit": "100", "order": "asc", **self.upstream.default_query}
            if after:
                params["after"] = after
            page = await self._retrying(
                functools.partial(self.get_json, url, params, f"list files of {container_id}")
            )
            data = [r for r in page.get("data") or [] if isinstance(r, dict) and r.get("id")]
            fresh = [r for r in data if r["id"] not in seen]
            records.extend(fresh)
            seen.update(r["id"] for r in fresh)
            if not fresh or page.get("has_more") is False:
                break
            after = str(fresh[-1]["id"])
        return records

    async def record(self, ref: FileRef) -> dict[str, Any]:
        """The upstream's record of ``ref`` (one attempt); raises a CigateError.

        A container file's record comes from a listing this fetcher holds when it holds one
        (``reuse_listings``), else from ``GET /containers/{c}/files/{f}``; a Files-API file's
        from ``GET /files/{id}``.
        """
        if ref.is_container_file:
            assert ref.container_id is not None
            if self.reuse_listings:
                try:
                    listing = await self._listing(ref.container_id)
                except CigateError:
                    listing = []
                found = next((r for r in listing if r.get("id") == ref.file_id), None)
                if found is not None:
                    return found
            url = self.upstream.v1_url("containers", ref.container_id, "files", ref.file_id)
        else:
            url = self.upstream.v1_url("files", ref.file_id)
        return await self.get_json(url, dict(self.upstream.default_query), "retrieve file")

    async def file_record(self, ref: FileRef) -> dict[str, Any] | None:
        """:meth:`record`, best effort: ``None`` when the upstream does not give it (one
        attempt). Finding every connection of this process in use is no answer: the call
        waits for one as the retried calls do, so a busy pool never skips the size check."""
        try:
            return await self.policy.call(
                functools.partial(self.record, ref), classify.saturated, unsent=classify.saturated
            )
        except CigateError:
            return None

    async def get_json(self, url: str, params: Mapping[str, str], what: str) -> dict[str, Any]:
        """One GET of a JSON object; any failure (an error document with 200 too) raises."""
        headers = {"Accept": "application/json", **await self.upstream.auth_headers()}
        try:
            resp = await self.upstream.client.get(url, params=params, headers=headers)
        except httpx2.RequestError as exc:  # transport, decoding, redirect loops
            raise classify.from_transport(exc, what=what) from exc
        if resp.status_code != 200:
            raise self._http_error(resp.status_code, resp.content, resp.headers, what)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("error"):  # a Response has "error": null
            raise classify.from_http(502, resp.content, dict(resp.headers.items()), what=what)
        return data

    async def _listing(self, container_id: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        if not self.reuse_listings:
            return await self.list_files(container_id)
        lock = self._locks.setdefault(container_id, asyncio.Lock())
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

    # -- fetching ------------------------------------------------------------------------------

    async def fetch(
        self, ref: FileRef, sink: Sink[T], *, on_retry: OnRetry | None = None
    ) -> Fetched[T]:
        """Fetch ``ref`` into ``sink``; never raises a CigateError (it is in the result)."""
        outcome: Fetched[T] = Fetched(ref=ref)
        try:
            if ref.is_container_file:
                await self._container_file(ref, sink, outcome, on_retry)
            else:
                await self._files_api(ref, sink, outcome, on_retry)
        except CigateError as exc:
            outcome.error = exc
        return outcome

    async def _container_file(
        self, ref: FileRef, sink: Sink[T], outcome: Fetched[T], on_retry: OnRetry | None
    ) -> None:
        assert ref.container_id is not None
        # The size to check: the caller's, from a listing it just made, else the file's record
        # (one more request per file, which the gateway's conclusion of a response spared).
        record = await self.file_record(ref) if ref.bytes is None else None
        size = _size(record) if record else ref.bytes
        url = self.upstream.v1_url("containers", ref.container_id, "files", ref.file_id, "content")
        try:
            await self._download(
                url, ref, size, sink, outcome, strategy="container", on_retry=on_retry
            )
            return
        except CigateError as first:
            if isinstance(first, _NO_FALLBACK) or (
                first.status is not None and first.status not in (404, *RETRYABLE_STATUSES)
            ):
                raise
            error = first
        # Fallback: list the container and match by id, then by path basename.
        try:
            listing = await self._listing(ref.container_id, refresh=True)
        except ContainerExpiredError:
            raise
        except CigateError:
            raise error from None
        match = _match(listing, ref)
        if match is None:
            raise FileNotFoundInContainerError(
                f"{ref.filename} ({ref.file_id}) is not among the {len(listing)} files of "
                f"container {ref.container_id}; the content endpoint said: {error.message}",
                status=error.status,
            ) from error
        if str(match["id"]) == ref.file_id:
            raise error  # listed under the same id: the content endpoint was the only way
        alt = self.upstream.v1_url(
            "containers", ref.container_id, "files", str(match["id"]), "content"
        )
        await self._download(
            alt,
            ref,
            _size(match),
            sink,
            outcome,
            strategy="container-listing",
            on_retry=on_retry,
        )

    async def _files_api(
        self, ref: FileRef, sink: Sink[T], outcome: Fetched[T], on_retry: OnRetry | None
    ) -> None:
        """``assistant-…``/``file-…`` ids (Assistants API): the Files content endpoint."""
        record = await self.file_record(ref)
        if record is not None and ref.filename == ref.file_id and record.get("filename"):
            ref = replace(ref, filename=PurePosixPath(str(record["filename"])).name)
            outcome.ref = ref
        url = self.upstream.v1_url("files", ref.file_id, "content")
        size = _size(record) if record else ref.bytes
        await self._download(url, ref, size, sink, outcome, strategy="files", on_retry=on_retry)

    async def _download(
        self,
        url: str,
        ref: FileRef,
        size: int | None,
        sink: Sink[T],
        outcome: Fetched[T],
        *,
        strategy: str,
        on_retry: OnRetry | None,
    ) -> None:
        async def attempt() -> None:
            outcome.attempts += 1
            try:
                outcome.stored, body = await self._attempt(url, ref, size, sink)
            except CigateError as error:
                if classify.saturated(error):
                    outcome.attempts -= 1  # nothing was sent: no try of the upstream
                raise
            outcome.size, outcome.head, outcome.content_type = (
                body.size,
                body.head,
                body.content_type,
            )

        await self._retrying(attempt, on_retry)
        outcome.strategy = strategy

    async def _attempt(
        self, url: str, ref: FileRef, size: int | None, sink: Sink[T]
    ) -> tuple[T, Body]:
        what = f"download {ref.filename} ({ref.file_id})"
        headers = {"Accept": "application/binary", **await self.upstream.auth_headers()}
        try:
            async with self.upstream.client.stream(
                "GET", url, params=self.upstream.default_query, headers=headers
            ) as resp:
                if resp.status_code != 200:
                    raise self._http_error(
                        resp.status_code, await _read_capped(resp), resp.headers, what
                    )
                declared = _int(resp.headers.get("content-length"))
                body = Body(resp, ref, size if size is not None else declared, what)
                stored = await sink(body)
                if not body.complete:
                    raise RuntimeError(f"the sink of {what} returned before the body's end")
                return stored, body
        except httpx2.RequestError as exc:  # nothing arrived, or an error body broke off
            raise classify.from_transport(exc, what=what) from exc

    def _http_error(
        self, status: int, body: bytes, headers: httpx2.Headers, what: str
    ) -> CigateError:
        return classify.from_http(
            status, body, dict(headers.items()), what=what, uses_entra=self.upstream.uses_entra
        )

    async def _retrying(self, op: Callable[[], Awaitable[T]], on_retry: OnRetry | None = None) -> T:
        return await self.policy.call(
            op, classify.retryable, on_retry=on_retry, unsent=classify.saturated
        )


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
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _match(listing: list[dict[str, Any]], ref: FileRef) -> dict[str, Any] | None:
    by_id = next((r for r in listing if r.get("id") == ref.file_id), None)
    if by_id is not None:
        return by_id
    for record in listing:
        if PurePosixPath(str(record.get("path", ""))).name == ref.filename:
            return record
    return None
