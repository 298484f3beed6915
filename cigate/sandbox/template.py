"""The template ("zygote"): one preloaded Python that forks a fresh kernel per container.

``python -m cigate.sandbox.template CONFIG CONTROL_FD`` is started once per pool by the
manager (inside bubblewrap when isolated). It creates the IPython shell, imports the preload
modules (numpy, pandas, matplotlib...), draws one figure so fonts and the Agg renderer are
warm, freezes the garbage collector's view of all that (so children do not copy it by
touching it) and then serves spawn requests on CONTROL_FD, a ``SOCK_SEQPACKET`` socket:

``{"op": "spawn", ...limits}`` with three descriptors (the container directory as a
detached mount tree or a directory, the kernel's socket, the init's socket) answers
``{"ok": true}`` once the container's init is forked. The init (``_init``) then reports on its
own socket, waits for the manager's ``go`` (sent once the init sits in the container's
cgroups, so everything it forks is counted there), forks the kernel (``_kernel``), relays
interrupts to it and reports its exit status.

The template runs no model code, holds no thread and no ZeroMQ context, and never exits
because of one spawn: a failure is reported to the manager on the init's socket.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any

from cigate.sandbox import confine, linux, protocol, seccomp


def main(argv: list[str]) -> None:
    config: dict[str, Any] = json.loads(argv[0])
    control = socket.socket(fileno=int(argv[1]))
    if not config.get("isolated"):
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    from cigate.sandbox import shell

    kernel_shell = shell.create_shell()
    loaded, failed = _preload(config.get("preload") or [])
    _warm(kernel_shell)
    if config.get("isolated"):
        seccomp.program()
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # inits are reaped at once
    threads = len(os.listdir("/proc/self/task"))
    protocol.send_packet(
        control, {"ready": True, "loaded": loaded, "failed": failed, "threads": threads}
    )
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    under_tmp = tuple(str(p) for p in config.get("under_tmp") or ())
    template = _Template(bool(config.get("isolated")), kernel_shell, control, own_pidns, under_tmp)
    while True:
        try:
            request, fds = protocol.recv_packet(control)
        except (OSError, protocol.ProtocolError):
            break
        if request is None:
            break
        _spawn(template, request, fds)
    os._exit(0)


def _preload(modules: list[str]) -> tuple[list[str], list[str]]:
    loaded, failed = [], []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
        else:
            loaded.append(name)
    return loaded, failed


def _warm(kernel_shell: Any) -> None:
    """Take the slow first steps every kernel would otherwise repeat: compiling a cell,
    formatting a traceback, rendering an inline figure (fonts, Agg, PNG)."""
    kernel_shell.run_cell("pass", store_history=False, silent=True)
    try:
        raise ValueError("warm-up")
    except ValueError:
        kernel_shell.showtraceback()  # formatted, sent nowhere (no channel yet)
    if "matplotlib.pyplot" in sys.modules:
        with contextlib.suppress(Exception):
            import matplotlib.pyplot as plt

            figure = plt.figure()
            figure.add_subplot().plot([1, 2])
            kernel_shell.display_formatter.format(figure)
            plt.close(figure)
            _forget_drawn_figures()


def _forget_drawn_figures() -> None:
    """The inline backend remembers figures drawn since the last cell and shows them after the
    next one; the warm-up figure must not make a kernel show the first cell's own figures."""
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    show = getattr(backend, "show", None)
    if show is not None:
        show._draw_called = False
        show._to_draw = []


@dataclass(frozen=True)
class _Template:
    """What every fork of the template starts from."""

    isolated: bool
    shell: Any
    control: socket.socket
    own_pidns: int
    #: Read-only binds under /tmp that each container's own /tmp must not hide.
    under_tmp: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Fds:
    """The descriptors of one spawn: the container directory, the kernel's and init's ends."""

    tree: int
    kernel: int
    init: int


def _spawn(template: _Template, request: dict[str, Any], fds: list[int]) -> None:
    if request.get("op") != "spawn" or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        protocol.send_packet(template.control, {"ok": False, "error": "bad spawn request"})
        return
    try:
        if template.isolated:
            linux.unshare(linux.CLONE_NEWPID)  # the next child is pid 1 of a new namespace
        try:
            pid = os.fork()
            if pid == 0:
                _init(template, request, _Fds(*fds))
        finally:
            if template.isolated:
                linux.setns(template.own_pidns, linux.CLONE_NEWPID)
        protocol.send_packet(template.control, {"ok": True})
    except OSError as exc:
        protocol.send_packet(template.control, {"ok": False, "error": str(exc)})
    finally:
        for fd in fds:
            os.close(fd)


def _init(template: _Template, spec: dict[str, Any], fds: _Fds) -> None:
    """The container's init; never returns."""
    init = socket.socket(fileno=fds.init)
    try:
        template.control.detach()
        _close_other_fds({fds.tree, fds.kernel, fds.init})
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)  # from inside, nothing but SIGKILL of the ns
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if template.isolated:
            confine.enter_container(fds.tree, spec, keep=template.under_tmp)
        else:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        pidfd = os.pidfd_open(os.getpid())
        protocol.send_packet(init, {"op": "hello"}, [pidfd])
        os.close(pidfd)
        go, _ = protocol.recv_packet(init)
        if go is None or go.get("op") != "go":
            os._exit(0)
        kernel = os.fork()
        if kernel == 0:
            init.close()
            _kernel(template, spec, fds)
        os.close(fds.kernel)
        os.close(fds.tree)
        protocol.send_packet(init, {"op": "started", "pid": kernel})
        _supervise(init, kernel)
    except BaseException:
        with contextlib.suppress(Exception):
            protocol.send_packet(init, {"op": "failed", "error": traceback.format_exc()[-2000:]})
    os._exit(1)


def _kernel(template: _Template, spec: dict[str, Any], fds: _Fds) -> None:
    """The kernel process: unprivileged, limited, then serving cells; never returns."""
    from cigate.sandbox import shell

    sock = socket.socket(fileno=fds.kernel)
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        if not template.isolated:
            os.fchdir(fds.tree)
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            os.setsid()
        os.close(fds.tree)
        confine.drop_privileges(spec, isolated=template.isolated)
        assert threading.active_count() == 1
        shell.serve(template.shell, sock)
    except BaseException:
        with contextlib.suppress(Exception):
            error = {"error": traceback.format_exc()[-2000:]}
            message = {"msg_type": "failed", "parent": None, "content": error}
            sock.sendall(protocol.encode(message))
    os._exit(1)


def _supervise(init: socket.socket, kernel: int) -> None:
    """Relay interrupts; when the kernel exits, report how and take the container down."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        status = _reap(kernel)
        if status is not None:
            with contextlib.suppress(OSError):
                protocol.send_packet(init, {"op": "exit", "status": status})
            os._exit(0)
        try:
            ready, _, _ = select.select([init.fileno(), read_end], [], [])
        except InterruptedError:
            continue
        if read_end in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(read_end, 512)
        if init.fileno() in ready:
            try:
                message, fds = protocol.recv_packet(init)
            except (OSError, protocol.ProtocolError):
                message, fds = None, []
            for fd in fds:
                os.close(fd)
            if message is None:
                os._exit(0)  # the manager is gone or asked us to stop: the namespace ends
            if message.get("op") == "interrupt":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kernel, signal.SIGINT)


def _reap(kernel: int) -> int | None:
    """Reap every exited child; the kernel's wait status once it has exited."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == kernel:
            found = status


def _close_other_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
