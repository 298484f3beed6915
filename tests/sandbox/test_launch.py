"""Launch decisions and text handling, without starting kernels."""

from __future__ import annotations

import base64
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cigate.exceptions import SandboxError
from cigate.sandbox import bwrap, reaper
from cigate.sandbox.bwrap import (
    UNISOLATED_WARNING,
    LaunchPlan,
    kernel_env,
    plan_launch,
    wrap_command,
)
from cigate.sandbox.output import Collector, PathRewriter, strip_ansi

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(30)]

ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def test_auto_without_bubblewrap_warns_once_and_runs_unisolated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bwrap, "probe_bwrap", lambda: None)
    monkeypatch.setattr(bwrap, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="cigate.sandbox.bwrap"):
        first, second = plan_launch("auto"), plan_launch("auto")
    assert not first.isolated
    assert not second.isolated
    warnings = [r for r in caplog.records if r.getMessage() == UNISOLATED_WARNING]
    assert len(warnings) == 1


def test_bwrap_required_but_missing_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bwrap, "probe_bwrap", lambda: None)
    with pytest.raises(SandboxError, match="bubblewrap is not usable"):
        plan_launch("bwrap")


def test_isolation_none_never_uses_bubblewrap() -> None:
    assert not plan_launch("none").isolated


def test_an_unknown_isolation_mode_is_refused() -> None:
    with pytest.raises(SandboxError, match="unknown sandbox isolation"):
        plan_launch("docker")


def test_the_bwrap_command_isolates_network_environment_and_files(tmp_path: Path) -> None:
    env = kernel_env(mplconfigdir="/tmp/matplotlib", home="/tmp")
    workdir, runtime = tmp_path / "work", tmp_path / "run"
    cmd = wrap_command(
        LaunchPlan(bwrap="/usr/bin/bwrap"), ARGV, workdir=workdir, runtime_dir=runtime, env=env
    )
    assert cmd[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in cmd
    joined = " ".join(cmd)
    assert f"--bind {workdir} /mnt/data" in joined
    assert f"--bind {runtime} {runtime}" in joined
    assert "--tmpfs /tmp" in joined
    assert "--chdir /mnt/data" in joined
    assert f"--ro-bind {sys.prefix} {sys.prefix}" in joined
    assert "--ro-bind /root " not in joined
    assert "--bind / " not in joined
    assert cmd[-len(ARGV) :] == ARGV
    setenv = {cmd[i + 1] for i, part in enumerate(cmd) if part == "--setenv"}
    assert setenv == set(env)


def test_the_kernel_environment_is_explicit_and_has_no_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host")
    env = kernel_env(mplconfigdir="/tmp/matplotlib", home="/tmp")
    assert "OPENAI_API_KEY" not in env
    assert env["HOME"] == "/tmp"
    assert env["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
    assert env["MPLCONFIGDIR"] == "/tmp/matplotlib"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_unisolated_commands_only_add_a_parent_death_signal(tmp_path: Path) -> None:
    cmd = wrap_command(LaunchPlan(bwrap=None), ARGV, workdir=tmp_path, runtime_dir=tmp_path, env={})
    assert cmd[-len(ARGV) :] == ARGV
    assert cmd == ARGV or cmd[1:4] == ["--pdeathsig", "KILL", sys.executable]


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = reaper.raise_nofile_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        assert raised == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ansi_colours_are_stripped_from_tracebacks() -> None:
    assert strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m: x") == "ZeroDivisionError: x"


def test_the_collector_keeps_streams_values_images_errors_and_idle() -> None:
    png = b"\x89PNG\r\n\x1a\nrest"
    collector = Collector()
    for msg_type, content in [
        ("stream", {"name": "stdout", "text": "a"}),
        ("stream", {"name": "stderr", "text": "b"}),
        ("display_data", {"data": {"image/png": base64.b64encode(png).decode()}}),
        ("execute_result", {"data": {"text/plain": "3"}}),
        ("error", {"ename": "E", "evalue": "v", "traceback": ["\x1b[1mline\x1b[0m"]}),
        ("status", {"execution_state": "idle"}),
    ]:
        collector.feed({"msg_type": msg_type, "content": content})
    result = collector.result
    assert (result.stdout, result.stderr, result.result_text) == ("a", "b", "3")
    assert [(i.mime_type, i.data) for i in result.images] == [("image/png", png)]
    assert result.error is not None
    assert result.error.traceback == ["line"]
    assert collector.idle


def test_path_rewriting_maps_mnt_data_both_ways() -> None:
    rewriter = PathRewriter("/srv/cigate/kernel-1")
    assert rewriter.to_kernel("open('/mnt/data/a.csv')") == "open('/srv/cigate/kernel-1/a.csv')"
    assert rewriter.to_user("saved /srv/cigate/kernel-1/b.png") == "saved /mnt/data/b.png"
    assert PathRewriter(None).to_kernel("/mnt/data/x") == "/mnt/data/x"


def test_runtime_dirs_of_dead_owners_are_swept_and_others_kept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    made = {}
    for name, owner in [("dead", str(dead.pid)), ("alive", str(os.getpid())), ("foreign", None)]:
        path = Path(tempfile.mkdtemp(prefix=reaper.RUNTIME_PREFIX, dir="/tmp"))
        if owner is not None:
            (path / reaper.OWNER_FILE).write_text(owner)
        made[name] = path
    try:
        assert reaper.sweep_orphaned_runtime_dirs() >= 1
        assert not made["dead"].exists()
        assert made["alive"].exists()
        assert made["foreign"].exists()
    finally:
        for path in made.values():
            shutil.rmtree(path, ignore_errors=True)


def test_an_interpreter_under_tmp_stays_visible_inside_the_sandbox() -> None:
    """A checkout (and its venv) under /tmp must not be hidden by the sandbox's private /tmp."""
    if bwrap.probe_bwrap() is None:
        pytest.skip("needs bubblewrap (scripts/install-system-deps.sh installs it)")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # the case under test: a venv in /tmp
        base = Path(tmp)
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        workdir, runtime = base / "work", base / "rt"
        workdir.mkdir()
        runtime.mkdir()
        script = (
            "import subprocess, sys\n"
            "from pathlib import Path\n"
            "from cigate.sandbox.bwrap import kernel_env, plan_launch, wrap_command\n"
            "cmd = wrap_command(plan_launch('bwrap'), [sys.executable, '-c', 'print(6 * 7)'],\n"
            f"    workdir=Path({str(workdir)!r}), runtime_dir=Path({str(runtime)!r}),\n"
            "    env=kernel_env(mplconfigdir='/tmp/mpl', home='/tmp'))\n"
            "done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)\n"
            "print(done.stdout, done.stderr)\n"
        )
        repo = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(repo)},
            check=False,
        )
    assert "42" in done.stdout, done.stdout + done.stderr
