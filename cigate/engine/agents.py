"""Foundry agents (v2): named agents with immutable, numbered versions that run on Responses.

azure-ai-projects 2.x ``agents.create_version/get_version/list_versions/delete_version/get/
list/delete`` (foundry-wire 3.1). A version's ``definition`` (``kind: "prompt"``: ``model``,
``instructions``, ``tools`` …) is what ``responses.create(agent_reference=…)`` runs with:
:meth:`AgentStore.resolve` gives the version, :func:`request_defaults` the create parameters.
Every reply is 200 (the SDK refuses 201), and lists page with ``after=<last_id>`` until a page
comes back empty with ``last_id: null`` (azure-core ignores ``has_more``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cigate.clock import Clock
from cigate.engine.errors import ApiError, BadRequestError

__all__ = ["AgentStore", "AgentVersion", "request_defaults"]

#: "alphanumeric at both ends, hyphens allowed in the middle, at most 63 characters".
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
#: Definition fields that become ``responses.create`` parameters when the request lacks them.
_RUN_FIELDS = ("model", "instructions", "tools", "temperature", "top_p", "tool_choice", "text")
_PAGE_MAX = 100


def not_found(message: str) -> ApiError:
    return ApiError(404, message, type="invalid_request_error", code="not_found")


@dataclass
class AgentVersion:
    name: str
    version: str
    definition: dict[str, Any]
    created_at: int
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    def to_api(self) -> dict[str, Any]:
        return {
            "object": "agent.version",
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "status": "active",
            "definition": self.definition,
        }


@dataclass
class _Agent:
    name: str
    versions: list[AgentVersion] = field(default_factory=list)
    #: Versions are never renumbered: the next one is one more than any ever made.
    counter: int = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "object": "agent",
            "id": self.name,
            "name": self.name,
            "state": "enabled",
            "configuration_state": "enabled",
            "versions": {"latest": self.versions[-1].to_api()},
        }


def _check_definition(definition: Any) -> dict[str, Any]:
    if not isinstance(definition, dict):
        raise BadRequestError(
            "Missing required parameter: 'definition'.", param="definition", code="invalid_value"
        )
    kind = definition.get("kind", "prompt")
    if kind != "prompt":
        raise BadRequestError(
            f"Invalid value: '{kind}'. The emulator runs prompt agents only.",
            param="definition.kind",
            code="invalid_value",
        )
    model = definition.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError(
            "Missing required parameter: 'definition.model'.",
            param="definition.model",
            code="missing_required_parameter",
        )
    tools = definition.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequestError(
            "Invalid 'definition.tools': expected an array of objects.",
            param="definition.tools",
            code="invalid_type",
        )
    return {"kind": "prompt", **definition}


def _check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    ok = isinstance(metadata, dict) and len(metadata) <= 16
    if not ok or not all(isinstance(v, str) and len(v) <= 512 for v in metadata.values()):
        raise BadRequestError(
            "Invalid 'metadata': at most 16 string values.", param="metadata", code="invalid_type"
        )
    return dict(metadata)


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """One page in azure-core's terms: ``after`` honoured, ``last_id`` null when empty."""
    try:
        limit = min(max(int(query.get("limit") or 20), 1), _PAGE_MAX)
    except ValueError:
        raise BadRequestError("Invalid 'limit': expected an integer.", param="limit") from None
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequestError(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", param="order"
        )
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > len(data),
    }


class AgentStore:
    """Agents and their versions, in memory (``POST /_emulator/reset`` clears them)."""

    def __init__(self, *, clock: Clock) -> None:
        self.clock = clock
        self._agents: dict[str, _Agent] = {}

    def reset(self) -> None:
        self._agents.clear()

    def _agent(self, name: str) -> _Agent:
        agent = self._agents.get(name)
        if agent is None or not agent.versions:
            raise not_found(f"Agent '{name}' not found.")
        return agent

    def create_version(self, name: str, body: dict[str, Any]) -> AgentVersion:
        if not _NAME.match(name):
            raise BadRequestError(
                f"Invalid agent name '{name}': letters, digits and inner hyphens, "
                "at most 63 characters.",
                param="agent_name",
                code="invalid_value",
            )
        definition = _check_definition(body.get("definition"))
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise BadRequestError("Invalid 'description': expected a string.", param="description")
        agent = self._agents.setdefault(name, _Agent(name))
        agent.counter += 1
        version = AgentVersion(
            name=name,
            version=str(agent.counter),
            definition=definition,
            created_at=self.clock.now_int(),
            description=description,
            metadata=_check_metadata(body.get("metadata")),
        )
        agent.versions.append(version)
        return version

    def get_version(self, name: str, version: str) -> AgentVersion:
        for candidate in self._agent(name).versions:
            if candidate.version == version:
                return candidate
        raise not_found(f"Version '{version}' of agent '{name}' not found.")

    def list_versions(self, name: str, query: dict[str, str]) -> dict[str, Any]:
        return _page([v.to_api() for v in self._agent(name).versions], query)

    def delete_version(self, name: str, version: str) -> dict[str, Any]:
        found = self.get_version(name, version)
        self._agents[name].versions.remove(found)
        return {
            "object": "agent.version.deleted",
            "name": name,
            "version": version,
            "deleted": True,
        }

    def get(self, name: str) -> dict[str, Any]:
        return self._agent(name).to_api()

    def list(self, query: dict[str, str]) -> dict[str, Any]:
        live = [a.to_api() for a in self._agents.values() if a.versions]
        return _page(live, query)

    def delete(self, name: str) -> dict[str, Any]:
        self._agent(name)
        del self._agents[name]
        return {"object": "agent.deleted", "name": name, "deleted": True}

    def resolve(self, reference: Any, param: str) -> AgentVersion:
        """The version an ``agent_reference`` names: its ``version``, else the latest."""
        if not isinstance(reference, dict) or not isinstance(reference.get("name"), str):
            raise BadRequestError(
                f"Invalid '{param}': expected an object with a 'name'.",
                param=param,
                code="invalid_type",
            )
        kind = reference.get("type", "agent_reference")
        if kind not in ("agent_reference", "agent_id"):
            raise BadRequestError(
                f"Invalid value: '{kind}'. Supported values are: 'agent_reference'.",
                param=f"{param}.type",
                code="invalid_value",
            )
        version = reference.get("version")
        if version is None:
            return self._agent(reference["name"]).versions[-1]
        return self.get_version(reference["name"], str(version))


def request_defaults(version: AgentVersion) -> dict[str, Any]:
    """The ``responses.create`` parameters an agent version supplies."""
    return {k: version.definition[k] for k in _RUN_FIELDS if version.definition.get(k) is not None}
