"""The manager's side of the template: start it once, then fork a container's kernel from it.

:meth:`Template.spawn` hands the template the container's directory (a detached mount tree
from ``open_tree``, which the container's init attaches at ``/mnt/data``: the template itself
never sees any container's directory), the kernel's socket and the init's socket. The init
answers with a pidfd of itself; the manager reads its host pid from that pidfd, puts it into
the container's cgroups (``place``), and only then lets it fork the kernel, so every process
of the container is counted from its first page. The result is a :class:`Process`: the init's
pidfd (its exit is noticed by the event loop at once), its control socket (interrupts) and the
kernel's frame stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cigate.exceptions import SandboxError
from cigate.sandbox import linux, protocol, reaper
from cigate.sandbox.bwrap import LaunchPlan, python_dirs, template_command

log = logging.getLogger(__name__)

#: The kernel's frame queue gets this after its stream ended (the kernel is gone).
GONE = None
#: Frames of the running cell read ahead of the collector before the reader waits for it.
FRAME_BACKLOG = 8
#: After the init's exit is seen, how long the kernel's last frames may take to arrive.
_DRAIN_AFTER_EXIT = 0.05


class Process:
    """One running incarnation of a container's kernel (its init and the kernel under it)."""

    def __init__(
        self,
        *,
        pidfd: int,
        pid: int,
        init: socket.socket,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.pidfd = pidfd
        self.pid = pid  # the init's pid as the manager sees it
        self.kernel_pid: int | None = None  # known unisolated only (same pid namespace)
        self.status: int | None = None  # the kernel's wait status, reported by the init
        self.exited = asyncio.Event()
        self.frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        #: The request whose frames are wanted; every other frame is dropped as it arrives.
        self.expecting: str | None = None
        self.protocol_error: str | None = None
        self._drained = asyncio.Event()
        self._init = init
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pidfd, self._on_exit)
        self._reader_task = asyncio.create_task(self._read(reader), name=f"kernel-{pid}-frames")
        reaper.track(pid)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Frames of the running cell into ``frames``, at most ``FRAME_BACKLOG`` ahead of the
        collector: a kernel writing without end is slowed down (its socket fills), never
        buffered by the manager."""
        try:
            while True:
                frame = await protocol.read_frame(reader)
                if frame is None:
                    break
                if self.expecting is None or frame.get("parent") != self.expecting:
                    continue  # nobody asked for it (a late frame, or noise from the code)
                self.frames.put_nowait(frame)
                while self.frames.qsize() >= FRAME_BACKLOG:
                    self._drained.clear()
                    await self._drained.wait()
        except (protocol.ProtocolError, OSError) as exc:
            self.protocol_error = str(exc)
            log.warning("kernel %s broke the protocol: %s; stopping it", self.pid, exc)
            self.kill()
        finally:
            self.frames.put_nowait(GONE)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self.pidfd)
        self._read_init_messages()
        self.exited.set()
        reaper.untrack(self.pid)
        # The stream normally ends first; if something still holds the socket, stop waiting.
        self._loop.call_later(_DRAIN_AFTER_EXIT, self.frames.put_nowait, GONE)

    def _read_init_messages(self) -> None:
        while True:
            try:
                message, fds = protocol.recv_packet(self._init)
            except (BlockingIOError, OSError, protocol.ProtocolError):
                return
            for fd in fds:
                os.close(fd)
            if message is None:
                return
            if message.get("op") == "exit" and isinstance(message.get("status"), int):
                self.status = message["status"]

    async def next_frame(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
        """The next frame of the running cell (``GONE`` once the kernel is gone); raises
        ``TimeoutError``."""
        frame = await asyncio.wait_for(self.frames.get(), timeout)
        self._drained.set()
        return frame

    async def send(self, message: dict[str, Any]) -> None:
        self._writer.write(protocol.encode(message))
        await self._writer.drain()

    def interrupt(self) -> None:
        """Ask the init to send SIGINT to the kernel (interrupts go by message)."""
        with contextlib.suppress(OSError, protocol.ProtocolError):
            protocol.send_packet(self._init, {"op": "interrupt"})

    def kill(self) -> None:
        """SIGKILL the init: as pid 1 of the container's pid namespace, everything in the
        namespace dies with it (unisolated, the kernel follows by its parent-death signal)."""
        with contextlib.suppress(OSError):
            linux.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        if self.kernel_pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.kernel_pid, signal.SIGKILL)

    async def wait_exit(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), seconds)
        return self.exited.is_set()

    async def close(self) -> None:
        """Release the manager's ends (after the process is gone)."""
        if not self.exited.is_set():
            self._loop.remove_reader(self.pidfd)
            reaper.untrack(self.pid)
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._init.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


