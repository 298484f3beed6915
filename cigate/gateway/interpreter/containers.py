"""The Containers and container-files API for the gateway's own containers (``self`` mode).

Each route answers for containers of the self-hosted interpreter that the caller owns: create
(``POST /containers``, owned by the caller and counted against its cap), list (the caller's
only), retrieve, delete, and the files (list, upload, retrieve, delete, content). A file the
code wrote is served from the store first (:mod:`cigate.gateway.facade`: after expiry too);
uploads and other live files from the container. A container id that is not one of the
interpreter's goes on to the upstream handlers of :mod:`cigate.gateway.scoped` (containers made
before the switch to ``self``); another tenant's container is there, as here, an unknown id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.engine.container_requests import parse_container_create
from cigate.engine.containers import Container, ContainerFile
from cigate.engine.errors import ApiError, BadRequestError, container_file_not_found
from cigate.engine.pagination import page, parse_page_query
from cigate.engine.serving import serve_open_file
from cigate.engine.upload_names import check_upload_name
from cigate.engine.uploads import upload_form
from cigate.gateway import body_refs, facade, scoped
from cigate.gateway.context import Services, services
from cigate.gateway.edge import PREFIXES
from cigate.gateway.errors import container_not_found
from cigate.gateway.interpreter.service import MAX_INPUT_FILE, Interpreter

__all__ = ["routes"]

Handler = Callable[[Request], Awaitable[Response]]
#: Largest multipart upload into a self-hosted container (read here, not relayed).
MAX_UPLOAD = MAX_INPUT_FILE


def routes() -> list[BaseRoute]:
    """The container routes in every URL form; mounted before :func:`scoped.routes`."""
    out: list[BaseRoute] = []
    for p in PREFIXES:
        c = f"{p}/containers/{{container_id}}"
        out += [
            Route(f"{p}/containers", containers_root, methods=["GET", "POST"]),
            Route(c, _local(one_container, scoped.container_other), methods=["GET", "DELETE"]),
            Route(
                f"{c}/files",
                _local(container_files, scoped.container_files),
                methods=["GET", "POST"],
            ),
            Route(
                f"{c}/files/{{file_id}}",
                _local(container_file, scoped.container_file),
                methods=["GET", "DELETE"],
            ),
            Route(
                f"{c}/files/{{file_id}}/content",
                _local(file_content, scoped.container_file_content),
                methods=["GET"],
            ),
        ]
    return out


LocalHandler = Callable[[Request, Services, str, Container], Awaitable[Response]]


def _local(handler: LocalHandler, upstream: Handler) -> Handler:
    """``handler`` for the caller's own self-hosted container, ``upstream`` for other ids."""

    async def route(request: Request) -> Response:
        svc = services(request)
        interpreter = _interpreter(svc)
        tenant_id = await svc.tenants.tenant_id(request)
        container_id = request.path_params["container_id"]
        container = interpreter.container(tenant_id, container_id)
        if container is None:
            if interpreter.knows(container_id):  # another tenant's: unknown, never relayed
                raise container_not_found(container_id)
            return await upstream(request)
        return await handler(request, svc, tenant_id, container)

    route.__name__ = handler.__name__
    return route


def _interpreter(svc: Services) -> Interpreter:
    assert svc.interpreter is not None, "mounted in self mode only"
    return svc.interpreter


async def containers_root(request: Request) -> Response:
    """``POST`` creates a container of the caller's; ``GET`` lists the caller's."""
    svc = services(request)
    interpreter = _interpreter(svc)
    tenant_id = await svc.tenants.tenant_id(request)
    if request.method == "POST":
        interpreter.check_room(tenant_id)
        await body_refs.enforce(svc, tenant_id, request)  # file_ids must be the caller's
        body = await body_refs.json_body(request, svc.settings.max_json_body)
        spec = parse_container_create(body if body is not None else {})
        files = await interpreter.fetch_files(spec.file_ids)
        sources = [(files.get(f).filename, files.read_bytes(f)) for f in spec.file_ids]  # 404
        container = interpreter.containers.create(
            name=spec.name,
            expires_after_minutes=spec.expires_after_minutes,
            memory_limit=spec.memory_limit,
            network_policy=spec.network_policy,
            owner=tenant_id,
        )
        for filename, data in sources:
            interpreter.containers.add_file(container, filename, data, source="user")
        await svc.meta.claim(tenant_id, "container", container.id)
        return JSONResponse(container.to_api())
    query = parse_page_query(request.query_params)
    mine = [c for c in interpreter.containers.list() if c.owner == tenant_id]
    if name := request.query_params.get("name"):
        mine = [c for c in mine if c.name == name]
    return JSONResponse(page(mine, query, key=lambda c: c.id, render=Container.to_api))


