"""Foundry's agents (v2) and the Conversations API: routes and thin handlers.

State lives on the Responses backend (``backends(request).responses.agents`` / ``.conversations``),
since responses run with both. The app mounts ``PROJECT_ROUTES`` (agents, ``api-version=v1``)
under ``/api/projects/{project}`` only, and ``ROUTES`` (conversations) wherever Responses is:
the project's ``/openai/v1`` and the resource's prefixes (``cigate.emulator.routing``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.emulator.bodies import json_object
from cigate.emulator.state import backends
from cigate.engine.agents import AgentStore
from cigate.engine.conversations import ConversationStore
from cigate.engine.pagination import parse_page_query

__all__ = ["PROJECT_ROUTES", "ROUTES"]


def _agents(request: Request) -> AgentStore:
    backend = backends(request).responses
    return backend.agents


def _conversations(request: Request) -> ConversationStore:
    backend = backends(request).responses
    return backend.conversations


def _p(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


# -- agents -----------------------------------------------------------------------------------


async def create_agent(request: Request) -> Response:
    """``POST /agents`` (REST only): the agent and its first version."""
    body = await json_object(request)
    name = body.get("name")
    version = _agents(request).create_version(name if isinstance(name, str) else "", body)
    return JSONResponse(_agents(request).get(version.name))


async def list_agents(request: Request) -> Response:
    return JSONResponse(_agents(request).list(dict(request.query_params)))


async def get_agent(request: Request) -> Response:
    return JSONResponse(_agents(request).get(_p(request, "agent_name")))


async def delete_agent(request: Request) -> Response:
    return JSONResponse(_agents(request).delete(_p(request, "agent_name")))


async def create_version(request: Request) -> Response:
    body = await json_object(request)
    return JSONResponse(_agents(request).create_version(_p(request, "agent_name"), body).to_api())


async def list_versions(request: Request) -> Response:
    store = _agents(request)
    return JSONResponse(store.list_versions(_p(request, "agent_name"), dict(request.query_params)))


async def get_version(request: Request) -> Response:
    store = _agents(request)
    return JSONResponse(
        store.get_version(_p(request, "agent_name"), _p(request, "version")).to_api()
    )


async def delete_version(request: Request) -> Response:
    store = _agents(request)
    return JSONResponse(store.delete_version(_p(request, "agent_name"), _p(request, "version")))


# -- conversations ----------------------------------------------------------------------------


async def create_conversation(request: Request) -> Response:
    body = await json_object(request, empty={})
    return JSONResponse(_conversations(request).create(body).to_api())


async def get_conversation(request: Request) -> Response:
    return JSONResponse(_conversations(request).get(_p(request, "conversation_id")).to_api())


async def update_conversation(request: Request) -> Response:
    body = await json_object(request)
    record = _conversations(request).update(_p(request, "conversation_id"), body)
    return JSONResponse(record.to_api())


async def delete_conversation(request: Request) -> Response:
    return JSONResponse(_conversations(request).delete(_p(request, "conversation_id")))


async def create_items(request: Request) -> Response:
    body = await json_object(request)
    return JSONResponse(_conversations(request).add_items(_p(request, "conversation_id"), body))


async def list_items(request: Request) -> Response:
    query = parse_page_query(request.query_params)
    page = _conversations(request).list_items(
        _p(request, "conversation_id"), after=query.after, limit=query.limit, order=query.order
    )
    return JSONResponse(page)


async def get_item(request: Request) -> Response:
    store = _conversations(request)
    return JSONResponse(store.get_item(_p(request, "conversation_id"), _p(request, "item_id")))


async def delete_item(request: Request) -> Response:
    store = _conversations(request)
    record = store.delete_item(_p(request, "conversation_id"), _p(request, "item_id"))
    return JSONResponse(record.to_api())


_A = "/agents/{agent_name}"
_C = "/conversations/{conversation_id}"

PROJECT_ROUTES: list[BaseRoute] = [
    Route("/agents", create_agent, methods=["POST"]),
    Route("/agents", list_agents, methods=["GET"]),
    Route(_A, get_agent, methods=["GET"]),
    Route(_A, delete_agent, methods=["DELETE"]),
    Route(_A + "/versions", create_version, methods=["POST"]),
    Route(_A + "/versions", list_versions, methods=["GET"]),
    Route(_A + "/versions/{version}", get_version, methods=["GET"]),
    Route(_A + "/versions/{version}", delete_version, methods=["DELETE"]),
]
ROUTES: list[BaseRoute] = [
    Route("/conversations", create_conversation, methods=["POST"]),
    Route(_C, get_conversation, methods=["GET"]),
    Route(_C, update_conversation, methods=["POST"]),
    Route(_C, delete_conversation, methods=["DELETE"]),
    Route(_C + "/items", create_items, methods=["POST"]),
    Route(_C + "/items", list_items, methods=["GET"]),
    Route(_C + "/items/{item_id}", get_item, methods=["GET"]),
    Route(_C + "/items/{item_id}", delete_item, methods=["DELETE"]),
]
