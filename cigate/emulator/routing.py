"""URL forms: which resources answer under which prefix, and the gate every API request passes.

Three prefixes carry the same resources (api-reference 6.1, 7.10):

* ``/openai/v1`` (flavor ``"v1"``): Azure v1 GA; ``api-version`` optional, ``v1`` or ``preview``;
  any other value is Azure's 400 ``{"error":{"code":"BadRequest","message":"API version not
  supported"}}`` (observed in openai/codex#3725);
* ``/openai`` (flavor ``"legacy"``): Azure's dated surface; ``api-version`` must be a date such as
  ``2025-04-01-preview``, otherwise 404 ``Resource not found``. Containers do not exist here, so
  ``/openai/containers...`` is that same 404 (the CheckAccess variant is a fault switch);
* ``/v1`` (flavor ``"openai"``): plain OpenAI style for ``OpenAI(base_url=...)``; no api-version.

The gate runs before the resource's routes (so unknown paths are still authenticated, as on
Azure): it records ``request.state.azure`` and ``request.state.api_flavor`` for handlers, checks
credentials, then the api-version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from cigate.emulator import auth
from cigate.emulator.auth import AZURE_ENTRA_401_MESSAGE
from cigate.emulator.errors import (
    AzureError,
    azure_api_version_not_supported,
    azure_not_found,
    azure_unauthorized,
    openai_unauthorized,
)
from cigate.emulator.state import emulator_state
from cigate.web.paths import api_versions

Flavor = Literal["v1", "legacy", "openai"]

#: Prefix of each flavor, longest first (the order mounts must be tried in).
PREFIXES: dict[Flavor, str] = {"v1": "/openai/v1", "legacy": "/openai", "openai": "/v1"}
V1_API_VERSIONS = ("v1", "preview")
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


def api_version(scope: Scope) -> str | None:
    """The request's ``api-version``, its name in any case (the edge refused it twice)."""
    versions = api_versions(scope.get("query_string", b""))
    return versions[0] if versions else None


class ApiGate:
    """ASGI middleware in front of one prefix's routes: flavor, auth, api-version."""

    def __init__(self, app: ASGIApp, *, flavor: Flavor) -> None:
        self.app = app
        self.flavor = flavor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["azure"] = self.flavor != "openai"
        state["api_flavor"] = self.flavor
        keys = emulator_state(scope["app"]).settings.api_keys
        result = auth.check(scope["headers"], keys)
        if not result.ok:
            if self.flavor == "openai":
                raise openai_unauthorized(missing=result.missing)
            if result.bad_token:
                raise AzureError(401, AZURE_ENTRA_401_MESSAGE)
            raise azure_unauthorized()
        version = api_version(scope)
        if self.flavor == "v1" and version is not None and version not in V1_API_VERSIONS:
            raise azure_api_version_not_supported()
        if self.flavor == "legacy" and (version is None or not _DATED.match(version)):
            raise azure_not_found()
        await self.app(scope, receive, send)


def api_mounts(
    v1_routes: Sequence[BaseRoute], legacy_routes: Sequence[BaseRoute]
) -> list[BaseRoute]:
    """The three prefixes over the resources' route tables (relative paths like ``/files``)."""
    return [
        Mount(
            PREFIXES["v1"],
            routes=list(v1_routes),
            middleware=[Middleware(ApiGate, flavor="v1")],
        ),
        Mount(
            PREFIXES["legacy"],
            routes=list(legacy_routes),
            middleware=[Middleware(ApiGate, flavor="legacy")],
        ),
        Mount(
            PREFIXES["openai"],
            routes=list(v1_routes),
            middleware=[Middleware(ApiGate, flavor="openai")],
        ),
    ]
