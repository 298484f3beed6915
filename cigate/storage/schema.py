"""The metadata tables as the code queries them today (SQLAlchemy Core, no ORM).

This module describes the *current* shape. It never creates anything: the database gets
its tables from the ordered migrations in :mod:`cigate.storage.migrations`, and a test checks
that a migrated database matches these definitions, so a column added here without a
migration fails the suite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UtcDateTime",
    "api_keys",
    "downloads",
    "erasures",
    "files",
    "links",
    "metadata",
    "owners",
    "responses",
    "schema_migrations",
    "tenants",
]


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as
    naive UTC and given their zone back when read. Naive input is refused: it is a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the metadata store; use UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    # Migration 7: bytes of stored files the tenant may keep, days it keeps them (NULL: no limit).
    Column("quota_bytes", BigInteger),
    Column("retention_days", Integer),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

responses = Table(
    "responses",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("response_id", String(200), primary_key=True),
    Column("upstream", Text, nullable=False),
    Column("model", String(200)),
    # JSON array of container ids, kept as text so both databases treat it alike.
    Column("container_ids", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Migration 4: set once every container was listed (uncited files recorded); the lease
    # lets one resume sweep list a response a dead process never listed.
    Column("listed_at", UtcDateTime),
    Column("list_lease_owner", String(200)),
    Column("list_lease_expires_at", UtcDateTime),
    Index("ix_responses_unlisted", "listed_at", "created_at"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("upstream_file_id", String(200), nullable=False),
    # '' for Files-API files: NULLs never collide in a unique constraint, '' does.
    Column("container_id", String(200), nullable=False),
    Column("response_id", String(200)),
    Column("filename", Text, nullable=False),
    # Migration 5: where the file was in its container (``/mnt/data/…``), as the upstream's
    # listing gave it; NULL until a listing was seen (a citation names only the basename).
    Column("path", Text),
    Column("origin", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("sha256", String(64)),
    Column("size", BigInteger),
    Column("content_type", String(200)),
    Column("tries", Integer, nullable=False),
    Column("error_kind", String(64)),
    Column("error_message", Text),
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Migration 6: set when the stored bytes passed the harvest core's checks (every store
    # since); NULL for rows stored before, which the resume sweep checks once.
    Column("verified_at", UtcDateTime),
    UniqueConstraint("tenant_id", "upstream_file_id", "container_id", name="uq_files_upstream"),
    Index("ix_files_state_lease", "state", "lease_expires_at"),
    Index("ix_files_state_error_updated", "state", "error_kind", "updated_at"),  # migration 3
    Index("ix_files_state_verified", "state", "verified_at"),  # migration 6
    Index("ix_files_tenant_response", "tenant_id", "response_id"),
    Index("ix_files_tenant_container", "tenant_id", "container_id", "created_at"),
    Index("ix_files_tenant_created", "tenant_id", "created_at", "id"),
)

#: Which tenant owns an upstream id the gateway saw created or used: containers (``cntr_…``),
#: Files-API files (``assistant-…``/``file-…``), assistants (``asst_…``) and threads
#: (``thread_…``). The first tenant wins; every other tenant
#: gets the unknown-id answer for it, also on paths the gateway forwards without storing.
owners = Table(
    "owners",
    metadata,
    Column("kind", String(16), primary_key=True),  # metadata_owners.OwnedKind
    Column("upstream_id", String(200), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Migration 8: the configured upstream that holds the object (NULL: the first/default
    # one, where everything recorded before several upstreams lives).
    Column("upstream", Text),
    Index("ix_owners_tenant_kind", "tenant_id", "kind", "created_at"),
)

links = Table(
    "links",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("file_id", String(40), ForeignKey("files.id"), nullable=False, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

downloads = Table(
    "downloads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("file_id", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("bytes_sent", BigInteger, nullable=False),
    Column("status", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # Migration 7: the audit log's kind of record (``download``, ``erase``) and its details.
    Column("action", String(16), nullable=False, server_default="download"),
    Column("detail", Text),
    Index("ix_downloads_tenant_file", "tenant_id", "file_id", "at"),
    Index("ix_downloads_tenant_id", "tenant_id", "id"),
)

#: Migration 7: files a tenant erased. A listing or the resume sweep never records them again;
#: a citation by a *new* response (the upstream still holds the file) clears the tombstone.
erasures = Table(
    "erasures",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("upstream_file_id", String(200), primary_key=True),
    Column("container_id", String(200), primary_key=True),  # '' for Files-API files
    Column("response_id", String(200)),
    Column("erased_at", UtcDateTime, nullable=False),
)

#: Migration 9: the signed links an erasure removed (unrevoked, unexpired), so a validly signed
#: one answers like its erased file (404), not like a wrong link (403). The retention sweep
#: forgets them once they have expired (an expired link is refused anyway).
erased_links = Table(
    "erased_links",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("file_id", String(40), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)
