"""Assistants API pass-through, harvesting every ``assistant-…`` file it sees (seed 004 via 002).

``/assistants…``, ``/threads…`` and the Files API's upload and list are relayed unchanged, in the
URL form the client used (``/openai/v1``, ``/v1``, or Azure's dated ``/openai/...?api-version``),
streams chunk by chunk. On the side, every Files-API id the answers cite — ``image_file`` blocks
and ``file_path`` annotations of messages, ``image`` outputs of run steps, in JSON bodies and in
``thread.message.completed`` / ``thread.run.step.completed`` stream events — is recorded for the
caller's tenant (origin ``assistants``, under the run's id so ``/responses/{run_id}/files`` lists
them) and copied into the store like a container file. The gateway's one ``/files/{id}/content``
then serves ``cfile_…`` and ``assistant-…`` ids alike, from the store.

Not done here: threads and assistants themselves are not tenant-scoped (every tenant shares the
upstream's); only harvested files are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cigate.exceptions import CigateError
from cigate.gateway import facade, fetch
from cigate.gateway.context import Services, services
from cigate.gateway.sse import SSESplitter, parse_event
from cigate.gateway.upstream import forwardable_headers
from cigate.refs import RefCollector

__all__ = ["harvest_assistants_body", "routes"]

log = logging.getLogger(__name__)

_LEGACY = "/openai"
_PREFIXES = ("/openai/v1", "/v1", _LEGACY)
#: Stream events whose data may cite files (the ``.completed`` snapshots carry everything).
_CITING_EVENTS = (b"thread.message.completed", b"thread.run.step.completed")


def routes() -> list[BaseRoute]:
    """The pass-through routes, for every URL form; mounted by ``cigate.gateway.app``."""
    out: list[BaseRoute] = []
    for prefix in _PREFIXES:
        out += [
            Route(f"{prefix}/assistants", passthrough, methods=["GET", "POST"]),
            Route(
                f"{prefix}/assistants/{{rest:path}}", passthrough, methods=["GET", "POST", "DELETE"]
            ),
            Route(f"{prefix}/threads", passthrough, methods=["POST"]),
            Route(
                f"{prefix}/threads/{{rest:path}}", passthrough, methods=["GET", "POST", "DELETE"]
            ),
            Route(f"{prefix}/files", passthrough, methods=["GET", "POST"]),
        ]
    # The dated Files endpoints the Azure Assistants docs download with, served from the store.
    out += [
        Route(f"{_LEGACY}/files/{{file_id}}", facade.openai_file, methods=["GET"]),
        Route(
            f"{_LEGACY}/files/{{file_id}}/content",
            facade.openai_file_content,
            methods=["GET", "HEAD"],
        ),
    ]
    return out


def _target(svc: Services, path: str) -> str:
    for prefix in _PREFIXES:
        if path.startswith(prefix + "/"):
            rest = path[len(prefix) + 1 :]
            if prefix == _LEGACY:
                return svc.upstream.legacy_url(rest)
            return svc.upstream.v1_url(rest)
    raise AssertionError(f"not an Assistants path: {path}")  # the routes guarantee a prefix


async def passthrough(request: Request) -> Response:
    """Relay one Assistants/Files call for an authenticated tenant; harvest what it cites."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    upstream_response = await svc.upstream.send(
        request.method,
        _target(svc, request.url.path),
        headers=request.headers,
        params=request.query_params.multi_items(),
        content=(await request.body()) or None,
        stream=True,
    )
    headers = forwardable_headers(upstream_response.headers)
    ok = upstream_response.status_code == 200
    watch = ok and "/threads" in request.url.path
    if upstream_response.headers.get("content-type", "").startswith("text/event-stream"):
        return StreamingResponse(
            _relay(svc, tenant_id, upstream_response, watch=watch),
            status_code=upstream_response.status_code,
            headers=headers,
        )
    try:
        content = await upstream_response.aread()
    finally:
        await upstream_response.aclose()
    if watch:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if body is not None:
            await harvest_assistants_body(svc, tenant_id, body)
    return Response(content, status_code=upstream_response.status_code, headers=headers)


async def _relay(
    svc: Services, tenant_id: str, upstream_response: httpx2.Response, *, watch: bool
) -> AsyncIterator[bytes]:
    splitter = SSESplitter()
    try:
        async for chunk in upstream_response.aiter_bytes():
            yield chunk
            if not watch:
                continue
            for raw in splitter.feed(chunk):
                data = parse_event(raw, _CITING_EVENTS)
                if data is not None:
                    await harvest_assistants_body(svc, tenant_id, data)
    except httpx2.TransportError as exc:  # the headers are gone: all we can do is stop
        log.warning("upstream Assistants stream broke off: %s", exc)
    finally:
        await upstream_response.aclose()


async def harvest_assistants_body(svc: Services, tenant_id: str, body: Any) -> int:
    """Record and start copying every Files-API file cited in ``body``; returns how many.

    Recording is awaited (a client may ask for the file next); copying runs in the background.
    A file another tenant already owns is left alone, as for on-demand adoption.
    """
    collector = RefCollector()
    refs = [r for r in collector.feed(body) if r.source == "assistants"]
    if not refs:
        return 0
    run_ids = {str(rid) for rid in _run_ids(body)}
    run_id = next(iter(run_ids)) if len(run_ids) == 1 else None
    if run_id is not None:
        await svc.meta.record_response(
            tenant_id, run_id, upstream=svc.upstream_name, model=None, container_ids=[]
        )
    count = 0
    for ref in refs:
        if await svc.meta.files_api_owner(ref.file_id) not in (None, tenant_id):
            continue
        row = await svc.meta.upsert_file(
            tenant_id,
            kind="files_api",
            upstream_file_id=ref.file_id,
            container_id=None,
            response_id=run_id,
            filename=await _filename(svc, ref.file_id, ref.filename),
            origin="assistants",
        )
        svc.harvester.start_copy(row)
        count += 1
    return count


async def _filename(svc: Services, file_id: str, cited: str) -> str:
    """The name the upstream gave the file (an ``image_file`` block cites only its id)."""
    if cited != file_id:
        return cited
    try:
        meta = await fetch.files_api_metadata(svc.upstream, file_id)
    except CigateError as exc:
        log.info("no metadata for %s: %s", file_id, exc.message)
        return file_id
    return str(meta.get("filename") or file_id)


def _run_ids(node: Any) -> set[Any]:
    """Every ``run_id`` in a message, step or list of them."""
    if isinstance(node, list):
        return set().union(*(_run_ids(x) for x in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["run_id"]} if isinstance(node.get("run_id"), str) else set()
    for key in ("data",):
        if isinstance(node.get(key), list):
            found |= _run_ids(node[key])
    return found
