"""Plain, immutable rows handed out by the metadata store.

The gateway codes against these dataclasses, never against SQLAlchemy rows, so the storage
layer can change its tables (through migrations) without touching the HTTP layer. Every
timestamp is a timezone-aware UTC ``datetime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "ApiKey",
    "BlobInfo",
    "Download",
    "FileKind",
    "FileOrigin",
    "FileRow",
    "FileState",
    "Link",
    "ResponseRecord",
    "Tenant",
]

#: ``container``: a ``cfile_…`` in a ``cntr_…``; ``files_api``: an ``assistant-…``/``file-…``.
FileKind = Literal["container", "files_api"]
#: How the gateway learnt about the file: a ``container_file_citation``, the container's file
#: listing at completion (uncited files), an Assistants message, or a client asking for an id.
FileOrigin = Literal["citation", "listing", "assistants", "on_demand"]
#: ``pending`` until its bytes are in the blob store (``stored``) or it gave up (``failed``).
FileState = Literal["pending", "stored", "failed"]


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its content address and its length in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant; ``quota_bytes``/``retention_days`` ``None`` mean no limit (keep forever)."""

    id: str
    name: str
    created_at: datetime
    quota_bytes: int | None = None
    retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A gateway key's public record; the plaintext is shown once by ``add_key`` and never kept.

    ``prefix`` is the first characters of the key, enough for a person to tell keys apart.
    """

    id: str
    tenant_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """A response a tenant made; ``listed_at`` is set once every file of its containers was
    recorded (the response is over and its containers were listed)."""

    tenant_id: str
    response_id: str
    upstream: str
    model: str | None
    container_ids: tuple[str, ...]
    created_at: datetime
    listed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FileRow:
    """One generated file, whichever API it came from.

    ``id`` is the gateway's own unguessable id (``gwf_`` + 32 hex). ``filename`` is stored
    verbatim as upstream sent it: sanitise it before putting it on a path (headers carry it
    percent-encoded, :mod:`cigate.web.files`). ``path`` is where the file was in its container
    (``/mnt/data/…``), verbatim from the upstream's listing, ``None`` until one was seen.
    ``sha256``/``size``/``content_type`` are set once the state is ``stored``;
    ``verified_at`` once those bytes are known to have passed the harvest core's checks (NULL
    for rows a gateway before migration 6 stored: they may hold an upstream error document).
    """

    id: str
    tenant_id: str
    kind: FileKind
    upstream_file_id: str
    container_id: str | None
    response_id: str | None
    filename: str
    origin: FileOrigin
    state: FileState
    sha256: str | None
    size: int | None
    content_type: str | None
    tries: int
    error_kind: str | None
    error_message: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    path: str | None = None
    verified_at: datetime | None = None

    @property
    def servable(self) -> bool:
        """Stored, and known to be the file's bytes."""
        return self.state == "stored" and self.verified_at is not None and self.sha256 is not None


@dataclass(frozen=True, slots=True)
class Link:
    """Bookkeeping for a signed download link (the gateway signs; the store remembers)."""

    id: str
    tenant_id: str
    file_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Download:
    """One audit record: who fetched (``action`` ``download``) or erased (``erase``) which file,
    when, how many bytes, with what status; ``detail`` is a JSON object or ``None``."""

    id: int
    tenant_id: str
    file_id: str
    actor: str
    bytes_sent: int
    status: int
    at: datetime
    action: str = "download"
    detail: str | None = None
