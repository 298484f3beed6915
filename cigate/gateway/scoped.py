"""Containers and Files-API files through the gateway, scoped to the tenant that owns them.

The upstream account is shared by every tenant, so each container-scoped or file-scoped call
first checks the owners table (:mod:`cigate.storage.metadata_owners`): a container or file of
another tenant, and one the gateway never saw created or used, answers exactly like an unknown
id (404, the upstream's wording) and never reaches the upstream. Ownership is recorded when a
tenant creates a container (``POST /containers``) or uploads a file (``POST /files``) through
the gateway, when its response uses or creates a container, and when a file of it is harvested.

Which answer comes from where, for an owned container:

* ``GET …/containers/{cid}/files/{fid}`` and ``…/content``: **the store first** (the bytes of
  a harvested file never change, and this keeps working after the container expired), else
  forwarded to the live container (files uploaded by the client, not yet harvested);
* ``GET …/containers/{cid}/files`` (the list): **the live container first** (it includes
  uploads and files not harvested yet), the store when the upstream has no such container
  any more (expired, deleted) or cannot be reached;
* ``GET /containers`` and ``GET /files``: the upstream's listing, filtered to the caller's ids;
* everything else (create, retrieve, delete, uploads): forwarded, streamed both ways.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cigate.exceptions import UpstreamUnavailableError
from cigate.gateway import body_refs, erasure, facade
from cigate.gateway.affinity import destination
from cigate.gateway.context import Services, services
from cigate.gateway.edge import PREFIXES, api_path
from cigate.gateway.errors import container_not_found, not_found
from cigate.gateway.passthrough import ALL_METHODS, has_body, owned_list, relay
from cigate.gateway.upstream import forwardable_headers
from cigate.storage.metadata_owners import OwnedKind

__all__ = ["check_response_containers", "create_and_claim", "routes"]


def routes() -> list[BaseRoute]:
    """Container and Files-API routes in every URL form; mounted before the catch-all."""
    out: list[BaseRoute] = []
    for p in PREFIXES:
        c = f"{p}/containers/{{container_id}}"
        f = f"{p}/files/{{file_id}}"
        out += [
            Route(f"{p}/containers", owned_root("container"), methods=["GET", "POST"]),
            Route(f"{c}/files", container_files, methods=["GET", "POST"]),
            Route(f"{c}/files/{{file_id}}", container_file, methods=["GET", "DELETE"]),
            Route(f"{c}/files/{{file_id}}/content", container_file_content, methods=["GET"]),
            Route(c, container_other, methods=ALL_METHODS),
            Route(f"{c}/{{rest:path}}", container_other, methods=ALL_METHODS),
            Route(f"{p}/files", owned_root("file"), methods=["GET", "POST"]),
            Route(f, files_one, methods=["GET", "DELETE"]),
            Route(f"{f}/content", facade.openai_file_content, methods=["GET"]),
            Route(f"{f}/{{rest:path}}", files_other, methods=ALL_METHODS),
        ]
    return out


async def _owned_container(request: Request) -> tuple[Services, str, str]:
    """The services, the caller's tenant id and the container id, if the caller owns it."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    container_id = request.path_params["container_id"]
    if await svc.meta.owner("container", container_id) != tenant_id:
        raise container_not_found(container_id)
    return svc, tenant_id, container_id


async def create_and_claim(request: Request, kind: OwnedKind) -> Response:
    """Forward a create call (body streamed up) and record the new id for the caller.

    The answer is one small JSON object, read whole so its id can be claimed before the
    client sees it (the client's next call may be about that id).
    """
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await body_refs.enforce(svc, tenant_id, request)
    dest = await destination(svc, request)
    answer = await dest.send(
        "POST",
        api_path(request),
        headers=request.headers,
        params=request.query_params.multi_items(),
        content=request.stream() if has_body(request) else None,
        content_length=request.headers.get("content-length"),
    )
    if answer.status_code == 200:
        try:
            created: Any = answer.json()
        except ValueError:
            created = None
        if isinstance(created, dict) and isinstance(created.get("id"), str):
            await svc.meta.claim(tenant_id, kind, created["id"], dest.upstream.name)
    return Response(
        answer.content, status_code=answer.status_code, headers=forwardable_headers(answer.headers)
    )


def owned_root(kind: OwnedKind) -> Callable[[Request], Awaitable[Response]]:
    """The handler of a collection root (``/containers``, ``/files``, ``/assistants``,
    ``/threads``): ``POST`` creates and claims the new id for the caller, ``GET`` lists only
    the caller's ids."""

    async def root(request: Request) -> Response:
        if request.method == "POST":
            return await create_and_claim(request, kind)
        svc = services(request)
        return await owned_list(svc, request, await svc.tenants.tenant_id(request), kind)

    root.__name__ = f"{kind}s_root"
    return root


