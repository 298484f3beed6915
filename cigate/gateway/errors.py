"""Every gateway error is rendered here, once, as an OpenAI-shaped JSON envelope.

Handlers raise members of :mod:`cigate.exceptions`; this module picks the HTTP status (the
error's own ``status`` when it carries one, else a default per class) so that clients using the
official SDK get the exception class they expect (``NotFoundError`` for 404, and so on).
"""

from __future__ import annotations

import logging
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cigate.exceptions import (
    AccessDeniedError,
    BadInputError,
    CigateError,
    ConfigurationError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
    RateLimitedError,
    StorageError,
    UpstreamUnavailableError,
)

__all__ = [
    "UnknownIdError",
    "container_not_found",
    "error_response",
    "handle_cigate_error",
    "not_found",
]

log = logging.getLogger(__name__)

_DEFAULT_STATUS: list[tuple[type[CigateError], int, str]] = [
    (AccessDeniedError, 401, "invalid_request_error"),
    (RateLimitedError, 429, "rate_limit_error"),
    (ContainerExpiredError, 404, "invalid_request_error"),
    (FileNotFoundInContainerError, 404, "invalid_request_error"),
    (BadInputError, 400, "invalid_request_error"),
    (UpstreamUnavailableError, 502, "server_error"),
    (IntegrityError, 502, "server_error"),
    (StorageError, 503, "server_error"),
    (ConfigurationError, 500, "server_error"),
]


#: What a tenant is told when the gateway's own side fails; the details go to the log.
_INTERNAL_MESSAGES: dict[type[CigateError], str] = {
    StorageError: "The gateway's storage is unavailable right now; try again later.",
    ConfigurationError: "The gateway is misconfigured; its operator can see why in its log.",
}


class UnknownIdError(BadInputError):
    """An id the caller may not see, answered in the upstream's own words for an unknown id.

    Used where the gateway answers *instead of* the upstream (another tenant's assistant,
    thread, response or file): message, ``param`` and a null ``code`` are the upstream's, so
    the answer cannot be told apart from the one the upstream gives for an id that never
    existed. The status is 404 except where the upstream says 400 (Assistants' file checks).
    """

    kind = "not_found"

    def __init__(self, message: str, *, param: str | None = None, status: int = 404) -> None:
        super().__init__(message, status=status)
        self.param = param


def not_found(what: str, ident: str) -> BadInputError:
    """The one answer for unknown ids *and* other tenants' ids: same status, same text."""
    return BadInputError(f"No {what} found with id '{ident}'.", status=404)


def container_not_found(container_id: str) -> BadInputError:
    """The upstream's own answer for an unknown container (``param``, null ``code``), so a
    refusal cannot be told apart from a container that never existed."""
    return UnknownIdError(f"Container with id '{container_id}' not found.", param="container_id")


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    headers: dict[str, str] | None,
    param: str | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def render(exc: CigateError) -> JSONResponse:
    """The response for one error: status from the error or its class, OpenAI envelope."""
    status, type_ = 500, "server_error"
    for cls, default_status, default_type in _DEFAULT_STATUS:
        if isinstance(exc, cls):
            status, type_ = default_status, default_type
            break
    if exc.status is not None and 400 <= exc.status <= 599:
        status = exc.status
    if status == 404:
        type_ = "invalid_request_error"
    headers: dict[str, str] = {}
    if exc.retry_after is not None:  # a 429, or a 503 of a process out of connections
        headers["retry-after"] = str(math.ceil(exc.retry_after))  # whole seconds, never 0 early
    if status >= 500 and not getattr(exc, "logged", False):  # e.g. the credential alarm's
        log.warning("gateway error %s: %s", exc.kind, exc.message)
    if isinstance(exc, StorageError | ConfigurationError):
        # The operator's side failed: its details (SQL, paths, host names, connection
        # strings) are for the log above, never for a tenant.
        kind = ConfigurationError if isinstance(exc, ConfigurationError) else StorageError
        return error_response(
            status, _INTERNAL_MESSAGES[kind], type_=type_, code=exc.kind, headers=headers
        )
    if isinstance(exc, UnknownIdError):
        return error_response(
            status, exc.message, type_=type_, code=None, headers=headers, param=exc.param
        )
    return error_response(status, exc.message, type_=type_, code=exc.kind, headers=headers)


async def handle_cigate_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every ``CigateError``."""
    assert isinstance(exc, CigateError)
    return render(exc)
