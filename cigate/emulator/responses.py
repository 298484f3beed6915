"""The Responses resource of the emulator: route table and handlers that only parse and serialise.

State and logic live in ``cigate.engine.store.ResponsesBackend`` (``backends(request).responses``);
the handlers turn HTTP into backend calls and back. Paths are relative to the API base, which the
app mounts under ``/openai/v1``, ``/openai`` and ``/v1``. ``ApiError``s raised here are rendered as
the OpenAI error envelope by the app's one error handler.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.emulator.bodies import json_object
from cigate.emulator.state import backends
from cigate.engine.items import INCLUDE_CODE_OUTPUTS
from cigate.engine.queries import flag_param, include_param, int_param
from cigate.engine.replies import answer_created, stream_events
from cigate.engine.store import ResponsesBackend

__all__ = ["ROUTES"]


def _backend(request: Request) -> ResponsesBackend:
    return backends(request).responses


async def create_response(request: Request) -> Response:
    body = await json_object(request)
    run = await _backend(request).create(body)
    return await answer_created(run)


async def retrieve_response(request: Request) -> Response:
    run = _backend(request).get(request.path_params["response_id"])
    include = include_param(request)
    if flag_param(request, "stream"):
        starting_after = int_param(request, "starting_after")
        obfuscate = request.query_params.get("include_obfuscation", "true").lower() != "false"
        return stream_events(run, starting_after=starting_after, obfuscate=obfuscate)
    return JSONResponse(run.response(include_outputs=INCLUDE_CODE_OUTPUTS in include))


async def delete_response(request: Request) -> Response:
    return JSONResponse(await _backend(request).delete(request.path_params["response_id"]))


async def cancel_response(request: Request) -> Response:
    run = await _backend(request).cancel(request.path_params["response_id"])
    return JSONResponse(run.response())


async def list_input_items(request: Request) -> Response:
    include_param(request)  # validated; input items carry nothing that include reveals
    order = request.query_params.get("order", "desc")
    limit = int_param(request, "limit")
    page = _backend(request).input_items(
        request.path_params["response_id"],
        after=request.query_params.get("after"),
        limit=20 if limit is None else limit,
        order=order,
    )
    return JSONResponse(page)


ROUTES: list[BaseRoute] = [
    Route("/responses", create_response, methods=["POST"]),
    Route("/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
    Route("/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
