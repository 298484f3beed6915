"""Generic pass-through: every other OpenAI call, streamed both ways with the gateway's credential.

Anything under ``/openai/v1/…``, ``/v1/…`` or the legacy ``/openai/…`` (its ``api-version`` kept
in the query) that no other route answers comes here, and is relayed for an authenticated caller
if :mod:`cigate.gateway.tenancy` classifies it as stateless or allowed: the request body goes up
as it arrives (multipart uploads are never buffered), the answer comes down chunk by chunk with
its status, body and headers unchanged (hop-by-hop headers removed), and the upstream response
is always closed, also when the client goes away (STYLE rule 4).

It also holds two helpers the scoped routes share: :func:`owned_list`, a listing filtered to
the caller's own containers or files, and :func:`not_found_route`, the OpenAI-shaped answer for
a path outside the API prefixes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cigate.exceptions import BadInputError, UpstreamUnavailableError
from cigate.gateway.affinity import Destination, destination
from cigate.gateway.context import Services, services
from cigate.gateway.edge import PREFIXES, api_path
from cigate.gateway.errors import error_response
from cigate.gateway.tenancy import CATCH_ALL, require_forwardable
from cigate.gateway.upstream import forwardable_headers
from cigate.storage.metadata_owners import OwnedKind

__all__ = [
    "ALL_METHODS",
    "catch_all_routes",
    "has_body",
    "not_found_route",
    "owned_list",
    "relay",
]

log = logging.getLogger(__name__)

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # HEAD comes with GET
#: Upstream pages a filtered listing reads at most before it answers ``has_more: true``.
MAX_LIST_PAGES = 20


def has_body(request: Request) -> bool:
    """Whether the client sends a body (a GET must not go up with a chunked empty one)."""
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


async def relay(svc: Services, request: Request) -> Response:
    """Forward the request as it streams in; stream the upstream's answer back unchanged.

    It goes where :func:`cigate.gateway.affinity.destination` says: the upstream of the
    objects it names (the same canonical segments, in the URL form the client used)."""
    dest = await destination(svc, request)
    upstream_response = await dest.send(
        request.method,
        api_path(request),
        headers=request.headers,
        params=request.query_params.multi_items(),
        content=request.stream() if has_body(request) else None,
        content_length=request.headers.get("content-length"),
        stream=True,
    )
    return StreamingResponse(
        _chunks(upstream_response),
        status_code=upstream_response.status_code,
        headers=forwardable_headers(upstream_response.headers),
        # Runs also when the client disconnected before the body started (aclose is idempotent).
        background=BackgroundTask(upstream_response.aclose),
    )


async def _chunks(upstream_response: httpx2.Response) -> AsyncIterator[bytes]:
    """The body as it arrives. One the upstream breaks off is broken off for the client too
    (the connection is aborted): the headers are gone, and a clean end would pass a cut-off
    body (a download, a stream) for a whole one."""
    try:
        async for chunk in upstream_response.aiter_bytes():
            yield chunk
    except httpx2.TransportError as exc:
        log.warning("upstream body broke off: %s", exc)
        raise UpstreamUnavailableError(f"the upstream body broke off: {exc}") from exc
    finally:
        await upstream_response.aclose()


async def forward_any(request: Request) -> Response:
    """Catch-all for the API prefixes: a call no specific route takes, classified first.

    Only a stateless call, or one of a family the operator allowed unscoped, is relayed; a
    scoped family's unrouted call is a 404 and anything else a 403 naming the setting
    (:func:`cigate.gateway.tenancy.require_forwardable`). Nothing refused reaches the upstream.
    """
    svc = services(request)
    await svc.tenants.tenant_id(request)
    require_forwardable(request.method, api_path(request), svc.settings.allowed_unscoped)
    return await relay(svc, request)


def catch_all_routes() -> list[BaseRoute]:
    """Mounted last, so every specific (scoped, harvesting, store-backed) route wins."""
    return [Route(f"{prefix}/{CATCH_ALL}", forward_any, methods=ALL_METHODS) for prefix in PREFIXES]


async def owned_list(svc: Services, request: Request, tenant_id: str, kind: OwnedKind) -> Response:
    """An upstream listing (``GET /containers``, ``GET /files``) with only the caller's items.

    The upstream account is shared by every tenant, so its pages are read with ``limit=100``
    from the client's ``after`` on and filtered through the owners table until the client's
    ``limit`` is filled; ``has_more``, ``first_id`` and ``last_id`` describe the filtered page,
    so the SDK's auto-pagination (``after=last_id``) continues where this page stopped.

    With several upstreams the listing is each upstream's in turn, in configured order: an
    ``after`` id continues in the upstream that holds it, then the ones after it.
    """
    params = dict(request.query_params)
    try:
        limit = max(1, min(100, int(params.pop("limit", "20"))))
    except ValueError as exc:
        raise BadInputError("limit must be an integer between 1 and 100.") from exc
    after = params.pop("after", None)
    api = api_path(request)
    members = list(svc.pool.members.values())
    if after is not None and svc.pool.several:
        found = await svc.meta.placements([(kind, after)])
        start = svc.pool.holder(found.get((kind, after)), f"{kind} '{after[:200]}'")
        members = members[members.index(start) :]
    collected: list[dict[str, Any]] = []
    upstream_more = False
    for n, upstream in enumerate(members):
        if n:
            after = None  # the next upstream's listing from its start
        for _ in range(MAX_LIST_PAGES):
            query = {**params, "limit": "100", **({"after": after} if after else {})}
            dest = Destination(svc.pool, [upstream], pinned_by=f"{kind} listings")
            answer = await dest.send("GET", api, headers=request.headers, params=query)
            if answer.status_code != 200:
                return Response(
                    answer.content,
                    status_code=answer.status_code,
                    headers=forwardable_headers(answer.headers),
                )
            try:
                page = answer.json()
            except ValueError as exc:
                raise UpstreamUnavailableError(
                    "the upstream sent a listing that is not JSON"
                ) from exc
            data = [
                item
                for item in (page.get("data") if isinstance(page, dict) else None) or []
                if isinstance(item, dict) and isinstance(item.get("id"), str)
            ]
            mine = await svc.meta.owned_among(tenant_id, kind, [item["id"] for item in data])
            if kind == "file" and mine:  # Files-API files the tenant erased are not named
                mine -= await svc.meta.erased_among(tenant_id, None, sorted(mine))
            collected += [item for item in data if item["id"] in mine]
            upstream_more = bool(data) and page.get("has_more") is not False
            if len(collected) > limit or not upstream_more:
                break
            after = data[-1]["id"]
        if len(collected) > limit or upstream_more:
            break
        upstream_more = n < len(members) - 1  # the next upstreams may hold more
    items = collected[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": len(collected) > limit or upstream_more,
        }
    )


async def not_found_route(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 for paths no route serves, in the OpenAI error envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    elif exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(exc.detail)
    return error_response(
        exc.status_code,
        message,
        type_="invalid_request_error",
        code=None,
        headers=dict(exc.headers or {}),
    )
