"""Model code swaps a listed file for a symlink and back while the file is downloaded.

The code runs in a container's kernel (the real sandbox) and starts a thread that exchanges
``data.bin`` (and the directory ``sub`` above ``sub/data.bin``) with a symlink to the emulator
process's ``/proc/self/environ``, to a host file outside the workdir, to another container's
file, with a directory and with a FIFO, and back, in a loop, while the test downloads the file
thousands of times. Every answer must be the file's exact bytes or a clear 404: never another
file's bytes, never an empty 200, never a 5xx, never a broken connection. Bounded in count:
``DOWNLOADS`` requests; the thread makes at most ``MAX_SWAPS`` swaps and is stopped (and its
kernel shut down) at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import openai
import pytest

from cigate.engine.containers import Container, ContainerBackend
from cigate.testing.plugin import RunningEmulator

pytestmark = pytest.mark.sandbox

#: Downloads of the raced file(s) per test.
DOWNLOADS = 3000
#: Upper bound on the swaps the code makes, whatever happens to the test.
MAX_SWAPS = 400_000
REAL = bytes(range(256)) * 256  # 64 KiB, the file's own bytes
SECRET = b"a host file outside every container: must never be served\n" * 10
OTHER = b"another container's file: must never be served\n" * 10

WRITE = """
import os
os.makedirs('/mnt/data/sub', exist_ok=True)
for path in ('/mnt/data/data.bin', '/mnt/data/sub/data.bin'):
    with open(path, 'wb') as f:
        f.write(bytes(range(256)) * 256)
"""

#: Starts the swapper; it waits for an upload named ``go`` so the cell's own diff still
#: sees the real files. ``renameat2(RENAME_EXCHANGE)`` swaps two names atomically.
SWAP = """
import ctypes, glob, os, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def xchg(a, b):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), 'renameat2 ' + a)
D = '/mnt/data/'
os.symlink('/proc/self/environ', D + 'decoy-environ')
os.symlink(HOST_FILE, D + 'decoy-host')
os.symlink(OTHER_FILE, D + 'decoy-other')
os.mkdir(D + 'decoy-dir')
os.mkfifo(D + 'decoy-fifo')
os.symlink(HOST_DIR, D + 'decoy-subdir')
PAIRS = [(D + 'data.bin', D + 'decoy-' + k) for k in ('environ', 'host', 'other', 'dir', 'fifo')]
PAIRS.append((D + 'sub', D + 'decoy-subdir'))
stop = threading.Event()
swaps = [0]
def loop():
    while not glob.glob(D + '*-go') and not stop.is_set():
        time.sleep(0.01)
    for i in range(MAX_SWAPS // 2):
        if stop.is_set():
            break
        name, decoy = PAIRS[i % len(PAIRS)]
        xchg(name, decoy)  # the name is the decoy now
        time.sleep(0.0002)
        xchg(name, decoy)  # and the real file again
        swaps[0] += 2
        time.sleep(0.0002)
swapper = threading.Thread(target=loop, daemon=True)
swapper.start()
"""

STOP = "stop.set(); swapper.join(); print(swaps[0])"


@dataclass
class Raced:
    client: openai.OpenAI
    http: httpx2.Client
    backend: ContainerBackend
    container: Container
    #: file id -> URL of its content
    urls: dict[str, str]


def _run(emulator: RunningEmulator, container: Container, code: str) -> str:
    backend: ContainerBackend = emulator.backends.containers
    run = emulator.run_on_loop(backend.run_code(container, code, timeout=60))
    assert run.result.error is None, run.result.logs
    return run.result.stdout


@pytest.fixture
def raced(emulator: RunningEmulator, tmp_path: Path) -> Iterator[Raced]:
    """A container whose code swaps ``data.bin`` and ``sub`` with decoys until the test ends."""
    client = emulator.openai(max_retries=0)
    backend: ContainerBackend = emulator.backends.containers
    other = backend.get(client.containers.create(name="other").id)
    _run(emulator, other, f"open('/mnt/data/secret.bin', 'wb').write({OTHER!r})")
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "data.bin").write_bytes(SECRET)
    container = backend.get(client.containers.create(name="raced").id)
    _run(emulator, container, WRITE)
    files = {f.path: f.id for f in client.containers.files.list(container.id)}
    assert set(files) == {"/mnt/data/data.bin", "/mnt/data/sub/data.bin"}
    swap = (
        f"HOST_FILE = {str(host_dir / 'data.bin')!r}\n"
        f"HOST_DIR = {str(host_dir)!r}\n"
        f"OTHER_FILE = {str(other.directory / 'secret.bin')!r}\n"
        f"MAX_SWAPS = {MAX_SWAPS}\n" + SWAP
    )
    _run(emulator, container, swap)
    client.containers.files.create(container.id, file=("go", b""))  # the swapper starts
    http = emulator.http_client(headers=emulator.auth_headers)
    base = f"/openai/v1/containers/{container.id}/files"
    urls = {fid: f"{base}/{fid}/content" for fid in files.values()}
    try:
        yield Raced(client, http, backend, container, urls)
    finally:
        swaps = int(_run(emulator, container, STOP))
        print(f"\nthe code made {swaps} swaps")
        assert swaps > 0
        client.containers.delete(container.id)  # shuts its kernel down
        client.containers.delete(other.id)


def _classify(response: httpx2.Response, expected: bytes, file_id: str, cid: str) -> str:
    if response.status_code in (200, 206):
        if response.content == expected:
            return "right"
        return "empty-200" if not response.content else "wrong-body"
    if response.status_code == 404:
        message = response.json()["error"]["message"]
        assert message == f"File {file_id} not found on container {cid}."
        return "404"
    return f"status-{response.status_code}"


def test_downloads_racing_symlink_swaps_get_the_real_bytes_or_a_404(raced: Raced) -> None:
    counts: Counter[str] = Counter()
    ids = list(raced.urls)
    cid = raced.container.id
    for n in range(DOWNLOADS):
        file_id = ids[n % len(ids)]
        url = raced.urls[file_id]
        try:
            if n % 10 == 3:  # a range of the file
                got = raced.http.get(url, headers={"range": "bytes=1000-1999"})
                counts[_classify(got, REAL[1000:2000], file_id, cid)] += 1
            elif n % 10 == 7:  # HEAD: the real size or 404
                head = raced.http.head(url)
                ok = head.status_code == 404 or (
                    head.status_code == 200 and head.headers["content-length"] == str(len(REAL))
                )
                counts["right" if ok else f"head-{head.status_code}"] += 1
            else:
                got = raced.http.get(url)
                counts[_classify(got, REAL, file_id, cid)] += 1
        except httpx2.HTTPError as exc:
            counts[f"broken-{type(exc).__name__}"] += 1
    print(f"\n{DOWNLOADS} downloads: {dict(counts)}")
    assert set(counts) <= {"right", "404"}, dict(counts)
    assert counts["right"] > 0
    assert counts["404"] > 0  # the swaps did reach the downloads
