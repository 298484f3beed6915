"""The Containers API (api-reference 3): route table and handlers over ``ContainerBackend``.

Handlers only parse and serialise; state, expiry and kernels live in
``cigate.engine.containers.ContainerBackend`` (shared with the gateway's future self-hosted
interpreter). Containers exist only on ``/openai/v1`` and ``/v1``: the legacy ``/openai`` prefix
does not carry these routes.

Expired containers: retrieve and list show ``status: "expired"``; every file endpoint answers
404 (``ContainerBackend.get_live``), as downloads from a gone container do on Azure.

A file whose name the code turned into something else than a regular file (a symlink, a
directory, a FIFO) is not listed and answers 404 ``File … not found on container ….`` on
retrieve and download, exactly as a file the code deleted: to a client, the file is gone.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.emulator.bodies import json_object, upload_form
from cigate.emulator.files import FilesBackend
from cigate.emulator.pagination import page, parse_page_query
from cigate.emulator.serving import serve_open_file
from cigate.emulator.state import backends
from cigate.engine.containers import Container, ContainerBackend, ContainerFile
from cigate.engine.errors import BadRequestError, container_file_not_found
from cigate.engine.upload_names import check_upload_name


def _containers(request: Request) -> ContainerBackend:
    return backends(request).containers


def _files(request: Request) -> FilesBackend:
    return backends(request).files


def _missing(param: str) -> BadRequestError:
    return BadRequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _invalid_type(param: str, expected: str, value: object) -> BadRequestError:
    return BadRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _json_type(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a decimal",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), "a value")


def _expiry_minutes(body: dict[str, Any]) -> int | None:
    expires = body.get("expires_after")
    if expires is None:
        return None
    if not isinstance(expires, dict):
        raise _invalid_type("expires_after", "an object", expires)
    anchor = expires.get("anchor")
    if anchor is None:
        raise _missing("expires_after.anchor")
    if anchor != "last_active_at":
        raise BadRequestError(
            f"Invalid value: '{anchor}'. Supported values are: 'last_active_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    minutes = expires.get("minutes")
    if minutes is None:
        raise _missing("expires_after.minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise _invalid_type("expires_after.minutes", "an integer", minutes)
    if minutes < 1:
        raise BadRequestError(
            "Invalid 'expires_after.minutes': integer below minimum value. "
            f"Expected a value >= 1, but got {minutes} instead.",
            param="expires_after.minutes",
            code="integer_below_min_value",
        )
    return minutes


async def create_container(request: Request) -> Response:
    body = await json_object(request, empty={})
    name = body.get("name")
    if name is None:
        raise _missing("name")
    if not isinstance(name, str):
        raise _invalid_type("name", "a string", name)
    file_ids = body.get("file_ids") or []
    if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
        raise _invalid_type("file_ids", "an array of strings", file_ids)
    memory_limit = body.get("memory_limit")
    if memory_limit is not None and not isinstance(memory_limit, str):
        raise _invalid_type("memory_limit", "a string", memory_limit)
    network_policy = body.get("network_policy")
    if network_policy is not None and not isinstance(network_policy, dict):
        raise _invalid_type("network_policy", "an object", network_policy)
    minutes = _expiry_minutes(body)
    sources = [_files(request).get(fid) for fid in file_ids]  # 404 before anything is created
    backend = _containers(request)
    container = backend.create(
        name=name,
        expires_after_minutes=minutes,
        memory_limit=memory_limit,
        network_policy=network_policy,
    )
    for record in sources:
        backend.add_file(container, record.filename, record.path.read_bytes(), source="user")
    return JSONResponse(container.to_api())


async def list_containers(request: Request) -> Response:
    query = parse_page_query(request.query_params)
    items = _containers(request).list()
    if name := request.query_params.get("name"):
        items = [c for c in items if c.name == name]
    return JSONResponse(page(items, query, key=lambda c: c.id, render=Container.to_api))


async def retrieve_container(request: Request) -> Response:
    container = _containers(request).get(request.path_params["container_id"], allow_expired=True)
    return JSONResponse(container.to_api())


async def delete_container(request: Request) -> Response:
    container = await _containers(request).delete(request.path_params["container_id"])
    return JSONResponse({"id": container.id, "object": "container.deleted", "deleted": True})


def _live(request: Request) -> Container:
    return _containers(request).get_live(request.path_params["container_id"])


async def create_container_file(request: Request) -> Response:
    container = _live(request)
    backend = _containers(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with upload_form(request) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise _missing("file")
            filename = check_upload_name(upload.filename)
            data = await upload.read()
    else:
        body = await json_object(request, empty={})
        file_id = body.get("file_id")
        if file_id is None:
            raise _missing("file_id")
        if not isinstance(file_id, str):
            raise _invalid_type("file_id", "a string", file_id)
        record = _files(request).get(file_id)
        data, filename = record.path.read_bytes(), record.filename
    created = backend.add_file(container, filename, data, source="user")
    return JSONResponse(created.to_api())


async def list_container_files(request: Request) -> Response:
    query = parse_page_query(request.query_params)
    container = _live(request)
    files = _containers(request).list_files(container)
    return JSONResponse(page(files, query, key=lambda f: f.id, render=ContainerFile.to_api))


def _file(request: Request) -> tuple[Container, ContainerFile]:
    container = _live(request)
    record = _containers(request).get_file(container, request.path_params["file_id"])
    return container, record


async def retrieve_container_file(request: Request) -> Response:
    _, record = _file(request)
    return JSONResponse(record.to_api())


async def delete_container_file(request: Request) -> Response:
    container, record = _file(request)
    _containers(request).delete_file(container, record.id)
    return JSONResponse({"id": record.id, "object": "container.file.deleted", "deleted": True})


async def container_file_content(request: Request) -> Response:
    """The bytes of the regular file the record names, from one descriptor (race-free, see
    :mod:`cigate.emulator.serving`); 404 when the name is not a regular file right now."""
    container = _live(request)
    backend = _containers(request)
    record = container.files.get(request.path_params["file_id"])
    if record is None:
        raise container_file_not_found(container.id, request.path_params["file_id"])
    opened = backend.open_file(container, record)
    return serve_open_file(request, opened, record.filename)


ROUTES: list[BaseRoute] = [
    Route("/containers", create_container, methods=["POST"], name="containers.create"),
    Route("/containers", list_containers, methods=["GET"], name="containers.list"),
    Route(
        "/containers/{container_id}",
        retrieve_container,
        methods=["GET"],
        name="containers.retrieve",
    ),
    Route(
        "/containers/{container_id}", delete_container, methods=["DELETE"], name="containers.delete"
    ),
    Route(
        "/containers/{container_id}/files",
        create_container_file,
        methods=["POST"],
        name="containers.files.create",
    ),
    Route(
        "/containers/{container_id}/files",
        list_container_files,
        methods=["GET"],
        name="containers.files.list",
    ),
    Route(
        "/containers/{container_id}/files/{file_id}",
        retrieve_container_file,
        methods=["GET"],
        name="containers.files.retrieve",
    ),
    Route(
        "/containers/{container_id}/files/{file_id}",
        delete_container_file,
        methods=["DELETE"],
        name="containers.files.delete",
    ),
    Route(
        "/containers/{container_id}/files/{file_id}/content",
        container_file_content,
        methods=["GET"],
        name="containers.files.content",
    ),
]
