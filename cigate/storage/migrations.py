"""Ordered, named schema migrations, each applied once and recorded in ``schema_migrations``.

Why not Alembic: the schema is small and must migrate itself when a gateway starts, on
SQLite and PostgreSQL, with several processes starting at once. What that takes:

- every migration runs inside one transaction together with its ``schema_migrations`` row
  (DDL is transactional on both databases), so a crash leaves the previous version intact;
- the whole check-and-apply runs under a lock: ``pg_advisory_xact_lock`` on PostgreSQL,
  ``BEGIN IMMEDIATE`` (the database write lock) on SQLite; a second process waits, then
  finds everything applied and does nothing;
- gateways started without migrating (``cigate gateway serve --no-migrate``, replicas after a
  ``cigate gateway migrate`` job) only read the version (:func:`check_schema`) and refuse to
  start on a database behind or ahead of the code;
- a migration's tables are *frozen here*, never imported from :mod:`cigate.storage.schema`:
  changing the schema means appending a migration, and a test checks that the migrated
  database matches ``schema.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from cigate.clock import Clock
from cigate.exceptions import StorageError
from cigate.storage._db import StoreBase
from cigate.storage.schema import UtcDateTime, schema_migrations

__all__ = [
    "MIGRATIONS",
    "Migration",
    "SchemaStatus",
    "applied_versions",
    "apply_migrations",
    "check_schema",
    "schema_status",
]

#: Arbitrary constant naming cigate's advisory lock on PostgreSQL ("cigate" in ASCII).
_PG_LOCK_KEY = 0x636967617465


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    upgrade: Callable[[Connection], None]


def _m0001_initial(conn: Connection) -> None:
    md = MetaData()
    Table(
        "tenants",
        md,
        Column("id", String(40), primary_key=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("created_at", UtcDateTime, nullable=False),
    )
    Table(
        "api_keys",
        md,
        Column("id", String(40), primary_key=True),
        Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("revoked_at", UtcDateTime),
    )
    Table(
        "responses",
        md,
        Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
        Column("response_id", String(200), primary_key=True),
        Column("upstream", Text, nullable=False),
        Column("model", String(200)),
        Column("container_ids", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    )
    Table(
        "files",
        md,
        Column("id", String(40), primary_key=True),
        Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("upstream_file_id", String(200), nullable=False),
        Column("container_id", String(200), nullable=False),
        Column("response_id", String(200)),
        Column("filename", Text, nullable=False),
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
        UniqueConstraint("tenant_id", "upstream_file_id", "container_id", name="uq_files_upstream"),
        Index("ix_files_state_lease", "state", "lease_expires_at"),
        Index("ix_files_tenant_response", "tenant_id", "response_id"),
        Index("ix_files_tenant_container", "tenant_id", "container_id", "created_at"),
        Index("ix_files_tenant_created", "tenant_id", "created_at", "id"),
    )
    Table(
        "links",
        md,
        Column("id", String(40), primary_key=True),
        Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
        Column("file_id", String(40), ForeignKey("files.id"), nullable=False, index=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("expires_at", UtcDateTime, nullable=False),
        Column("revoked_at", UtcDateTime),
    )
    Table(
        "downloads",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
        Column("file_id", String(40), nullable=False),
        Column("actor", String(200), nullable=False),
        Column("bytes_sent", BigInteger, nullable=False),
        Column("status", Integer, nullable=False),
        Column("at", UtcDateTime, nullable=False),
        Index("ix_downloads_tenant_file", "tenant_id", "file_id", "at"),
    )
    md.create_all(conn)


def _m0002_owners(conn: Connection) -> None:
    """Ownership of upstream containers and files, back-filled from what is already known."""
    md = MetaData()
    Table("tenants", md, Column("id", String(40), primary_key=True))  # exists: FK target only
    owners = Table(
        "owners",
        md,
        Column("kind", String(16), primary_key=True),
        Column("upstream_id", String(200), primary_key=True),
        Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Index("ix_owners_tenant_kind", "tenant_id", "kind", "created_at"),
    )
    owners.create(conn)
    # Oldest first, so a container or file seen by two tenants stays with the first one.
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    files = conn.execute(
        text(
            "SELECT kind, upstream_file_id, container_id, tenant_id, created_at FROM files "
            "ORDER BY created_at"
        )
    )
    for kind, file_id, container_id, tenant_id, created_at in files:
        key = ("container", container_id) if kind == "container" else ("file", file_id)
        found.setdefault(key, (tenant_id, created_at))
    rows = conn.execute(
        text("SELECT tenant_id, container_ids, created_at FROM responses ORDER BY created_at")
    )
    for tenant_id, container_ids, created_at in rows:
        for container_id in json.loads(container_ids or "[]"):
            found.setdefault(("container", container_id), (tenant_id, created_at))
    if found:
        conn.execute(
            owners.insert(),
            [
                {"kind": k, "upstream_id": u, "tenant_id": t, "created_at": _aware(c)}
                for (k, u), (t, c) in found.items()
            ],
        )


def _m0003_retry_index(conn: Connection) -> None:
    """Index the resume sweep's query (failed rows of some kinds, oldest first).

    Without it every sweep sorts all ``failed`` rows, which pile up when an upstream is down.
    """
    md = MetaData()
    files = Table(  # exists: only the indexed columns are named
        "files",
        md,
        Column("state", String(16)),
        Column("error_kind", String(64)),
        Column("updated_at", UtcDateTime),
    )
    Index(
        "ix_files_state_error_updated", files.c.state, files.c.error_kind, files.c.updated_at
    ).create(conn)


def _m0004_response_listing(conn: Connection) -> None:
    """When a response's containers were last listed, and who is listing them now.

    A gateway that dies mid-stream never lists the containers, so the files the code wrote but
    never cited were lost; the resume sweep now lists responses that nobody listed. Responses
    recorded before this migration count as listed (their containers have long expired).
    """
    stamp = UtcDateTime().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE responses ADD COLUMN listed_at {stamp}"))
    conn.execute(text("ALTER TABLE responses ADD COLUMN list_lease_owner VARCHAR(200)"))
    conn.execute(text(f"ALTER TABLE responses ADD COLUMN list_lease_expires_at {stamp}"))
    conn.execute(text("UPDATE responses SET listed_at = created_at"))
    conn.execute(text("CREATE INDEX ix_responses_unlisted ON responses (listed_at, created_at)"))


def _m0005_file_paths(conn: Connection) -> None:
    """Where each file was in its container, so files with one name in different directories
    stay apart (by-path links, the facade's ``path``). Unknown (NULL) for files recorded before;
    they keep the old behaviour (matched by name)."""
    conn.execute(text("ALTER TABLE files ADD COLUMN path TEXT"))


def _m0006_file_verification(conn: Connection) -> None:
    """When a stored file's bytes were last known to be the file's, not an upstream error.

    Gateways before this migration stored whatever a download answered with status 200, an
    error document included. Rows stored before it are NULL (unverified): the resume sweep
    checks their bytes once and copies again those that look like an error document; until
    then they are checked before they are served.
    """
    stamp = UtcDateTime().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE files ADD COLUMN verified_at {stamp}"))
    conn.execute(text("CREATE INDEX ix_files_state_verified ON files (state, verified_at)"))


def _m0007_accountability(conn: Connection) -> None:
    """Erasure, retention and quotas (issue 13).

    Tenants get a byte quota and a retention period (NULL: none, keep forever). The download
    audit log becomes the audit log: each record has an ``action`` (``download`` for every
    record before this migration, ``erase`` for an erased file) and a JSON ``detail``. Erased
    files leave a tombstone in ``erasures`` so that neither the resume sweep nor a later
    listing brings them back.
    """
    conn.execute(text("ALTER TABLE tenants ADD COLUMN quota_bytes BIGINT"))
    conn.execute(text("ALTER TABLE tenants ADD COLUMN retention_days INTEGER"))
    conn.execute(
        text("ALTER TABLE downloads ADD COLUMN action VARCHAR(16) NOT NULL DEFAULT 'download'")
    )
    conn.execute(text("ALTER TABLE downloads ADD COLUMN detail TEXT"))
    conn.execute(text("CREATE INDEX ix_downloads_tenant_id ON downloads (tenant_id, id)"))
    md = MetaData()
    Table("tenants", md, Column("id", String(40), primary_key=True))  # exists: FK target only
    Table(
        "erasures",
        md,
        Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
        Column("upstream_file_id", String(200), primary_key=True),
        Column("container_id", String(200), primary_key=True),
        Column("response_id", String(200)),
        Column("erased_at", UtcDateTime, nullable=False),
    ).create(conn)


def _m0008_upstream_placement(conn: Connection) -> None:
    """Which configured upstream holds each owned object (issue 14: several upstreams).

    NULL means the first (default) upstream: every object recorded before this migration was
    made by the one upstream the gateway had then.
    """
    conn.execute(text("ALTER TABLE owners ADD COLUMN upstream TEXT"))


def _aware(value: Any) -> datetime:
    """A raw ``created_at`` read with plain SQL, as the aware UTC datetime the type expects."""
    if isinstance(value, str):  # SQLite hands back text for a raw SELECT
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _m0009_erased_links(conn: Connection) -> None:
    """Signed links of erased files (see ``erased_links`` in the schema)."""
    md = MetaData()
    Table("tenants", md, Column("id", String(40), primary_key=True))  # exists: FK target only
    Table(
        "erased_links",
        md,
        Column("id", String(40), primary_key=True),
        Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
        Column("file_id", String(40), nullable=False),
        Column("expires_at", UtcDateTime, nullable=False),
    ).create(conn)


#: Append only. Never edit or reorder a migration that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial tables", _m0001_initial),
    Migration(2, "owners of containers and files", _m0002_owners),
    Migration(3, "index for the resume sweep", _m0003_retry_index),
    Migration(4, "listing state of responses", _m0004_response_listing),
    Migration(5, "container paths of files", _m0005_file_paths),
    Migration(6, "verification of stored files", _m0006_file_verification),
    Migration(7, "erasure, retention and quotas", _m0007_accountability),
    Migration(8, "upstream of each owned object", _m0008_upstream_placement),
    Migration(9, "signed links of erased files", _m0009_erased_links),
)


async def apply_migrations(engine: AsyncEngine, clock: Clock) -> list[int]:
    """Bring the database up to date; return the versions this call applied (often none)."""
    store = StoreBase(engine, clock)
    applied_now: list[int] = []
    async with store._write("applying migrations") as conn:
        if store.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        await conn.run_sync(lambda sync: schema_migrations.create(sync, checkfirst=True))
        done = set((await conn.execute(select(schema_migrations.c.version))).scalars())
        if SchemaStatus(frozenset(done)).ahead:
            raise _ahead_error(SchemaStatus(frozenset(done)))
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await conn.run_sync(migration.upgrade)
            await conn.execute(
                schema_migrations.insert().values(
                    version=migration.version, name=migration.name, applied_at=store._now()
                )
            )
            applied_now.append(migration.version)
    return applied_now


async def applied_versions(engine: AsyncEngine) -> list[int]:
    """Versions recorded in ``schema_migrations`` (for tests and ``doctor``-style checks)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(schema_migrations.c.version).order_by(schema_migrations.c.version)
        )
        return list(rows.scalars())


