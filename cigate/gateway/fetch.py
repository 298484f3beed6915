"""The harvester's fetch seam: upstream container files and Files-API files as byte streams.

Everything that talks to the upstream on the harvester's behalf is here, behind four functions,
so that the client's download chain (``cigate.client._download``) can replace them without
touching the harvester. Each upstream failure is classified into the error tree once, here: the
harvester only decides *whether to retry* from the class (:func:`retryable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2

from cigate.exceptions import (
    CigateError,
    FileNotFoundInContainerError,
    IntegrityError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from cigate.gateway.upstream import Upstream
from cigate.harvest.classify import from_http
from cigate.harvest.retry import parse_retry_after

__all__ = [
    "Download",
    "classify",
    "files_api_metadata",
    "list_container_files",
    "open_container_file",
    "open_files_api_content",
    "retry_after",
    "retryable",
]

CHUNK = 1024 * 1024


@dataclass
class Download:
    """An open upstream body: its declared length (if any) and 1 MiB chunks."""

    size: int | None
    chunks: AsyncIterator[bytes]


def retryable(exc: CigateError) -> bool:
    """Transient-looking failures; an expired container or a refused credential is final."""
    return isinstance(
        exc,
        UpstreamUnavailableError | RateLimitedError | IntegrityError | FileNotFoundInContainerError,
    )


def retry_after(response: httpx2.Response) -> float | None:
    """Seconds the upstream asks us to wait (``retry-after-ms``, ``retry-after``...)."""
    return parse_retry_after(response.headers)


def classify(response: httpx2.Response, body: bytes, what: str) -> CigateError:
    """The error-tree member for one non-2xx upstream answer (the client's classifier)."""
    return from_http(response.status_code, body, response.headers, what=what)


@contextlib.asynccontextmanager
async def _open(upstream: Upstream, url: str, what: str) -> AsyncIterator[Download]:
    response = await upstream.send(
        "GET", url, headers={"accept": "application/binary"}, stream=True
    )
    try:
        if response.status_code != 200:
            body = await upstream.read(response)
            raise classify(response, body, what)
        length = response.headers.get("content-length")
        yield Download(
            size=int(length) if length and length.isdigit() else None,
            chunks=_chunks(response, what),
        )
    finally:
        await response.aclose()


async def _chunks(response: httpx2.Response, what: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes(CHUNK):
            yield chunk
    except httpx2.TransportError as exc:
        raise UpstreamUnavailableError(f"{what}: the upstream broke off the transfer") from exc


def open_container_file(
    upstream: Upstream, container_id: str, file_id: str
) -> contextlib.AbstractAsyncContextManager[Download]:
    """The content of a container file (``/containers/{c}/files/{f}/content``)."""
    url = upstream.v1_url("containers", container_id, "files", file_id, "content")
    return _open(upstream, url, f"{file_id} in {container_id}")


def open_files_api_content(
    upstream: Upstream, file_id: str
) -> contextlib.AbstractAsyncContextManager[Download]:
    """The content of a Files-API file (``assistant-…``/``file-…``)."""
    return _open(upstream, upstream.v1_url("files", file_id, "content"), file_id)


async def _get_json(upstream: Upstream, url: str, what: str, params: Any = None) -> Any:
    response = await upstream.send(
        "GET", url, params=params, headers={"accept": "application/json"}
    )
    if response.status_code != 200:
        raise classify(response, response.content, what)
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamUnavailableError(
            f"{what}: the upstream sent a body that is not JSON"
        ) from exc


async def files_api_metadata(upstream: Upstream, file_id: str) -> dict[str, Any]:
    """``GET /files/{id}``: the file object (filename, bytes, purpose)."""
    data = await _get_json(upstream, upstream.v1_url("files", file_id), file_id)
    if not isinstance(data, dict):
        raise UpstreamUnavailableError(f"{file_id}: unexpected file object")
    return data


async def list_container_files(
    upstream: Upstream, container_id: str, max_pages: int = 50
) -> list[dict[str, Any]]:
    """Every file of a container (``GET /containers/{c}/files``), following ``after`` cursors."""
    url = upstream.v1_url("containers", container_id, "files")
    files: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    for _ in range(max_pages):
        page = await _get_json(upstream, url, f"files of {container_id}", params)
        data = page.get("data") if isinstance(page, dict) else None
        if not data:
            break
        files.extend(item for item in data if isinstance(item, dict) and item.get("id"))
        if page.get("has_more") is False:
            break
        params["after"] = data[-1].get("id")
    return files
