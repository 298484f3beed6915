"""The kernel inside a sandbox: IPython's own shell, driven over a socket instead of ZeroMQ.

The shell is created once in the template (``template.py``), before any module is preloaded,
so matplotlib's inline backend hooks into it, and every container's kernel is a fork of that
process: nothing is started or imported per container. What ipykernel would send on IOPub is
sent here as frames of the same shape (``stream``, ``display_data``, ``execute_result``,
``error``, then ``status: idle``), so the manager's one collector reads both.

Output reaches the manager while the cell runs (a flusher thread sends what accumulated every
50 ms), so what a cell printed before its kernel died is not lost. Each stream is capped per
cell (``output.MAX_STREAM`` characters, then one truncation note): a cell printing without end costs
the manager bounded memory. Output written to file descriptors 1 and 2 (subprocesses,
``os.system``, C libraries) is captured through pipes, as ipykernel does.

Interrupts arrive as ``SIGINT`` from the container's init (the manager asks the init by
message); they raise ``KeyboardInterrupt`` only while a cell runs.
"""

from __future__ import annotations

import base64
import codecs
import io
import os
import select
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from cigate.sandbox import protocol
from cigate.sandbox.output import MAX_STREAM, TRUNCATED

#: Buffered output is sent once it reaches this size, or every FLUSH_INTERVAL seconds.
FLUSH_SIZE = 16 << 10
FLUSH_INTERVAL = 0.05


class Channel:
    """The kernel's end of the socket: ordered, thread-safe, per-cell capped messages."""

    def __init__(self, sock: socket.socket, max_stream: int = MAX_STREAM) -> None:
        self.sock = sock
        self.max_stream = max_stream
        self.lock = threading.RLock()
        self.parent: str | None = None
        self._pending: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._pending_size = 0
        self._sent: dict[str, int] = {"stdout": 0, "stderr": 0}
        self._truncated: set[str] = set()
        #: True while a cell runs: only then does SIGINT raise KeyboardInterrupt.
        self.running = False
        self._sending = False  # the main thread is writing a frame: an interrupt must wait
        self._deferred = False
        #: Set while a cell runs: the flusher thread sleeps on it between cells (an idle
        #: kernel wakes up for nothing).
        self.busy = threading.Event()

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """The SIGINT handler: never tears a frame in half, never fires between cells."""
        if not self.running:
            return
        if self._sending:
            self._deferred = True
            return
        raise KeyboardInterrupt

    def begin(self, parent: str) -> None:
        with self.lock:
            self._drop_pending()
            self.parent = parent
            self._sent = {"stdout": 0, "stderr": 0}
            self._truncated = set()
        self.busy.set()

    def stream(self, name: str, text: str) -> None:
        if not text:
            return
        with self.lock:
            if self.parent is None:
                return  # output between cells (a background thread): nobody asked for it
            room = self.max_stream - self._sent[name]
            if room <= 0:
                self._truncate(name)
                return
            if len(text) > room:
                text = text[:room]
                self._pending[name].append(text)
                self._sent[name] += len(text)
                self._truncate(name)
            else:
                self._pending[name].append(text)
                self._sent[name] += len(text)
            self._pending_size += len(text)
            if self._pending_size >= FLUSH_SIZE:
                self.flush()

    def _truncate(self, name: str) -> None:
        if name not in self._truncated:
            self._truncated.add(name)
            self._pending[name].append(TRUNCATED.format(limit=self.max_stream, name=name))

    def flush(self) -> None:
        with self.lock:
            for name in ("stdout", "stderr"):
                if self._pending[name]:
                    text = "".join(self._pending[name])
                    self._pending[name] = []
                    self._send("stream", {"name": name, "text": text})
            self._pending_size = 0

    def send(self, msg_type: str, content: dict[str, Any]) -> None:
        """A message after the output written before it (ordering as the cell saw it)."""
        with self.lock:
            if self.parent is None:
                return
            self.flush()
            self._send(msg_type, content)

    def end(self) -> None:
        self.busy.clear()
        with self.lock:
            self.flush()
            self._send("status", {"execution_state": "idle"})
            self.parent = None

    def _drop_pending(self) -> None:
        self._pending = {"stdout": [], "stderr": []}
        self._pending_size = 0

    def _send(self, msg_type: str, content: dict[str, Any]) -> None:
        frame = protocol.encode({"msg_type": msg_type, "parent": self.parent, "content": content})
        main = threading.current_thread() is threading.main_thread()
        if main:
            self._sending = True
        try:
            self.sock.sendall(frame)
        finally:
            if main:
                self._sending = False
        if main and self._deferred:
            self._deferred = False
            if self.running:
                raise KeyboardInterrupt


class OutStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of the kernel: text goes to the channel."""

    def __init__(self, channel: Channel, name: str, fd: int) -> None:
        super().__init__()
        self._channel = channel
        self._name = name
        self._fd = fd

    @property
    def name(self) -> str:
        return f"<{self._name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._channel.stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        self._channel.flush()


class FdCapture:
    """Pipes on file descriptors 1 and 2, read by a thread into the channel's streams."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._pipes: dict[int, str] = {}
        self._decoders: dict[int, codecs.IncrementalDecoder] = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._pipes[read_end] = name
            self._decoders[read_end] = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="cigate-fd-capture", daemon=True).start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select(list(self._pipes), [], [])
            for fd in ready:
                self._read(fd)

    def _read(self, fd: int) -> None:
        with self._lock:
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                if not data:
                    return
                self._channel.stream(self._pipes[fd], self._decoders[fd].decode(data))

    def drain(self) -> None:
        """Read what is already in the pipes (called at the end of a cell)."""
        for fd in self._pipes:
            self._read(fd)


