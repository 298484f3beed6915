"""An OpenAI-compatible facade over the store: containers' files and Files-API files.

``client.containers.files.list/retrieve/content.retrieve`` and ``client.files.retrieve/content``
pointed at the gateway answer from the gateway's store, with the bodies the official SDK expects
(api-reference 3.2, 3.3, 4.1), so code written for the upstream keeps working after the
container expired. Only the caller tenant's files are visible.
"""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cigate.exceptions import BadInputError
from cigate.gateway.context import services
from cigate.gateway.errors import container_not_found
from cigate.gateway.files import page_params, resolve
from cigate.gateway.serving import serve_file
from cigate.storage.errors import NotFoundError
from cigate.storage.records import FileRow

__all__ = [
    "container_file",
    "container_file_content",
    "container_files",
    "openai_file",
    "openai_file_content",
]


def _file_not_found(container_id: str, file_id: str) -> BadInputError:
    return BadInputError(f"File {file_id} not found on container {container_id}.", status=404)


def container_file_json(row: FileRow) -> dict[str, Any]:
    """``object: "container.file"`` (every field the SDK requires)."""
    return {
        "id": row.upstream_file_id,
        "object": "container.file",
        "created_at": int(row.created_at.timestamp()),
        "bytes": row.size or 0,
        "container_id": row.container_id,
        "path": row.path or f"/mnt/data/{row.filename}",
        "source": "assistant",
    }


async def _owned_rows(request: Request) -> tuple[str, str]:
    """The caller's tenant and the container id, if the store holds a file of it for them."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    container_id = request.path_params["container_id"]
    if not await svc.meta.list_files(tenant_id, container_id=container_id, limit=1):
        raise container_not_found(container_id)
    return tenant_id, container_id


async def container_files(request: Request) -> Response:
    """``GET /containers/{cid}/files``: pages of the store's rows, as the upstream pages them
    (``order`` desc by default, ``limit`` 1-100, ``after`` an id of the previous page)."""
    svc = services(request)
    tenant_id, container_id = await _owned_rows(request)
    order: Literal["asc", "desc"] = "asc" if request.query_params.get("order") == "asc" else "desc"
    limit, after = page_params(request, default=20, most=100)
    try:
        rows = await svc.meta.list_files(
            tenant_id, container_id=container_id, after=after, limit=limit + 1, order=order
        )
    except NotFoundError:
        rows = []  # an ``after`` the container does not hold: nothing after it
    page = [container_file_json(r) for r in rows[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(rows) > limit,
        }
    )


async def _container_row(request: Request) -> tuple[str, FileRow]:
    """The caller's stored record of one container file, looked up directly by its id."""
    svc = services(request)
    tenant_id, container_id = await _owned_rows(request)
    file_id = request.path_params["file_id"]
    row = await svc.meta.get_file(tenant_id, file_id, container_id=container_id)
    if row is None:
        raise _file_not_found(container_id, file_id)
    return tenant_id, row


async def container_file(request: Request) -> Response:
    """``GET /containers/{cid}/files/{fid}``."""
    _, row = await _container_row(request)
    return JSONResponse(container_file_json(row))


async def container_file_content(request: Request) -> Response:
    """``GET /containers/{cid}/files/{fid}/content``: the stored bytes, after expiry too."""
    tenant_id, row = await _container_row(request)
    svc = services(request)
    return await serve_file(request, svc, row, actor=f"tenant:{tenant_id}", tenant_id=tenant_id)


def openai_file_json(row: FileRow) -> dict[str, Any]:
    """``object: "file"`` as the Files API returns it."""
    return {
        "id": row.upstream_file_id if row.kind == "files_api" else row.id,
        "object": "file",
        "bytes": row.size,
        "created_at": int(row.created_at.timestamp()),
        "filename": row.filename,
        "purpose": "assistants_output",
        "status": "processed" if row.state == "stored" else "uploaded",
        "expires_at": None,
        "status_details": None,
    }


async def openai_file(request: Request) -> Response:
    """``GET /files/{id}`` on the OpenAI paths: seed 002's ``client.files.retrieve(id)``."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    row = await resolve(svc, tenant_id, request.path_params["file_id"])
    return JSONResponse(openai_file_json(row))


async def openai_file_content(request: Request) -> Response:
    """``GET /files/{id}/content`` on the OpenAI paths: ``client.files.content(id)``."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    row = await resolve(svc, tenant_id, request.path_params["file_id"])
    return await serve_file(request, svc, row, actor=f"tenant:{tenant_id}", tenant_id=tenant_id)
