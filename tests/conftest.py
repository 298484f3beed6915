"""Suite-wide fixtures: hermetic environment, and a guard that required suites really ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Storage backends (SQLite+disk, PostgreSQL+Azurite) as fixtures for every test directory.
pytest_plugins = ["cigate.testing.storage_fixtures"]

_PREFIXES = ("CIGATE_", "OPENAI_", "AZURE_", "AOAI_")
#: Switches that steer the test run itself, not cigate: kept.
_TEST_SWITCHES = ("CIGATE_TEST_SERVER", "CIGATE_REQUIRE_SUITES")
#: Tests skipped in this run. With CIGATE_REQUIRE_SUITES set (CI) any skip fails the run: the
#: suites that matter (storage backends, sandbox, schema validation, security) must really run,
#: and on a machine set up by the README's command every test can.
_skipped: list[str] = []


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's credentials or settings; CIGATE_HOME is a temp dir."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) and name not in _TEST_SWITCHES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIGATE_HOME", str(tmp_path / "cigate-home"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(f"{report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CIGATE_REQUIRE_SUITES") and _skipped:
        shown = "\n  ".join(_skipped[:20])
        print(f"\nCIGATE_REQUIRE_SUITES: {len(_skipped)} test(s) were skipped:\n  {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