class _Hook(DisplayHook):
    """The cell's value (``Out[n]``) becomes an ``execute_result``."""

    def write_output_prompt(self) -> None:
        return None

    def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        shell = self.shell
        if isinstance(shell, KernelShell) and shell.channel is not None:
            shell.channel.send("execute_result", {"data": _encode(format_dict)})

    def finish_displayhook(self) -> None:
        return None


class _Publisher(DisplayPublisher):
    """``display(...)`` and inline figures become ``display_data``."""

    def publish(self, data: dict[str, Any], metadata: Any = None, *args: Any, **kw: Any) -> None:
        shell = self.shell
        if isinstance(shell, KernelShell) and shell.channel is not None:
            shell.channel.send("display_data", {"data": _encode(data)})

    def clear_output(self, wait: bool = False) -> None:
        return None


def _encode(data: dict[str, Any]) -> dict[str, Any]:
    """Bytes (PNG, JPEG) as base64 text, as ipykernel's ``encode_images`` does."""
    out: dict[str, Any] = {}
    for mime, value in data.items():
        if isinstance(value, bytes | bytearray):
            out[mime] = base64.b64encode(value).decode("ascii")
        elif isinstance(value, str | int | float | bool | dict | list) or value is None:
            out[mime] = value
        else:
            out[mime] = str(value)
    return out


class KernelShell(InteractiveShell):
    """IPython's shell with its output routed to a :class:`Channel`."""

    displayhook_class = _Hook
    display_pub_class = _Publisher
    channel: Channel | None = None

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        if self.channel is not None:
            content = {"ename": etype.__name__, "evalue": str(evalue), "traceback": stb}
            self.channel.send("error", content)

    def ask_exit(self) -> None:
        """``exit()`` in a cell does not end a code-interpreter kernel."""
        self.exit_now = False

    def enable_gui(self, gui: Any = None) -> None:
        return None


def create_shell() -> KernelShell:
    """The shell every kernel forked from the template inherits (history off, no colours)."""
    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.autocall = 0
    config.InteractiveShell.xmode = "Context"
    # Only what a result carries (text/plain and images): fewer formatters to run per value.
    config.DisplayFormatter.active_types = ["text/plain", "image/png", "image/jpeg"]
    shell = KernelShell.instance(config=config)
    assert isinstance(shell, KernelShell)
    return shell


def serve(shell: KernelShell, sock: socket.socket) -> None:
    """Run cells from the manager until it closes the socket; then exit the process."""
    channel = Channel(sock)
    shell.channel = channel
    sys.stdout = OutStream(channel, "stdout", 1)
    sys.stderr = OutStream(channel, "stderr", 2)
    sys.stdin = io.StringIO("")
    capture = FdCapture(channel)
    signal.signal(signal.SIGINT, channel.on_sigint)
    threading.Thread(target=_flusher, args=(channel,), name="cigate-flush", daemon=True).start()
    _take_first_cell_copies(shell)
    channel.sock.sendall(protocol.encode({"msg_type": "ready", "parent": None, "content": {}}))
    while True:
        try:
            request = protocol.recv_frame(sock)
        except KeyboardInterrupt:
            continue  # an interrupt that arrived just after its cell ended
        except (OSError, protocol.ProtocolError):
            break
        if request is None:
            break
        if request.get("msg_type") != "execute_request":
            continue
        try:
            _run_cell(shell, channel, capture, request)
        except KeyboardInterrupt:
            channel.end()
        except OSError:
            break
    os._exit(0)


def _take_first_cell_copies(shell: KernelShell) -> None:
    """The first cell of a fork copies the ~1,000 pages IPython's machinery writes to (a cell,
    then a value through the display hook): take those copies now, while the kernel waits in
    the pool, not in the first request's time; then leave no trace of the warm-up."""
    shell.run_cell("0", store_history=False, silent=False)  # type: ignore[no-untyped-call]
    namespace = shell.user_ns
    for name in ("_", "__", "___"):
        namespace[name] = ""
    for name in [n for n in namespace if n[:1] == "_" and n[1:].isdigit()]:
        del namespace[name]
    namespace.get("_oh", {}).clear()


def _run_cell(
    shell: KernelShell,
    channel: Channel,
    capture: FdCapture,
    request: dict[str, Any],
) -> None:
    content = request.get("content") or {}
    code = content.get("code") if isinstance(content, dict) else None
    channel.begin(str(request.get("id", "")))
    if isinstance(code, str):
        channel.running = True
        try:
            shell.run_cell(code, store_history=True, silent=False)  # type: ignore[no-untyped-call]
        finally:
            channel.running = False
            shell.exit_now = False
    capture.drain()
    channel.end()


def _flusher(channel: Channel) -> None:
    """Send what a running cell wrote every FLUSH_INTERVAL; asleep between cells."""
    while True:
        channel.busy.wait()
        time.sleep(FLUSH_INTERVAL)
        try:
            channel.flush()
        except OSError:
            return
