"""File rows: one table for container files and Files-API files, and their harvest state.

State machine: ``pending`` -> ``stored`` | ``failed`` (``requeue`` sends a failed file back to
``pending``). Harvest work is shared between gateway processes through a *lease*: a worker
claims a pending row with a conditional ``UPDATE … WHERE lease is free or expired``, which
is atomic on SQLite and PostgreSQL alike, so two processes never copy the same file at the
same time, and a crashed worker's rows come free when its lease expires.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import Any, Literal, cast, get_args

from sqlalchemy import Row, Select, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cigate.exceptions import BadInputError
from cigate.storage._db import DIALECT_INSERT, StoreBase, advisory_xact_lock
from cigate.storage.errors import NotFoundError
from cigate.storage.metadata_owners import OwnedKind, claim_in
from cigate.storage.records import FileKind, FileOrigin, FileRow
from cigate.storage.schema import erasures, files

__all__ = ["FileQueries", "new_file_id"]

_MAX_ID = 200


def new_file_id() -> str:
    """``gwf_`` + 32 hex: 128 random bits, so ids cannot be guessed or enumerated."""
    return "gwf_" + secrets.token_hex(16)


def check_id(what: str, value: str) -> str:
    """Upstream ids are short printable tokens; anything else is refused before SQL."""
    if not value or len(value) > _MAX_ID or not value.isprintable():
        raise BadInputError(f"invalid {what}: {value!r:.80}")
    return value


def clean_text(value: str) -> str:
    """Keep a name verbatim except what no database can store (NUL, lone surrogates)."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _row(row: Row[Any]) -> FileRow:
    m = row._mapping
    return FileRow(
        id=m["id"],
        tenant_id=m["tenant_id"],
        kind=m["kind"],
        upstream_file_id=m["upstream_file_id"],
        container_id=m["container_id"] or None,
        response_id=m["response_id"],
        filename=m["filename"],
        origin=m["origin"],
        state=m["state"],
        sha256=m["sha256"],
        size=m["size"],
        content_type=m["content_type"],
        tries=m["tries"],
        error_kind=m["error_kind"],
        error_message=m["error_message"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        path=m["path"],
        verified_at=m["verified_at"],
    )


#: PostgreSQL advisory-lock namespace of one file's (tenant, upstream id, container): its
#: erasure and its recording take it, so a recording sees an erasure that committed first.
NS_FILE = 0x63670003


# -- the statements of recording a file, built once --------------------------------------------
# Recording runs a few times for every file of every relayed response. Building a SQLAlchemy
# statement (and its cache key) cost more main-thread time than running it (bench/load.py), so
# these are built here with named parameters and run with their values.


def _key(table: Any) -> Any:
    """One file's (tenant, upstream id, container) in ``table``, as parameters."""
    return and_(
        table.c.tenant_id == bindparam("key_tenant"),
        table.c.upstream_file_id == bindparam("key_file"),
        table.c.container_id == bindparam("key_container"),
    )


_TOMBSTONE = select(erasures.c.response_id).where(_key(erasures))
_CLEAR_TOMBSTONE = delete(erasures).where(_key(erasures))
_BY_KEY = select(files).where(_key(files))
#: A new row, or nothing when the key has one (run with the row's values).
_INSERT = {
    dialect: insert(files)
    .on_conflict_do_nothing(index_elements=["tenant_id", "upstream_file_id", "container_id"])
    .returning(files)
    for dialect, insert in DIALECT_INSERT.items()
}
#: A listed row taken over by the response that cites it (with its id, or keeping the row's).
_CITED_BY = {
    with_response: update(files)
    .where(_key(files), files.c.origin == "listing")
    .values(
        origin="citation",
        filename=bindparam("cited_name"),
        updated_at=bindparam("now"),
        **({"response_id": bindparam("cited_response")} if with_response else {}),
    )
    for with_response in (False, True)
}


@functools.cache
def _fill(response_id: bool, path: bool) -> Any:
    """The UPDATE that fills in the response id and/or path a row lacks (parameters
    ``fill_response_id``, ``fill_path``), returning the row."""
    known = [c for c, given in ((files.c.response_id, response_id), (files.c.path, path)) if given]
    return (
        update(files)
        .where(_key(files), or_(*(column.is_(None) for column in known)))
        .values(
            updated_at=bindparam("now"),
            **{c.name: func.coalesce(c, bindparam(f"fill_{c.name}", type_=c.type)) for c in known},
        )
        .returning(files)
    )


@functools.cache
def _find_file(gateway_id: bool, in_container: bool) -> Any:
    """A tenant's file by gateway id or upstream id (parameters ``tenant``, ``any_id``,
    ``container``), the oldest first."""
    query = select(files).where(
        files.c.tenant_id == bindparam("tenant"),
        (files.c.id if gateway_id else files.c.upstream_file_id) == bindparam("any_id"),
    )
    if in_container:
        query = query.where(files.c.container_id == bindparam("container"))
    return query.order_by(files.c.created_at, files.c.id).limit(1)


def lease_free(now: Any, expires: Any = files.c.lease_expires_at) -> Any:
    """No lease, or an expired one (``expires``: the lease column, the files table's by
    default; ``now``: a time or a parameter)."""
    return or_(expires.is_(None), expires < now)


#: Lease a pending row whose lease is free or expired, or this worker's own.
_CLAIM_FILE = (
    update(files)
    .where(
        files.c.id == bindparam("file_id"),
        files.c.state == "pending",
        or_(lease_free(bindparam("now")), files.c.lease_owner == bindparam("worker")),
    )
    .values(
        lease_owner=bindparam("worker"),
        lease_expires_at=bindparam("expires"),
        updated_at=bindparam("now"),
    )
    .returning(files)
)


async def lock_file(
    conn: AsyncConnection, dialect: str, tenant_id: str, upstream_file_id: str, container_id: str
) -> None:
    """Serialise with the erasure or recording of the same file."""
    digest = hashlib.sha256(f"{tenant_id}\0{upstream_file_id}\0{container_id}".encode())
    await advisory_xact_lock(conn, dialect, NS_FILE, int.from_bytes(digest.digest()[:4], "big"))


class FileQueries(StoreBase):
    """The file half of :class:`~cigate.storage.metadata.MetadataStore`."""

    async def upsert_file(
        self,
        tenant_id: str,
        *,
        kind: FileKind,
        upstream_file_id: str,
        container_id: str | None,
        response_id: str | None,
        filename: str,
        origin: FileOrigin,
        path: str | None = None,
        upstream: str | None = None,
    ) -> FileRow:
        """Record a file the gateway must copy; idempotent on (tenant, upstream ids).

        ``upstream`` is the configured upstream holding it (kept with the claim of its
        container or Files-API id; ``None``: the first/default upstream).

        The first call mints a gateway id in state ``pending``; later calls return the same
        row unchanged, except that a missing ``response_id`` or ``path`` is filled in (a file
        first cited, then seen in a container listing, or the other way round), and that a
        citation of a row a listing recorded makes it the citing response's, under the cited
        name. Concurrent
        calls from several processes agree on one row. ``filename`` and ``path`` are kept
        verbatim (only NUL and lone surrogates replaced).
        """
        row = await self._upsert(
            tenant_id,
            kind=kind,
            upstream_file_id=upstream_file_id,
            container_id=container_id,
            response_id=response_id,
            filename=filename,
            origin=origin,
            path=path,
            upstream=upstream,
        )
        assert row is not None  # no erasure rule asked for
        return row

    async def record_file(
        self,
        tenant_id: str,
        *,
        kind: FileKind,
        upstream_file_id: str,
        container_id: str | None,
        response_id: str | None,
        filename: str,
        origin: FileOrigin,
        path: str | None = None,
        upstream: str | None = None,
        citation: bool,
    ) -> FileRow | None:
        """:meth:`upsert_file` unless the tenant erased the file: ``None`` then, except for a
        ``citation`` by a response other than the one it was erased from (the tombstone is
        cleared). The check is part of the insert's transaction, under the lock the erasure
        takes, so an erasure that commits first is always seen (docs/gateway.md, Erasure).
        """
        return await self._upsert(
            tenant_id,
            kind=kind,
            upstream_file_id=upstream_file_id,
            container_id=container_id,
            response_id=response_id,
            filename=filename,
            origin=origin,
            path=path,
            upstream=upstream,
            erasure_rule="citation" if citation else "never",
        )

    async def _upsert(
        self,
        tenant_id: str,
        *,
        kind: FileKind,
        upstream_file_id: str,
        container_id: str | None,
        response_id: str | None,
        filename: str,
        origin: FileOrigin,
        path: str | None,
        upstream: str | None = None,
        erasure_rule: Literal["citation", "never"] | None = None,
    ) -> FileRow | None:
        if kind not in get_args(FileKind) or origin not in get_args(FileOrigin):
            raise BadInputError(f"invalid file kind/origin: {kind!r}/{origin!r}")
        check_id("file id", upstream_file_id)
        if kind == "container":
            container_id = check_id("container id", container_id or "")
        elif container_id:
            raise BadInputError("Files-API files have no container id")
        if response_id is not None:
            check_id("response id", response_id)
        now = self._now()
        values = {
            "id": new_file_id(),
            "tenant_id": tenant_id,
            "kind": kind,
            "upstream_file_id": upstream_file_id,
            "container_id": container_id or "",
            "response_id": response_id,
            "filename": clean_text(filename),
            "path": clean_text(path) if path is not None else None,
            "origin": origin,
            "state": "pending",
            "tries": 0,
            "created_at": now,
            "updated_at": now,
        }
        key = {
            "key_tenant": tenant_id,
            "key_file": upstream_file_id,
            "key_container": container_id or "",
        }
        async with self._write("recording a file") as conn:
            if erasure_rule is not None:
                await lock_file(conn, self.dialect, tenant_id, upstream_file_id, container_id or "")
                erased = (await conn.execute(_TOMBSTONE, key)).first()
                if erased is not None:
                    if erasure_rule == "never" or response_id in (None, erased.response_id):
                        return None
                    await conn.execute(_CLEAR_TOMBSTONE, key)
            inserted = (await conn.execute(_INSERT[self.dialect], values)).first()
            if inserted is not None:  # new: it holds exactly the values above
                # A new file row makes its container (or Files-API id) the tenant's, unless
                # taken. An existing row's claim was made with it, and owners rows are never
                # deleted: claiming again would change nothing (a statement a listing saves).
                owned: tuple[OwnedKind, str] = (
                    ("container", container_id or "")
                    if kind == "container"
                    else ("file", upstream_file_id)
                )
                await claim_in(
                    conn,
                    self.dialect,
                    owned[0],
                    [owned[1]],
                    tenant_id=tenant_id,
                    now=now,
                    upstream=upstream,
                )
                return _row(inserted)
            if origin == "citation":
                # A listing only guesses which response wrote a file (a container serves many);
                # the response that cites it made it, under the name it gave.
                cited = {**key, "cited_name": values["filename"], "now": now}
                if response_id is not None:
                    cited["cited_response"] = response_id
                await conn.execute(_CITED_BY[response_id is not None], cited)
            # What the row lacks and this call knows (a response id, a listed path), filled in
            # one statement that also returns the row; as it is when it lacks neither.
            row = None
            known = {
                f"fill_{name}": value
                for name, value in (("response_id", response_id), ("path", values["path"]))
                if value is not None
            }
            if known:
                fill = _fill("fill_response_id" in known, "fill_path" in known)
                row = (await conn.execute(fill, {**key, "now": now, **known})).first()
            if row is None:
                row = (await conn.execute(_BY_KEY, key)).one()
        return _row(row)

    async def get_file(
        self, tenant_id: str, any_id: str, *, container_id: str | None = None
    ) -> FileRow | None:
        """Resolve a gateway id (``gwf_…``), a ``cfile_…`` id or an ``assistant-…``/``file-…``
        id within one tenant; ``container_id`` narrows a ``cfile_`` (ids are per container).

        Another tenant's id answers ``None`` exactly like an unknown one.
        """
        if not any_id or len(any_id) > _MAX_ID or not any_id.isprintable():
            return None
        async with self._read("reading a file") as conn:
            return await self._get_file(conn, tenant_id, any_id, container_id)

    async def _get_file(
        self, conn: AsyncConnection, tenant_id: str, any_id: str, container_id: str | None
    ) -> FileRow | None:
        query = _find_file(any_id.startswith("gwf_"), container_id is not None)
        found = {"tenant": tenant_id, "any_id": any_id}
        if container_id is not None:
            found["container"] = container_id
        row = (await conn.execute(query, found)).first()
        return _row(row) if row is not None else None

    async def list_files(
        self,
        tenant_id: str,
        *,
        response_id: str | None = None,
        container_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
        order: Literal["asc", "desc"] = "asc",
    ) -> list[FileRow]:
        """A tenant's files, oldest first (or newest with ``order="desc"``), paginated.

        ``after`` is the id (any form :meth:`get_file` accepts) of the last row of the
        previous page; an ``after`` the tenant does not own raises ``NotFoundError``.
        """
        limit = max(1, min(limit, 10_000))
        query: Select[Any] = select(files).where(files.c.tenant_id == tenant_id)
        if response_id is not None:
            query = query.where(files.c.response_id == response_id)
        if container_id is not None:
            query = query.where(files.c.container_id == container_id)
        asc = order == "asc"
        async with self._read("listing files") as conn:
            if after is not None:
                anchor = await self._get_file(conn, tenant_id, after, container_id)
                if anchor is None:
                    raise NotFoundError(f"no file {after!r} to list after")
                later = or_(
                    files.c.created_at > anchor.created_at,
                    and_(files.c.created_at == anchor.created_at, files.c.id > anchor.id),
                )
                earlier = or_(
                    files.c.created_at < anchor.created_at,
                    and_(files.c.created_at == anchor.created_at, files.c.id < anchor.id),
                )
                query = query.where(later if asc else earlier)
            if asc:
                query = query.order_by(files.c.created_at, files.c.id)
            else:
                query = query.order_by(files.c.created_at.desc(), files.c.id.desc())
            rows = (await conn.execute(query.limit(limit))).all()
        return [_row(r) for r in rows]

    async def files_at_path(
        self, tenant_id: str, response_id: str, relpath: str, *, limit: int = 50
    ) -> list[FileRow]:
        """The tenant's files of a response that may be the one at ``/mnt/data/<relpath>``:
        those listed at that path, else those whose path is unknown and whose name is the
        path's (a citation names only the basename). Looked up directly, however many files
        the response has."""
        name = relpath.rsplit("/", 1)[-1]
        unknown_path = and_(
            files.c.path.is_(None),
            or_(
                files.c.filename == name,
                files.c.filename == relpath,
                files.c.filename.endswith("/" + relpath, autoescape=True),
            ),
        )
        query = (
            select(files)
            .where(files.c.tenant_id == tenant_id, files.c.response_id == response_id)
            .where(or_(files.c.path == f"/mnt/data/{relpath}", unknown_path))
            .order_by(files.c.created_at, files.c.id)
            .limit(limit)
        )
        async with self._read("finding a file by path") as conn:
            return [_row(r) for r in (await conn.execute(query)).all()]

    async def list_pending(self, limit: int = 100) -> list[FileRow]:
        """Pending rows of every tenant, oldest first, leased or not (resume after restart)."""
        query = (
            select(files)
            .where(files.c.state == "pending")
            .order_by(files.c.created_at, files.c.id)
            .limit(limit)
        )
        async with self._read("listing pending files") as conn:
            return [_row(r) for r in (await conn.execute(query)).all()]

    async def claim_pending(
        self, worker_id: str, lease_seconds: float, *, limit: int = 10
    ) -> list[FileRow]:
        """Lease up to ``limit`` pending rows whose lease is free or expired, for this worker.

        Each row is taken with its own conditional UPDATE, so when two processes race for
        a row exactly one wins; the loser simply does not get it.
        """
        now = self._now()
        async with self._read("finding pending files") as conn:
            candidates = (
                await conn.execute(
                    select(files.c.id)
                    .where(files.c.state == "pending", lease_free(now))
                    .order_by(files.c.created_at, files.c.id)
                    .limit(limit)
                )
            ).scalars()
            ids = list(candidates)
        claimed = []
        for file_id in ids:
            row = await self.claim_file(file_id, worker_id, lease_seconds)
            if row is not None:
                claimed.append(row)
        return claimed

    async def claim_retryable(
        self,
        worker_id: str,
        lease_seconds: float,
        *,
        kinds: Collection[str],
        max_tries: int,
        delay: Callable[[int], float],
        limit: int = 10,
    ) -> list[FileRow]:
        """Send up to ``limit`` ``failed`` rows worth another try back to ``pending``, leased.

        A row qualifies when its ``error_kind`` is one of ``kinds`` (transient failures), it
        has had fewer than ``max_tries`` tries, and ``delay(tries)`` seconds have passed since
        it was last updated (its failure). ``delay`` must not decrease as ``tries`` grows:
        ``delay(0)`` bounds the query, the exact wait is checked per row. Each row is taken
        with its own conditional UPDATE (still ``failed``, lease free), so when two processes
        race for a row exactly one wins; the claimed row is ``pending`` with this worker's
        lease, ready for :meth:`claim_file` by the same worker.
        """
        kinds = list(kinds)
        if not kinds or max_tries < 1:
            return []
        now = self._now()
        retryable = and_(
            files.c.state == "failed",
            files.c.error_kind.in_(kinds),
            files.c.tries < max_tries,
        )
        async with self._read("finding retryable files") as conn:
            candidates = (
                await conn.execute(
                    select(files.c.id, files.c.tries, files.c.updated_at)
                    .where(
                        retryable,
                        files.c.updated_at <= now - timedelta(seconds=max(0.0, delay(0))),
                    )
                    .order_by(files.c.updated_at, files.c.id)
                    .limit(limit * 5)
                )
            ).all()
        due = [r.id for r in candidates if r.updated_at + timedelta(seconds=delay(r.tries)) <= now][
            :limit
        ]
        claimed = []
        for file_id in due:
            async with self._write("claiming a failed file") as conn:
                result = await conn.execute(
                    update(files)
                    .where(files.c.id == file_id, retryable, lease_free(now))
                    .values(
                        state="pending",
                        lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        updated_at=now,
                    )
                )
                if cast(Any, result).rowcount != 1:
                    continue
                row = (await conn.execute(select(files).where(files.c.id == file_id))).one()
            claimed.append(_row(row))
        return claimed

    async def claim_file(
        self, file_id: str, worker_id: str, lease_seconds: float
    ) -> FileRow | None:
        """Lease one pending row (or extend this worker's own lease); ``None`` if not won."""
        now = self._now()
        lease = {
            "file_id": file_id,
            "worker": worker_id,
            "now": now,
            "expires": now + timedelta(seconds=lease_seconds),
        }
        async with self._write("claiming a file") as conn:
            row = (await conn.execute(_CLAIM_FILE, lease)).first()
        return _row(row) if row is not None else None

    async def release(self, file_id: str, worker_id: str) -> None:
        """Give a lease back early (graceful shutdown) so another process resumes at once."""
        async with self._write("releasing a file") as conn:
            await conn.execute(
                update(files)
                .where(files.c.id == file_id, files.c.lease_owner == worker_id)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def mark_stored(
        self, file_id: str, sha256: str, size: int, content_type: str | None
    ) -> FileRow:
        """The bytes passed every check and are in the blob store: ``stored`` and verified,
        lease and last error cleared."""
        return await self._set(
            file_id,
            state="stored",
            sha256=sha256,
            size=size,
            content_type=content_type,
            error_kind=None,
            error_message=None,
            lease_owner=None,
            lease_expires_at=None,
            verified_at=self._now(),
        )

    async def claim_unverified(
        self, worker_id: str, lease_seconds: float, *, limit: int = 100
    ) -> list[FileRow]:
        """Lease up to ``limit`` stored rows never verified (stored before migration 6).

        Each row is taken with its own conditional UPDATE, so of two racing processes exactly
        one checks it; a lease that runs out (the checker died) frees it again.
        """
        now = self._now()
        unverified = and_(files.c.state == "stored", files.c.verified_at.is_(None), lease_free(now))
        async with self._read("finding unverified files") as conn:
            ids = list(
                (
                    await conn.execute(
                        select(files.c.id)
                        .where(unverified)
                        .order_by(files.c.created_at, files.c.id)
                        .limit(limit)
                    )
                ).scalars()
            )
        claimed = []
        for file_id in ids:
            async with self._write("claiming an unverified file") as conn:
                result = await conn.execute(
                    update(files)
                    .where(files.c.id == file_id, unverified)
                    .values(
                        lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                    )
                )
                if cast(Any, result).rowcount != 1:
                    continue
                row = (await conn.execute(select(files).where(files.c.id == file_id))).one()
            claimed.append(_row(row))
        return claimed

    async def mark_verified(self, file_id: str, sha256: str) -> FileRow:
        """The stored bytes (still ``sha256``) were checked and are the file's."""
        return await self._set(
            file_id,
            files.c.state == "stored",
            files.c.sha256 == sha256,
            verified_at=self._now(),
            lease_owner=None,
            lease_expires_at=None,
        )

    async def mark_suspect(
        self, file_id: str, sha256: str, message: str, worker_id: str, lease_seconds: float
    ) -> FileRow:
        """The stored bytes (still ``sha256``) are not the file's: back to ``pending``, leased
        to ``worker_id`` for the copy that replaces them, with ``message`` as the last error.
        """
        return await self._set(
            file_id,
            files.c.state == "stored",
            files.c.sha256 == sha256,
            state="pending",
            sha256=None,
            size=None,
            content_type=None,
            verified_at=None,
            error_kind="integrity",
            error_message=clean_text(message)[:4000],
            lease_owner=worker_id,
            lease_expires_at=self._now() + timedelta(seconds=lease_seconds),
        )

    async def mark_failed(self, file_id: str, error_kind: str, message: str, tries: int) -> FileRow:
        """Gave up: ``failed`` with the error's ``kind`` (see ``cigate.exceptions``)."""
        return await self._set(
            file_id,
            state="failed",
            error_kind=error_kind[:64],
            error_message=clean_text(message)[:4000],
            tries=tries,
            lease_owner=None,
            lease_expires_at=None,
        )

    async def mark_retrying(
        self,
        file_id: str,
        tries: int,
        *,
        error_kind: str | None = None,
        message: str | None = None,
    ) -> FileRow:
        """Still ``pending`` after ``tries`` attempts; the last error is kept for display."""
        return await self._set(
            file_id,
            state="pending",
            tries=tries,
            error_kind=error_kind[:64] if error_kind else None,
            error_message=clean_text(message)[:4000] if message else None,
        )

    async def requeue(self, file_id: str) -> FileRow:
        """Send a ``failed`` file back to ``pending`` (an operator or on-demand retry).

        Only a row that is still ``failed``: one another process stored (or requeued) since
        the caller read it is returned as it is.
        """
        return await self._set(
            file_id,
            files.c.state == "failed",
            state="pending",
            lease_owner=None,
            lease_expires_at=None,
        )

    async def _set(self, file_id: str, *where: Any, **values: Any) -> FileRow:
        """Update the row (if it also meets ``where``) and return it as it is now."""
        values["updated_at"] = self._now()
        async with self._write("updating a file") as conn:
            changed = update(files).where(files.c.id == file_id, *where).values(**values)
            row = (await conn.execute(changed.returning(files))).first()
            if row is None:  # not met (or gone): as it is
                row = (await conn.execute(select(files).where(files.c.id == file_id))).first()
        if row is None:
            raise NotFoundError(f"no file {file_id!r}")
        return _row(row)
