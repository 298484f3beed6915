"""One error tree for all of cigate.

Every error carries a ``hint`` a user can act on and an ``exit_code`` the CLI uses, so a
failure is explained the same way by the library, the CLI and the gateway. Foreign errors
(httpx, openai, SQLAlchemy, Azure SDK) are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ApiVersionError",
    "BadInputError",
    "CigateError",
    "ConfigurationError",
    "ContainerExpiredError",
    "FileNotFoundInContainerError",
    "IntegrityError",
    "QuotaExceededError",
    "RateLimitedError",
    "SandboxCapacityError",
    "SandboxError",
    "StorageError",
    "UnsafeFilenameError",
    "UpstreamUnavailableError",
]


class CigateError(Exception):
    """Base of every error cigate raises on purpose.

    ``kind`` is a stable machine-readable class name (used in JSON output, the gateway's
    ``failed`` records and logs); ``hint`` says what to do about it; ``retry_after`` is the
    delay in seconds the server asked for (``retry-after``), when it named one.
    """

    kind = "error"
    exit_code = 1
    default_hint = ""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description (CLI ``--json``, gateway records)."""
        return {
            "kind": self.kind,
            "message": self.message,
            "hint": self.hint,
            "status": self.status,
            "request_id": self.request_id,
        }


class ConfigurationError(CigateError):
    """Settings are missing or contradict each other; raised at start-up, loudly."""

    kind = "configuration"
    exit_code = 2
    default_hint = "Check the settings table in docs/configuration.md."


class BadInputError(CigateError):
    """The request itself is malformed: unknown id form, bad argument, malformed body."""

    kind = "bad_input"
    exit_code = 3
    default_hint = "Check the command's arguments (`cigate COMMAND --help`)."


class UnsafeFilenameError(BadInputError):
    """A file name cannot be made safe (it would escape the output directory)."""

    kind = "unsafe_filename"
    default_hint = "The name was rejected to keep files inside the output directory."


class ContainerExpiredError(CigateError):
    """The code-interpreter container is gone; its files cannot be fetched any more."""

    kind = "container_expired"
    exit_code = 4
    default_hint = (
        "Containers expire after 20 idle minutes and their files go with them: fetch files "
        "within that window, or run requests through the cigate gateway, which keeps them."
    )


class FileNotFoundInContainerError(CigateError):
    """The container lives but does not hold the file."""

    kind = "file_not_found"
    exit_code = 5
    default_hint = (
        "List the container's files with `cigate ls CONTAINER_ID`; cfile_ ids only work with "
        "the container that made them, on the same resource."
    )


class AccessDeniedError(CigateError):
    """401/403: wrong key, wrong Entra ID scope or missing role, CheckAccess refusals."""

    kind = "access_denied"
    exit_code = 6
    default_hint = (
        "Check the API key, or for Microsoft Entra ID use the scope "
        "https://cognitiveservices.azure.com/.default and the role "
        "'Cognitive Services OpenAI User'."
    )


class QuotaExceededError(AccessDeniedError):
    """403: the gateway did not keep a file because its tenant's storage quota is full."""

    kind = "quota_exceeded"
    default_hint = "Erase files (DELETE /files/{id}) or ask the operator for a larger quota."


class ApiVersionError(CigateError):
    """The URL form or api-version does not fit the operation (e.g. containers on a legacy path)."""

    kind = "api_version"
    exit_code = 7
    default_hint = (
        "Use the v1 base URL https://RESOURCE.openai.azure.com/openai/v1/ with no api-version "
        "(or api-version=preview); dated api-versions only work on legacy /openai/... paths."
    )


class RateLimitedError(CigateError):
    """429 after the allowed retries (or a retry-after longer than we are willing to wait)."""

    kind = "rate_limited"
    exit_code = 8
    default_hint = "The deployment is throttled: wait and retry, or raise its quota."


class UpstreamUnavailableError(CigateError):
    """5xx, timeouts or connection failures that outlasted the retries."""

    kind = "upstream_unavailable"
    exit_code = 9
    default_hint = (
        "The service kept failing; try again later. Azure's container download sometimes "
        "returns persistent 500s: the gateway records such files as failed and retries them."
    )


class IntegrityError(CigateError):
    """The bytes received do not match the file record (size or checksum)."""

    kind = "integrity"
    exit_code = 10
    default_hint = "The transfer was cut short or corrupted; nothing was kept. Retry the download."


class StorageError(CigateError):
    """The gateway's metadata store or blob store failed."""

    kind = "storage"
    exit_code = 11
    default_hint = "Check the --database and --blobs settings and that those services are up."


class SandboxError(CigateError):
    """A kernel could not be started, crashed, or would not run the code."""

    kind = "sandbox"
    exit_code = 12
    default_hint = "Install bubblewrap (apt-get install bubblewrap) and check the kernel's logs."


class SandboxCapacityError(SandboxError):
    """Every container slot of this host (or of this owner) holds a live kernel."""

    kind = "sandbox_capacity"
    default_hint = "Delete containers you no longer need, or raise the live-container cap."
