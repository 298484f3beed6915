"""Pass-through of the Responses API: the client's request in, the upstream's answer out.

Bodies are relayed unchanged. An SSE body is forwarded chunk by chunk as it arrives (never
buffered) and each chunk is shown to a :class:`~cigate.gateway.tap.ResponseTap` only *after* it
was handed to the client; a plain JSON body is forwarded as it came. Either way what the answer
shows of the response is one :class:`~cigate.gateway.recorder.Sighting`, written and concluded
by the recorder in the background. Upstream error answers keep their status and body; failures
to reach the upstream become 502/504 in :meth:`~cigate.gateway.upstream.Upstream.send`. The
upstream response is always closed, also when the client goes away mid-stream (STYLE rule 4).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cigate.exceptions import UpstreamUnavailableError
from cigate.gateway import agents, body_refs, conversations, metrics, rewrite, scoped
from cigate.gateway.affinity import destination
from cigate.gateway.context import Services, services
from cigate.gateway.edge import api_path
from cigate.gateway.errors import UnknownIdError, not_found
from cigate.gateway.interpreter import responses as interpreter_responses
from cigate.gateway.recorder import Keeper, Sighting
from cigate.gateway.tap import ResponseTap
from cigate.gateway.upstream import forwardable_headers

__all__ = ["check_previous_response", "create_response", "forward", "response_subresource"]

log = logging.getLogger(__name__)


async def create_response(request: Request) -> Response:
    """``POST /responses`` in any URL form: forward, relay, harvest."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    body = await body_refs.json_body(request, svc.settings.max_json_body)
    await scoped.check_response_containers(svc, tenant_id, body)
    await check_previous_response(svc, tenant_id, body)
    await conversations.check_response_conversation(svc, tenant_id, body)
    await agents.check_response_agent(svc, tenant_id, body)
    await body_refs.enforce(svc, tenant_id, request)
    if svc.interpreter is not None and (
        svc.interpreter.handles(body) or svc.interpreter.owns(tenant_id, _previous_id(body))
    ):
        return await interpreter_responses.create_response(
            svc.interpreter, svc.tasks.spawn, tenant_id, body
        )
    return await forward(svc, request, tenant_id, harvest=True)


def _previous_id(body: Any) -> str:
    previous = body.get("previous_response_id") if isinstance(body, dict) else None
    return previous if isinstance(previous, str) else ""


async def check_previous_response(svc: Services, tenant_id: str, body: Any) -> None:
    """Refuse ``previous_response_id`` naming a response that is not the caller's.

    The upstream would otherwise continue another tenant's conversation (its input, output and
    container) for the caller. The answer is the upstream's own for an unknown response id.
    ``body`` is the parsed request (see :func:`body_refs.json_body`).
    """
    previous = body.get("previous_response_id") if isinstance(body, dict) else None
    if isinstance(previous, str) and await svc.meta.get_response(tenant_id, previous) is None:
        raise UnknownIdError(
            f"Previous response with id '{previous}' not found.", param="previous_response_id"
        )