class Template:
    """The template process of one pool and the spawn requests made to it."""

    def __init__(
        self,
        plan: LaunchPlan,
        *,
        runtime_dir: Path,
        preload: tuple[str, ...],
        start_timeout: float,
    ) -> None:
        self.plan = plan
        self.runtime_dir = runtime_dir
        self.preload = preload
        self.start_timeout = start_timeout
        self.loaded: list[str] = []
        self.failed: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._lock = asyncio.Lock()
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def _start(self) -> None:
        await self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = template_command(
            self.plan,
            config={
                "isolated": self.plan.isolated,
                "preload": list(self.preload),
                "under_tmp": [d for d in python_dirs() if d.startswith("/tmp/")],  # noqa: S108
            },
            control_fd=theirs.fileno(),
            runtime_dir=self.runtime_dir,
        )
        log_path = self.runtime_dir / "template.log"
        try:
            with open(log_path, "ab") as logfile:  # noqa: ASYNC230 - a local log file
                self._proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec, no waiting
                    command.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=logfile,
                    pass_fds=[theirs.fileno()],
                    env=command.env,
                    cwd=command.cwd,
                    start_new_session=True,
                )
        finally:
            theirs.close()
        reaper.track(self._proc.pid)
        ours.setblocking(False)
        self._control = ours
        self.starts += 1
        try:
            async with asyncio.timeout(self.start_timeout):
                ready, fds = await protocol.recv_packet_async(ours)
        except (TimeoutError, OSError, protocol.ProtocolError) as exc:
            await self._stop()
            detail = f"the sandbox template did not start: {exc}{self.log_tail()}"
            raise SandboxError(detail) from exc
        for fd in fds:
            os.close(fd)
        if ready is None or not ready.get("ready"):
            await self._stop()
            raise SandboxError(f"the sandbox template did not start{self.log_tail()}")
        self.loaded = [str(m) for m in ready.get("loaded", [])]
        self.failed = [str(m) for m in ready.get("failed", [])]
        if ready.get("threads") != 1:
            log.warning("sandbox template holds %s threads before forking", ready.get("threads"))
        if self.failed:
            log.warning("sandbox template could not preload %s", ", ".join(self.failed))

    async def ensure_started(self) -> None:
        async with self._lock:
            if not self.alive:
                await self._start()

    def log_tail(self) -> str:
        try:
            text = (self.runtime_dir / "template.log").read_text(errors="replace").strip()
        except OSError:
            return ""
        return f" (log: {text[-800:]})" if text else ""

    async def spawn(
        self, workdir: Path, spec: dict[str, Any], place: Callable[[int], None]
    ) -> Process:
        """A new kernel bound to ``workdir``, its init placed by ``place(host_pid)`` first."""
        kernel_ours, kernel_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        init_ours, init_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pidfd = -1
        writer: asyncio.StreamWriter | None = None
        done = False
        try:
            async with self._lock:
                if not self.alive:
                    await self._start()
                await self._request(workdir, spec, kernel_theirs, init_theirs)
            kernel_theirs.close()
            init_theirs.close()
            init_ours.setblocking(False)
            async with asyncio.timeout(self.start_timeout):
                hello, fds = await protocol.recv_packet_async(init_ours)
                if hello is None or hello.get("op") != "hello" or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    error = "" if hello is None else str(hello.get("error", ""))
                    raise SandboxError(f"the container's init failed: {error[-1500:]}")
                pidfd = fds[0]
                pid = linux.pid_of_pidfd(pidfd)
                await asyncio.to_thread(place, pid)  # cgroup migrations wait on RCU in v1
                protocol.send_packet(init_ours, {"op": "go"})
                kernel_ours.setblocking(False)
                started, fds = await protocol.recv_packet_async(init_ours)
                for fd in fds:
                    os.close(fd)
                if started is None or started.get("op") != "started":
                    raise SandboxError(
                        f"the container's init did not start the kernel{self.log_tail()}"
                    )
                reader, writer = await asyncio.open_unix_connection(sock=kernel_ours)
                ready = await protocol.read_frame(reader)
            if ready is None or ready.get("msg_type") != "ready":
                detail = ""
                if ready is not None and isinstance(ready.get("content"), dict):
                    detail = str(ready["content"].get("error", ""))[-1500:]
                raise SandboxError(f"the kernel failed to start: {detail}{self.log_tail()}")
            process = Process(pidfd=pidfd, pid=pid, init=init_ours, reader=reader, writer=writer)
            if not self.plan.isolated and isinstance(started.get("pid"), int):
                process.kernel_pid = started["pid"]  # same pid namespace: a host pid
            done = True
            return process
        except TimeoutError:
            raise SandboxError(f"the kernel did not start in time{self.log_tail()}") from None
        except (OSError, protocol.ProtocolError) as exc:
            raise SandboxError(f"the kernel failed to start: {exc}{self.log_tail()}") from exc
        finally:
            kernel_theirs.close()
            init_theirs.close()
            if not done:
                if pidfd >= 0:  # the init exists: take it (and its namespace) down
                    with contextlib.suppress(OSError):
                        linux.pidfd_send_signal(pidfd, signal.SIGKILL)
                    os.close(pidfd)
                if writer is not None:
                    writer.close()
                else:
                    kernel_ours.close()
                init_ours.close()

    async def _request(
        self,
        workdir: Path,
        spec: dict[str, Any],
        kernel_sock: socket.socket,
        init_sock: socket.socket,
    ) -> None:
        assert self._control is not None
        if self.plan.isolated:
            tree = linux.open_tree(str(workdir))
        else:
            tree = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            message = {"op": "spawn", **spec}
            protocol.send_packet(
                self._control, message, [tree, kernel_sock.fileno(), init_sock.fileno()]
            )
        finally:
            os.close(tree)
        async with asyncio.timeout(self.start_timeout):
            reply, fds = await protocol.recv_packet_async(self._control)
        for fd in fds:
            os.close(fd)
        if reply is None:
            raise SandboxError(f"the sandbox template exited{self.log_tail()}")
        if not reply.get("ok"):
            raise SandboxError(f"the sandbox template could not fork: {reply.get('error')}")

    async def close(self) -> None:
        async with self._lock:
            await self._stop()

    async def _stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 5)
        reaper.untrack(proc.pid)
