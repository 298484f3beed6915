"""Assistants API pass-through, harvesting every ``assistant-…`` file it sees (seed 004 via 002).

``/assistants…`` and ``/threads…`` are relayed unchanged (the Files API is
:mod:`cigate.gateway.scoped`'s), in the URL form the client used (``/openai/v1``, ``/v1``, or
Azure's dated ``/openai/...?api-version``), streams chunk by chunk. On the side, every Files-API id
the answers cite — ``image_file`` blocks and ``file_path`` annotations of messages, ``image``
outputs of run steps, in JSON bodies and in ``thread.message.completed`` /
``thread.run.step.completed`` stream events — is recorded for the caller's tenant (origin
``assistants``, under the run's id so ``/responses/{run_id}/files`` lists them) and copied into the
store like a container file. The gateway's one ``/files/{id}/content`` then serves ``cfile_…`` and
``assistant-…`` ids alike, from the store.

Assistants and threads are tenant-scoped like containers (:mod:`cigate.gateway.scoped`): the
tenant that creates one through the gateway (``POST /assistants``, ``POST /threads``, ``POST
/threads/runs``) owns it, and every path under ``/assistants/{id}`` and ``/threads/{id}/…``
(messages, runs, run steps, cancel, tool outputs) checks the owners table *before* the upstream
is contacted. Another tenant's id, and one the gateway never saw created, get the upstream's own
404 for an unknown id. A run naming an assistant the caller does not own is refused the same
way, and ``GET /assistants`` lists only the caller's. Messages, runs and steps need no owner rows:
each is reachable only through its thread, and the upstream checks they belong to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx2
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cigate.exceptions import UpstreamUnavailableError
from cigate.gateway import body_refs
from cigate.gateway.affinity import destination
from cigate.gateway.context import Services, services
from cigate.gateway.edge import PREFIXES, api_path
from cigate.gateway.errors import UnknownIdError
from cigate.gateway.scoped import owned_root
from cigate.gateway.upstream import forwardable_headers
from cigate.harvest.sse import SSESplitter, parse_event
from cigate.storage.metadata_owners import OwnedKind

__all__ = ["routes"]

log = logging.getLogger(__name__)

#: Stream events whose data may cite files (the ``.completed`` snapshots carry everything).
_CITING_EVENTS = (b"thread.message.completed", b"thread.run.step.completed")
#: Byte markers of the stream events that name the thread ``POST /threads/runs`` created.
_THREAD_EVENTS = (b'"thread_id"', b"thread.created")
_METHODS = ["GET", "POST", "DELETE"]


def routes() -> list[BaseRoute]:
    """The pass-through routes, for every URL form; mounted by ``cigate.gateway.app``."""
    out: list[BaseRoute] = []
    for prefix in PREFIXES:
        assistant = f"{prefix}/assistants/{{assistant_id}}"
        thread = f"{prefix}/threads/{{thread_id}}"
        out += [
            Route(f"{prefix}/assistants", owned_root("assistant"), methods=["GET", "POST"]),
            Route(assistant, one_assistant, methods=_METHODS),
            Route(f"{assistant}/{{rest:path}}", one_assistant, methods=_METHODS),
            Route(f"{prefix}/threads", owned_root("thread"), methods=["GET", "POST"]),
            # Before ``threads/{thread_id}``, which would read "runs" as a thread id.
            Route(f"{prefix}/threads/runs", create_thread_and_run, methods=["POST"]),
            Route(thread, in_thread, methods=_METHODS),
            Route(f"{thread}/{{rest:path}}", in_thread, methods=_METHODS),
        ]
    # The Files API (uploads, lists, the dated download endpoints of the Azure Assistants docs)
    # is served by cigate.gateway.scoped, mounted before these routes.
    return out


async def _require(
    svc: Services, tenant_id: str, kind: OwnedKind, object_id: str, *, param: str | None = None
) -> None:
    """Raise the upstream's unknown-id 404 unless the caller owns ``object_id``."""
    if await svc.meta.owner(kind, object_id) != tenant_id:
        raise UnknownIdError(f"No {kind} found with id '{object_id}'.", param=param)


async def _require_run_assistant(svc: Services, tenant_id: str, request: Request) -> None:
    """A run names its assistant in the body: another tenant's is refused like an unknown one.

    A body that is not strict JSON is the gateway's 400 (:func:`body_refs.json_body`); one
    without a string ``assistant_id`` goes up unchanged: the upstream answers it in its own
    words (400), and no assistant of anyone is used.
    """
    body = await body_refs.json_body(request, svc.settings.max_json_body)
    assistant_id = body.get("assistant_id") if isinstance(body, dict) else None
    if isinstance(assistant_id, str):
        await _require(svc, tenant_id, "assistant", assistant_id, param="assistant_id")