async def container_other(request: Request) -> Response:
    """Retrieve, delete, and any other call on an owned container: forwarded."""
    svc, _, _ = await _owned_container(request)
    return await relay(svc, request)


async def container_files(request: Request) -> Response:
    """Upload into an owned container (forwarded), or list it (live first, then the store).

    A JSON upload names a Files-API file to copy in: it must be the caller's."""
    svc, tenant_id, container_id = await _owned_container(request)
    if request.method == "POST":
        await body_refs.enforce(svc, tenant_id, request)
        return await relay(svc, request)
    live: Response | None = None
    unreachable: UpstreamUnavailableError | None = None
    try:
        upstream_live = await (await destination(svc, request)).send(
            "GET",
            api_path(request),
            headers=request.headers,
            params=request.query_params.multi_items(),
        )
        live = Response(
            upstream_live.content,
            status_code=upstream_live.status_code,
            headers=forwardable_headers(upstream_live.headers),
        )
    except UpstreamUnavailableError as exc:
        unreachable = exc
    if live is not None and live.status_code == 200:
        listing = await erasure.without_erased(
            svc.meta, tenant_id, container_id, upstream_live.content
        )
        return Response(listing, headers=forwardable_headers(upstream_live.headers))
    if await svc.meta.list_files(tenant_id, container_id=container_id, limit=1):
        return await facade.container_files(request)
    if unreachable is not None:
        raise unreachable  # which upstream holds the container, and that it is unreachable
    assert live is not None
    return live


async def _stored(request: Request) -> tuple[Services, bool]:
    svc, tenant_id, container_id = await _owned_container(request)
    file_id = request.path_params["file_id"]
    row = await svc.meta.get_file(tenant_id, file_id, container_id=container_id)
    if row is None and request.method in ("GET", "HEAD"):  # an erased file is not relayed
        await erasure.refuse_erased(svc.meta, tenant_id, file_id, container_id)
    return svc, row is not None


async def container_file(request: Request) -> Response:
    """A container file's metadata from the store when harvested, else the live container."""
    svc, stored = await _stored(request)
    if request.method == "GET" and stored:
        return await facade.container_file(request)
    return await relay(svc, request)


async def container_file_content(request: Request) -> Response:
    """A container file's bytes from the store when harvested (after expiry too), else live."""
    svc, stored = await _stored(request)
    if stored:
        return await facade.container_file_content(request)
    return await relay(svc, request)


async def _owned_file(request: Request) -> Services:
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    file_id = request.path_params["file_id"]
    if await svc.meta.owner("file", file_id) != tenant_id:
        raise not_found("file", file_id)
    return svc


async def files_one(request: Request) -> Response:
    """``GET``/``HEAD /files/{id}``: the store's record, else the upstream's for the caller's
    own upload (unchanged: its purpose and status matter to the client), else adoption on
    first use (:func:`cigate.gateway.files.resolve`); ``DELETE`` of the caller's file is
    forwarded."""
    if request.method not in ("GET", "HEAD"):
        return await relay(await _owned_file(request), request)
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    file_id = request.path_params["file_id"]
    unstored = await svc.meta.get_file(tenant_id, file_id) is None
    if unstored and await svc.meta.owner("file", file_id) == tenant_id:
        await erasure.refuse_erased(svc.meta, tenant_id, file_id, None)
        return await relay(svc, request)
    return await facade.openai_file(request)


async def files_other(request: Request) -> Response:
    """Any other call on one Files-API file of the caller: forwarded."""
    return await relay(await _owned_file(request), request)


async def check_response_containers(svc: Services, tenant_id: str, body: Any) -> None:
    """Refuse a Responses request that names another tenant's container; claim unknown ones.

    ``tools: [{"type": "code_interpreter", "container": "cntr_…"}]`` would otherwise run code
    in, and read files of, a container another tenant created. A container nobody owns yet
    (created directly upstream) becomes the caller's, as Files-API ids do on first use.
    ``body`` is the parsed request (see :func:`body_refs.json_body`).
    """
    tools = body.get("tools") if isinstance(body, dict) else None
    for tool in tools if isinstance(tools, list) else []:
        container = tool.get("container") if isinstance(tool, dict) else None
        if not isinstance(container, str) or not container:
            continue  # {"type": "auto"}: the upstream creates one, claimed as it appears
        if await svc.meta.claim(tenant_id, "container", container) != tenant_id:
            raise container_not_found(container)
