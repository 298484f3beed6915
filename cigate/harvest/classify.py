"""Turn an HTTP failure (status, headers, body) into one error of the cigate tree.

Azure answers the same mistake in several shapes: an OpenAI envelope, an Azure envelope with a
string ``code``, plain text ("… not supported for CheckAccess."), or a 404 with no body at all
(api-reference §5.2). Users should not have to know them: each shape maps to an error class whose
hint says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cigate.exceptions import (
    AccessDeniedError,
    ApiVersionError,
    BadInputError,
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
    RateLimitedError,
    StorageError,
    UpstreamUnavailableError,
)
from cigate.harvest.retry import RETRYABLE_STATUSES, parse_retry_after

__all__ = [
    "TRANSIENT",
    "error_message",
    "from_http",
    "from_sdk",
    "from_transport",
    "looks_like_error_body",
    "retryable",
    "saturated",
]

#: Failures that heal by themselves: the service's own trouble (5xx, timeouts, connections),
#: throttling, and a body cut short or replaced by an error document. The gateway's background
#: retries take exactly these (by their ``kind``); an attempt-level retry takes them too.
TRANSIENT: tuple[type[CigateError], ...] = (
    UpstreamUnavailableError,
    RateLimitedError,
    IntegrityError,
)
#: Failures no other attempt can fix.
_FINAL: tuple[type[CigateError], ...] = (
    AccessDeniedError,
    ApiVersionError,
    ContainerExpiredError,
    StorageError,
)

_CONTAINER_GONE_HINT = (
    "The container is gone: containers expire after 20 idle minutes (their files with them), "
    "and a container only exists on the resource and deployment that created it. Fetch files "
    "right after the run, or use the cigate gateway, which keeps them."
)
_EMPTY_404_HINT = (
    "Azure answered 404 with an empty body, as during its 2025 rollout of container downloads. "
    "Make sure the endpoint is the same resource that ran the code; try --api-version preview."
)
_CODE_INTERPRETER_HINT = (
    "The code interpreter itself failed (its kernel or sandbox), not the network or the "
    "download: run the request again, or simplify the code. With `cigate demo` or the emulator "
    "the kernel runs on this machine: check that bubblewrap is installed "
    "(apt-get install bubblewrap) and the emulator's log."
)
_CHECKACCESS_HINT = (
    "Azure refused the operation for this endpoint (CheckAccess). Download through the resource "
    "endpoint https://RESOURCE.openai.azure.com/openai/v1/ with the same credential that created "
    "the response, and make sure the identity has 'Cognitive Services OpenAI User'."
)


def error_message(body: bytes | str | None) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI/Azure envelope, plain text, or nothing."""
    if body is None:
        return "", None
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text.strip()
    if not text:
        return "", None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text[:300], None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            code = err.get("code")
            return message[:300], (str(code) if code is not None else None)
        if isinstance(err, str):
            return err[:300], None
    return text[:300], None


def looks_like_error_body(head: bytes) -> bool:
    """True for a JSON object with an ``error`` key (an error delivered with status 200)."""
    stripped = head.lstrip()
    if not stripped.startswith(b"{"):
        return False
    try:
        data = json.loads(stripped.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "error" in data and len(data) <= 3


def from_http(
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    *,
    what: str,
    uses_entra: bool = False,
) -> CigateError:
    """The error for a failed request; ``what`` names the operation for the message."""
    headers = headers or {}
    message, code = error_message(body)
    request_id = headers.get("x-request-id") or headers.get("apim-request-id")
    detail = f"{what}: HTTP {status}" + (f": {message}" if message else " (empty body)")
    lower = message.lower()
    kw: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "retry_after": parse_retry_after(headers),
    }

    if "checkaccess" in lower:
        return AccessDeniedError(detail, hint=_CHECKACCESS_HINT, **kw)
    if status in (401, 403):
        if "key based authentication is disabled" in lower:
            hint = "This resource accepts only Microsoft Entra ID: drop the API key (--auth entra)."
        elif uses_entra:
            hint = (
                "The token was refused: use the scope https://cognitiveservices.azure.com/.default "
                "(or https://ai.azure.com/.default) and give the identity the role "
                "'Cognitive Services OpenAI User'."
            )
        else:
            hint = None
        return AccessDeniedError(detail, hint=hint, **kw)
    if "container is expired" in lower or (status == 400 and "expired" in lower):
        return ContainerExpiredError(detail, **kw)
    if status == 429 or code in {"429", "rate_limit_exceeded"}:
        return RateLimitedError(detail, **kw)
    if "api version" in lower or "api-version" in lower or code == "invalid_api_version":
        return ApiVersionError(detail, **kw)
    if status == 404:
        if lower.startswith("container") or "container with id" in lower:
            return ContainerExpiredError(detail, hint=_CONTAINER_GONE_HINT, **kw)
        if lower == "resource not found":
            return ApiVersionError(detail, **kw)
        if not message:
            return FileNotFoundInContainerError(detail, hint=_EMPTY_404_HINT, **kw)
        return FileNotFoundInContainerError(detail, **kw)
    if status >= 500 or status == 408 or code in ("Timeout", "server_error"):
        if "code interpreter" in lower or "kernel" in lower or "sandbox" in lower:
            return UpstreamUnavailableError(detail, hint=_CODE_INTERPRETER_HINT, **kw)
        return UpstreamUnavailableError(detail, **kw)
    return BadInputError(detail, hint=None if message else BadInputError.default_hint, **kw)


