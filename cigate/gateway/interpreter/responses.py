"""``/responses`` answered by the self-hosted interpreter (called from :mod:`cigate.gateway.proxy`).

The proxy has already done what it does for every create: the tenant is known, named
containers, files and ``previous_response_id`` are the caller's. Here the engine runs the
response: a stream follows its event log (the service's event sequence, checked by
:mod:`cigate.engine.conformance`), a plain answer waits for its end, and a later
``GET /responses/{id}`` (also ``?stream=true&starting_after=N``), ``DELETE``, ``cancel`` and
``input_items`` read the same run. Errors are the engine's ``ApiError``s, rendered by the app
in the OpenAI envelope.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cigate.engine.errors import ApiError
from cigate.engine.items import INCLUDE_CODE_OUTPUTS
from cigate.engine.queries import flag_param, include_param, int_param
from cigate.engine.replies import answer_created, stream_events
from cigate.gateway.interpreter.service import Interpreter

__all__ = ["create_response", "handle_api_error", "response_subresource"]


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for the engine's ``ApiError`` (OpenAI envelope)."""
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def create_response(
    interpreter: Interpreter, tasks_spawn: Any, tenant_id: str, body: Any
) -> Response:
    """Run the response in the gateway; stream it, or answer once it is over."""
    run = await interpreter.create(body, tenant_id)
    tasks_spawn(interpreter.settled(run, tenant_id), name=f"cigate-settle-{run.id}")
    return await answer_created(run)


async def response_subresource(request: Request, interpreter: Interpreter) -> Response:
    """Retrieve (also as a replayed stream), delete, cancel, input items of a local response."""
    response_id = request.path_params["response_id"]
    sub = request.path_params.get("sub") or ""
    backend = interpreter.responses
    method = "GET" if request.method == "HEAD" else request.method  # HEAD: GET's headers
    if method == "DELETE" and not sub:
        deleted = await backend.delete(response_id)
        interpreter.tenant_of.pop(response_id, None)
        return JSONResponse(deleted)
    if method == "POST" and sub == "cancel":
        return JSONResponse((await backend.cancel(response_id)).response())
    if method == "GET" and sub == "input_items":
        order = request.query_params.get("order", "desc")
        limit = int_param(request, "limit")
        return JSONResponse(
            backend.input_items(
                response_id,
                after=request.query_params.get("after"),
                limit=20 if limit is None else limit,
                order=order,
            )
        )
    if method == "GET" and not sub:
        run = backend.get(response_id)
        include = include_param(request)
        if flag_param(request, "stream"):
            obfuscate = request.query_params.get("include_obfuscation", "true").lower() != "false"
            starting_after = int_param(request, "starting_after")
            return stream_events(run, starting_after=starting_after, obfuscate=obfuscate)
        return JSONResponse(run.response(include_outputs=INCLUDE_CODE_OUTPUTS in include))
    raise ApiError(404, f"Invalid URL ({request.method} {request.url.path})", code=None)
