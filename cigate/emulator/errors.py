"""Error bodies the emulator answers with, rendered in one place.

Two shapes exist on the wire (api-reference section 5):

* the OpenAI envelope ``{"error": {"message", "type", "param", "code"}}``, used by the resources
  themselves (and by Responses-level validation on Azure v1): ``cigate.engine.errors.ApiError``;
* Azure's gateway envelope ``{"error": {"code": "401", "message": ...}}`` (``code`` is a string,
  no ``type``/``param``), used before a request reaches a resource: bad key, unknown path or
  api-version, throttling. ``AzureError`` below.

Handlers and middleware only raise; ``EXCEPTION_HANDLERS`` turns the exceptions into responses.
:func:`refuse_path` answers for the canonical-path edge (which runs before any handler).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from cigate.engine.errors import ApiError
from cigate.web.bodies import INVALID_JSON_MESSAGE, BodyError
from cigate.web.paths import AmbiguousQueryError, NonCanonicalPathError, shown

#: api-reference 5.2, copied verbatim.
AZURE_401_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
AZURE_404_MESSAGE = "Resource not found"
#: What Azure answers on /openai/v1 for an api-version other than v1/preview (openai/codex#3725).
AZURE_API_VERSION_MESSAGE = "API version not supported"
#: Files API on Azure given an unknown id, e.g. a ``cfile_`` (api-reference 4.1).
AZURE_ENTITY_NOT_FOUND = "The specified entity cannot be found."

#: Foundry project endpoints (foundry-wire 5): a refused token, and api-version rules.
FOUNDRY_401_MESSAGE = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect ({audience}), "
    "or have expired."
)
FOUNDRY_V1_API_VERSION_MESSAGE = "api-version query parameter is not allowed when using /v1 path"
FOUNDRY_API_VERSION_MISSING = "Missing required query parameter: api-version"

#: OpenAI's own 401 messages, used on the plain ``/v1`` prefix.
OPENAI_MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
OPENAI_BAD_KEY_MESSAGE = (
    "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)


class AzureError(ApiError):
    """An error rendered in Azure's gateway shape: ``{"error": {"code": str, "message": str}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, type=None, code=code or str(status), headers=headers)

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class FoundryAuthError(ApiError):
    """Foundry's 401 for a token it refuses: ``{"statusCode": 401, "message": …}``, no
    ``error`` object (azure-core reads it as ``ClientAuthenticationError``)."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, type=None, code=None)

    def body(self) -> dict[str, object]:
        return {"statusCode": self.status, "message": self.message}


def foundry_unauthorized(audience: str) -> FoundryAuthError:
    return FoundryAuthError(FOUNDRY_401_MESSAGE.format(audience=audience))


def foundry_api_version_not_allowed() -> AzureError:
    return AzureError(400, FOUNDRY_V1_API_VERSION_MESSAGE, code="BadRequest")


def foundry_api_version_missing() -> AzureError:
    return AzureError(400, FOUNDRY_API_VERSION_MISSING, code="BadRequest")


def azure_unauthorized() -> AzureError:
    return AzureError(401, AZURE_401_MESSAGE)


def azure_not_found() -> AzureError:
    return AzureError(404, AZURE_404_MESSAGE)


def azure_api_version_not_supported() -> AzureError:
    return AzureError(400, AZURE_API_VERSION_MESSAGE, code="BadRequest")


def azure_entity_not_found() -> AzureError:
    return AzureError(404, AZURE_ENTITY_NOT_FOUND, code="notFound")


def openai_unauthorized(*, missing: bool) -> ApiError:
    if missing:
        return ApiError(401, OPENAI_MISSING_KEY_MESSAGE, code=None)
    return ApiError(401, OPENAI_BAD_KEY_MESSAGE, code="invalid_api_key")


def invalid_json() -> ApiError:
    """OpenAI's message for a body that is not JSON."""
    return ApiError(400, INVALID_JSON_MESSAGE)


def body_refusal(exc: BodyError) -> ApiError:
    """A refused request body (:mod:`cigate.web.bodies`) in the OpenAI envelope: a syntax
    error exactly as OpenAI words it (null ``code``), a broken limit with its own code."""
    code = None if exc.kind == "invalid_json" else exc.kind
    return ApiError(exc.status or 400, exc.message, code=code)


def refuse_body(exc: BodyError) -> Response:
    """The body guard's answer before any route runs (bad ``Content-Length``, too large)."""
    return render(body_refusal(exc))


#: Azure's (and Foundry's) roots, in any case and however the path goes on after them.
_AZURE_ROOT = re.compile(r"/*(?:openai|(?:api|agents)(?![a-z0-9]))", re.IGNORECASE)


def is_azure_path(path: str) -> bool:
    """Under ``/openai``, ``/api`` (Foundry projects) or ``/agents`` (hub form), spelt any
    way: Azure's error shapes, not OpenAI's."""
    return _AZURE_ROOT.match(path) is not None


def is_project_v1_path(path: str) -> bool:
    parts = path.lstrip("/").split("/")
    return parts[:2] == ["api", "projects"] and parts[3:5] == ["openai", "v1"]


def render(exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render(exc)


async def _body_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyError)
    return render(body_refusal(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: Azure's shape under /openai, OpenAI's elsewhere."""
    assert isinstance(exc, HTTPException)
    headers: dict[str, Any] = dict(exc.headers or {})
    if is_azure_path(request.url.path):
        error: ApiError = AzureError(exc.status_code, AZURE_404_MESSAGE, headers=headers)
        if exc.status_code != 404:
            error = AzureError(exc.status_code, str(exc.detail), headers=headers)
    else:
        message = f"Invalid URL ({request.method} {request.url.path})"
        error = ApiError(exc.status_code, message, headers=headers)
    return render(error)


def refuse_path(scope: Scope, exc: NonCanonicalPathError | AmbiguousQueryError) -> Response:
    """The edge's refusal, shaped like the answer for an unknown path or api-version there.

    Under ``/openai``, ``/api`` or ``/agents`` in any spelling (``//openai``, ``/OpenAI``) it
    is Azure's: 404 ``Resource not found`` for a path, and for ``api-version`` given twice what
    a bad api-version gets on that surface (400 on v1 and Foundry's paths, 404 on the dated
    one). Elsewhere OpenAI's ``Invalid URL`` 404, or a 400 naming ``api-version``.
    """
    raw: bytes = scope.get("raw_path") or str(scope.get("path", "")).encode()
    path = raw.decode("latin-1")
    azure = is_azure_path(path)
    if isinstance(exc, AmbiguousQueryError):
        if not azure:
            return render(ApiError(400, exc.message, param="api-version"))
        if is_project_v1_path(path):
            return render(foundry_api_version_not_allowed())
        if raw.startswith((b"/openai/v1/", b"/api/", b"/agents/")):
            return render(azure_api_version_not_supported())
        return render(azure_not_found())
    if azure:
        return render(azure_not_found())
    return render(ApiError(404, f"Invalid URL ({scope.get('method', 'GET')} {shown(raw)})"))


EXCEPTION_HANDLERS = {ApiError: _api_error, BodyError: _body_error, HTTPException: _http_error}
