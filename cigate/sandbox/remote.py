"""Remote kernels through the Jupyter Kernel Gateway / Enterprise Gateway protocol.

The self-hosted interpreter can take its kernels from a Kernel Gateway (KG) or an Enterprise
Gateway (EG, which launches each kernel as a Kubernetes pod) instead of the local sandbox pool.
:class:`RemoteKernels` is the engine's kernel provider; each :class:`RemoteKernel` is a
``KernelSession`` whose ``workdir`` is a *local mirror* of the kernel's data directory: before a
cell, files that changed in the mirror (uploads) are pushed to the kernel; after it, the kernel's
directory is listed and changed files are pulled, vanished ones removed. The engine's snapshots,
citations and storage then work unchanged (docs/self-hosted.md, "Remote kernels").

The protocol (REST ``/api/kernels``, the websocket ``…/channels`` with the binary
``v1.kernel.websocket.jupyter.org`` framing) and the file moves follow the verified research in
the issue's note: files go *in* as binary buffers of silent ``execute_request``s (4 MiB each,
acknowledged one by one) and *out* through ``user_expressions`` (the shell reply, never stdout,
which KG rate-limits). ``POST /api/kernels`` always carries ``env`` (without it KG gives the
kernel the gateway's whole environment). Everything the kernel sends is untrusted: frames are
capped, decoded defensively, names are exchanged as hex bytes and must be plain relative paths,
sizes and counts are bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cigate.exceptions import SandboxCapacityError, SandboxError
from cigate.sandbox.base import MOUNT_POINT, ExecutionError, ExecutionResult
from cigate.sandbox.output import Collector, PathRewriter

__all__ = ["RemoteKernel", "RemoteKernels", "decode_v1", "encode_v1"]

log = logging.getLogger(__name__)

V1 = "v1.kernel.websocket.jupyter.org"
#: Largest websocket frame accepted from the gateway (a hostile kernel can send anything).
MAX_FRAME = 16 * 1024 * 1024
#: Bytes per pushed or pulled chunk (servers close above 10 MiB frames: 1009).
CHUNK = 4 * 1024 * 1024
#: Files and bytes one pull may bring back (the sandbox's own disk quota is the model).
MAX_FILES = 10_000
MAX_PULL_BYTES = 2 * 1024 * 1024 * 1024
#: Seconds for a control round trip (helpers, listing, one chunk) and for a kernel to start.
ROUND_TRIP = 120.0
START_TIMEOUT = 120.0
#: After an interrupt, how long the cell gets to end before the kernel is restarted.
INTERRUPT_GRACE = 5.0

#: Installed once per kernel in a private module; called as ``__import__("_cigate").X``.
_HELPERS = r"""
import base64 as _b64, os as _os, sys as _sys, types as _types
_m = _types.ModuleType("_cigate")
_m.root = None
class _J:
    def __init__(self, v): self.v = v
    def _repr_json_(self): return self.v
_m._J = _J
def _path(hexname):
    name = bytes.fromhex(hexname)
    if name.startswith(b"/") or b"\0" in name or b".." in name.split(b"/"):
        raise ValueError("bad name")
    return _os.path.join(_os.fsencode(_m.root), name)
def setup(root):
    _os.makedirs(root, exist_ok=True)
    _os.chdir(root)
    _m.root = _os.getcwd()
    return _J({"root": _m.root})
def write(hexname, offset):
    buf = get_ipython().kernel.get_parent()["buffers"][0]
    path = _path(hexname)
    _os.makedirs(_os.path.dirname(path), exist_ok=True)
    with open(path, "r+b" if offset else "wb") as f:
        f.seek(offset)
        f.write(buf)
        if not offset:
            f.truncate()
def ls(limit):
    out = []
    root = _os.fsencode(_m.root)
    for top, dirs, files in _os.walk(root):
        dirs[:] = [d for d in dirs if not _os.path.islink(_os.path.join(top, d))]
        for name in files:
            full = _os.path.join(top, name)
            st = _os.lstat(full)
            if not _os.path.isfile(full) or _os.path.islink(full):
                continue
            out.append([_os.path.relpath(full, root).hex(), st.st_size, st.st_mtime_ns, st.st_ino])
            if len(out) >= limit:
                return _J({"files": out, "complete": False})
    return _J({"files": out, "complete": True})
