"""The Assistants v2 resource of the emulator (api-reference §4.2): routes and thin handlers.

State and logic live in ``cigate.engine.assistants.AssistantsBackend``
(``backends(request).assistants``); handlers parse, call, serialise. The app mounts these routes
under ``/openai/v1``, ``/openai`` (legacy, dated ``api-version`` required, where Azure's REST
examples call the Assistants API) and ``/v1``. ``OpenAI-Beta: assistants=v2`` is required on the
OpenAI-style ``/v1`` prefix, as OpenAI does, and optional on Azure paths, whose documented REST
calls omit it. Run bodies carry ``openai-poll-after-ms`` so the SDK's ``create_and_poll`` polls
quickly instead of every second.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cigate.emulator.bodies import json_object
from cigate.emulator.state import backends
from cigate.engine.assistants import AssistantsBackend
from cigate.engine.assistants.executor import RunExecutor
from cigate.engine.assistants.params import PageQuery
from cigate.engine.errors import BadRequestError
from cigate.engine.pagination import parse_page_query
from cigate.engine.replies import SSE_HEADERS

__all__ = ["POLL_AFTER_MS", "PROJECT_ROUTES", "ROUTES"]

#: What run bodies advertise as the polling interval (the SDK's default is 1000 ms).
POLL_AFTER_MS = 50
_POLL_HEADERS = {"openai-poll-after-ms": str(POLL_AFTER_MS)}
_BETA_MISSING = (
    "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try again "
    "by setting the header 'OpenAI-Beta: assistants=v2'."
)


def _backend(request: Request) -> AssistantsBackend:
    if not request.state.azure:
        beta = request.headers.get("openai-beta", "")
        if "assistants=v2" not in beta.replace(" ", ""):
            raise BadRequestError(_BETA_MISSING)
    return backends(request).assistants


async def _body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    return await json_object(request, empty={} if optional else None)


def _page_query(request: Request) -> PageQuery:
    query = parse_page_query(request.query_params)
    before = request.query_params.get("before") or None
    return PageQuery(after=query.after, before=before, limit=query.limit, order=query.order)


def _p(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


# -- assistants ------------------------------------------------------------------------------


async def create_assistant(request: Request) -> Response:
    backend = _backend(request)
    return JSONResponse(backend.create_assistant(await _body(request)).to_api())


async def list_assistants(request: Request) -> Response:
    return JSONResponse(_backend(request).list_assistants(_page_query(request)))


async def retrieve_assistant(request: Request) -> Response:
    return JSONResponse(_backend(request).get_assistant(_p(request, "assistant_id")).to_api())


async def modify_assistant(request: Request) -> Response:
    backend = _backend(request)
    assistant = backend.modify_assistant(_p(request, "assistant_id"), await _body(request))
    return JSONResponse(assistant.to_api())


async def delete_assistant(request: Request) -> Response:
    return JSONResponse(_backend(request).delete_assistant(_p(request, "assistant_id")))


# -- threads ---------------------------------------------------------------------------------


async def create_thread(request: Request) -> Response:
    backend = _backend(request)
    return JSONResponse(backend.create_thread(await _body(request, optional=True)).to_api())


async def list_threads(request: Request) -> Response:
    return JSONResponse(_backend(request).list_threads(_page_query(request)))


async def retrieve_thread(request: Request) -> Response:
    return JSONResponse(_backend(request).get_thread(_p(request, "thread_id")).to_api())


async def modify_thread(request: Request) -> Response:
    backend = _backend(request)
    thread = backend.modify_thread(_p(request, "thread_id"), await _body(request))
    return JSONResponse(thread.to_api())


async def delete_thread(request: Request) -> Response:
    return JSONResponse(await _backend(request).delete_thread(_p(request, "thread_id")))


# -- messages --------------------------------------------------------------------------------


async def create_message(request: Request) -> Response:
    backend = _backend(request)
    message = backend.create_message(_p(request, "thread_id"), await _body(request))
    return JSONResponse(message.to_api())


async def list_messages(request: Request) -> Response:
    backend = _backend(request)
    run_id = request.query_params.get("run_id") or None
    body = backend.list_messages(_p(request, "thread_id"), _page_query(request), run_id=run_id)
    return JSONResponse(body)


async def retrieve_message(request: Request) -> Response:
    backend = _backend(request)
    message = backend.get_message(_p(request, "thread_id"), _p(request, "message_id"))
    return JSONResponse(message.to_api())


async def modify_message(request: Request) -> Response:
    backend = _backend(request)
    ids = (_p(request, "thread_id"), _p(request, "message_id"))
    return JSONResponse(backend.modify_message(*ids, await _body(request)).to_api())


async def delete_message(request: Request) -> Response:
    backend = _backend(request)
    return JSONResponse(backend.delete_message(_p(request, "thread_id"), _p(request, "message_id")))


# -- runs and steps --------------------------------------------------------------------------


def _run_response(executor: RunExecutor, body: dict[str, Any]) -> Response:
    if body.get("stream"):
        return StreamingResponse(
            executor.log.frames(), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return JSONResponse(executor.run_.to_api(), headers=_POLL_HEADERS)


async def create_run(request: Request) -> Response:
    backend = _backend(request)
    body = await _body(request)
    executor = backend.create_run(_p(request, "thread_id"), body, azure=request.state.azure)
    return _run_response(executor, body)


async def create_thread_and_run(request: Request) -> Response:
    backend = _backend(request)
    body = await _body(request)
    executor = backend.create_thread_and_run(body, azure=request.state.azure)
    return _run_response(executor, body)


async def list_runs(request: Request) -> Response:
    return JSONResponse(_backend(request).list_runs(_p(request, "thread_id"), _page_query(request)))


async def retrieve_run(request: Request) -> Response:
    run = _backend(request).get_run(_p(request, "thread_id"), _p(request, "run_id"))
    return JSONResponse(run.to_api(), headers=_POLL_HEADERS)


async def modify_run(request: Request) -> Response:
    backend = _backend(request)
    ids = (_p(request, "thread_id"), _p(request, "run_id"))
    return JSONResponse(backend.modify_run(*ids, await _body(request)).to_api())


async def cancel_run(request: Request) -> Response:
    backend = _backend(request)
    run = await backend.cancel_run(_p(request, "thread_id"), _p(request, "run_id"))
    return JSONResponse(run.to_api(), headers=_POLL_HEADERS)


async def list_steps(request: Request) -> Response:
    backend = _backend(request)
    ids = (_p(request, "thread_id"), _p(request, "run_id"))
    return JSONResponse(backend.list_steps(*ids, _page_query(request)))


async def retrieve_step(request: Request) -> Response:
    backend = _backend(request)
    ids = (_p(request, "thread_id"), _p(request, "run_id"), _p(request, "step_id"))
    return JSONResponse(backend.get_step(*ids).to_api())


_T = "/threads/{thread_id}"
_R = _T + "/runs/{run_id}"

ROUTES: list[BaseRoute] = [
    Route("/assistants", create_assistant, methods=["POST"]),
    Route("/assistants", list_assistants, methods=["GET"]),
    Route("/assistants/{assistant_id}", retrieve_assistant, methods=["GET"]),
    Route("/assistants/{assistant_id}", modify_assistant, methods=["POST"]),
    Route("/assistants/{assistant_id}", delete_assistant, methods=["DELETE"]),
    Route("/threads", create_thread, methods=["POST"]),
    Route("/threads/runs", create_thread_and_run, methods=["POST"]),
    Route(_T, retrieve_thread, methods=["GET"]),
    Route(_T, modify_thread, methods=["POST"]),
    Route(_T, delete_thread, methods=["DELETE"]),
    Route(_T + "/messages", create_message, methods=["POST"]),
    Route(_T + "/messages", list_messages, methods=["GET"]),
    Route(_T + "/messages/{message_id}", retrieve_message, methods=["GET"]),
    Route(_T + "/messages/{message_id}", modify_message, methods=["POST"]),
    Route(_T + "/messages/{message_id}", delete_message, methods=["DELETE"]),
    Route(_T + "/runs", create_run, methods=["POST"]),
    Route(_T + "/runs", list_runs, methods=["GET"]),
    Route(_R, retrieve_run, methods=["GET"]),
    Route(_R, modify_run, methods=["POST"]),
    Route(_R + "/cancel", cancel_run, methods=["POST"]),
    Route(_R + "/steps", list_steps, methods=["GET"]),
    Route(_R + "/steps/{step_id}", retrieve_step, methods=["GET"]),
]
#: A Foundry project's classic agents surface (azure-ai-agents): the same routes and handlers,
#: and ``GET /threads``, which only Foundry has.
PROJECT_ROUTES: list[BaseRoute] = [Route("/threads", list_threads, methods=["GET"]), *ROUTES]
