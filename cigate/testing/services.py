"""Real PostgreSQL and Azurite servers for tests, started and stopped by the suite itself.

The storage and gateway suites run on SQLite + disk *and* on PostgreSQL + Azurite, the
scale-out configuration, against real servers rather than mocks: what breaks in production
(transactions, advisory locks, block commits, SAS copies) only shows up there.

- PostgreSQL: a throwaway cluster in a temp dir (``initdb``; as root the cluster belongs to
  the ``postgres`` user, run through ``runuser``, since ``initdb`` refuses root), listening
  on 127.0.0.1 on a free port with its socket in the temp dir and ``fsync=off`` for speed.
- Azurite: ``node_modules/.bin/azurite-blob`` on a free loopback port, data in a temp dir.

Both stop on :meth:`stop`, on ``with`` exit, and at interpreter exit as a last resort.
Missing binaries raise :class:`ServiceUnavailable` with the command that installs them.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from cigate.storage.blob_azure import azurite_connection_string

__all__ = [
    "AzuriteServer",
    "PostgresServer",
    "ServiceUnavailable",
    "find_azurite",
    "find_postgres_bindir",
    "free_port",
]

_REPO = Path(__file__).resolve().parents[2]


class ServiceUnavailable(RuntimeError):
    """A test service cannot run on this machine (binaries missing); the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def find_postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` (Debian), else the directory of ``initdb``."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)] or [0],
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceUnavailable(
        "PostgreSQL binaries (initdb, pg_ctl) are missing: run scripts/install-system-deps.sh "
        "(apt-get install postgresql)"
    )


def find_azurite() -> Path:
    """``node_modules/.bin/azurite-blob`` of the repo, else ``azurite-blob`` on ``PATH``."""
    local = _REPO / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return local
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise ServiceUnavailable("Azurite is missing: run scripts/install-node-deps.sh (npm install)")


class PostgresServer:
    """A private PostgreSQL cluster: ``with PostgresServer() as pg: url = pg.create_database()``."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_postgres_bindir()
        self.port = 0
        self._tmp: Path | None = None
        self._as_user: list[str] = []
        self._counter = 0

    def start(self) -> Self:
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ServiceUnavailable("runuser (util-linux) is needed to run PostgreSQL as root")
            try:
                import pwd

                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServiceUnavailable("no 'postgres' user: apt-get install postgresql") from exc
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._tmp = Path(tempfile.mkdtemp(prefix="cigate-pg-"))
        atexit.register(self.stop)
        if self._as_user:
            os.chown(self._tmp, owner.pw_uid, owner.pw_gid)
        data = self._tmp / "data"
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._tmp} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            log = self._tmp / "postgres.log"
            ctl = [str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30"]
            try:
                self._run([*ctl, "-o", options, "start"])
                return self
            except RuntimeError:
                if "could not bind" not in _tail(log) and "in use" not in _tail(log):
                    self.stop()
                    raise
        self.stop()
        raise RuntimeError("PostgreSQL could not bind a free port")

    def stop(self) -> None:
        """Stop the server (immediate mode: it is a throwaway) and delete its files."""
        tmp, self._tmp = self._tmp, None
        if tmp is None:
            return
        atexit.unregister(self.stop)
        if (tmp / "data" / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self._as_user,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(tmp / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(tmp, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement through ``psql`` (sync: usable from any fixture)."""
        result = subprocess.run(
            [
                *(str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database),
                *("-c", statement),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """Create a database (empty, or a copy of ``template``) and return its URL."""
        if name is None:
            self._counter += 1
            name = f"cigate_{os.getpid()}_{self._counter}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name + template):
            raise ValueError(f"unsafe database name {name!r}")
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(
            [*self._as_user, *argv], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {result.stderr or result.stdout}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AzuriteServer:
    """Azurite's blob service on a free loopback port; ``connection_string`` to reach it."""

    def __init__(self, binary: Path | None = None) -> None:
        self.binary = binary or find_azurite()
        self.port = 0
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.port)

    def start(self) -> Self:
        self._tmp = Path(tempfile.mkdtemp(prefix="cigate-azurite-"))
        atexit.register(self.stop)
        for _attempt in range(3):
            self.port = free_port()
            log = self._tmp / f"azurite-{self.port}.log"
            with log.open("wb") as out:
                self._proc = subprocess.Popen(
                    [
                        *(
                            str(self.binary),
                            "--blobHost",
                            "127.0.0.1",
                            "--blobPort",
                            str(self.port),
                        ),
                        *("--location", str(self._tmp / "data"), "--skipApiVersionCheck"),
                        *("--disableTelemetry", "--loose", "--silent"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
            try:
                _wait_for_port(self.port, self._proc, 30, log)
                return self
            except RuntimeError:
                self._kill()
                if "EADDRINUSE" not in _tail(log):
                    self.stop()
                    raise
        self.stop()
        raise RuntimeError("Azurite could not bind a free port")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        self._kill()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            atexit.unregister(self.stop)
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
