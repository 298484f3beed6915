"""Foundry agents v2 (``/api/projects/{p}/agents…``), tenant-scoped by agent name.

An agent's id is the name its creator chose, and ``responses.create(agent_reference=…)`` runs
its model, instructions and tools (with the container files its definition names), so a name
is its first creator's: creating an agent or a version claims the name, or is refused when
another tenant holds it (409: names are shared by everyone on the upstream project, so two
tenants cannot both have ``MyAgent``); every other call, and a response naming the agent,
needs the caller to own it (the upstream's own "not found" otherwise). File ids inside a
definition are checked like other body references (:mod:`cigate.gateway.body_refs`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cigate.exceptions import BadInputError
from cigate.gateway import body_refs
from cigate.gateway.context import Services, services
from cigate.gateway.edge import PROJECT
from cigate.gateway.errors import UnknownIdError
from cigate.gateway.passthrough import owned_list, relay

__all__ = ["check_response_agent", "routes"]

_METHODS = ["GET", "POST", "DELETE"]


def routes() -> list[BaseRoute]:
    """Agent routes under a project's classic prefix (the only place agents v2 live)."""
    one = f"{PROJECT}/agents/{{agent_name}}"
    return [
        Route(f"{PROJECT}/agents", agents_root, methods=["GET", "POST"]),
        Route(f"{one}/versions", versions_root, methods=["GET", "POST"]),
        Route(one, one_agent, methods=_METHODS),
        Route(f"{one}/{{rest:path}}", one_agent, methods=_METHODS),
    ]


async def _require(svc: Services, tenant_id: str, name: str) -> None:
    if await svc.meta.owner("agent", name) != tenant_id:
        raise UnknownIdError(f"Agent '{name}' not found.")


async def _claim(svc: Services, tenant_id: str, name: str) -> None:
    """The name becomes the caller's, unless another tenant holds it."""
    if await svc.meta.claim(tenant_id, "agent", name) != tenant_id:
        raise BadInputError(
            f"The agent name '{name}' is in use on this gateway; choose another name.",
            status=409,
        )


async def agents_root(request: Request) -> Response:
    """``GET /agents``: the caller's only. ``POST /agents`` (REST): claims ``name``."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    if request.method == "GET":
        return await owned_list(svc, request, tenant_id, "agent")
    body = await body_refs.json_body(request, svc.settings.max_json_body)
    name = body.get("name") if isinstance(body, dict) else None
    if isinstance(name, str) and name:
        await _claim(svc, tenant_id, name)
    await body_refs.enforce(svc, tenant_id, request)
    return await relay(svc, request)


async def versions_root(request: Request) -> Response:
    """``POST …/versions`` claims the name (first use) or needs it; ``GET`` needs it."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    name = request.path_params["agent_name"]
    if request.method == "POST":
        await _claim(svc, tenant_id, name)
        await body_refs.enforce(svc, tenant_id, request)
    else:
        await _require(svc, tenant_id, name)
    return await relay(svc, request)


async def one_agent(request: Request) -> Response:
    """An agent the caller owns: retrieve, update, delete, its versions."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    await _require(svc, tenant_id, request.path_params["agent_name"])
    await body_refs.enforce(svc, tenant_id, request)
    return await relay(svc, request)


async def check_response_agent(svc: Services, tenant_id: str, body: Any) -> None:
    """Refuse ``agent_reference`` (or the preview ``agent``) naming an agent not the caller's."""
    if not isinstance(body, dict):
        return
    for key in ("agent_reference", "agent"):
        reference = body.get(key)
        name = reference.get("name") if isinstance(reference, dict) else None
        if isinstance(name, str):
            await _require(svc, tenant_id, name)