async def one_assistant(request: Request) -> Response:
    """Retrieve, modify, delete (and any sub-path of) an assistant the caller owns."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await _require(svc, tenant_id, "assistant", request.path_params["assistant_id"])
    return await passthrough(request)


async def create_thread_and_run(request: Request) -> Response:
    """``POST /threads/runs``: the caller's assistant only; the new thread becomes theirs."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await _require_run_assistant(svc, tenant_id, request)
    return await passthrough(request, claim_thread=True)


async def in_thread(request: Request) -> Response:
    """Every path under a thread the caller owns; a new run must use the caller's assistant."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await _require(svc, tenant_id, "thread", request.path_params["thread_id"])
    if request.method == "POST" and request.path_params.get("rest") == "runs":
        await _require_run_assistant(svc, tenant_id, request)
    return await passthrough(request)


async def passthrough(request: Request, *, claim_thread: bool = False) -> Response:
    """Relay one Assistants/Files call for an authenticated tenant; harvest what it cites.

    With ``claim_thread`` (``POST /threads/runs``) the thread the upstream created is recorded
    as the caller's before the client can read its id, in a JSON run and in a stream alike.
    """
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await body_refs.enforce(svc, tenant_id, request)  # file ids in tool_resources, attachments
    dest = await destination(svc, request)
    upstream_response = await dest.send(
        request.method,
        api_path(request),
        headers=request.headers,
        params=request.query_params.multi_items(),
        content=(await body_refs.read_capped(request, svc.settings.max_json_body)) or None,
        stream=True,
    )
    headers = forwardable_headers(upstream_response.headers)
    ok = upstream_response.status_code == 200
    watch = ok and api_path(request).family == "threads"
    claim_thread = claim_thread and ok
    if upstream_response.headers.get("content-type", "").startswith("text/event-stream"):
        return StreamingResponse(
            _relay(
                svc,
                tenant_id,
                upstream_response,
                dest.upstream.name,
                watch=watch,
                claim_thread=claim_thread,
            ),
            status_code=upstream_response.status_code,
            headers=headers,
            background=BackgroundTask(upstream_response.aclose),
        )
    content = await dest.upstream.read(upstream_response)
    if watch:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if claim_thread and (thread_id := _thread_id(body)):
            await svc.meta.claim(tenant_id, "thread", thread_id, dest.upstream.name)
        if body is not None:
            await svc.recorder.record_assistants(tenant_id, body, dest.upstream.name)
    return Response(content, status_code=upstream_response.status_code, headers=headers)


def _thread_id(data: Any) -> str | None:
    """The thread a run, a run event or a ``thread.created`` event belongs to."""
    if not isinstance(data, dict):
        return None
    if data.get("object") == "thread" and isinstance(data.get("id"), str):
        return cast(str, data["id"])
    return data["thread_id"] if isinstance(data.get("thread_id"), str) else None


async def _relay(
    svc: Services,
    tenant_id: str,
    upstream_response: httpx2.Response,
    upstream: str,
    *,
    watch: bool,
    claim_thread: bool = False,
) -> AsyncIterator[bytes]:
    """Chunks as they arrive. The thread's claim is awaited (before the id reaches the
    client); the files an event cites are recorded off the relay loop, and only the end of the
    stream waits for them (a client that read it to its end may ask for a file at once)."""
    splitter = SSESplitter()
    recording: list[asyncio.Task[int]] = []
    try:
        async for chunk in upstream_response.aiter_bytes():
            events = list(splitter.feed(chunk)) if watch or claim_thread else []
            # The claim is awaited before the chunk that completes the first event naming the
            # thread goes out: the client cannot use the id before it is the caller's.
            for raw in events if claim_thread else ():
                if thread_id := _thread_id(parse_event(raw, _THREAD_EVENTS)):
                    await svc.meta.claim(tenant_id, "thread", thread_id, upstream)
                    claim_thread = False
                    break
            yield chunk
            for raw in events if watch else ():
                data = parse_event(raw, _CITING_EVENTS)
                if data is not None:
                    recording.append(
                        svc.tasks.spawn(
                            svc.recorder.record_assistants(tenant_id, data, upstream),
                            name="cigate-assistants-files",
                        )
                    )
        if recording:
            await asyncio.gather(*(asyncio.shield(t) for t in recording), return_exceptions=True)
    except httpx2.TransportError as exc:  # broken off for the client too, never a clean end
        log.warning("upstream Assistants stream broke off: %s", exc)
        raise UpstreamUnavailableError(f"the upstream stream broke off: {exc}") from exc
    finally:
        await upstream_response.aclose()
