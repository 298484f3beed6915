"""Durable storage for the gateway: content-addressed blobs and the metadata store.

- :func:`open_blob_store` gives a :class:`BlobStore` (local directory or Azure Blob Storage);
- :meth:`MetadataStore.open` gives the SQLAlchemy-backed metadata store (SQLite/PostgreSQL).

See ``docs/storage.md`` for the contract the gateway codes against.
"""

from __future__ import annotations

from cigate.storage._db import default_database_url
from cigate.storage.blobs import CHUNK_SIZE, BlobStore, open_blob_store, read_all
from cigate.storage.errors import BlobNotFoundError, NotFoundError
from cigate.storage.metadata import MetadataStore
from cigate.storage.records import (
    ApiKey,
    BlobInfo,
    Download,
    FileKind,
    FileOrigin,
    FileRow,
    FileState,
    Link,
    ResponseRecord,
    Tenant,
)

__all__ = [
    "CHUNK_SIZE",
    "ApiKey",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "Download",
    "FileKind",
    "FileOrigin",
    "FileRow",
    "FileState",
    "Link",
    "MetadataStore",
    "NotFoundError",
    "ResponseRecord",
    "Tenant",
    "default_database_url",
    "open_blob_store",
    "read_all",
]
