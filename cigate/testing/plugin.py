"""The ``cigate`` pytest plugin: a running Azure OpenAI emulator per test, like moto's mock_aws.

Fixtures (available in any test directory once cigate is installed):

* ``emulator_settings`` (session): the ``EmulatorSettings`` used; override it in a conftest.
* ``emulator_tls`` (session): a throwaway local CA and server certificate
  (:mod:`cigate.web.tls`);
* ``emulator_server`` (session): ONE app with a warm kernel pool on a real uvicorn server in a
  background thread, listening for HTTP and, with ``emulator_tls``'s certificate, for HTTPS
  (``emulator.https_url``: the Azure SDKs send tokens over TLS only).
* ``emulator`` (function): resets the emulator, yields a ``RunningEmulator`` with ready clients,
  and fails the test at teardown if any body or SSE event it received broke the OpenAPI schema
  (the description ships with the package, so this holds in any project).

``CIGATE_TEST_SERVER=1`` sends the SDK clients over real HTTP; otherwise they run the app
in-process on the server's own loop (``cigate.testing.transport``). Either way the same
emulator state is seen.

pytest loads this module in every project where cigate is installed, so it must never break a
run: it imports only pytest and the standard library. The fixtures need the ``emulator`` extra;
when part of it is missing, the run's header says so once and only the tests that use these
fixtures fail, with the install line, while every other test runs.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cigate.emulator.server import ServerHandle
    from cigate.emulator.settings import EmulatorSettings
    from cigate.testing.emulator import RunningEmulator
    from cigate.web.tls import LocalTLS

DISTRIBUTION = "cigate-toolkit"
EXTRA = "emulator"
INSTALL_HINT = f"pip install '{DISTRIBUTION}[{EXTRA}]'"


@functools.cache
def missing_requirements() -> tuple[str, ...]:
    """The distributions of the ``emulator`` extra that are not installed (empty: all are).

    Read from the installed package's own metadata, so the list never drifts from
    ``pyproject.toml``. A source tree run without installing has no metadata: nothing to say.
    """
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return ()
    missing = []
    for line in requires:
        requirement, _, marker = line.partition(";")
        if not re.search(rf"extra\s*==\s*['\"]{EXTRA}['\"]", marker):
            continue
        name = re.split(r"[\s\[<>=!~(]", requirement.strip(), maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return tuple(missing)


def _unavailable_reason(exc: ImportError | None = None) -> str | None:
    missing = missing_requirements()
    if not missing and exc is None:
        return None
    what = ", ".join(missing) if missing else f"{exc}"
    return f"the cigate emulator fixtures need the '{EXTRA}' extra ({what} missing): {INSTALL_HINT}"


def _load(module: str) -> Any:
    """Import a module the fixtures need, or fail the calling test with the install line."""
    reason = _unavailable_reason()
    if reason is None:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            reason = _unavailable_reason(exc)
    pytest.fail(reason or f"cannot import {module}", pytrace=False)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Said once per run, and only when the fixtures cannot work."""
    return _unavailable_reason()


def __getattr__(name: str) -> Any:
    """``RunningEmulator``, ``current_mode`` and friends moved to :mod:`cigate.testing.emulator`;
    importing them from here keeps working."""
    if name in ("RunningEmulator", "current_mode", "SERVER_ENV", "TEST_API_KEY", "Mode"):
        return getattr(importlib.import_module("cigate.testing.emulator"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@pytest.fixture(scope="session")
def emulator_settings(tmp_path_factory: pytest.TempPathFactory) -> EmulatorSettings:
    """Settings of the session's emulator; override this fixture to change them."""
    settings = _load("cigate.emulator.settings")
    running = _load("cigate.testing.emulator")
    result: EmulatorSettings = settings.EmulatorSettings(
        api_keys=(running.TEST_API_KEY,),
        data_dir=tmp_path_factory.mktemp("emulator"),
        pool_size=2,
    )
    return result


@pytest.fixture(scope="session")
def emulator_tls(tmp_path_factory: pytest.TempPathFactory) -> LocalTLS:
    """A local CA and a certificate for 127.0.0.1/localhost (``.env()``: how to trust it)."""
    tls = _load("cigate.web.tls")
    made: LocalTLS = tls.make_local_tls(tmp_path_factory.mktemp("tls"))
    return made


@pytest.fixture(scope="session")
def emulator_server(
    emulator_settings: EmulatorSettings, emulator_tls: LocalTLS
) -> Iterator[ServerHandle]:
    """The session's emulator on a real uvicorn server (ports chosen by the OS), HTTP + HTTPS."""
    app = _load("cigate.emulator.app")
    server = _load("cigate.emulator.server")
    handle: ServerHandle = server.run_in_thread(
        app.create_app(emulator_settings),
        "127.0.0.1",
        0,
        ssl_certfile=emulator_tls.certfile,
        ssl_keyfile=emulator_tls.keyfile,
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def emulator(
    emulator_server: ServerHandle, emulator_settings: EmulatorSettings, emulator_tls: LocalTLS
) -> Iterator[RunningEmulator]:
    """A freshly reset emulator with ready clients; schema mismatches fail the test."""
    module = _load("cigate.testing.emulator")
    running: RunningEmulator = module.RunningEmulator(
        handle=emulator_server,
        api_key=emulator_settings.api_key,
        mode=module.current_mode(),
        tls_files=emulator_tls,
    )
    running.control.reset()
    try:
        yield running
    finally:
        running.close()
    if running.recorder.failures:
        shown = "\n  ".join(running.recorder.failures[:20])
        pytest.fail(
            f"{len(running.recorder.failures)} emulator repl(ies) broke the OpenAPI schema:\n"
            f"  {shown}",
            pytrace=False,
        )
