"""The public surface of ``cigate`` is exactly what ``__all__`` says (STYLE rule 1)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

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


def test_every_public_name_has_a_lazy_home_and_nothing_else_does() -> None:
    assert set(cigate._LAZY) == set(cigate.__all__)
    assert set(cigate.__all__) <= set(dir(cigate))


def test_importing_the_gateway_does_not_import_the_openai_sdk() -> None:
    code = "import sys, cigate.gateway.app; print('openai' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = cigate.no_such_name  # type: ignore[attr-defined]


def test_no_module_of_the_package_shares_a_name_with_a_public_function() -> None:
    """``cigate.download`` once was both; importing the module then rebound the name."""
    modules = {info.name for info in pkgutil.iter_modules(cigate.__path__)}
    assert modules & set(cigate.__all__) == set()
    importlib.import_module("cigate.client._download")
    assert callable(cigate.download)
