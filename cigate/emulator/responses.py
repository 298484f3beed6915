"""The Responses resource of the emulator: route table and handlers that only parse and serialise.

State and logic live in ``cigate.engine.store.ResponsesBackend`` (``backends(request).responses``);
the handlers turn HTTP into backend calls and back. Paths are relative to the API base, which the
app mounts under ``/openai/v1``, ``/openai`` and ``/v1``. ``ApiError``s raised here are rendered as
the OpenAI error envelope by the app's one error handler.
"""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cigate.emulator.bodies import json_object
from cigate.emulator.state import backends
from cigate.engine.errors import BadRequestError
from cigate.engine.events import encode_sse
from cigate.engine.items import INCLUDE_CODE_OUTPUTS
from cigate.engine.request import INCLUDABLE
from cigate.engine.store import ResponsesBackend

__all__ = ["ROUTES"]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


_PAD = 16
_PAD_CHARS = string.ascii_letters + string.digits


def _backend(request: Request) -> ResponsesBackend:
    return backends(request).responses


async def create_response(request: Request) -> Response:
    body = await json_object(request)
    run = await _backend(request).create(body)
    req = run.plan.request
    if req.stream:
        return StreamingResponse(
            _sse(run.events.follow_batches(), obfuscate=req.include_obfuscation),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    if not req.background:
        await run.finished.wait()
        if run.failure is not None:
            raise run.failure
    return JSONResponse(run.response())


async def retrieve_response(request: Request) -> Response:
    run = _backend(request).get(request.path_params["response_id"])
    include = _include(request)
    if _flag(request, "stream"):
        starting_after = _int_param(request, "starting_after")
        obfuscate = request.query_params.get("include_obfuscation", "true").lower() != "false"
        return StreamingResponse(
            _sse(run.events.follow_batches(starting_after), obfuscate=obfuscate),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    return JSONResponse(run.response(include_outputs=INCLUDE_CODE_OUTPUTS in include))


async def delete_response(request: Request) -> Response:
    return JSONResponse(await _backend(request).delete(request.path_params["response_id"]))


async def cancel_response(request: Request) -> Response:
    run = await _backend(request).cancel(request.path_params["response_id"])
    return JSONResponse(run.response())


async def list_input_items(request: Request) -> Response:
    _include(request)  # validated; input items carry nothing that include reveals
    order = request.query_params.get("order", "desc")
    limit = _int_param(request, "limit")
    page = _backend(request).input_items(
        request.path_params["response_id"],
        after=request.query_params.get("after"),
        limit=20 if limit is None else limit,
        order=order,
    )
    return JSONResponse(page)


async def _sse(
    batches: AsyncIterator[list[dict[str, Any]]], *, obfuscate: bool
) -> AsyncIterator[bytes]:
    """One write per burst of events that are ready (see ``EventLog.follow_batches``)."""
    async for batch in batches:
        events = [_obfuscated(e) for e in batch] if obfuscate else batch
        yield b"".join(encode_sse(event) for event in events)


def _obfuscated(event: dict[str, Any]) -> dict[str, Any]:
    """A delta event with the service's ``obfuscation`` padding: random characters that bring
    the delta's size to the next multiple of 16, so sizes on the wire tell little about it."""
    delta = event.get("delta")
    if not event["type"].endswith(".delta") or not isinstance(delta, str):
        return event
    size = _PAD - len(delta.encode()) % _PAD
    return {**event, "obfuscation": "".join(random.choices(_PAD_CHARS, k=size))}


def _include(request: Request) -> list[str]:
    """``include[]=a&include[]=b`` as the SDK sends it (plain ``include=`` accepted too)."""
    values = request.query_params.getlist("include[]") + request.query_params.getlist("include")
    for i, value in enumerate(values):
        if value not in INCLUDABLE:
            choices = ", ".join(f"'{a}'" for a in INCLUDABLE)
            raise BadRequestError(
                f"Invalid value: '{value}'. Supported values are: {choices}.",
                param=f"include[{i}]",
                code="invalid_value",
            )
    return values


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequestError(
            f"Invalid type for '{name}': expected an integer, but got a string instead.",
            param=name,
            code="invalid_type",
        ) from exc


ROUTES: list[BaseRoute] = [
    Route("/responses", create_response, methods=["POST"]),
    Route("/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
    Route("/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
