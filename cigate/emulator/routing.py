"""URL forms: which resources answer under which prefix, and the gate every API request passes.

Three prefixes carry the same resources (api-reference 6.1, 7.10):

* ``/openai/v1`` (flavor ``"v1"``): Azure v1 GA; ``api-version`` optional, ``v1`` or ``preview``;
  any other value is Azure's 400 ``{"error":{"code":"BadRequest","message":"API version not
  supported"}}`` (observed in openai/codex#3725);
* ``/openai`` (flavor ``"legacy"``): Azure's dated surface; ``api-version`` must be a date such as
  ``2025-04-01-preview``, otherwise 404 ``Resource not found``. Containers do not exist here, so
  ``/openai/containers...`` is that same 404 (the CheckAccess variant is a fault switch);
* ``/v1`` (flavor ``"openai"``): plain OpenAI style for ``OpenAI(base_url=...)``; no api-version.

Microsoft Foundry project endpoints (docs/foundry.md) carry the same resources once more:

* ``/api/projects/{project}/openai/v1`` (``"project-v1"``): the OpenAI v1 surface of a project
  (``AIProjectClient.get_openai_client()``); an ``api-version`` is Foundry's 400;
* ``/api/projects/{project}/openai`` (``"project-preview"``): the same with a dated
  ``api-version`` (``2025-11-15-preview``), as azure-ai-projects 2.0.0b1-b3 and Foundry's REST
  quickstarts call it;
* ``/api/projects/{project}`` (``"project"``): the classic agents surface azure-ai-agents calls
  (assistants, threads, runs, files) and the v2 agents; ``api-version`` required, ``v1`` or a date;
* ``/agents/v1.0/subscriptions/…/workspaces/{project}`` (``"hub"``): the same, as
  azure-ai-projects 1.0.0b* built it from a connection string.

Project endpoints take Entra tokens for ``https://ai.azure.com`` (the hub form:
``https://ml.azure.com``) or a key, not the resource's cognitiveservices audience, and answer a
refused token as Foundry does: ``{"statusCode": 401, "message": …}``. Any project name is
accepted; every project sees the one emulator's state.

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
from cigate.emulator.auth import AZURE_ENTRA_401_MESSAGE, FOUNDRY_AUDIENCES, HUB_AUDIENCES
from cigate.emulator.errors import (
    AzureError,
    azure_api_version_not_supported,
    azure_not_found,
    azure_unauthorized,
    foundry_api_version_missing,
    foundry_api_version_not_allowed,
    foundry_unauthorized,
    openai_unauthorized,
)
from cigate.emulator.state import emulator_state
from cigate.web.paths import api_versions

Flavor = Literal[
    "v1", "legacy", "openai", "project-v1", "project-preview", "project", "hub", "foundry"
]

#: Prefix of each flavor, longest first (the order mounts must be tried in).
PREFIXES: dict[Flavor, str] = {"v1": "/openai/v1", "legacy": "/openai", "openai": "/v1"}
#: Foundry's prefixes; ``{…}`` segments are names (``cigate.web.paths`` checks the rest).
PROJECT_PREFIXES: dict[Flavor, str] = {
    "project-v1": "/api/projects/{project}/openai/v1",
    "project-preview": "/api/projects/{project}/openai",
    "project": "/api/projects/{project}",
    "hub": "/agents/v1.0/subscriptions/{subscription}/resourceGroups/{resource_group}"
    "/providers/Microsoft.MachineLearningServices/workspaces/{project}",
}
#: Every prefix the canonical-path edge must see spelt exactly (shorter forms included, so
#: ``/API/projects/p`` is refused too).
EDGE_PREFIXES = (*PREFIXES.values(), *PROJECT_PREFIXES.values(), "/api/projects", "/agents/v1.0")
V1_API_VERSIONS = ("v1", "preview")
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_PROJECT_FLAVORS = ("project-v1", "project-preview", "project", "hub", "foundry")


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
        if self.flavor in _PROJECT_FLAVORS:
            self._check_project(scope, keys)
            await self.app(scope, receive, send)
            return
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

    def _check_project(self, scope: Scope, keys: tuple[str, ...]) -> None:
        audiences = HUB_AUDIENCES if self.flavor == "hub" else FOUNDRY_AUDIENCES
        result = auth.check(scope["headers"], keys, audiences=audiences)
        if not result.ok:
            if result.method == "unknown api-key":
                raise azure_unauthorized()
            raise foundry_unauthorized(audiences[0])
        version = api_version(scope)
        if self.flavor == "foundry":
            return  # no project here: authenticated, then the 404 of an unknown path
        if self.flavor == "project-v1":
            if version is not None:
                raise foundry_api_version_not_allowed()
        elif version is None:
            raise foundry_api_version_missing()
        elif not _DATED.match(version) and (self.flavor == "project-preview" or version != "v1"):
            raise azure_api_version_not_supported()


def project_mounts(
    v1_routes: Sequence[BaseRoute], classic_routes: Sequence[BaseRoute]
) -> list[BaseRoute]:
    """Foundry's prefixes: the OpenAI v1 surface and the classic/v2 agents surface."""
    tables = {
        "project-v1": v1_routes,
        "project-preview": v1_routes,
        "project": classic_routes,
        "hub": classic_routes,
    }
    mounts: list[BaseRoute] = [
        Mount(prefix, routes=list(tables[flavor]), middleware=[Middleware(ApiGate, flavor=flavor)])
        for flavor, prefix in PROJECT_PREFIXES.items()
    ]
    # Anything else under Foundry's roots (/api/projects, /api/projects/P, /agents/v1.0/…):
    # authenticated first, then 404, as on Azure.
    mounts += [
        Mount(root, routes=[], middleware=[Middleware(ApiGate, flavor="foundry")])
        for root in ("/api", "/agents")
    ]
    return mounts


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
