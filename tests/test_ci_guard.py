"""CI's guard: with CIGATE_REQUIRE_SUITES set, a skipped test fails the whole run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIPPING = """
import pytest

def test_runs():
    assert True

def test_needs_something_absent():
    pytest.skip("the storage server is not installed")
"""


@pytest.mark.parametrize(
    ("required", "status"), [("1", 1), ("", 0)], ids=["ci-fails", "developer-run-passes"]
)
def test_a_skipped_test_fails_the_run_only_when_suites_are_required(
    tmp_path: Path, required: str, status: int
) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {**os.environ, "CIGATE_REQUIRE_SUITES": required}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == status, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    if required:
        assert "1 test(s) were skipped" in done.stdout
        assert "the storage server is not installed" in done.stdout
