"""Ownership of upstream ids: which tenant a container, file, assistant or thread belongs to.

The gateway forwards most container and file calls to the upstream, where every tenant shares
one account. Tenant scoping therefore needs a record of *who created or first used* each
upstream id, kept apart from the file rows (a container can be owned long before it holds a
harvested file; an uploaded file is owned without being copied). The first tenant to claim an
id keeps it: claims are ``INSERT … ON CONFLICT DO NOTHING``, atomic on SQLite and PostgreSQL.

Assistants and threads (Assistants API) are owned the same way; a thread's messages, runs and
run steps need no rows of their own, because every path to them goes through the thread.
``kind`` is a plain string column, so a new kind needs no migration, only this ``Literal``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cigate.storage._db import DIALECT_INSERT, StoreBase
from cigate.storage.schema import owners, responses

__all__ = ["OwnedKind", "OwnerQueries", "PlacedKind", "claim_in"]

OwnedKind = Literal["container", "file", "assistant", "thread", "conversation", "agent"]
#: What a call can name that lives on one upstream: owned objects, and responses.
PlacedKind = OwnedKind | Literal["response"]

_MAX_ID = 200


def _usable(upstream_id: str) -> bool:
    """An id the store can hold (and so may hold): no service issues an empty, huge or
    non-printable one, and PostgreSQL text cannot even be compared with a NUL (it errors)."""
    return bool(upstream_id) and len(upstream_id) <= _MAX_ID and upstream_id.isprintable()


#: The claim's INSERT, built once per dialect and run with the rows as parameters: a statement
#: with its rows inlined (``.values([...])``) has no cache key, so SQLAlchemy compiled it again
#: on every claim (several a relayed stream).
_CLAIM = {
    dialect: insert(owners).on_conflict_do_nothing(index_elements=["kind", "upstream_id"])
    for dialect, insert in DIALECT_INSERT.items()
}


async def claim_in(
    conn: AsyncConnection,
    dialect: str,
    kind: OwnedKind,
    upstream_ids: Iterable[str],
    *,
    tenant_id: str,
    now: datetime,
    upstream: str | None = None,
) -> None:
    """Claim ids for a tenant inside the caller's transaction; ids owned already stay put
    (with the upstream that holds them: ``None`` is the first/default one)."""
    # No ``upstream`` column value for the default: NULL, and a claim reads as it did before
    # migration 8 (tests build stores at older schema versions with it).
    placed = {"upstream": upstream} if upstream is not None else {}
    values = [
        {"kind": kind, "upstream_id": uid, "tenant_id": tenant_id, "created_at": now, **placed}
        for uid in dict.fromkeys(upstream_ids)
        if _usable(uid)
    ]
    if not values:
        return
    await conn.execute(_CLAIM[dialect], values)


class OwnerQueries(StoreBase):
    """The ownership half of :class:`~cigate.storage.metadata.MetadataStore`."""

    async def claim(
        self, tenant_id: str, kind: OwnedKind, upstream_id: str, upstream: str | None = None
    ) -> str | None:
        """Claim one id for the tenant; returns its owner afterwards (maybe another tenant).

        ``upstream`` names the configured upstream that made the object (kept from the first
        claim on). An id no service can issue is nobody's: ``None``, nothing written."""
        if not _usable(upstream_id):
            return None
        async with self._write("claiming an id") as conn:
            await claim_in(
                conn,
                self.dialect,
                kind,
                [upstream_id],
                tenant_id=tenant_id,
                now=self._now(),
                upstream=upstream,
            )
            query = select(owners.c.tenant_id).where(
                owners.c.kind == kind, owners.c.upstream_id == upstream_id
            )
            return cast(str | None, (await conn.execute(query)).scalar())

    async def files_api_owner(self, upstream_file_id: str) -> str | None:
        """The tenant that first adopted or uploaded a Files-API id (``assistant-…``/``file-…``).

        Unscoped on purpose (added by the gateway): an id one tenant adopted must answer like
        an unknown id for every other tenant, not be fetched again for them.
        """
        return await self.owner("file", upstream_file_id)

    async def owner(self, kind: OwnedKind, upstream_id: str) -> str | None:
        """The tenant owning an id, or ``None``. Unscoped on purpose: callers compare it."""
        if not _usable(upstream_id):
            return None
        query = select(owners.c.tenant_id).where(
            owners.c.kind == kind, owners.c.upstream_id == upstream_id
        )
        async with self._read("finding an owner") as conn:
            return cast(str | None, (await conn.execute(query)).scalar())

    async def owned_among(
        self, tenant_id: str, kind: OwnedKind, upstream_ids: Iterable[str]
    ) -> set[str]:
        """Which of ``upstream_ids`` the tenant owns (one query per page of a listing)."""
        wanted = [uid for uid in dict.fromkeys(upstream_ids) if _usable(uid)]
        if not wanted:
            return set()
        query = select(owners.c.upstream_id).where(
            owners.c.tenant_id == tenant_id,
            owners.c.kind == kind,
            owners.c.upstream_id.in_(wanted),
        )
        async with self._read("checking owners") as conn:
            return set((await conn.execute(query)).scalars())

    async def placements(
        self, refs: Iterable[tuple[PlacedKind, str]]
    ) -> dict[tuple[PlacedKind, str], str | None]:
        """Where each known object lives: ``(kind, id)`` -> upstream name (``None``: the
        first/default upstream). Objects the store does not know are left out.

        Unscoped on purpose, as :meth:`owner`: routing a call precedes nothing the tenant
        could learn from (ownership is checked by the same handlers). Responses are looked
        up in their own table (its ``upstream`` column).
        """
        wanted: dict[PlacedKind, dict[str, None]] = {}
        for kind, uid in refs:
            if _usable(uid):
                wanted.setdefault(kind, {})[uid] = None
        found: dict[tuple[PlacedKind, str], str | None] = {}
        async with self._read("finding where objects live") as conn:
            for kind, uids in wanted.items():
                if kind == "response":
                    query = select(responses.c.response_id, responses.c.upstream).where(
                        responses.c.response_id.in_(list(uids))
                    )
                else:
                    query = select(owners.c.upstream_id, owners.c.upstream).where(
                        owners.c.kind == kind, owners.c.upstream_id.in_(list(uids))
                    )
                for uid, upstream in (await conn.execute(query)).all():
                    found[(kind, uid)] = upstream
        return found