async def response_subresource(request: Request) -> Response:
    """``GET``/``DELETE /responses/{id}`` and its sub-paths, for the tenant that owns it."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    response_id = request.path_params["response_id"]
    if await svc.meta.get_response(tenant_id, response_id) is None:
        raise not_found("response", response_id)
    if svc.interpreter is not None and svc.interpreter.owns(tenant_id, response_id):
        return await interpreter_responses.response_subresource(request, svc.interpreter)
    replay = request.method == "GET" and not request.path_params.get("sub")
    return await forward(svc, request, tenant_id, harvest=replay)


async def forward(svc: Services, request: Request, tenant_id: str, *, harvest: bool) -> Response:
    """Send the client's request upstream with the gateway's credential and relay the answer.

    The upstream is the one holding what the request names, or a healthy one for a new
    response (:mod:`cigate.gateway.affinity`); the sighting records which one it was."""
    body = await body_refs.read_capped(request, svc.settings.max_json_body)
    dest = await destination(svc, request)
    upstream_response = await dest.send(
        request.method,
        api_path(request),
        headers=request.headers,
        params=request.query_params.multi_items(),
        content=body or None,
        stream=True,
    )
    headers = forwardable_headers(upstream_response.headers)
    content_type = upstream_response.headers.get("content-type", "")
    ok = upstream_response.status_code == 200
    if content_type.startswith("text/event-stream"):
        sighting = Sighting(tenant_id, dest.upstream.name) if harvest and ok else None
        rewriter = (
            rewrite.StreamRewriter(svc.public_base(request))
            if sighting is not None and svc.settings.rewrite_links
            else None
        )
        keeper = svc.recorder.keep(sighting) if sighting is not None else None
        return StreamingResponse(
            _relay(upstream_response, keeper, rewriter),
            status_code=upstream_response.status_code,
            headers=headers,
            # Runs also when the client left before the body started (the relay never ran).
            background=BackgroundTask(_close, upstream_response, sighting),
        )
    content = await dest.upstream.read(upstream_response)
    if harvest and ok:
        content = await _harvest_plain(svc, request, tenant_id, content, dest.upstream.name)
    return Response(content, status_code=upstream_response.status_code, headers=headers)


#: Bytes the relay holds back at most while it waits for the stream's first event.
_FIRST_EVENT_CAP = 1024 * 1024


async def _relay(
    upstream_response: httpx2.Response,
    keeper: Keeper | None,
    rewriter: rewrite.StreamRewriter | None = None,
) -> AsyncIterator[bytes]:
    """Chunks as they arrive; with ``rewriter``, whole events with their links rewritten (the
    tap always sees the upstream's own bytes).

    The first event (``response.created``) is held back until the response is recorded: a
    client that holds a response id can always find it in the store, also if this process
    dies at once. An upstream that breaks the stream off breaks the client's stream off too
    (the connection is aborted): never a clean end without ``response.completed``.
    """
    tap = ResponseTap(keeper.sighting) if keeper is not None else None
    held: list[bytes] | None = [] if keeper is not None else None
    try:
        async for chunk in upstream_response.aiter_bytes():
            if held is not None and tap is not None and keeper is not None:
                tap.feed(chunk)
                held.append(chunk)
                if not tap.events and sum(map(len, held)) < _FIRST_EVENT_CAP:
                    continue
                await keeper.flush()  # the response row, before its first byte goes out
                first, held = b"".join(held), None
                if out := _out(first, rewriter):
                    yield out
                continue
            if out := _out(chunk, rewriter):
                yield out
            if tap is not None:
                tap.feed(chunk)
        if held and (out := _out(b"".join(held), rewriter)):
            yield out
        if rewriter is not None and (rest := rewriter.flush()):
            yield rest
        if tap is not None and keeper is not None:
            # A client that read the stream to its end can use the ids at once
            # (``previous_response_id``, ``GET /responses/{id}``, a rewritten link).
            tap.flush()
            await keeper.flush()
    except httpx2.TransportError as exc:
        log.warning("upstream stream broke off: %s", exc)
        raise UpstreamUnavailableError(f"the upstream stream broke off: {exc}") from exc
    finally:
        await upstream_response.aclose()
        if tap is not None:
            metrics.SSE_EVENTS.inc(tap.events)
            tap.sighting.end()


def _out(chunk: bytes, rewriter: rewrite.StreamRewriter | None) -> bytes:
    return chunk if rewriter is None else rewriter.feed(chunk)


async def _close(upstream_response: httpx2.Response, sighting: Sighting | None) -> None:
    """Close the upstream stream and end the sighting; both are idempotent."""
    await upstream_response.aclose()
    if sighting is not None:
        sighting.end()


async def _harvest_plain(
    svc: Services, request: Request, tenant_id: str, content: bytes, upstream: str
) -> bytes:
    """Record the response and its citations (awaited: the client may ask for them next);
    the rest of the harvest runs in the background."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        return content
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return content
    sighting = Sighting(tenant_id, upstream)
    sighting.see_response(body)
    sighting.end()
    await svc.recorder.keep(sighting).flush()
    if svc.settings.rewrite_links:
        return rewrite.rewrite_body(body, svc.public_base(request))
    return content
