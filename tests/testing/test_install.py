"""The built wheel, installed the way a user installs it, into fresh virtual environments.

With only the ``emulator`` extra (and pytest) a user's own test suite gets the ``emulator``
fixture with schema validation on; with only the client's core, pytest still runs every test
that does not need the fixture, and the CLI explains which extra a command needs. Versions come
from the dev lock (``-c``), so this never depends on what the package index published today.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"

USER_TESTS = """
def test_arithmetic_still_works():
    assert 1 + 1 == 2


def test_the_emulator_fixture_runs_code_and_validates_bodies(emulator):
    client = emulator.openai()
    response = client.responses.create(
        model="gpt-4.1",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        input="```python\\nopen('/mnt/data/hello.txt', 'w').write('hi from the sandbox')\\n```",
    )
    call = next(item for item in response.output if item.type == "code_interpreter_call")
    files = client.containers.files.list(call.container_id).data
    assert [f.path for f in files] == ["/mnt/data/hello.txt"]
    content = client.containers.files.content.retrieve(files[0].id, container_id=call.container_id)
    assert content.read() == b"hi from the sandbox"
    assert emulator.recorder.checked >= 2
"""


def _run(*argv: str | Path, cwd: Path | None = None, timeout: float = 420) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CIGATE_", "OPENAI_", "AZURE_", "PYTHON", "VIRTUAL_ENV"))
    }
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {done.returncode}:\n{out}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built without touching the index (the backend is in the lock)."""
    assert UV.is_file(), "uv comes with the dev lock; run `make pytest`"
    out = tmp_path_factory.mktemp("wheel")
    _run(UV, "build", "--wheel", "--no-build-isolation", "--python", sys.executable,
         "--out-dir", out, ROOT)  # fmt: skip
    (built,) = out.glob("cigate_toolkit-*.whl")
    return built


def _venv(tmp: Path, *requirements: str) -> Path:
    venv = tmp / "venv"
    _run(UV, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    constraints = ROOT / "requirements" / "dev.txt"
    _run(UV, "pip", "install", "--quiet", "--python", python, "-c", constraints, *requirements)
    return venv


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("user-project")
    (project / "test_user.py").write_text(USER_TESTS)
    return project


def test_a_user_with_the_emulator_extra_gets_a_validating_emulator_fixture(
    wheel: Path, user_project: Path, tmp_path: Path
) -> None:
    venv = _venv(tmp_path, f"{wheel}[emulator]", "pytest")
    out = _run(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-W", "error", cwd=user_project)  # fmt: skip
    assert "2 passed" in out
    assert "need the 'emulator' extra" not in out


def test_a_user_with_only_the_core_keeps_a_working_pytest_and_cli(
    wheel: Path, user_project: Path, tmp_path: Path
) -> None:
    venv = _venv(tmp_path, str(wheel), "pytest")
    python = venv / "bin" / "python"
    with pytest.raises(AssertionError) as failed:
        _run(python, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error", cwd=user_project)
    out = str(failed.value)
    assert "1 passed, 1 error" in out
    header = out.split("collected", 1)[0]
    assert header.count("need the 'emulator' extra") == 1
    assert "pip install 'cigate-toolkit[emulator]'" in header
    assert "ModuleNotFoundError" not in out

    cigate = venv / "bin" / "cigate"
    assert "Usage: cigate" in _run(cigate, "--help")
    done = subprocess.run(
        [cigate, "gateway", "serve", "--upstream", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "needs the 'gateway' extra" in done.stderr
    assert "hint: pip install 'cigate-toolkit[gateway]'" in done.stderr
    assert "Traceback" not in done.stderr