def retryable(error: CigateError) -> bool:
    """The one answer to "may another attempt help?", for every upstream failure.

    The :data:`TRANSIENT` classes always; an empty-body 404 (Azure's container-download
    rollout gap, api-reference §6.4) and other statuses the SDK retries (408, 409) too. An
    expired container, a refused credential, a wrong URL form, a failing local store, a 404 that
    names the missing file and other bad input never.
    """
    if isinstance(error, TRANSIENT):
        return True
    if isinstance(error, _FINAL):
        return False
    if isinstance(error, FileNotFoundInContainerError):
        return error.hint == _EMPTY_404_HINT
    return error.status in RETRYABLE_STATUSES


_UNREACHABLE_HINT = (
    "No connection could be made: check the endpoint URL (host name and port), that the "
    "service or gateway is running, and your network, proxy (HTTPS_PROXY) and firewall."
)
_TIMEOUT_HINT = (
    "The service accepted the connection but did not answer in time: try again, or raise "
    "--timeout (CIGATE_TIMEOUT) for slow answers."
)

_POOL_HINT = (
    "Every connection this process may hold to the service was in use for the whole wait: a "
    "limit of this process, not the service's. Fetch fewer files at once (--concurrency); "
    "a gateway that keeps hitting it needs more CIGATE_GATEWAY_HARVEST_CONNECTIONS."
)


def saturated(exc: BaseException) -> bool:
    """Whether ``exc`` is this process's own limit: every connection of its pool was in use,
    so nothing was sent. Not a failure of the upstream: it must not mark the upstream down,
    nor use up an attempt of a retry (:meth:`~cigate.harvest.retry.RetryPolicy.call`)."""
    import httpx2

    return isinstance(exc, httpx2.PoolTimeout) or isinstance(exc.__cause__, httpx2.PoolTimeout)


def from_transport(exc: BaseException, *, what: str) -> UpstreamUnavailableError:
    """A connection failure, timeout or cut-off body that outlasted the retries.

    Nothing answered, so the hint is about reaching the service (not about the service's own
    failures, which :func:`from_http` explains).
    """
    import httpx2

    message = f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")
    connect = isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)
    if not connect and isinstance(exc.__cause__ or exc.__context__, httpx2.ConnectError):
        connect = True  # the SDK's APIConnectionError wraps the transport's own error
    if connect:
        return UpstreamUnavailableError(message, hint=_UNREACHABLE_HINT)
    if isinstance(exc, httpx2.PoolTimeout):  # nothing was sent: the limit is this process's
        # As the gateway's forwarding answers its own limit: 503, try again in a second.
        return UpstreamUnavailableError(message, hint=_POOL_HINT, status=503, retry_after=1.0)
    if isinstance(exc, httpx2.TimeoutException) or type(exc).__name__ == "APITimeoutError":
        return UpstreamUnavailableError(message, hint=_TIMEOUT_HINT)
    return UpstreamUnavailableError(message)


def from_sdk(exc: BaseException, *, what: str, uses_entra: bool = False) -> CigateError:
    """An ``openai`` SDK exception: a status error by its response, anything else as transport."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers.items())
        return from_http(
            exc.status_code, exc.response.text, headers, what=what, uses_entra=uses_entra
        )
    return from_transport(exc, what=what)
