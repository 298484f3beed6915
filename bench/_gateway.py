"""Shared helpers of the gateway benchmarks: free ports, subprocess servers, RSS sampling.

Servers run as separate processes, as in production, so the client's work never shares a GIL
with the server being measured, and a server's memory can be read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIGATE = [sys.executable, "-c", "from cigate.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def split_cpus() -> tuple[set[int], set[int]] | None:
    """This process's CPUs in two halves, ``(load, server)``; ``None`` with fewer than two.

    Why: a server under test that shares a CPU with the processes loading it (client, scripted
    upstream) is measured with the scheduler's wake-up delays between busy processes on one CPU
    (about a millisecond each on a 2-CPU machine), not with its own. Deployed, it runs on CPUs
    of its own (a host or a pod's CPU request); a benchmark gives it the same.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of process ``pid`` on ``cpus`` only (threads and processes it starts
    later inherit this)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start(argv: list[str], env: dict[str, str], health: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(health, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def start_gateway(
    upstream: str, upstream_key: str, tmp: Path, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``cigate gateway serve`` on SQLite + disk under ``tmp`` in front of ``upstream``, and
    the key of its one tenant (made in the store before the server starts)."""
    database = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
    key = asyncio.run(_make_tenant(database))
    argv = [*CIGATE, "gateway", "serve", "--upstream", upstream, "--upstream-key", upstream_key]
    argv += ["--database", database, "--blobs", str(tmp / "blobs"), "--port", str(port)]
    proc = start(argv, {"CIGATE_HOME": str(tmp / "gw-home")}, f"http://127.0.0.1:{port}/healthz")
    return proc, key


async def _make_tenant(database: str) -> str:
    from cigate.storage.metadata import MetadataStore

    async with await MetadataStore.open(database) as meta:
        tenant = await meta.create_tenant("bench")
        return await meta.add_key(tenant.id)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Peak resident memory of a process while a block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ChildEmulator:
    """An emulator in a child process that prints its URL on its first line of output.

    It runs in its own process group, so ``stop()`` (close stdin, wait, else SIGKILL the group)
    always ends it and its kernels. A child that does not say a loopback URL within
    ``startup_timeout`` is stopped and reported with ``RuntimeError``.
    """

    def __init__(self, code: str, startup_timeout: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.url = self._readline(startup_timeout)
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the emulator did not start (said {self.url!r})")

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else ""

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
