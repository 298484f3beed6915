"""``POST /containers`` bodies, checked with the service's 400s (the emulator, the gateway)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cigate.engine.errors import BadRequestError

__all__ = ["ContainerCreate", "invalid_type", "missing_parameter", "parse_container_create"]


def missing_parameter(param: str) -> BadRequestError:
    return BadRequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid_type(param: str, expected: str, value: object) -> BadRequestError:
    return BadRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _json_type(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a decimal",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), "a value")


def _expiry_minutes(body: dict[str, Any]) -> int | None:
    expires = body.get("expires_after")
    if expires is None:
        return None
    if not isinstance(expires, dict):
        raise invalid_type("expires_after", "an object", expires)
    anchor = expires.get("anchor")
    if anchor is None:
        raise missing_parameter("expires_after.anchor")
    if anchor != "last_active_at":
        raise BadRequestError(
            f"Invalid value: '{anchor}'. Supported values are: 'last_active_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    minutes = expires.get("minutes")
    if minutes is None:
        raise missing_parameter("expires_after.minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise invalid_type("expires_after.minutes", "an integer", minutes)
    if minutes < 1:
        raise BadRequestError(
            "Invalid 'expires_after.minutes': integer below minimum value. "
            f"Expected a value >= 1, but got {minutes} instead.",
            param="expires_after.minutes",
            code="integer_below_min_value",
        )
    return minutes


@dataclass(frozen=True)
class ContainerCreate:
    """A validated ``POST /containers`` body (shared with the gateway's own containers)."""

    name: str
    file_ids: list[str]
    memory_limit: str | None
    network_policy: dict[str, Any] | None
    expires_after_minutes: int | None


def parse_container_create(body: dict[str, Any]) -> ContainerCreate:
    """The body checked with the service's 400s (``memory_limit`` values: the backend's)."""
    name = body.get("name")
    if name is None:
        raise missing_parameter("name")
    if not isinstance(name, str):
        raise invalid_type("name", "a string", name)
    file_ids = body.get("file_ids") or []
    if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
        raise invalid_type("file_ids", "an array of strings", file_ids)
    memory_limit = body.get("memory_limit")
    if memory_limit is not None and not isinstance(memory_limit, str):
        raise invalid_type("memory_limit", "a string", memory_limit)
    network_policy = body.get("network_policy")
    if network_policy is not None and not isinstance(network_policy, dict):
        raise invalid_type("network_policy", "an object", network_policy)
    return ContainerCreate(name, file_ids, memory_limit, network_policy, _expiry_minutes(body))