def _newest() -> int:
    return max((m.version for m in MIGRATIONS), default=0)


@dataclass(frozen=True)
class SchemaStatus:
    """Which migrations a database has, against the ones this code knows."""

    applied: frozenset[int]

    @property
    def current(self) -> int:
        """The database's version: its newest applied migration (0: none, a new database)."""
        return max(self.applied, default=0)

    @property
    def newest(self) -> int:
        return _newest()

    @property
    def pending(self) -> list[int]:
        """Known migrations the database lacks (a gap in the middle counts too)."""
        return [m.version for m in MIGRATIONS if m.version not in self.applied]

    @property
    def ahead(self) -> bool:
        """The database has a migration this code does not know (a newer cigate made it)."""
        return self.current > self.newest


def _ahead_error(status: SchemaStatus) -> StorageError:
    return StorageError(
        f"the database is at schema version {status.current}, newer than this cigate "
        f"knows ({status.newest})",
        hint="Upgrade cigate on this host; every gateway process must run one version.",
    )


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    """The database's migrations, read without writing anything (no table: none applied)."""
    store = StoreBase(engine, Clock())
    async with store._read("reading the schema version") as conn:
        exists = await conn.run_sync(lambda sync: inspect(sync).has_table(schema_migrations.name))
        if not exists:
            return SchemaStatus(frozenset())
        rows = await conn.execute(select(schema_migrations.c.version))
        return SchemaStatus(frozenset(rows.scalars()))


async def check_schema(engine: AsyncEngine) -> SchemaStatus:
    """Raise ``StorageError`` unless the database is exactly at this code's version.

    For processes that must not migrate (``--no-migrate``): a database behind needs
    ``cigate gateway migrate`` first; one ahead needs this process's image upgraded.
    """
    status = await schema_status(engine)
    if status.ahead:
        raise _ahead_error(status)
    if status.pending:
        raise StorageError(
            f"the database is at schema version {status.current}, this cigate needs "
            f"{status.newest} (missing: {', '.join(map(str, status.pending))}) and was started "
            "without migrating",
            hint="Run `cigate gateway migrate` (the chart's migration Job, compose's migrate "
            "service) with this version first, or start without --no-migrate.",
        )
    return status