async def one_container(
    request: Request, svc: Services, tenant_id: str, container: Container
) -> Response:
    if request.method == "DELETE":
        await _interpreter(svc).containers.delete(container.id)
        return JSONResponse({"id": container.id, "object": "container.deleted", "deleted": True})
    return JSONResponse(container.to_api())


async def container_files(
    request: Request, svc: Services, tenant_id: str, container: Container
) -> Response:
    """Upload into the live container, or list it (the store's rows once it expired)."""
    interpreter = _interpreter(svc)
    backend = interpreter.containers
    if request.method == "POST":
        live = backend.get_live(container.id)
        media = request.headers.get("content-type", "").lower()
        if not media.startswith("multipart/"):  # {"file_id": ...}: a Files-API file of the caller's
            await body_refs.enforce(svc, tenant_id, request)
            body = await body_refs.json_body(request, svc.settings.max_json_body)
            file_id = body.get("file_id") if isinstance(body, dict) else None
            if not isinstance(file_id, str):
                raise BadRequestError(
                    "Missing required parameter: 'file_id'.",
                    param="file_id",
                    code="missing_required_parameter",
                )
            fetched = await interpreter.fetch_files([file_id])
            name, data = fetched.get(file_id).filename, fetched.read_bytes(file_id)
            return JSONResponse(backend.add_file(live, name, data, source="user").to_api())
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_UPLOAD:
            # Parsed here, not streamed upstream: bounded before one byte is spooled.
            raise ApiError(
                413,
                f"An upload into a container must declare its Content-Length and be at most "
                f"{MAX_UPLOAD} bytes.",
                code="file_too_large",
            )
        async with upload_form(request) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadRequestError(
                    "Missing required parameter: 'file'.",
                    param="file",
                    code="missing_required_parameter",
                )
            filename = check_upload_name(upload.filename)
            data = await upload.read()
        return JSONResponse(backend.add_file(live, filename, data, source="user").to_api())
    if container.status != "running":
        return await facade.container_files(request)
    query = parse_page_query(request.query_params)
    files = backend.list_files(backend.get_live(container.id))
    return JSONResponse(page(files, query, key=lambda f: f.id, render=ContainerFile.to_api))


async def _stored(request: Request, svc: Services, tenant_id: str, container: Container) -> bool:
    file_id = request.path_params["file_id"]
    return await svc.meta.get_file(tenant_id, file_id, container_id=container.id) is not None


async def container_file(
    request: Request, svc: Services, tenant_id: str, container: Container
) -> Response:
    backend = _interpreter(svc).containers
    file_id = request.path_params["file_id"]
    if request.method == "DELETE":
        record = backend.delete_file(backend.get_live(container.id), file_id)
        return JSONResponse({"id": record.id, "object": "container.file.deleted", "deleted": True})
    if await _stored(request, svc, tenant_id, container):
        return await facade.container_file(request)
    live = backend.get_live(container.id)
    return JSONResponse(backend.get_file(live, file_id).to_api())


async def file_content(
    request: Request, svc: Services, tenant_id: str, container: Container
) -> Response:
    """The stored bytes (after expiry too), else the live file's, by descriptor."""
    if await _stored(request, svc, tenant_id, container):
        return await facade.container_file_content(request)
    backend = _interpreter(svc).containers
    live = backend.get_live(container.id)
    record = live.files.get(request.path_params["file_id"])
    if record is None:
        raise container_file_not_found(live.id, request.path_params["file_id"])
    return serve_open_file(request, backend.open_file(live, record), record.filename)
