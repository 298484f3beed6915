"""cigate: run code with the Code Interpreter tool of Azure OpenAI / OpenAI and keep every file.

The public surface is what ``__all__`` lists (a test pins it); everything else is internal::

    import cigate

    result = cigate.run("Plot y=x^2 and save it", model="gpt-4.1")   # run + download all
    refs = cigate.find_files(response)                                # Response/events/JSON
    harvest = cigate.download(refs, out="downloads")                  # or cigate.adownload
    result = cigate.run_assistants("Chart it", files=["data.csv"])    # seed 004: Assistants
"""

from __future__ import annotations

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
