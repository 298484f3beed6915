"""Serving a stored file: the HTTP semantics of one download, for every download endpoint.

Follows the rules Starlette's static files follow (STYLE rule 5) and RFC 9110: a strong ETag
(the sha256), ``If-None-Match`` -> 304, a single ``Range`` -> 206 (``If-Range`` honoured), an
unsatisfiable range -> 416 with ``Content-Range: bytes */SIZE``, ``HEAD`` without a body, and
1 MiB chunks streamed from the blob store in constant memory. Names come from model-written
code, so the file is always an attachment, the name reaches the header only percent-encoded
(:mod:`cigate.web.files`, shared with the emulator), and ``nosniff`` plus a CSP that allows
nothing keep HTML and SVG from running in the browser.
Every download (complete or cut short) leaves an audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cigate.exceptions import UpstreamUnavailableError
from cigate.gateway import metrics
from cigate.gateway.context import Services
from cigate.gateway.errors import not_found
from cigate.gateway.quotas import KIND_QUOTA, quota_error
from cigate.harvest.content_types import guess_type
from cigate.storage.errors import BlobNotFoundError
from cigate.storage.records import FileRow
from cigate.web.files import content_disposition, etag_matches, parse_range

__all__ = ["content_disposition", "parse_range", "serve_file"]

log = logging.getLogger(__name__)

CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"


def _base_headers(row: FileRow, etag: str) -> dict[str, str]:
    content_type = row.content_type or guess_type(row.filename)
    if content_type.startswith("text/") and "charset" not in content_type:
        content_type += "; charset=utf-8"
    return {
        "content-type": content_type,
        "content-disposition": content_disposition(row.filename),
        "etag": etag,
        "accept-ranges": "bytes",
        "cache-control": "private, no-cache",
        "x-content-type-options": "nosniff",
        "content-security-policy": CSP,
    }


async def serve_file(
    request: Request, svc: Services, row: FileRow, *, actor: str, tenant_id: str
) -> Response:
    """The response for one download of ``row`` (already resolved for the caller's tenant)."""
    if not row.servable:
        row = await svc.harvester.ensure_stored(row)
    if row.state == "failed" and row.error_kind == KIND_QUOTA:
        raise quota_error(row)
    if not row.servable or row.sha256 is None or row.size is None:
        why = (
            f"{row.error_kind}: {row.error_message}"
            if row.state == "failed"
            else "its stored bytes could not be verified yet"
        )
        raise UpstreamUnavailableError(
            f"File '{row.id}' could not be copied from the upstream ({why})", status=502
        )
    size, etag = row.size, f'"{row.sha256}"'
    headers = _base_headers(row, etag)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={k: headers[k] for k in ("etag", "cache-control")})

    start, end, status = 0, size - 1, 200
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == etag):
        parsed = parse_range(range_header, size)
        if parsed is False:
            headers["content-range"] = f"bytes */{size}"
            return Response(status_code=416, headers=headers)
        if isinstance(parsed, tuple):
            start, end, status = parsed[0], parsed[1], 206
            headers["content-range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1 if size else 0
    headers["content-length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    try:
        chunks = await svc.blobs.open(row.sha256, start, end if size else None)
    except BlobNotFoundError:
        if not await svc.meta.exists_settled(tenant_id, row.id):  # erased since it was read
            raise not_found("file", row.id) from None
        raise
    return StreamingResponse(
        _audited(svc, chunks, tenant_id=tenant_id, file_id=row.id, actor=actor, status=status),
        status_code=status,
        headers=headers,
    )


async def _audited(
    svc: Services,
    chunks: AsyncIterator[bytes],
    *,
    tenant_id: str,
    file_id: str,
    actor: str,
    status: int,
) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in _read_ahead(chunks):
            yield chunk
            sent += len(chunk)
    finally:
        metrics.BYTES_SERVED.inc(sent)
        svc.tasks.spawn(
            svc.meta.record_download(
                tenant_id, file_id, actor=actor, bytes_sent=sent, status=status
            ),
            name=f"cigate-audit-{file_id}",
        )


async def _read_ahead(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Read the next chunk while the current one is being sent: disk and socket overlap."""
    iterator = aiter(chunks)
    pending: asyncio.Future[bytes] = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            try:
                chunk = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(iterator))
            yield chunk
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
