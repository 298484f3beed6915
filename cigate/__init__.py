"""cigate: run code with the Code Interpreter tool of Azure OpenAI / OpenAI and keep every file.

The public surface is what ``__all__`` lists (a test pins it); everything else is internal::

    import cigate

    result = cigate.run("Plot y=x^2 and save it", model="gpt-4.1")   # run + download all
    refs = cigate.find_files(response)                                # Response/events/JSON
    harvest = cigate.download(refs, out="downloads")                  # or cigate.adownload
    result = cigate.run_assistants("Chart it", files=["data.csv"])    # seed 004: Assistants
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and IDEs see the real names; runtime loads them on first use
    from cigate.client._assistants import arun_assistants, run_assistants
    from cigate.client._config import ClientConfig, resolve_config
    from cigate.client._responses import (
        adownload,
        afetch_response,
        alist_files,
        arun,
        download,
        fetch_response,
        list_files,
        run,
    )
    from cigate.client._results import DownloadResult, Harvest, RunResult
    from cigate.exceptions import (
        AccessDeniedError,
        ApiVersionError,
        BadInputError,
        CigateError,
        ConfigurationError,
        ContainerExpiredError,
        FileNotFoundInContainerError,
        IntegrityError,
        RateLimitedError,
        SandboxError,
        StorageError,
        UnsafeFilenameError,
        UpstreamUnavailableError,
    )
    from cigate.harvest.refs import FileRef, RefCollector, find_files

#: Public name -> the module that defines it. Loaded on first attribute access (PEP 562), so
#: ``import cigate.gateway`` or ``cigate.storage`` does not pay for the ``openai`` SDK.
_LAZY = {
    "arun_assistants": "cigate.client._assistants",
    "run_assistants": "cigate.client._assistants",
    "ClientConfig": "cigate.client._config",
    "resolve_config": "cigate.client._config",
    **dict.fromkeys(
        (
            "AccessDeniedError",
            "ApiVersionError",
            "BadInputError",
            "CigateError",
            "ConfigurationError",
            "ContainerExpiredError",
            "FileNotFoundInContainerError",
            "IntegrityError",
            "RateLimitedError",
            "SandboxError",
            "StorageError",
            "UnsafeFilenameError",
            "UpstreamUnavailableError",
        ),
        "cigate.exceptions",
    ),
    "FileRef": "cigate.harvest.refs",
    "RefCollector": "cigate.harvest.refs",
    "find_files": "cigate.harvest.refs",
    "DownloadResult": "cigate.client._results",
    "Harvest": "cigate.client._results",
    "RunResult": "cigate.client._results",
    **dict.fromkeys(
        (
            "adownload",
            "afetch_response",
            "alist_files",
            "arun",
            "download",
            "fetch_response",
            "list_files",
            "run",
        ),
        "cigate.client._responses",
    ),
}


__all__ = [
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
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here (PEP 562)."""
    if name == "__version__":  # the installed distribution's, so it never drifts
        from importlib import metadata

        try:
            return metadata.version("cigate-toolkit")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cigate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
