"""Query parameters of the Responses routes, read as the service reads them (emulator, gateway)."""

from __future__ import annotations

from starlette.requests import Request

from cigate.engine.errors import BadRequestError
from cigate.engine.request import INCLUDABLE

__all__ = ["flag_param", "include_param", "int_param"]


def include_param(request: Request) -> list[str]:
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


def flag_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


def int_param(request: Request, name: str) -> int | None:
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
