"""Cursor pagination shared by every list endpoint (api-reference 3.3, 7.8).

The envelope always has ``object``, ``data``, ``first_id``, ``last_id`` and ``has_more``: the SDK
pages with ``after=data[-1].id`` and loops until ``has_more`` is false, so leaving it out makes
clients spin. Query validation errors copy OpenAI's wording and codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cigate.engine.errors import BadRequestError

T = TypeVar("T")


@dataclass(frozen=True)
class PageQuery:
    """``after``, ``limit`` and ``order`` of one list request, validated."""

    after: str | None
    limit: int
    order: str


def parse_page_query(
    query: Mapping[str, str], *, default_limit: int = 20, max_limit: int = 100
) -> PageQuery:
    raw_limit = query.get("limit")
    limit = default_limit
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)
        except ValueError:
            raise BadRequestError(
                f"Invalid 'limit': expected an integer, but got '{raw_limit}' instead.",
                param="limit",
                code="invalid_type",
            ) from None
        if limit < 1:
            raise BadRequestError(
                "Invalid 'limit': integer below minimum value. "
                f"Expected a value >= 1, but got {limit} instead.",
                param="limit",
                code="integer_below_min_value",
            )
        if limit > max_limit:
            raise BadRequestError(
                "Invalid 'limit': integer above maximum value. "
                f"Expected a value <= {max_limit}, but got {limit} instead.",
                param="limit",
                code="integer_above_max_value",
            )
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequestError(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    return PageQuery(after=query.get("after") or None, limit=limit, order=order)


def page(
    items: Sequence[T],
    query: PageQuery,
    *,
    key: Callable[[T], str],
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``items`` (given oldest first) as the list envelope.

    An ``after`` cursor naming no item of the list gives an empty page: ids are random, so there
    is no position to resume from.
    """
    ordered = list(items) if query.order == "asc" else list(reversed(items))
    if query.after is not None:
        ids = [key(item) for item in ordered]
        ordered = ordered[ids.index(query.after) + 1 :] if query.after in ids else []
    chunk = ordered[: query.limit]
    data = [render(item) for item in chunk]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > len(chunk),
    }
