"""Erasure, quotas, retention and the audit log: what makes the store accountable (issue 13).

Blobs are content-addressed and shared: one blob may back rows of several files and tenants.
A blob is deleted when the last row naming its sha256 goes, and a copy is recorded ``stored``
only while its blob is there. Both happen in one write transaction that also holds a lock on
the digest (SQLite: the database write lock every write takes; PostgreSQL: an advisory
transaction lock per digest), so an erasure and a concurrent harvest of the same bytes are
serialised: either the copy's row is there first and the erasure keeps the blob, or the
erasure deleted it first and the copy sees it missing and fetches again. No live blob is lost,
no dead one kept.

The blob store is passed in as callables: the metadata store knows rows, not bytes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cigate.exceptions import BadInputError
from cigate.storage._db import StoreBase, advisory_xact_lock
from cigate.storage.errors import NotFoundError
from cigate.storage.metadata_files import _row, clean_text, lock_file
from cigate.storage.records import Download, FileRow
from cigate.storage.schema import (
    api_keys,
    downloads,
    erased_links,
    erasures,
    files,
    links,
    responses,
    tenants,
)

__all__ = ["KIND_QUOTA", "CopyOutcome", "ErasureQueries", "audit_record"]

#: ``error_kind`` of a file that was not kept because its tenant's quota was full.
KIND_QUOTA = "quota_exceeded"

# Namespaces of cigate's PostgreSQL advisory locks (two-int form; migrations use the one-int).
_NS_BLOB = 0x63670001
_NS_TENANT = 0x63670002

DeleteBlob = Callable[[str], Awaitable[None]]


# A copy's statements, built once (every copied file runs them; see :mod:`.metadata_files`).
_FILE_BY_ID = select(files).where(files.c.id == bindparam("file_id"))
_QUOTA = select(tenants.c.quota_bytes).where(tenants.c.id == bindparam("tenant"))
#: Sets the columns its parameters name (besides ``file_id``) and returns the row.
_SET_FILE = update(files).where(files.c.id == bindparam("file_id")).returning(files)


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """What :meth:`ErasureQueries.store_copy` did: ``stored``, ``quota`` (recorded failed),
    ``blob_missing`` (an erasure took the blob: fetch again), ``gone`` (the row was erased)."""

    result: Literal["stored", "quota", "blob_missing", "gone"]
    row: FileRow | None


def audit_record(row: Any) -> Download:
    """An audit-log row as the record the gateway hands out."""
    m = row._mapping
    return Download(
        m["id"],
        m["tenant_id"],
        m["file_id"],
        m["actor"],
        m["bytes_sent"],
        m["status"],
        m["at"],
        m["action"],
        m["detail"],
    )


class ErasureQueries(StoreBase):
    """The accountability half of :class:`~cigate.storage.metadata.MetadataStore`."""

    # -- locks -------------------------------------------------------------------------------

    async def _lock(self, conn: AsyncConnection, namespace: int, key: str) -> None:
        """Serialise with every other transaction holding the same lock."""
        key_int = int.from_bytes(key.encode()[-12:], "big")
        await advisory_xact_lock(conn, self.dialect, namespace, key_int)

    async def _release(self, conn: AsyncConnection, sha256: str, delete_blob: DeleteBlob) -> bool:
        """Delete the blob if no row names it any more (caller holds the digest's lock)."""
        count = select(func.count()).select_from(files).where(files.c.sha256 == sha256)
        if (await conn.execute(count)).scalar_one():
            return False
        await delete_blob(sha256)
        return True

    # -- tenants' limits ---------------------------------------------------------------------

    async def set_limits(
        self,
        tenant_id: str,
        *,
        quota_bytes: int | Literal["keep"] | None = "keep",
        retention_days: int | Literal["keep"] | None = "keep",
    ) -> None:
        """Set a tenant's byte quota and retention (``None``: no limit; ``"keep"``: unchanged)."""
        values: dict[str, Any] = {}
        if quota_bytes != "keep":
            if quota_bytes is not None and quota_bytes < 0:
                raise BadInputError("a quota is a number of bytes, 0 or more")
            values["quota_bytes"] = quota_bytes
        if retention_days != "keep":
            if retention_days is not None and retention_days < 1:
                raise BadInputError("a retention period is a number of days, 1 or more")
            values["retention_days"] = retention_days
        if not values:
            return
        async with self._write("setting a tenant's limits") as conn:
            result = await conn.execute(
                update(tenants).where(tenants.c.id == tenant_id).values(**values)
            )
            if not getattr(result, "rowcount", 0):
                raise NotFoundError(f"no tenant {tenant_id!r}")

    async def usage(self, tenant_id: str) -> int:
        """Bytes of the tenant's stored files (what the quota counts)."""
        async with self._read("summing a tenant's files") as conn:
            return await _usage(conn, tenant_id)

    # -- storing a copy ----------------------------------------------------------------------

    async def store_copy(
        self,
        file_id: str,
        sha256: str,
        size: int,
        content_type: str | None,
        *,
        blob_present: Callable[[], Awaitable[bool]],
        delete_blob: DeleteBlob,
    ) -> CopyOutcome:
        """Record a copy whose bytes were put in the blob store as ``stored`` and verified,
        if the row still exists, its blob is still there and its tenant's quota has room.

        A quota that is full records the file ``failed`` with :data:`KIND_QUOTA`; a row erased
        meanwhile is not brought back. In both cases a blob no other row names is deleted.
        """
        now = self._now()
        async with self._write("storing a copy") as conn:
            row = (await conn.execute(_FILE_BY_ID, {"file_id": file_id})).first()
            quota = None
            if row is not None:
                quota = (await conn.execute(_QUOTA, {"tenant": row.tenant_id})).scalar_one_or_none()
            if row is not None and quota is not None:  # counted one copy at a time
                await self._lock(conn, _NS_TENANT, row.tenant_id)
            await self._lock(conn, _NS_BLOB, sha256)
            if row is None:
                await self._release(conn, sha256, delete_blob)
                return CopyOutcome("gone", None)
            if not await blob_present():
                return CopyOutcome("blob_missing", _row(row))
            used = 0 if quota is None else await _usage(conn, row.tenant_id, besides=file_id)
            outcome: Literal["stored", "quota"] = "stored"
            values: dict[str, Any] = {
                "state": "stored",
                "sha256": sha256,
                "size": size,
                "content_type": content_type,
                "error_kind": None,
                "error_message": None,
                "verified_at": now,
            }
            if quota is not None and used + size > quota:
                outcome = "quota"
                values = {
                    "state": "failed",
                    "sha256": None,
                    "size": None,
                    "error_kind": KIND_QUOTA,
                    "error_message": (
                        f"the tenant's storage quota of {quota} bytes is full "
                        f"({used} used, this file has {size}); erase files or ask the "
                        "operator for a larger quota, then download it again"
                    ),
                }
            changed = await conn.execute(
                _SET_FILE,
                {
                    "file_id": file_id,
                    **values,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "updated_at": now,
                },
            )
            new = changed.one()  # read before the next statement
            if outcome == "quota":
                await self._release(conn, sha256, delete_blob)
        return CopyOutcome(outcome, _row(new))

    async def release_blob(self, sha256: str, delete_blob: DeleteBlob) -> bool:
        """Delete the blob unless a row names it; ``True`` if it was deleted."""
        async with self._write("releasing a blob") as conn:
            await self._lock(conn, _NS_BLOB, sha256)
            return await self._release(conn, sha256, delete_blob)

    # -- erasure -----------------------------------------------------------------------------

    async def erase_file(
        self,
        tenant_id: str,
        file_id: str,
        *,
        actor: str,
        reason: str,
        delete_blob: DeleteBlob,
    ) -> Download | None:
        """Erase one of the tenant's files (its ``gwf_`` id): the row, its links, its blob if no
        other row names it; leave a tombstone and an audit record (returned). ``None`` if the
        tenant has no such file. All of it in one transaction: a failing blob store leaves
        everything as it was.
        """
        now = self._now()
        async with self._write("erasing a file") as conn:
            key = (files.c.id == file_id, files.c.tenant_id == tenant_id)
            row = (await conn.execute(select(files).where(*key))).first()
            if row is None:
                return None
            # First the file's lock (a recording of it waits, then sees the tombstone), then
            # its blob's; nothing takes them in the other order.
            await lock_file(conn, self.dialect, tenant_id, row.upstream_file_id, row.container_id)
            if row.sha256:
                await self._lock(conn, _NS_BLOB, row.sha256)
            # A link still valid answers 404 like its file from now on (not 403).
            await conn.execute(
                erased_links.insert().from_select(
                    ["id", "tenant_id", "file_id", "expires_at"],
                    select(
                        links.c.id, links.c.tenant_id, links.c.file_id, links.c.expires_at
                    ).where(
                        links.c.file_id == file_id,
                        links.c.revoked_at.is_(None),
                        links.c.expires_at > now,
                    ),
                )
            )
            await conn.execute(delete(links).where(links.c.file_id == file_id))
            await conn.execute(delete(files).where(*key))
            tomb = (
                erasures.c.tenant_id == tenant_id,
                erasures.c.upstream_file_id == row.upstream_file_id,
                erasures.c.container_id == row.container_id,
            )
            await conn.execute(delete(erasures).where(*tomb))
            await conn.execute(
                erasures.insert().values(
                    tenant_id=tenant_id,
                    upstream_file_id=row.upstream_file_id,
                    container_id=row.container_id,
                    response_id=row.response_id,
                    erased_at=now,
                )
            )
            blob_deleted = bool(row.sha256) and await self._release(conn, row.sha256, delete_blob)
            detail = {
                "reason": reason,
                "upstream_file_id": row.upstream_file_id,
                "container_id": row.container_id or None,
                "response_id": row.response_id,
                "sha256": row.sha256,
                "bytes": row.size,
                "blob_deleted": blob_deleted,
            }
            values: dict[str, Any] = {
                "tenant_id": tenant_id,
                "file_id": file_id,
                "actor": clean_text(actor)[:200],
                "bytes_sent": 0,
                "status": 200,
                "at": now,
                "action": "erase",
                "detail": json.dumps(detail, ensure_ascii=False),
            }
            result = await conn.execute(
                downloads.insert().values(**values).returning(downloads.c.id)
            )
            new_id = result.scalar_one()
        return Download(new_id, **values)

    async def exists_settled(self, tenant_id: str, file_id: str) -> bool:
        """Whether the tenant's file exists once an erasure of it in progress has ended.

        For a download that found its blob gone: an erasure deletes the blob inside its
        transaction, so until it commits the row is still visible. This read waits for it
        (SQLite: the write lock; PostgreSQL: a share lock on the row the erasure deletes).
        """
        query = select(files.c.id).where(files.c.id == file_id, files.c.tenant_id == tenant_id)
        if self.dialect == "postgresql":
            query = query.with_for_update(read=True)
        async with self._write("checking a file") as conn:
            return (await conn.execute(query)).first() is not None

    async def erased(
        self, tenant_id: str, upstream_file_id: str, container_id: str | None
    ) -> tuple[str | None] | None:
        """``(response_id,)`` of the tenant's erasure of this file, or ``None`` if not erased."""
        if not (0 < len(upstream_file_id) <= 200 and upstream_file_id.isprintable()):
            return None  # no such id is stored (PostgreSQL refuses to compare a NUL)
        query = select(erasures.c.response_id).where(
            erasures.c.tenant_id == tenant_id,
            erasures.c.upstream_file_id == upstream_file_id,
            erasures.c.container_id == (container_id or ""),
        )
        async with self._read("reading an erasure") as conn:
            row = (await conn.execute(query)).first()
        return (row.response_id,) if row is not None else None

    async def erased_among(
        self, tenant_id: str, container_id: str | None, upstream_file_ids: list[str]
    ) -> set[str]:
        """Which of ``upstream_file_ids`` (of one container, or Files-API ids) the tenant
        erased: one query for a page of a listing."""
        wanted = [i for i in upstream_file_ids if 0 < len(i) <= 200 and i.isprintable()]
        if not wanted:
            return set()
        query = select(erasures.c.upstream_file_id).where(
            erasures.c.tenant_id == tenant_id,
            erasures.c.container_id == (container_id or ""),
            erasures.c.upstream_file_id.in_(wanted),
        )
        async with self._read("reading erasures") as conn:
            return {r.upstream_file_id for r in await conn.execute(query)}

    async def forget_expired_erased_links(self) -> int:
        """Drop the erased links that have expired (they answer like any expired link)."""
        async with self._write("forgetting expired erased links") as conn:
            done = await conn.execute(
                delete(erased_links).where(erased_links.c.expires_at <= self._now())
            )
        return int(done.rowcount or 0)

    async def erased_link(self, link_id: str) -> tuple[str, datetime] | None:
        """``(file_id, expires_at)`` of a signed link whose file was erased, else ``None``."""
        query = select(erased_links.c.file_id, erased_links.c.expires_at).where(
            erased_links.c.id == link_id
        )
        async with self._read("reading an erased link") as conn:
            row = (await conn.execute(query)).first()
        return (row.file_id, row.expires_at) if row is not None else None

    async def forget_tenant_records(self, tenant_id: str) -> None:
        """What a purge removes besides files: responses and keys (revoked keys included).

        The tenant's row, its ownership claims (so nobody else takes over its containers) and
        its audit log stay: they are the proof of the purge.
        """
        async with self._write("purging a tenant") as conn:
            await conn.execute(delete(responses).where(responses.c.tenant_id == tenant_id))
            await conn.execute(delete(api_keys).where(api_keys.c.tenant_id == tenant_id))

    async def files_older_than(
        self, tenant_id: str, days: int, *, limit: int = 100
    ) -> list[FileRow]:
        """The tenant's oldest files created more than ``days`` days ago (retention)."""
        before = self._now() - timedelta(days=days)
        query = (
            select(files)
            .where(files.c.tenant_id == tenant_id, files.c.created_at < before)
            .order_by(files.c.created_at, files.c.id)
            .limit(limit)
        )
        async with self._read("finding expired files") as conn:
            return [_row(r) for r in (await conn.execute(query)).all()]

    # -- the audit log -----------------------------------------------------------------------

    async def audit_page(
        self, tenant_id: str | None, *, after: int | None = None, limit: int = 100
    ) -> list[Download]:
        """Audit records in the order they were written, after the record ``after``;
        one tenant's (``tenant_id``) or, for the operator's export, every tenant's (``None``)."""
        query = select(downloads)
        if tenant_id is not None:
            query = query.where(downloads.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(downloads.c.id > after)
        query = query.order_by(downloads.c.id).limit(max(1, min(limit, 10_000)))
        async with self._read("reading the audit log") as conn:
            return [audit_record(r) for r in (await conn.execute(query)).all()]


async def _usage(conn: AsyncConnection, tenant_id: str, *, besides: str | None = None) -> int:
    query = select(func.coalesce(func.sum(files.c.size), 0)).where(
        files.c.tenant_id == tenant_id, files.c.state == "stored"
    )
    if besides is not None:
        query = query.where(files.c.id != besides)
    return int((await conn.execute(query)).scalar_one())
