"""The public surface of ``cigate`` is exactly what ``__all__`` says (STYLE rule 1)."""

from __future__ import annotations

import cigate

PUBLIC = {
    "AccessDeniedError",
    "ApiVersionError",
    "BadInputError",
    "CigateError",
    "ClientConfig",
    "ConfigurationError",
    "ContainerExpiredError",
    "DownloadResult",
    "FileNotFoundInContainerError",
    "FileRef",
    "Harvest",
    "IntegrityError",
    "RateLimitedError",
    "RefCollector",
    "RunResult",
    "SandboxError",
    "StorageError",
    "UnsafeFilenameError",
    "UpstreamUnavailableError",
    "adownload",
    "afetch_response",
    "alist_files",
    "arun",
    "arun_assistants",
    "download",
    "fetch_response",
    "find_files",
    "list_files",
    "resolve_config",
    "run",
    "run_assistants",
}


def test_the_public_names_are_pinned() -> None:
    assert set(cigate.__all__) == PUBLIC
    assert sorted(cigate.__all__) == list(cigate.__all__)


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in cigate.__all__:
        assert getattr(cigate, name) is not None, name


def test_every_sync_function_has_an_async_twin() -> None:
    for name in ("run", "run_assistants", "download", "fetch_response", "list_files"):
        assert callable(getattr(cigate, name))
        assert callable(getattr(cigate, "a" + name))
