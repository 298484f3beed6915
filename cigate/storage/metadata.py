"""The gateway's metadata store: tenants and keys, responses, files, signed links, audit.

One class, :class:`MetadataStore`, over SQLAlchemy 2 Core (async): SQLite by default
(``$CIGATE_HOME/gateway.db``), PostgreSQL (``postgresql+asyncpg://…``) when several gateway
processes share it. Every lookup a caller can reach is scoped to a tenant, and another
tenant's id behaves exactly like an unknown one. Methods return the frozen records of
:mod:`cigate.storage.records`; database failures surface as ``StorageError``.

Gateway keys are ``cgk_`` + 43 URL-safe characters (256 random bits). Only their sha256 is
stored: with that much entropy a slow password hash adds nothing, and a lookup by hash reveals
nothing useful through timing; the found hash is still compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Self, cast

from sqlalchemy import Row, and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cigate.clock import Clock
from cigate.exceptions import BadInputError
from cigate.storage._db import WriteGroup, create_engine, default_database_url
from cigate.storage.errors import NotFoundError
from cigate.storage.metadata_erasure import ErasureQueries, audit_record
from cigate.storage.metadata_files import FileQueries, check_id, clean_text, lease_free
from cigate.storage.metadata_owners import OwnerQueries, claim_in
from cigate.storage.migrations import (
    SchemaStatus,
    apply_migrations,
    check_schema,
    schema_status,
)
from cigate.storage.records import ApiKey, Download, Link, ResponseRecord, Tenant
from cigate.storage.schema import api_keys, downloads, links, responses, tenants

__all__ = ["KEY_PREFIX", "MetadataStore", "hash_key"]

KEY_PREFIX = "cgk_"


@dataclass(frozen=True)
class _ResponseFact:
    """One call of :meth:`MetadataStore.record_response`."""

    tenant_id: str
    response_id: str
    upstream: str
    model: str | None
    container_ids: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant_id, self.response_id)

    def merge(self, later: _ResponseFact) -> _ResponseFact:
        return replace(
            self,
            model=later.model or self.model,
            container_ids=tuple(dict.fromkeys([*self.container_ids, *later.container_ids])),
        )


# Statements every relayed response runs, built once (see :mod:`.metadata_files` on why).
_TENANT = select(tenants).where(tenants.c.id == bindparam("tenant"))
_RESPONSES_IN = select(responses).where(
    responses.c.response_id.in_(bindparam("ids", expanding=True))
)
_ONE_RESPONSE = and_(
    responses.c.tenant_id == bindparam("tenant"),
    responses.c.response_id == bindparam("response"),
)
_MERGE_RESPONSE = (
    update(responses)
    .where(_ONE_RESPONSE)
    .values(container_ids=bindparam("containers"), model=bindparam("model"))
)
_MARK_LISTED = (
    update(responses)
    .where(_ONE_RESPONSE)
    .values(listed_at=bindparam("now"), list_lease_owner=None, list_lease_expires_at=None)
)


def hash_key(key: str) -> str:
    """The stored form of a gateway key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        quota_bytes=row.quota_bytes,
        retention_days=row.retention_days,
    )


