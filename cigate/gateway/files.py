"""The gateway's own file endpoints: one download endpoint for every kind of id.

``GET /files/{id}`` and ``GET /files/{id}/content`` accept the gateway's ids (``gwf_…``),
container file ids (``cfile_…``) and Files-API ids (``assistant-…``/``file-…``), as seed 002
asks. Files-API ids the gateway has not seen are fetched from the upstream Files API on first use
and stored for the asking tenant. Every lookup is scoped to the caller's tenant; an id of another
tenant gets exactly the answer an unknown id gets.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cigate.exceptions import BadInputError, CigateError, FileNotFoundInContainerError
from cigate.gateway import erasure
from cigate.gateway.context import Services, services
from cigate.gateway.errors import not_found
from cigate.gateway.serving import serve_file
from cigate.harvest.refs import FileRef
from cigate.storage.errors import NotFoundError
from cigate.storage.records import FileRow

__all__ = [
    "delete_file",
    "file_by_path",
    "file_content",
    "file_json",
    "file_metadata",
    "list_files",
    "page_params",
    "resolve",
    "response_files",
]

_FILES_API_PREFIXES = ("assistant-", "file-")


def file_json(row: FileRow, base: str) -> dict[str, Any]:
    """The gateway's description of one file (``object: "cigate.file"``)."""
    return {
        "id": row.id,
        "object": "cigate.file",
        "kind": row.kind,
        "upstream_file_id": row.upstream_file_id,
        "container_id": row.container_id,
        "response_id": row.response_id,
        "filename": row.filename,
        "path": row.path,
        "origin": row.origin,
        "state": row.state,
        "verified": row.verified_at is not None,
        "bytes": row.size,
        "sha256": row.sha256,
        "content_type": row.content_type,
        "tries": row.tries,
        "error": (
            {"kind": row.error_kind, "message": row.error_message}
            if row.state == "failed"
            else None
        ),
        "created_at": int(row.created_at.timestamp()),
        "download_url": f"{base}/files/{row.id}/content",
    }


async def resolve(svc: Services, tenant_id: str, any_id: str) -> FileRow:
    """The caller's file for any id form; Files-API ids are fetched on first use."""
    row = await svc.meta.get_file(tenant_id, any_id)
    if row is not None:
        return row
    if any_id.startswith(_FILES_API_PREFIXES) and len(any_id) <= 128:
        await erasure.refuse_erased(svc.meta, tenant_id, any_id, None)
        return await _adopt_files_api_file(svc, tenant_id, any_id)
    raise not_found("file", any_id)


async def _adopt_files_api_file(svc: Services, tenant_id: str, file_id: str) -> FileRow:
    """Fetch an ``assistant-…``/``file-…`` file's metadata upstream and record it for the tenant.

    A file another tenant already adopted stays theirs: the answer is the unknown-id answer.
    Two tenants asking at the same moment are settled by the owners table's atomic claim,
    taken after the upstream confirmed the file exists and before any row is written, so
    exactly one of them gets it.
    """
    if await svc.meta.files_api_owner(file_id) not in (None, tenant_id):
        raise not_found("file", file_id)
    try:
        # The upstream the tenant uploaded it to; an id never seen: the first upstream.
        fetcher = await svc.harvester.fetcher_of("file", file_id)
        meta = await fetcher.record(FileRef(file_id, file_id, source="assistants"))
    except FileNotFoundInContainerError as exc:
        raise not_found("file", file_id) from exc
    except CigateError as exc:
        if exc.status in (400, 404):
            raise not_found("file", file_id) from exc
        raise
    if await svc.meta.claim(tenant_id, "file", file_id) != tenant_id:
        raise not_found("file", file_id)  # another tenant won the race
    row = await svc.meta.record_file(  # erased meanwhile: stays erased
        tenant_id,
        kind="files_api",
        upstream_file_id=file_id,
        container_id=None,
        response_id=None,
        filename=str(meta.get("filename") or file_id),
        origin="on_demand",
        citation=False,
    )
    if row is None:
        raise not_found("file", file_id)
    return await svc.harvester.ensure_stored(row)


