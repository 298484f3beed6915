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
from cigate.sandbox import bwrap, launch, reaper
from cigate.sandbox.bwrap import (
    UNISOLATED_WARNING,
    LaunchPlan,
    kernel_env,
    plan_launch,
    template_command,
)
from cigate.sandbox.output import Collector, PathRewriter, strip_ansi

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(30)]


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


def _resolved(command: list[str]) -> tuple[list[str], dict[str, str]]:
    """The bwrap part of a template command, with launcher-staged sources mapped back."""
    if command[0] != sys.executable:
        return command, {}
    at = command.index("--")
    count = int(command[6])
    sources = command[7 : 7 + count]
    staged = {launch.stage_path(i): src for i, src in enumerate(sources)}
    return command[at + 1 :], staged


def test_the_template_runs_in_bubblewrap_with_nothing_of_the_host_but_read_only_code(
    tmp_path: Path,
) -> None:
    plan = LaunchPlan(bwrap="/usr/bin/bwrap", uid=65534, gid=65534)
    command = template_command(plan, config={"isolated": True}, control_fd=9, runtime_dir=tmp_path)
    cmd, staged = _resolved(command.argv)
    assert cmd[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"):
        assert flag in cmd
    for flag in ("--die-with-parent", "--new-session", "--clearenv"):
        assert flag in cmd
    binds = {
        cmd[i + 2]: staged.get(cmd[i + 1], cmd[i + 1])
        for i, part in enumerate(cmd)
        if part in ("--ro-bind", "--bind")
    }
    assert "--bind" not in cmd  # nothing of the host is writable
    assert binds[sys.prefix] == sys.prefix
    assert binds["/etc/passwd"] == str(tmp_path / "passwd")  # synthetic: host users hidden
    assert "/root" not in binds
    assert "/" not in binds
    assert "/mnt/data" not in binds  # each container attaches its own directory later
    remounted = [cmd[i + 1] for i, part in enumerate(cmd) if part == "--remount-ro"]
    assert remounted == ["/dev", "/"]  # one /dev shared by every container: read-only
    setenv = {cmd[i + 1] for i, part in enumerate(cmd) if part == "--setenv"}
    assert setenv == set(kernel_env(mplconfigdir="/tmp/matplotlib", home="/tmp"))
    assert command.env == {}
    if os.geteuid() == 0:  # bwrap is started through the launcher, as the sandbox's uid
        assert command.argv[4:7] == ["65534", "65534", str(len(staged))]


def test_a_root_manager_never_maps_the_sandbox_to_host_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bwrap, "probe_bwrap", lambda: "/usr/bin/bwrap")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SandboxError, match="host root"):
        plan_launch("bwrap", sandbox_uid=0)
    assert plan_launch("bwrap", sandbox_uid=4242).uid == 4242


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


def test_an_unisolated_template_is_a_plain_python_with_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host")
    command = template_command(
        LaunchPlan(bwrap=None), config={"isolated": False}, control_fd=7, runtime_dir=tmp_path
    )
    assert command.argv[:3] == [sys.executable, "-I", "-c"]
    assert command.argv[-1] == "7"
    assert "OPENAI_API_KEY" not in command.env
    assert command.env["HOME"] == str(tmp_path)


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
        base.chmod(0o755)
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        runtime = base / "rt"
        runtime.mkdir()
        script = (
            "import os, subprocess, sys\n"
            "from pathlib import Path\n"
            "from cigate.sandbox.bwrap import plan_launch, template_command\n"
            "command = template_command(plan_launch('bwrap'), config={}, control_fd=0,\n"
            f"    runtime_dir=Path({str(runtime)!r}))\n"
            "last = len(command.argv) - 1 - command.argv[::-1].index('--')\n"
            "argv = command.argv[: last + 1]\n"
            "argv += [sys.executable, '-c', 'print(6 * 7)']\n"
            "done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env={})\n"
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
