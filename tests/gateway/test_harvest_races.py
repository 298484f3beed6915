"""The gateway harvests files that model code keeps swapping for symlinks: no foreign body.

Each round is one response through the gateway whose cell writes ``FILES`` new files and
starts a thread that exchanges (``renameat2(RENAME_EXCHANGE)``) each of them with a symlink to
a host file outside the workdir, to the emulator's ``/proc/self/environ`` and to another
container's file (all the same size as the real files), with a directory and with a FIFO, and
back, while the gateway copies them (citations during the response, the container's listing
at its end). A copy may fail (the upstream answered 404 while the name was
a decoy), but whatever the gateway stored and serves must be exactly the file's own bytes.
Both storage backends. Bounded: ``ROUNDS`` x ``FILES`` files; each swapper makes at most
``MAX_SWAPS`` swaps, and all of them are stopped (their kernel shut down) at the end.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from cigate.engine.containers import ContainerBackend
from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import LiveGateway, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

ROUNDS = 3
FILES = 20
MAX_SWAPS = 40_000
#: Every file is 4 KiB, and so are the host's and the other container's: the gateway's size
#: checks cannot tell them apart, only their bytes can.
SIZE = 4096
SECRET = b"host file: the gateway must never store this\n".ljust(64) * (SIZE // 64)
OTHER = b"another container's file: never stored here\n".ljust(64) * (SIZE // 64)

SETUP = """
import ctypes, os, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def xchg(a, b):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), 'renameat2 ' + a)
D = '/mnt/data/'
def decoys(r):
    # this round's own decoys (threads sharing one would pass files between names)
    made = []
    for k, make in (
        ('environ', lambda p: os.symlink('/proc/self/environ', p)),
        ('host', lambda p: os.symlink(HOST_FILE, p)),
        ('other', lambda p: os.symlink(OTHER_FILE, p)),
        ('dir', os.mkdir),
        ('fifo', os.mkfifo),
    ):
        make(D + 'decoy-%d-%s' % (r, k))
        made.append(D + 'decoy-%d-%s' % (r, k))
    return made
stop = threading.Event()
swappers = []
swaps = [0]
def expected(r, i):
    return (b'round %d file %d\\n' % (r, i)).ljust(64) * 64
def swap(names, own):
    time.sleep(0.05)  # after the cell's own listing of the directory
    for n in range(MAX_SWAPS // 2):
        if stop.is_set():
            return
        name, decoy = names[n % len(names)], own[n % len(own)]
        xchg(name, decoy)
        time.sleep(0.0002)
        xchg(name, decoy)
        swaps[0] += 2
        time.sleep(0.0002)
print('ready')
"""

ROUND = """
names = []
for i in range(FILES):
    name = D + 'r%d_f%02d.bin' % (ROUND, i)
    with open(name, 'wb') as f:
        f.write(expected(ROUND, i))
    names.append(name)
swappers.append(threading.Thread(target=swap, args=(names, decoys(ROUND)), daemon=True))
swappers[-1].start()
print('round', ROUND)
"""

STOP = "stop.set()\nfor t in swappers: t.join()\nprint(swaps[0])"


def expected(name: str) -> bytes:
    r, i = name.removesuffix(".bin").removeprefix("r").split("_f")
    return (b"round %d file %d\n" % (int(r), int(i))).ljust(64) * (SIZE // 64)


def test_a_harvest_racing_symlink_swaps_never_stores_a_foreign_body(
    live_gateway: LiveGateway, emulator: RunningEmulator, tmp_path: Path
) -> None:
    backend: ContainerBackend = emulator.backends.containers
    upstream = emulator.openai()
    other = backend.get(upstream.containers.create(name="other").id)
    emulator.run_on_loop(
        backend.run_code(other, f"open('/mnt/data/s.bin', 'wb').write({OTHER!r})", timeout=60)
    )
    host_file = tmp_path / "host-secret.bin"
    host_file.write_bytes(SECRET)
    sdk = live_gateway.openai()
    container_id = sdk.containers.create(name="raced").id  # through the gateway: the tenant's
    tool = [{"type": "code_interpreter", "container": container_id}]
    setup = (
        f"HOST_FILE = {str(host_file)!r}\nOTHER_FILE = {str(other.directory / 's.bin')!r}\n"
        f"MAX_SWAPS = {MAX_SWAPS}\nFILES = {FILES}\n" + SETUP
    )
    sdk.responses.create(model="gpt-4.1", input=code_input(setup), tools=tool)
    responses = []
    try:
        for r in range(ROUNDS):
            cell = f"ROUND = {r}\n" + ROUND
            responses.append(
                sdk.responses.create(model="gpt-4.1", input=code_input(cell), tools=tool).id
            )
        rows = [f for rid in responses for f in live_gateway.harvested(rid, at_least=1)]
    finally:
        container = backend.get(container_id)
        stopped = emulator.run_on_loop(backend.run_code(container, STOP, timeout=60))
        swaps = int(stopped.result.stdout)
        upstream.containers.delete(container_id)  # and its kernel with it
        upstream.containers.delete(other.id)
    http = live_gateway.http()
    counts: Counter[str] = Counter()
    for row in rows:
        if not row["filename"].startswith("r"):
            continue
        want = expected(row["filename"])
        if row["state"] != "stored":
            counts[f"{row['state']}:{(row['error'] or {}).get('kind')}"] += 1
            continue
        body = http.get(f"/files/{row['id']}/content").content
        right = body == want and row["sha256"] == hashlib.sha256(want).hexdigest()
        counts["stored-right" if right else "stored-WRONG"] += 1
    print(f"\n{ROUNDS * FILES} files, {swaps} swaps: {dict(counts)}")
    assert counts["stored-WRONG"] == 0, dict(counts)
    assert counts["stored-right"] > 0, dict(counts)
    assert swaps > 0