def _link(row: Row[Any]) -> Link:
    m = row._mapping
    return Link(
        id=m["id"],
        tenant_id=m["tenant_id"],
        file_id=m["file_id"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
    )


class MetadataStore(FileQueries, OwnerQueries, ErasureQueries):
    """Open with ``await MetadataStore.open(url)``; ``await store.close()`` when done."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        super().__init__(engine, clock)
        self._response_rows = WriteGroup(self._record_responses, self._record_response)

    @classmethod
    async def open(
        cls, url: str | None = None, *, clock: Clock | None = None, migrate: bool = True
    ) -> Self:
        """Connect and apply pending migrations (safe when many processes start at once).

        ``url`` empty or ``None`` means SQLite at ``$CIGATE_HOME/gateway.db``;
        ``sqlite:///…`` and ``postgresql://…`` get the async drivers automatically.
        ``migrate=False`` only checks: ``StorageError`` unless the database is at exactly this
        code's schema version (replicas started after a migration job).
        """
        clock = clock or Clock()
        engine = create_engine(url or default_database_url())
        try:
            if migrate:
                await apply_migrations(engine, clock)
            else:
                await check_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock)

    @staticmethod
    async def migrate(url: str | None = None) -> tuple[SchemaStatus, list[int]]:
        """Apply pending migrations and close: the version found, and the versions applied."""
        engine = create_engine(url or default_database_url())
        try:
            before = await schema_status(engine)
            return before, await apply_migrations(engine, Clock())
        finally:
            await engine.dispose()

    async def close(self) -> None:
        await self._response_rows.drain()
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- tenants and keys ----------------------------------------------------------------

    async def check(self) -> None:
        """Raise ``StorageError`` unless the database answers now (readiness probes)."""
        async with self._read("checking the database") as conn:
            await conn.execute(select(1))

    async def create_tenant(self, name: str) -> Tenant:
        """A new tenant; names are unique (``BadInputError`` if taken)."""
        name = clean_text(name).strip()
        if not name or len(name) > 200:
            raise BadInputError("a tenant name must have 1 to 200 characters")
        tenant = Tenant(id="ten_" + secrets.token_hex(12), name=name, created_at=self._now())
        try:
            async with self._write("creating a tenant") as conn:
                await conn.execute(
                    tenants.insert().values(id=tenant.id, name=name, created_at=tenant.created_at)
                )
        except Exception as exc:
            if isinstance(exc.__cause__, SAIntegrityError):
                raise BadInputError(f"a tenant named {name!r} exists already") from exc
            raise
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._read("reading a tenant") as conn:
            row = (await conn.execute(_TENANT, {"tenant": tenant_id})).first()
        return _tenant(row) if row is not None else None

    async def tenant_by_name(self, name: str) -> Tenant | None:
        async with self._read("reading a tenant") as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.name == name))).first()
        return _tenant(row) if row is not None else None

    async def list_tenants(self) -> list[Tenant]:
        async with self._read("listing tenants") as conn:
            rows = (await conn.execute(select(tenants).order_by(tenants.c.name))).all()
        return [_tenant(r) for r in rows]

    async def add_key(self, tenant_id: str) -> str:
        """Mint a key for the tenant and return its plaintext: the only time it exists."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        async with self._write("adding a key") as conn:
            if (await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))).first():
                await conn.execute(
                    api_keys.insert().values(
                        id="key_" + secrets.token_hex(12),
                        tenant_id=tenant_id,
                        key_hash=hash_key(key),
                        prefix=key[: len(KEY_PREFIX) + 6],
                        created_at=now,
                    )
                )
                return key
        raise NotFoundError(f"no tenant {tenant_id!r}")

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's keys (hashes never leave the store), revoked ones included."""
        query = select(api_keys).where(api_keys.c.tenant_id == tenant_id)
        async with self._read("listing keys") as conn:
            rows = (await conn.execute(query.order_by(api_keys.c.created_at))).all()
        return [ApiKey(r.id, r.tenant_id, r.prefix, r.created_at, r.revoked_at) for r in rows]

    async def revoke_key(self, tenant_id: str, key_id: str) -> bool:
        """Revoke one of the tenant's keys by its ``key_…`` id; ``False`` if unknown."""
        async with self._write("revoking a key") as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.tenant_id == tenant_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=self._now())
            )
        return bool(getattr(result, "rowcount", 0))

    async def tenant_for_key(self, key: str) -> Tenant | None:
        """The tenant a presented key belongs to, or ``None`` (unknown, revoked, malformed)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        query = (
            select(tenants, api_keys.c.key_hash)
            .join(api_keys, api_keys.c.tenant_id == tenants.c.id)
            .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
        )
        async with self._read("checking a key") as conn:
            row = (await conn.execute(query)).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return _tenant(row)

    # -- responses -------------------------------------------------------------------------

    async def record_response(
        self,
        tenant_id: str,
        response_id: str,
        upstream: str,
        model: str | None,
        container_ids: list[str],
    ) -> ResponseRecord:
        """Remember a response the tenant made; repeated calls merge container ids.

        The containers are claimed for the tenant too (see :mod:`.metadata_owners`). Calls
        made while another is being written are written together, in one transaction
        (:class:`~cigate.storage._db.WriteGroup`): a relay holds its stream's first event
        until its response row is in, and under load many rows wait at once.
        """
        check_id("response id", response_id)
        for cid in container_ids:
            check_id("container id", cid)
        fact = _ResponseFact(tenant_id, response_id, upstream, model, tuple(container_ids))
        return await self._response_rows.submit(fact)

    async def _record_responses(self, facts: list[_ResponseFact]) -> list[ResponseRecord]:
        """Write ``facts`` in one transaction; the record of each, in order."""
        merged: dict[tuple[str, str], _ResponseFact] = {}
        for f in facts:  # the same response twice in one group: one row, facts merged
            known = merged.get(f.key)
            merged[f.key] = f if known is None else known.merge(f)
        ids = sorted({rid for _, rid in merged})
        now = self._now()
        async with self._write("recording a response", urgent=True) as conn:
            for f in merged.values():
                # Containers a tenant's response used are that tenant's (first one wins).
                await claim_in(
                    conn,
                    self.dialect,
                    "container",
                    f.container_ids,
                    tenant_id=f.tenant_id,
                    now=now,
                    upstream=f.upstream,
                )
            found = await conn.execute(_RESPONSES_IN, {"ids": ids})
            existing = {(r.tenant_id, r.response_id): r for r in found}
            records: dict[tuple[str, str], ResponseRecord] = {}
            new = []
            for key, f in merged.items():
                row = existing.get(key)
                if row is None:  # the record is what is inserted; no need to read it back
                    records[key] = ResponseRecord(
                        f.tenant_id,
                        f.response_id,
                        f.upstream,
                        f.model,
                        tuple(dict.fromkeys(f.container_ids)),
                        created_at=now,
                    )
                    new.append(
                        {
                            **asdict(records[key]),
                            "container_ids": json.dumps(records[key].container_ids),
                        }
                    )
                    continue
                known = json.loads(row.container_ids)
                containers = list(dict.fromkeys([*known, *f.container_ids]))
                model = f.model or row.model
                if containers != known or model != row.model:
                    merge = {"containers": json.dumps(containers), "model": model}
                    await conn.execute(
                        _MERGE_RESPONSE, {"tenant": key[0], "response": key[1], **merge}
                    )
                records[key] = replace(_response(row), model=model, container_ids=tuple(containers))
            if new:
                await conn.execute(responses.insert(), new)
        return [records[f.key] for f in facts]

    async def _record_response(self, fact: _ResponseFact) -> ResponseRecord:
        """One response alone, retried once: a concurrent first insert from another process."""
        for attempt in range(2):
            try:
                return (await self._record_responses([fact]))[0]
            except Exception as exc:
                if attempt or not isinstance(exc.__cause__, SAIntegrityError):
                    raise
        raise AssertionError("unreachable")

    async def get_response(self, tenant_id: str, response_id: str) -> ResponseRecord | None:
        if not response_id or len(response_id) > 200 or not response_id.isprintable():
            return None  # no such id can be stored (see check_id); PostgreSQL refuses a NUL
        key = (responses.c.tenant_id == tenant_id, responses.c.response_id == response_id)
        async with self._read("reading a response") as conn:
            row = (await conn.execute(select(responses).where(*key))).first()
        return _response(row) if row is not None else None

    async def mark_listed(self, tenant_id: str, response_id: str) -> None:
        """Every container of the response was listed: the sweep leaves it alone from now on."""
        listed = {"tenant": tenant_id, "response": response_id, "now": self._now()}
        async with self._write("marking a response listed") as conn:
            await conn.execute(_MARK_LISTED, listed)

    async def claim_unlisted(
        self,
        worker_id: str,
        lease_seconds: float,
        *,
        older_than: float,
        horizon: float,
        limit: int = 10,
    ) -> list[ResponseRecord]:
        """Lease up to ``limit`` responses nobody listed, started ``older_than``..``horizon`` s ago.

        The process that relayed a response lists its containers when the stream ends; one that
        died first never does. ``older_than`` leaves a live stream to its own process. Each row
        is taken with a conditional UPDATE, so of two racing processes exactly one lists it; a
        lease that runs out (the lister died too) frees it for the next sweep.
        """
        now = self._now()
        free = lease_free(now, responses.c.list_lease_expires_at)
        unlisted = and_(
            responses.c.listed_at.is_(None),
            responses.c.created_at <= now - timedelta(seconds=older_than),
            responses.c.created_at >= now - timedelta(seconds=horizon),
            free,
        )
        async with self._read("finding unlisted responses") as conn:
            keys = (
                await conn.execute(
                    select(responses.c.tenant_id, responses.c.response_id)
                    .where(unlisted)
                    .order_by(responses.c.created_at)
                    .limit(limit)
                )
            ).all()
        claimed = []
        for tenant_id, response_id in keys:
            key = (responses.c.tenant_id == tenant_id, responses.c.response_id == response_id)
            async with self._write("claiming an unlisted response") as conn:
                result = await conn.execute(
                    update(responses)
                    .where(*key, unlisted)
                    .values(
                        list_lease_owner=worker_id,
                        list_lease_expires_at=now + timedelta(seconds=lease_seconds),
                    )
                )
                if cast(Any, result).rowcount != 1:
                    continue
                row = (await conn.execute(select(responses).where(*key))).one()
            claimed.append(_response(row))
        return claimed

    # -- signed links ----------------------------------------------------------------------

    async def create_link(self, tenant_id: str, file_id: str, expires_at: datetime) -> Link:
        """Record a signed link for one of the tenant's files (``gwf_`` id or any other)."""
        async with self._write("creating a link") as conn:
            row = await self._get_file(conn, tenant_id, file_id, None)
            if row is None:
                raise NotFoundError(f"no file {file_id!r}")
            link = Link(
                id="gwl_" + secrets.token_hex(16),
                tenant_id=tenant_id,
                file_id=row.id,
                created_at=self._now(),
                expires_at=expires_at,
                revoked_at=None,
            )
            await conn.execute(
                links.insert().values(
                    id=link.id,
                    tenant_id=tenant_id,
                    file_id=row.id,
                    created_at=link.created_at,
                    expires_at=expires_at,
                )
            )
        return link

    async def get_link(self, link_id: str) -> Link | None:
        """Unscoped on purpose: a signed URL carries no key; the gateway checks the HMAC,
        then ``expires_at`` and ``revoked_at`` of this record."""
        async with self._read("reading a link") as conn:
            row = (await conn.execute(select(links).where(links.c.id == link_id))).first()
        return _link(row) if row is not None else None

    async def revoke_link(self, tenant_id: str, link_id: str) -> bool:
        async with self._write("revoking a link") as conn:
            result = await conn.execute(
                update(links)
                .where(links.c.id == link_id, links.c.tenant_id == tenant_id)
                .where(links.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
        return bool(getattr(result, "rowcount", 0))

    # -- audit -----------------------------------------------------------------------------

    async def record_download(
        self,
        tenant_id: str,
        file_id: str,
        actor: str,
        bytes_sent: int,
        status: int,
        *,
        at: datetime | None = None,
    ) -> Download:
        """Append one audit record (``actor``: a key id, ``link:gwl_…``, …)."""
        at = at or self._now()
        actor = clean_text(actor)[:200]
        async with self._write("recording a download") as conn:
            result = await conn.execute(
                downloads.insert()
                .values(
                    tenant_id=tenant_id,
                    file_id=file_id,
                    actor=actor,
                    bytes_sent=bytes_sent,
                    status=status,
                    at=at,
                )
                .returning(downloads.c.id)
            )
            new_id = result.scalar_one()
        return Download(new_id, tenant_id, file_id, actor, bytes_sent, status, at)

    async def list_downloads(
        self, tenant_id: str, file_id: str | None = None, *, limit: int = 1000
    ) -> list[Download]:
        """The tenant's download records, newest first, optionally for one file."""
        query = select(downloads).where(
            downloads.c.tenant_id == tenant_id, downloads.c.action == "download"
        )
        if file_id is not None:
            query = query.where(downloads.c.file_id == file_id)
        query = query.order_by(downloads.c.at.desc(), downloads.c.id.desc()).limit(limit)
        async with self._read("listing downloads") as conn:
            rows = (await conn.execute(query)).all()
        return [audit_record(r) for r in rows]


def _response(row: Row[Any]) -> ResponseRecord:
    return ResponseRecord(
        tenant_id=row.tenant_id,
        response_id=row.response_id,
        upstream=row.upstream,
        model=row.model,
        container_ids=tuple(json.loads(row.container_ids)),
        created_at=row.created_at,
        listed_at=row.listed_at,
    )
