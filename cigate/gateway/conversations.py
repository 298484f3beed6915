"""The Conversations API, tenant-scoped: a conversation is its creator's, as a thread is.

A conversation holds every item of every response run in it (inputs, outputs, code and its
results), and ``responses.create(conversation=…)`` appends to it, so another tenant's id must
reach nothing: not the conversation or its items (``/conversations/{id}/…``), and not a
response (:func:`check_response_conversation`). Refusals are the upstream's own words for an
unknown id. Conversations exist on the v1 surfaces only (``/openai/v1``, ``/v1`` and a
Foundry project's ``/openai/v1``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cigate.gateway import body_refs
from cigate.gateway.context import Services, services
from cigate.gateway.edge import V1_PREFIXES
from cigate.gateway.errors import UnknownIdError
from cigate.gateway.passthrough import relay
from cigate.gateway.scoped import owned_root

__all__ = ["check_response_conversation", "routes"]

_METHODS = ["GET", "POST", "DELETE"]


def routes() -> list[BaseRoute]:
    """Conversation routes under every v1 prefix; mounted before the catch-all."""
    out: list[BaseRoute] = []
    for prefix in V1_PREFIXES:
        one = f"{prefix}/conversations/{{conversation_id}}"
        out += [
            Route(f"{prefix}/conversations", owned_root("conversation"), methods=["GET", "POST"]),
            Route(one, one_conversation, methods=_METHODS),
            Route(f"{one}/{{rest:path}}", one_conversation, methods=_METHODS),
        ]
    return out


async def _require(svc: Services, tenant_id: str, conversation_id: str, param: str | None) -> None:
    if await svc.meta.owner("conversation", conversation_id) != tenant_id:
        raise UnknownIdError(f"Conversation with id '{conversation_id}' not found.", param=param)


async def one_conversation(request: Request) -> Response:
    """Retrieve, update, delete a conversation the caller owns, and its items."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await _require(svc, tenant_id, request.path_params["conversation_id"], None)
    await body_refs.enforce(svc, tenant_id, request)
    return await relay(svc, request)


async def check_response_conversation(svc: Services, tenant_id: str, body: Any) -> None:
    """Refuse ``conversation`` (an id or ``{"id": …}``) naming a conversation not the caller's."""
    conversation = body.get("conversation") if isinstance(body, dict) else None
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        await _require(svc, tenant_id, conversation, "conversation")
