"""The audit log, readable: ``GET /audit`` for a tenant, JSON lines for the operator.

One log holds every download (complete or cut short, :mod:`cigate.gateway.serving`) and every
erasure (:mod:`cigate.gateway.erasure`). A tenant reads only its own records, oldest first,
in pages (``limit``, ``after`` = the last ``id`` of the previous page); the operator exports
all tenants' (``cigate gateway audit export``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cigate.exceptions import BadInputError
from cigate.gateway.context import services
from cigate.storage.records import Download

__all__ = ["audit_json", "audit_log"]


def audit_json(record: Download) -> dict[str, Any]:
    """One record as the API and the export show it."""
    return {
        "id": record.id,
        "object": "cigate.audit_record",
        "tenant_id": record.tenant_id,
        "action": record.action,
        "file_id": record.file_id,
        "actor": record.actor,
        "status": record.status,
        "bytes": record.bytes_sent,
        "at": record.at.isoformat().replace("+00:00", "Z"),
        "detail": json.loads(record.detail) if record.detail else None,
    }


async def audit_log(request: Request) -> Response:
    """``GET /audit?limit=100&after=ID``: the caller tenant's audit records, oldest first."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    try:
        limit = int(request.query_params.get("limit", "100"))
        raw_after = request.query_params.get("after")
        after = int(raw_after) if raw_after else None
    except ValueError as exc:
        raise BadInputError(
            "limit must be an integer from 1 to 1000, after the id of the last record read."
        ) from exc
    if not 1 <= limit <= 1000 or (after is not None and not 0 <= after < 2**63):
        raise BadInputError(
            "limit must be an integer from 1 to 1000, after the id of the last record read."
        )
    rows = await svc.meta.audit_page(tenant_id, after=after, limit=limit + 1)
    page = rows[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [audit_json(r) for r in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(rows) > limit,
        }
    )
