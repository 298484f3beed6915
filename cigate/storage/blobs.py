"""Content-addressed blob storage: the protocol, shared helpers and the URL factory.

Blobs are named by the sha256 of their bytes, so the same file harvested twice (or by two
gateway processes) is stored once, and a name can never come from upstream input: a
filename from a model can not reach a filesystem path or a blob name. Bytes always stream
in bounded chunks; nothing here holds a whole file in memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

from cigate.exceptions import BadInputError, ConfigurationError
from cigate.storage.errors import STORAGE_HINT
from cigate.storage.records import BlobInfo

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobStore",
    "check_range",
    "check_sha256",
    "open_blob_store",
    "read_all",
]

#: Read chunk size: 1 MiB keeps file serving near disk/socket speed (64 KiB chunks cap it).
CHUNK_SIZE = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@runtime_checkable
class BlobStore(Protocol):
    """What the gateway needs from a blob backend (local directory or Azure Blob Storage)."""

    async def put_stream(
        self, chunks: AsyncIterator[bytes], *, expected_size: int | None = None
    ) -> BlobInfo:
        """Store the bytes ``chunks`` yields, hashing while writing; return their address.

        Identical content is stored once. If ``expected_size`` is given and differs,
        :class:`~cigate.exceptions.IntegrityError` is raised and nothing is left behind; the
        same holds if ``chunks`` raises or the task is cancelled.
        """
        ...

    async def open(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Check the blob and the range now, then return an iterator of chunks <= 1 MiB.

        ``end`` is inclusive (HTTP ``Range`` semantics); ``None`` means to the last byte.
        Raises :class:`~cigate.storage.errors.BlobNotFoundError` or, for a range outside the
        blob, :class:`~cigate.exceptions.BadInputError` before any byte is produced, so the
        caller can still answer 404/416.
        """
        ...

    async def stat(self, sha256: str) -> BlobInfo | None:
        """The blob's size, or ``None`` when it is not stored."""
        ...

    async def delete(self, sha256: str) -> None:
        """Remove the blob; deleting a missing blob is not an error."""
        ...

    async def cleanup(self, older_than: float | None = None) -> int:
        """Remove leftovers of interrupted puts (crashed processes); return how many.

        Call it when a gateway starts. The local store knows which temp files are dead
        (their writer's lock is gone) and ignores ``older_than``; Azure cannot tell a live
        staging blob of another process from a dead one, so it removes those older than
        ``older_than`` seconds (default: the store's ``staging_grace``, one day).
        """
        ...

    async def list_names(self) -> list[str]:
        """Every object name in the store, leftovers included (for tests and operators)."""
        ...

    async def check(self) -> None:
        """Raise ``StorageError`` unless the store can take writes now (readiness probes)."""
        ...

    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex digits, else raise ``BadInputError``.

    Every backend calls this before building a path or a blob name from a digest.
    """
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BadInputError(f"not a sha256 digest: {sha256!r:.80}")
    return sha256


def check_range(size: int, start: int, end: int | None) -> tuple[int, int]:
    """Validate an inclusive byte range against ``size``; return ``(start, stop)`` exclusive.

    ``end`` past the last byte is clamped (RFC 9110 calls such a range satisfiable); reading a
    whole empty blob gives ``(0, 0)``. Anything unsatisfiable raises ``BadInputError`` (the
    gateway normally answers 416 before getting here).
    """
    if size == 0 and start == 0 and end is None:
        return 0, 0
    last = size - 1 if end is None else min(end, size - 1)
    if start < 0 or start > last:
        raise BadInputError(f"range {start}-{end} is outside a blob of {size} bytes")
    return start, last + 1


async def read_all(store: BlobStore, sha256: str) -> bytes:
    """A blob's whole content: for tests and small files only."""
    parts = [chunk async for chunk in await store.open(sha256)]
    return b"".join(parts)


def open_blob_store(url: str) -> BlobStore:
    """Open the blob store a ``--blobs`` URL names.

    - a local path or ``file:///path``: :class:`~cigate.storage.blob_local.LocalBlobStore`;
    - ``azure://CONTAINER?account=NAME``: Azure Blob Storage with Microsoft Entra ID
      (``DefaultAzureCredential``), optionally ``&endpoint=https://…`` for other clouds;
    - ``azure://CONTAINER?connection_string=…`` (URL-encoded), or ``azure://CONTAINER`` with
      ``CIGATE_BLOB_CONNECTION_STRING`` set: a connection string (Azurite:
      ``UseDevelopmentStorage=true`` or one with ``BlobEndpoint=http://127.0.0.1:PORT/…``).

    Misconfiguration raises :class:`~cigate.exceptions.ConfigurationError` here, at start-up.
    Opening does not touch the network; the Azure container is checked on first use.
    """
    if not url:
        raise ConfigurationError("the blob store URL is empty", hint=STORAGE_HINT)
    if url.startswith("azure://"):
        from cigate.storage.blob_azure import AzureBlobStore

        parts = urlsplit(url)
        container = unquote(parts.netloc)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"account", "connection_string", "endpoint"}
        if unknown:
            raise ConfigurationError(
                f"unknown azure:// blob URL options: {sorted(unknown)}", hint=STORAGE_HINT
            )
        conn = query.get("connection_string") or os.environ.get("CIGATE_BLOB_CONNECTION_STRING")
        return AzureBlobStore.from_settings(
            container,
            account=query.get("account"),
            endpoint=query.get("endpoint"),
            connection_string=None if query.get("account") else conn,
        )
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file:// blob URLs must be local: {url!r}", hint=STORAGE_HINT)
        path = Path(unquote(parts.path))
    elif "://" in url:
        raise ConfigurationError(
            f"unsupported blob store URL {url!r}: use a path, file:///path or azure://CONTAINER",
            hint=STORAGE_HINT,
        )
    else:
        path = Path(url).expanduser()
    from cigate.storage.blob_local import LocalBlobStore

    return LocalBlobStore(path)