def read(hexname, offset, size):
    with open(_path(hexname), "rb") as f:
        f.seek(offset)
        return _J({"data": _b64.b64encode(f.read(size)).decode()})
def remove(hexname):
    _os.unlink(_path(hexname))
for _n in ("setup", "write", "ls", "read", "remove"):
    setattr(_m, _n, globals()[_n])
_sys.modules["_cigate"] = _m
"""


def encode_v1(channel: str, msg: Mapping[str, Any]) -> bytes:
    """One ``v1.kernel.websocket.jupyter.org`` frame: u64 LE offset count, the offsets (channel
    start, each part's start, the end), then channel, header, parent, metadata, content, buffers."""
    parts = [
        json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")
    ]
    parts += list(msg.get("buffers") or [])
    channel_bytes = channel.encode()
    count = 1 + 1 + len(parts) + 1
    offsets = [8 * count, 8 * count + len(channel_bytes)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + channel_bytes + b"".join(parts)


def decode_v1(data: bytes) -> tuple[str, dict[str, Any]]:
    """A frame's channel and message; ``ValueError`` for anything malformed."""
    if len(data) < 8:
        raise ValueError("short frame")
    count = int.from_bytes(data[:8], "little")
    if not 6 <= count <= 1024 or len(data) < 8 * (count + 1):
        raise ValueError("bad offset count")
    offsets = [int.from_bytes(data[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    if offsets != sorted(offsets) or offsets[-1] > len(data) or offsets[0] != 8 * (count + 1):
        raise ValueError("bad offsets")
    channel = data[offsets[0] : offsets[1]].decode("ascii")
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]
    keys = ("header", "parent_header", "metadata", "content")
    msg: dict[str, Any] = {k: json.loads(parts[i]) for i, k in enumerate(keys)}
    if not all(isinstance(msg[k], dict) for k in keys):
        raise ValueError("a message part is not an object")
    msg["buffers"] = parts[4:]
    return channel, msg


class RemoteKernels:
    """Kernels from a Kernel/Enterprise Gateway at ``url`` (token auth), mirrored under ``root``.

    ``env`` is sent with every kernel (EG needs ``KERNEL_USERNAME``; KG then builds the kernel's
    environment from it and an allow-list instead of its own). ``remote_root`` is where a
    kernel keeps its files: ``/mnt/data`` on a pod that mounts it (EG on Kubernetes), else a
    per-kernel directory under the kernel's working directory (``None``, a local test gateway).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        root: Path,
        kernel_name: str = "python3",
        env: Mapping[str, str] | None = None,
        remote_root: str | None = None,
        max_kernels: int = 64,
        owner_limit: int | None = None,
    ) -> None:
        import aiohttp  # the gateway extra; only remote kernels need it

        self.url = url.rstrip("/")
        self.token = token
        self.root = root
        self.kernel_name = kernel_name
        self.env = {"KERNEL_USERNAME": "cigate", **(env or {})}
        self.remote_root = remote_root
        self.max_kernels = max_kernels
        self.owner_limit = owner_limit
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"token {token}"},
            timeout=aiohttp.ClientTimeout(total=START_TIMEOUT),
        )
        self._live: dict[RemoteKernel, str | None] = {}
        root.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for kernel in list(self._live):
            with contextlib.suppress(Exception):
                await kernel.discard()
        await self._http.close()

    def status(self) -> dict[str, Any]:
        return {"isolation": {"mode": "remote", "url": self.url}, "live": len(self._live)}

    async def acquire(self, *, memory: int | None = None, owner: str | None = None) -> RemoteKernel:
        """A started remote kernel with its helpers and an empty data directory."""
        if len(self._live) >= self.max_kernels:
            raise SandboxCapacityError(
                f"this gateway already runs its maximum of {self.max_kernels} remote kernels"
            )
        if owner is not None and self.owner_limit is not None:
            mine = sum(1 for o in self._live.values() if o == owner)
            if mine >= self.owner_limit:
                raise SandboxCapacityError(
                    f"{owner!r} already runs its maximum of {self.owner_limit} live containers"
                )
        env = dict(self.env)
        if memory is not None:
            env.setdefault("KERNEL_MEMORY_LIMIT", str(memory))
        async with self._http.post(
            f"{self.url}/api/kernels", json={"name": self.kernel_name, "env": env}
        ) as answer:
            if answer.status == 403:
                raise SandboxCapacityError("the kernel gateway refused another kernel")
            if answer.status not in (200, 201):
                # Never the gateway's body: it may carry a server traceback.
                raise SandboxError(f"the kernel gateway could not start a kernel ({answer.status})")
            model = await answer.json()
        kernel_id = str(model.get("id", "")) if isinstance(model, dict) else ""
        if not kernel_id:
            raise SandboxError("the kernel gateway answered without a kernel id")
        mirror = self.root / kernel_id
        mirror.mkdir(parents=True)
        kernel = RemoteKernel(self, kernel_id, mirror)
        self._live[kernel] = owner
        try:
            await kernel.connect()
        except BaseException:
            await kernel.discard()
            raise
        return kernel

    async def delete(self, kernel: RemoteKernel) -> None:
        self._live.pop(kernel, None)
        with contextlib.suppress(Exception):
            async with self._http.delete(f"{self.url}/api/kernels/{kernel.kernel_id}"):
                pass


class RemoteKernel:
    """One remote kernel and its local mirror (the engine's ``workdir``)."""

    def __init__(self, provider: RemoteKernels, kernel_id: str, workdir: Path) -> None:
        self.provider = provider
        self.kernel_id = kernel_id
        self.workdir = workdir
        self.session = uuid.uuid4().hex
        self.remote_root = provider.remote_root
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._broken: str | None = None
        #: (size, mtime_ns) of each mirror file at the last sync, and of each kernel file at the
        #: last listing, by relative name bytes.
        self._synced: dict[bytes, tuple[int, int]] = {}
        self._remote: dict[bytes, tuple[int, int]] = {}
        self._rewriter = PathRewriter(None)

    @property
    def isolated(self) -> bool:
        return False  # isolation is the remote side's (a pod on EG); see docs/security.md

    async def connect(self) -> None:
        """Open the channels (v1 framing), install the helpers, make the data directory."""
        ws_url = self.provider.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self._ws = await self.provider._http.ws_connect(
            f"{ws_url}/api/kernels/{self.kernel_id}/channels?session_id={self.session}",
            protocols=(V1,),
            max_msg_size=MAX_FRAME,
            autoping=True,
        )
        if self._ws.protocol != V1:
            raise SandboxError("the kernel gateway does not speak the v1 websocket protocol")
        self._reader = asyncio.create_task(self._read(), name=f"cigate-kernel-{self.kernel_id}")
        await self._run(_HELPERS, silent=True)
        root = self.remote_root or f"cigate-{self.kernel_id}"
        setup = f"__import__('_cigate').setup({root!r})"
        answer = _expression(await self._run("", silent=True, expressions={"s": setup}), "s")
        actual = answer.get("root") if isinstance(answer, dict) else None
        if not isinstance(actual, str):
            raise SandboxError("the remote kernel did not report its data directory")
        self._rewriter = PathRewriter(None if actual == MOUNT_POINT else actual)

    # -- the protocol ------------------------------------------------------------------------

    async def _read(self) -> None:
        import aiohttp

        sock = self._ws.get_extra_info("socket")
        quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux only
        try:
            async for frame in self._ws:
                if sock is not None and quickack is not None:
                    # ACK at once: the gateways never set TCP_NODELAY, so Nagle against a
                    # delayed ACK would hold every small reply ~40 ms (the research note, §0.5).
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                if frame.type != aiohttp.WSMsgType.BINARY:
                    continue  # the v1 protocol sends binary frames only
                try:
                    channel, msg = decode_v1(frame.data)
                except (ValueError, UnicodeDecodeError) as exc:
                    log.warning("kernel %s sent a bad frame: %s", self.kernel_id, exc)
                    continue
                self._dispatch(channel, msg)
        finally:
            self._fail("the connection to the remote kernel closed")

    def _dispatch(self, channel: str, msg: dict[str, Any]) -> None:
        kind = msg["header"].get("msg_type")
        if channel == "iopub" and kind == "status":
            state = msg["content"].get("execution_state")
            if state in ("restarting", "dead"):
                self._fail("the remote kernel died and was restarted")
                return
        parent = msg["parent_header"].get("msg_id")
        pending = self._pending.get(parent) if isinstance(parent, str) else None
        if pending is None:
            return
        if channel in ("shell", "control") and str(kind).endswith("_reply"):
            pending.reply = msg["content"]
        elif channel == "iopub":
            pending.collector.feed(msg)
        if pending.reply is not None and pending.collector.idle and not pending.done.done():
            pending.done.set_result(None)

    def _fail(self, why: str) -> None:
        self._broken = why
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.set_exception(SandboxError(why))

    async def _send(
        self, channel: str, msg_type: str, content: dict[str, Any], buffers: list[bytes]
    ) -> _Pending:
        if self._broken is not None:
            raise SandboxError(self._broken)
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "cigate",
            "session": self.session,
            "date": dt.datetime.now(dt.UTC).isoformat(),
            "version": "5.4",
        }
        pending = _Pending(asyncio.get_running_loop().create_future())
        self._pending[msg_id] = pending
        msg = {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "buffers": buffers,
        }
        await self._ws.send_bytes(encode_v1(channel, msg))
        pending.msg_id = msg_id
        return pending

    async def _run(
        self,
        code: str,
        *,
        silent: bool,
        buffers: list[bytes] | None = None,
        expressions: dict[str, str] | None = None,
        timeout: float = ROUND_TRIP,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """A helper call: its reply's content; an error in the kernel is a ``SandboxError``."""
        pending = await self._send(
            "shell",
            "execute_request",
            _execute(code, silent=silent, expressions=expressions),
            buffers or [],
        )
        try:
            await asyncio.wait_for(asyncio.shield(pending.done), timeout)
        finally:
            self._pending.pop(pending.msg_id, None)
        reply = pending.reply or {}
        if reply.get("status") != "ok":
            raise SandboxError(f"a file helper failed in the remote kernel: {reply.get('ename')}")
        return reply

    # -- KernelSession -----------------------------------------------------------------------

    async def execute(self, code: str, *, timeout: float) -> ExecutionResult:  # noqa: ASYNC109
        """Push changed files, run the cell (interrupted past ``timeout``), pull what changed."""
        started = time.monotonic()
        await self._push()
        pending = await self._send(
            "shell",
            "execute_request",
            _execute(self._rewriter.to_kernel(code), silent=False, expressions=None),
            [],
        )
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(pending.done), timeout)
        except TimeoutError:
            timed_out = True
            await self._interrupt()
            with contextlib.suppress(TimeoutError, SandboxError):
                await asyncio.wait_for(asyncio.shield(pending.done), INTERRUPT_GRACE)
        except SandboxError as exc:
            pending.collector.result.error = _died(str(exc))
        finally:
            self._pending.pop(pending.msg_id, None)
        result = pending.collector.result
        if timed_out:
            result.timed_out = True
            result.error = None
        result.duration = time.monotonic() - started
        if self._broken is None:
            await self._pull()
        return self._rewriter.result(result)

    async def _interrupt(self) -> None:
        with contextlib.suppress(Exception):
            async with self.provider._http.post(
                f"{self.provider.url}/api/kernels/{self.kernel_id}/interrupt"
            ):
                pass

    async def shutdown(self) -> str:
        await self._close()
        return "exited"

    async def discard(self) -> None:
        await self._close()
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)

    async def _close(self) -> None:
        await self.provider.delete(self)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._fail("the kernel was shut down")

    # -- files -------------------------------------------------------------------------------

    def _local(self) -> dict[bytes, tuple[int, int]]:
        out: dict[bytes, tuple[int, int]] = {}
        base = os.fsencode(self.workdir)
        for top, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
            for name in files:
                full = os.path.join(top, name)
                st = os.lstat(full)
                if os.path.isfile(full) and not os.path.islink(full):
                    out[os.path.relpath(full, base)] = (st.st_size, st.st_mtime_ns)
        return out

    async def _push(self) -> None:
        """Mirror files that are new or changed since the last sync go to the kernel; names
        removed from the mirror (deleted through the API) are removed there too."""
        local = await asyncio.to_thread(self._local)
        pushed = False
        for name, signature in sorted(local.items()):
            if self._synced.get(name) == signature:
                continue
            pushed = True
            path = os.path.join(os.fsencode(self.workdir), name)
            with open(path, "rb") as f:  # noqa: ASYNC230 - the local mirror, 4 MiB reads
                offset = 0
                while True:
                    chunk = f.read(CHUNK)
                    write = f"__import__('_cigate').write({name.hex()!r}, {offset})"
                    await self._run(write, silent=True, buffers=[chunk])
                    offset += len(chunk)
                    if len(chunk) < CHUNK:
                        break
        for name in set(self._synced) - set(local):
            pushed = True
            with contextlib.suppress(SandboxError):
                await self._run(f"__import__('_cigate').remove({name.hex()!r})", silent=True)
        self._synced = local
        if pushed:  # what the kernel now has is ours: not to be fetched back after the cell
            self._remote = await self._listing()

    async def _listing(self) -> dict[bytes, tuple[int, int]]:
        """The kernel's files (its word: every entry is checked), by relative name bytes."""
        reply = await self._run(
            "", silent=True, expressions={"ls": f"__import__('_cigate').ls({MAX_FILES})"}
        )
        listing = _expression(reply, "ls")
        entries = listing.get("files") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise SandboxError("the remote kernel sent an unreadable file listing")
        remote: dict[bytes, tuple[int, int]] = {}
        for entry in entries[:MAX_FILES]:
            parsed = _entry(entry)
            if parsed is not None:
                remote[parsed[0]] = parsed[1]
        return remote

    async def _pull(self) -> None:
        """Files new or changed in the kernel come to the mirror; vanished ones leave it."""
        remote = await self._listing()
        budget = MAX_PULL_BYTES
        for name, (size, mtime) in sorted(remote.items()):
            if self._remote.get(name) == (size, mtime) and name in self._synced:
                continue
            if size > budget:
                log.warning("kernel %s: %r is past the pull budget", self.kernel_id, name)
                continue
            budget -= size
            await self._fetch(name, size)
        base = os.fsencode(self.workdir)
        for name in set(self._synced) - set(remote):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(base, name))
        self._remote = remote
        self._synced = await asyncio.to_thread(self._local)

    async def _fetch(self, name: bytes, size: int) -> None:
        """One file, chunk by chunk, written beside its name and renamed into place."""
        target = os.path.join(os.fsencode(self.workdir), name)
        await asyncio.to_thread(os.makedirs, os.path.dirname(target), exist_ok=True)
        temporary = target + b".cigate-part"
        with open(temporary, "wb") as f:  # noqa: ASYNC230 - the local mirror, 4 MiB writes
            offset = 0
            while offset < size:
                read = f"__import__('_cigate').read({name.hex()!r}, {offset}, {CHUNK})"
                chunk = _expression(await self._run("", silent=True, expressions={"r": read}), "r")
                data = chunk.get("data") if isinstance(chunk, dict) else None
                if not isinstance(data, str):
                    raise SandboxError("the remote kernel sent an unreadable file chunk")
                raw = base64.b64decode(data)
                if not raw:
                    break  # the file shrank while it was read
                f.write(raw[: size - offset])
                offset += len(raw)
        os.replace(temporary, target)


class _Pending:
    """One request in flight: its reply, what it printed, and when it is over."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.reply: dict[str, Any] | None = None
        self.collector = Collector()
        self.msg_id = ""


def _execute(code: str, *, silent: bool, expressions: dict[str, str] | None) -> dict[str, Any]:
    return {
        "code": code,
        "silent": silent,
        "store_history": not silent,
        "user_expressions": expressions or {},
        "allow_stdin": False,
        "stop_on_error": True,
    }


def _expression(reply: dict[str, Any], key: str) -> Any:
    """The JSON value of a ``user_expressions`` entry (``_repr_json_``) or its text."""
    value = (reply.get("user_expressions") or {}).get(key)
    if not isinstance(value, dict) or value.get("status") != "ok":
        return None
    data = value.get("data") or {}
    if "application/json" in data:
        return data["application/json"]
    return None


def _entry(entry: Any) -> tuple[bytes, tuple[int, int]] | None:
    """A listing entry ``[name_hex, size, mtime_ns, ino]`` as (name, (size, mtime)), if sane."""
    if not isinstance(entry, list) or len(entry) != 4:
        return None
    hexname, size, mtime = entry[0], entry[1], entry[2]
    if not isinstance(hexname, str) or not isinstance(size, int) or not isinstance(mtime, int):
        return None
    try:
        name = bytes.fromhex(hexname)
    except ValueError:
        return None
    if (
        not name
        or name.startswith(b"/")
        or b"\0" in name
        or b".." in name.split(b"/")
        or name.endswith(b".cigate-part")
        or size < 0
    ):
        return None
    return name, (size, mtime)


def _died(why: str) -> ExecutionError:
    return ExecutionError(ename="KernelDied", evalue=why, traceback=[])
