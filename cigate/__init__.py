"""cigate: run code with the Code Interpreter tool of Azure OpenAI / OpenAI and keep every file.

The public surface is what ``__all__`` lists (a test pins it); everything else is internal::

    import cigate

    result = cigate.run("Plot y=x^2 and save it", model="gpt-4.1")   # run + download all
    refs = cigate.find_files(response)                                # Response/events/JSON
    harvest = cigate.download(refs, out="downloads")                  # or cigate.adownload
    result = cigate.run_assistants("Chart it", files=["data.csv"])    # seed 004: Assistants
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and IDEs see the real names; runtime loads them on first use
    from cigate.assistants_runner import arun_assistants, run_assistants
    from cigate.config import ClientConfig, resolve_config
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
    from cigate.refs import FileRef, RefCollector, find_files
    from cigate.results import DownloadResult, Harvest, RunResult
    from cigate.runner import (
        adownload,
        afetch_response,
        alist_files,
        arun,
        download,
        fetch_response,
        list_files,
        run,
    )

#: Public name -> the module that defines it. Loaded on first attribute access (PEP 562), so
#: ``import cigate.gateway`` or ``cigate.storage`` does not pay for the ``openai`` SDK.
_LAZY = {
    "arun_assistants": "cigate.assistants_runner",
    "run_assistants": "cigate.assistants_runner",
    "ClientConfig": "cigate.config",
    "resolve_config": "cigate.config",
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
    "FileRef": "cigate.refs",
    "RefCollector": "cigate.refs",
    "find_files": "cigate.refs",
    "DownloadResult": "cigate.results",
    "Harvest": "cigate.results",
    "RunResult": "cigate.results",
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
        "cigate.runner",
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


class _PublicModule(types.ModuleType):
    """Keeps a public function from being shadowed by its same-named submodule.

    ``cigate.download`` is both a function (public) and a module (internal). Importing the
    module makes the import system bind it on this package, which eager imports used to
    overwrite right away; with lazy loading the function must win by refusing that binding.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _PublicModule


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
