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

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.emulator.bodies import json_object, upload_form
from cigate.emulator.files import FilesBackend
from cigate.emulator.state import backends
from cigate.engine.container_requests import (
    invalid_type,
    missing_parameter,
    parse_container_create,
)
from cigate.engine.containers import Container, ContainerBackend, ContainerFile
from cigate.engine.errors import container_file_not_found
from cigate.engine.pagination import page, parse_page_query
from cigate.engine.serving import serve_open_file
from cigate.engine.upload_names import check_upload_name


def _containers(request: Request) -> ContainerBackend:
    return backends(request).containers


def _files(request: Request) -> FilesBackend:
    return backends(request).files


async def create_container(request: Request) -> Response:
    spec = parse_container_create(await json_object(request, empty={}))
    sources = [_files(request).get(fid) for fid in spec.file_ids]  # 404 before anything is made
    backend = _containers(request)
    container = backend.create(
        name=spec.name,
        expires_after_minutes=spec.expires_after_minutes,
        memory_limit=spec.memory_limit,
        network_policy=spec.network_policy,
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
                raise missing_parameter("file")
            filename = check_upload_name(upload.filename)
            data = await upload.read()
    else:
        body = await json_object(request, empty={})
        file_id = body.get("file_id")
        if file_id is None:
            raise missing_parameter("file_id")
        if not isinstance(file_id, str):
            raise invalid_type("file_id", "a string", file_id)
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
    :mod:`cigate.engine.serving`); 404 when the name is not a regular file right now."""
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
