"""Under bubblewrap, model code sees no network, no host secrets and no other container."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool

from .conftest import tmp_pool

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]

SECRET = "sk-test-do-not-leak-0123456789"


@pytest_asyncio.fixture(loop_scope="session")
async def secret_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kernel]:
    """A kernel of a pool started while the host process holds secrets in its environment."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("CIGATE_TEST_SECRET", SECRET)
    async with tmp_pool(tmp_path) as pool:
        yield await pool.acquire()


async def test_the_kernel_reports_that_it_is_isolated(shared_kernel: Kernel) -> None:
    assert shared_kernel.isolated


async def test_host_secrets_in_the_environment_are_not_visible(secret_kernel: Kernel) -> None:
    result = await secret_kernel.execute(
        "import os, json; print(json.dumps(dict(os.environ)))", timeout=10
    )
    env = json.loads(result.stdout)
    assert "OPENAI_API_KEY" not in env
    assert "CIGATE_TEST_SECRET" not in env
    assert SECRET not in result.stdout
    assert env["HOME"] == "/tmp"
    cmdline = await secret_kernel.execute(
        "open('/proc/1/environ', 'rb').read() + open('/proc/self/environ', 'rb').read()",
        timeout=10,
    )
    assert SECRET not in (cmdline.result_text or "") + cmdline.logs


async def test_the_hosts_loopback_services_are_unreachable(shared_kernel: Kernel) -> None:
    with socket.socket() as listener:  # a host service the sandbox must not reach
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            f"for addr in [('127.0.0.1', {port}), ('192.0.2.1', 443)]:\n"
            "    s = socket.socket()\n"
            "    s.settimeout(2)\n"
            "    try:\n"
            "        s.connect(addr)\n"
            "        print('connected')\n"
            "    except OSError as exc:\n"
            "        print(type(exc).__name__, exc.errno)\n"
            "print(sorted(name for _, name in socket.if_nameindex()))\n"
        )
        result = await shared_kernel.execute(code, timeout=10)
    # Observed: bwrap brings up a private loopback with nothing listening (refused), and there
    # is no route anywhere else (ENETUNREACH); the only interface is that loopback.
    assert result.stdout.splitlines() == [
        "ConnectionRefusedError 111",
        "OSError 101",
        "['lo']",
    ], result.stdout


async def test_external_hosts_cannot_be_resolved(shared_kernel: Kernel) -> None:
    code = (
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('example.com', 443)\n"
        "    print('resolved')\n"
        "except OSError as exc:\n"
        "    print('failed')\n"
    )
    result = await shared_kernel.execute(code, timeout=10)
    assert result.stdout == "failed\n"


async def test_the_hosts_home_directory_is_not_visible(shared_kernel: Kernel) -> None:
    code = "import os\nsorted(os.listdir('/root')) if os.path.isdir('/root') else []"
    result = await shared_kernel.execute(code, timeout=10)
    host_entries = {p.name for p in Path("/root").iterdir()} if Path("/root").is_dir() else set()
    seen = set(eval(result.result_text or "[]"))  # noqa: S307 - a list literal we printed
    # Only the interpreter's own tree may show through (pyenv lives under /root here).
    assert seen <= {".pyenv"}, seen
    assert not (host_entries - {".pyenv"}) & seen


async def test_another_containers_workdir_is_not_visible(
    bwrap_pool: SandboxPool, shared_kernel: Kernel
) -> None:
    other = await bwrap_pool.acquire()
    try:
        (other.workdir / "private.txt").write_text("theirs")
        await other.execute("open('/tmp/theirs-tmp', 'w').write('x')", timeout=10)
        code = (
            "import os\n"
            f"print(os.path.exists({str(other.workdir)!r}), "
            f"os.path.exists({str(other.workdir / 'private.txt')!r}), "
            f"os.path.exists({str(shared_kernel.workdir)!r}))\n"
            "print(sorted(os.listdir('/tmp')))\n"
        )
        result = await shared_kernel.execute(code, timeout=10)
        first, tmp = result.stdout.splitlines()
        assert first == "False False False"
        assert "theirs-tmp" not in tmp  # each container has a /tmp of its own
    finally:
        await other.discard()


async def test_mnt_data_is_the_workdir_and_the_working_directory(shared_kernel: Kernel) -> None:
    (shared_kernel.workdir / "uploaded.csv").write_text("a,b\n1,2\n")
    code = "import os\nprint(os.getcwd())\nprint(open('uploaded.csv').read(), end='')"
    result = await shared_kernel.execute(code, timeout=10)
    assert result.stdout == "/mnt/data\na,b\n1,2\n"


async def test_system_directories_and_the_sandbox_root_are_read_only(shared_kernel: Kernel) -> None:
    code = (
        "for path in ('/usr/evil', '/etc/evil'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    result = await shared_kernel.execute(code, timeout=10)
    assert result.stdout == "OSError\nOSError\n"
    assert not Path("/usr/evil").exists()
    assert not Path("/etc/evil").exists()