async def list_files(request: Request) -> Response:
    """``GET /files``: the caller's stored files, newest first, in OpenAI-list pages.

    ``limit`` (1..100, 20), ``after`` (the last id of the previous page), ``order``
    (``desc``/``asc``), and filters ``response_id``, ``container_id``. An ``after`` or a filter
    naming nothing of the caller's is the unknown-id 404, so the answer is the same for another
    tenant's id and for one that never existed. (The Files API list, ``/openai/v1/files``, is
    another route: the upstream's files of the caller.)
    """
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    limit, after = page_params(request, default=20, most=100)
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadInputError("order must be 'asc' or 'desc'.")
    response_id = _id_param(request, "response_id")
    container_id = _id_param(request, "container_id")
    if response_id is not None and await svc.meta.get_response(tenant_id, response_id) is None:
        raise not_found("response", response_id)
    if container_id is not None and await svc.meta.owner("container", container_id) != tenant_id:
        raise not_found("container", container_id)
    try:
        rows = await svc.meta.list_files(
            tenant_id,
            response_id=response_id,
            container_id=container_id,
            after=after,
            limit=limit + 1,
            order="asc" if order == "asc" else "desc",
        )
    except NotFoundError:
        raise not_found("file", after or "") from None
    page, base = rows[:limit], svc.public_base(request)
    return JSONResponse(
        {
            "object": "list",
            "data": [file_json(row, base) for row in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(rows) > limit,
        }
    )


def _id_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and not _CURSOR.fullmatch(value):
        raise BadInputError(f"{name} must be an id the gateway gave.")
    return value


async def file_metadata(request: Request) -> Response:
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    row = await resolve(svc, tenant_id, request.path_params["file_id"])
    return JSONResponse(file_json(row, svc.public_base(request)))


async def delete_file(request: Request) -> Response:
    """``DELETE /files/{id}``: erase one of the caller's files (``gwf_``, ``cfile_`` or
    Files-API id). Only files the gateway holds: an unknown id is never fetched to erase it."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    file_id = request.path_params["file_id"]
    row = await svc.meta.get_file(tenant_id, file_id)
    if row is None:
        raise not_found("file", file_id)
    record = await erasure.erase(
        svc.meta, svc.blobs, row, actor=f"tenant:{tenant_id}", reason="request"
    )
    if record is None:  # erased by a concurrent request
        raise not_found("file", file_id)
    return JSONResponse(
        {"id": row.id, "object": "cigate.file", "deleted": True, "audit_id": record.id}
    )


async def file_content(request: Request) -> Response:
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    row = await resolve(svc, tenant_id, request.path_params["file_id"])
    return await serve_file(request, svc, row, actor=f"tenant:{tenant_id}", tenant_id=tenant_id)


#: How long a by-path download waits for the response's files to be recorded (a plain answer
#: is harvested in the background, and the client may follow the link at once).
_BY_PATH_WAIT = 5.0


async def file_by_path(request: Request) -> Response:
    """``GET /responses/{id}/files/by-path/{path}``: the file a response wrote at a path.

    The target of rewritten ``sandbox:/mnt/data/<path>`` links (:mod:`cigate.gateway.rewrite`),
    which can be computed before the file's id is known. Matched on the path the container's
    listing gave, else on the name a citation gave (:func:`_by_path`).
    """
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    response_id = request.path_params["response_id"]
    if await svc.meta.get_response(tenant_id, response_id) is None:
        raise not_found("response", response_id)
    path = request.path_params["path"]
    deadline = asyncio.get_running_loop().time() + _BY_PATH_WAIT
    while True:
        rows = await svc.meta.files_at_path(tenant_id, response_id, path)
        row = _by_path(rows, path)
        if row is not None or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.1)
    if row is None:
        raise not_found("file", path)
    return await serve_file(request, svc, row, actor=f"tenant:{tenant_id}", tenant_id=tenant_id)


def _by_path(rows: list[FileRow], path: str) -> FileRow | None:
    """The row of the file at ``/mnt/data/<path>``: the one listed at that path, else the one
    file of that name whose path is not known yet (a citation names only the basename).
    Several such files are ambiguous (``a/x.csv``, ``b/x.csv`` before the listing): ``None``,
    never one of them by chance."""
    exact = [r for r in rows if r.path == f"/mnt/data/{path}"]
    if not exact:
        name = posixpath.basename(path)
        exact = [
            r
            for r in rows
            if r.path is None and (r.filename in (name, path) or r.filename.endswith("/" + path))
        ]
        if len({r.upstream_file_id for r in exact}) > 1:
            return None
    if not exact:
        return None
    return min(exact, key=lambda r: (r.origin != "citation", r.created_at))


async def response_files(request: Request) -> Response:
    """``GET /responses/{id}/files``: what was harvested for a response, with download URLs."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    response_id = request.path_params["response_id"]
    record = await svc.meta.get_response(tenant_id, response_id)
    if record is None:
        raise not_found("response", response_id)
    limit, after = page_params(request, default=100, most=1000)
    try:
        rows = await svc.meta.list_files(
            tenant_id, response_id=response_id, after=after, limit=limit + 1
        )
    except NotFoundError:
        rows = []  # an ``after`` of no file of the caller's: nothing after it
    page, base = rows[:limit], svc.public_base(request)
    return JSONResponse(
        {
            "object": "list",
            "response_id": response_id,
            # Every file of the response's containers is recorded (the listing is done).
            "listed": record.listed_at is not None,
            "data": [file_json(row, base) for row in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(rows) > limit,
        }
    )


#: What an ``after`` cursor may hold: printable ASCII, as every upstream id is.
_CURSOR = re.compile(r"[\x21-\x7e]{1,512}")


def page_params(request: Request, *, default: int, most: int) -> tuple[int, str | None]:
    """``limit`` (1..``most``) and ``after`` of a paginated list request."""
    try:
        limit = max(1, min(most, int(request.query_params.get("limit", str(default)))))
    except ValueError as exc:
        raise BadInputError(f"limit must be an integer between 1 and {most}.") from exc
    after = request.query_params.get("after") or None
    if after is not None and not _CURSOR.fullmatch(after):
        # An id the upstream could have made: the stores compare it, some (PostgreSQL) refuse NUL.
        raise BadInputError("after must be the id of an object of the previous page.")
    return limit, after
