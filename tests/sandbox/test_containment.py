"""Containment: hostile model code, through the product path (the emulator and the openai SDK).

One probe per row of issue 11's table, and the escapes around them. Each runs model-written
code in a real container of an emulator with small limits (``LIMITS``), bounds every loop by
count so a failure cannot take the machine down, and asserts the exact limit the kernel
enforced, measured from the host (cgroup files, ``/proc``, the volume), not as reported.

The fixture builds ``EmulatorSettings`` only from the fields it has, so this file also runs
against the code before the sandbox was hardened: there, every probe of a row the issue marked
as not contained fails (see docs/sandbox.md, "Containment suite").
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from cigate.emulator.app import create_app
from cigate.emulator.server import ServerHandle, run_in_thread
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.emulator import RunningEmulator

from .conftest import descendants, process_alive, require_bwrap

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]

MIB = 1 << 20
GIB = 1 << 30
KEY = "containment-key"
MODEL = "containment"
SECRET = "sk-containment-do-not-leak-7f3a9c"
LIMITS: dict[str, Any] = {
    "pids_max": 64,
    "cpu_limit": 0.25,
    "disk_quota": 64 * MIB,
    "tmp_size": 32 * MIB,
    "max_containers": 4,
}
AUTO: dict[str, Any] = {"type": "auto"}


@pytest.fixture(scope="module")
def contained_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """An emulator whose sandbox has small limits, started with secrets in its environment."""
    require_bwrap()
    known = {f.name for f in dataclasses.fields(EmulatorSettings)}
    settings = EmulatorSettings(
        api_keys=(KEY,),
        data_dir=tmp_path_factory.mktemp("containment"),
        pool_size=1,
        isolation="bwrap",
        **{k: v for k, v in LIMITS.items() if k in known},
    )
    saved = {name: os.environ.get(name) for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY")}
    os.environ.update(dict.fromkeys(saved, SECRET))
    try:
        handle = run_in_thread(create_app(settings), "127.0.0.1", 0)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def emulator(contained_server: ServerHandle) -> Iterator[RunningEmulator]:
    running = RunningEmulator(handle=contained_server, api_key=KEY, mode="server")
    running.control.reset()
    try:
        yield running
    finally:
        running.control.reset()
        running.close()


@pytest.fixture
def client(emulator: RunningEmulator) -> openai.OpenAI:
    return emulator.openai(max_retries=0, timeout=110)


def run(
    client: openai.OpenAI, code: str, container: str | dict[str, Any] = AUTO
) -> tuple[str, str, Any]:
    """Run one cell; return its logs, the container id and the response."""
    response = client.responses.create(
        model=MODEL,
        input=f"```python\n{code}\n```",
        tools=[{"type": "code_interpreter", "container": container}],  # type: ignore[list-item,typeddict-item]
        include=["code_interpreter_call.outputs"],
    )
    calls = [item for item in response.output if item.type == "code_interpreter_call"]
    assert calls, response
    logs = "".join(o.logs for o in calls[0].outputs or [] if o.type == "logs")
    return logs, calls[0].container_id, response


def lines(logs: str) -> dict[str, str]:
    """``key=value`` lines the probes print."""
    return dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)


def session(emulator: RunningEmulator, container_id: str) -> Any:
    return emulator.backends.containers.get(container_id, allow_expired=True).session


def container_pids(emulator: RunningEmulator, container_id: str) -> list[int]:
    kernel = session(emulator, container_id)
    assert kernel is not None
    assert kernel.pid is not None
    return [kernel.pid, *descendants(kernel.pid)]


# -- uid, capabilities, mounts ----------------------------------------------------------------

UID_PROBE = """
import os
text = open('/proc/self/status').read()
status = dict(l.split(':\\t', 1) for l in text.splitlines() if ':\\t' in l)
print('uid=%d,%d,%d' % (os.getuid(), os.geteuid(), os.getgid()))
for k in ('CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp'):
    print(k + '=' + status[k].strip())
print('uid_map=' + ' '.join(open('/proc/self/uid_map').read().split()))
open('/mnt/data/mine.txt', 'w').write('x')
"""


def test_model_code_runs_as_uid_1000_with_no_capability_no_new_privileges_and_seccomp(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: uid 0 with nearly every capability (CapEff 000001fffeffffff)."""
    logs, cid, _ = run(client, UID_PROBE)
    found = lines(logs)
    assert found["uid"] == "1000,1000,1000"
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert found[cap] == "0000000000000000", logs
    assert found["NoNewPrivs"] == "1"
    assert found["Seccomp"] == "2"  # a filter is loaded
    assert found["uid_map"] == "1000 0 1"  # its own user namespace: one uid, not root's
    kernel = session(emulator, cid)
    owner = os.stat(kernel.workdir / "mine.txt").st_uid
    assert owner != 0  # on the host, the code's files belong to an unprivileged uid
    os.unlink(kernel.workdir / "mine.txt")  # ... and the manager can still remove them


REMOUNT_PROBE = """
import ctypes, errno, os, subprocess
done = subprocess.run(['mount', '-o', 'remount,rw,bind', '/usr'], capture_output=True, text=True)
print('mount_cmd=%d' % done.returncode)
libc = ctypes.CDLL(None, use_errno=True)
r = libc.mount(b'none', b'/usr', None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND, no MS_RDONLY
print('mount_call=%s' % (errno.errorcode.get(ctypes.get_errno()) if r else 'ok'))
for path in ('/usr/local/cigate-escape', '/usr/cigate-escape', '/cigate-escape', '/etc/x'):
    try:
        open(path, 'w').write('persisted')
        print('wrote=' + path)
    except OSError as exc:
        print('refused_%s=%s' % (path, errno.errorcode[exc.errno]))
writable = []
for line in open('/proc/self/mountinfo'):
    fields = line.split(' - ')[0].split()
    if 'rw' in fields[5].split(','):
        writable.append(fields[4])
print('writable=' + ','.join(sorted(set(writable))))
"""


def test_read_only_binds_cannot_be_remounted_writable_and_nothing_persists(
    client: openai.OpenAI,
) -> None:
    """Today: `mount -o remount,rw,bind /usr` succeeds and a file lands in the host's /usr."""
    logs, _, _ = run(client, REMOUNT_PROBE)
    found = lines(logs)
    assert found["mount_cmd"] != "0"
    assert found["mount_call"] == "EPERM"
    assert "wrote" not in found, logs
    assert found["refused_/usr/local/cigate-escape"] in ("EROFS", "EACCES")
    assert not Path("/usr/local/cigate-escape").exists()
    # Only the container's own mounts are writable (and /proc, whose writable parts are its own).
    assert set(found["writable"].split(",")) <= {"/mnt/data", "/tmp", "/dev/shm", "/dev/pts"} | {
        "/proc",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    }
    second, _, _ = run(
        client, "import os\nprint('seen=%s' % os.path.exists('/usr/local/cigate-escape'))"
    )
    assert lines(second)["seen"] == "False"


# -- memory ---------------------------------------------------------------------------------

ALLOCATE = """
held = []
for i in range({chunks}):
    held.append(bytearray({chunk}))
    print('held=%d' % (len(held) * {chunk} >> 20), flush=True)
print('survived=yes')
"""


def test_a_1g_container_is_stopped_at_1_gib_and_keeps_working(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: 4,096 MiB allocated in a container created with memory_limit "1g"."""
    container = client.containers.create(name="one-gig", memory_limit="1g")
    code = ALLOCATE.format(chunks=24, chunk=64 * MIB)  # 1.5 GiB if nothing stops it
    logs, cid, _ = run(client, code, container.id)
    held = [int(v.split("=")[1]) for v in logs.splitlines() if v.startswith("held=")]
    assert "survived=yes" not in logs
    assert max(held) < 1024  # stopped before 1 GiB of its own ...
    assert "MemoryError: The code used more than this container's memory limit (1 GiB)" in logs
    kernel = session(emulator, cid)
    assert kernel.cgroup.memory_peak() <= GIB  # ... by the kernel, for the whole container
    again, _, _ = run(client, "6 * 7", container.id)  # the container stays usable
    assert again == "42"


def test_the_containers_memory_cannot_spill_into_swap(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """A memory limit that swap could extend is no limit: read from the container's cgroup."""
    _, cid, _ = run(client, "1", {"type": "auto", "memory_limit": "1g"})
    group = session(emulator, cid).cgroup
    if "memory" in group.system.v2_controllers:
        path = group.dirs["v2"]
        assert (path / "memory.max").read_text().strip() == str(GIB)
        swap_max = path / "memory.swap.max"
        if swap_max.exists():  # absent when the kernel has no swap accounting
            assert swap_max.read_text().strip() == "0"
    else:
        path = group.dirs["memory"]
        assert int((path / "memory.limit_in_bytes").read_text()) == GIB
        memsw = path / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # memory + swap: no room for swap on top
            assert int(memsw.read_text()) == GIB
        assert (path / "memory.swappiness").read_text().strip() == "0"


TOGETHER = """
import subprocess, sys
# Three processes of 400 MiB each: every one under the limit, together over it. Each holds its
# memory until its stdin closes, which happens only once every one has allocated (or died), so
# they overlap however slowly the container's CPU quota lets them allocate (not a sleep: at
# 0.25 cores an allocation takes 1.6-2.3 s here, and a slower machine let the first exit
# before the last had allocated). A child that outlives a lost parent ends at 60 s.
code = '''import select, sys
x = bytearray(400 << 20)
print("ok", flush=True)
select.select([sys.stdin], [], [], 60)'''
argv = [sys.executable, '-c', code]
pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE)
children = [subprocess.Popen(argv, **pipes) for _ in range(3)]
allocated = [c.stdout.readline().strip().decode() for c in children]  # '' for one killed before
for c in children:
    c.stdin.close()
print('allocated=' + ','.join(allocated))
print('codes=' + ','.join(str(c.wait()) for c in children))
"""


def test_the_memory_limit_is_for_all_processes_of_the_container_together(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: no limit at all; a per-process limit (RLIMIT_AS) would let all three live."""
    logs, cid, _ = run(client, TOGETHER, {"type": "auto", "memory_limit": "1g"})
    codes = lines(logs)["codes"].split(",")
    assert "-9" in codes  # the OOM killer ended one of them (SIGKILL) ...
    assert session(emulator, cid).cgroup.memory_peak() <= GIB  # ... at the container's limit


TMPFS_COUNTS = """
import errno
for path, size in (('/tmp/fill', 31), ('/dev/shm/fill', 60)):
    with open(path, 'wb') as f:
        for _ in range(size):
            f.write(b'x' * (1 << 20))
print('tmpfs=91', flush=True)
""" + ALLOCATE.format(chunks=140, chunk=8 * MIB)


def test_files_in_tmp_and_dev_shm_count_against_the_containers_memory(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: no limit; /tmp is a 12 GiB tmpfs counted nowhere."""
    logs, cid, _ = run(client, TMPFS_COUNTS, {"type": "auto", "memory_limit": "1g"})
    held = [int(v.split("=")[1]) for v in logs.splitlines() if v.startswith("held=")]
    assert "tmpfs=91" in logs
    assert "MemoryError" in logs
    # With 91 MiB in tmpfs, the process itself could never hold more than 1 GiB - 91 MiB.
    assert max(held) + 91 <= 1024
    assert session(emulator, cid).cgroup.memory_peak() <= GIB


# -- processes ------------------------------------------------------------------------------

FORKS = """
import errno, os, time
started, error = 0, None
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError as exc:
        error = errno.errorcode[exc.errno]
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    started += 1
print('started=%d' % started)
print('error=%s' % error)
"""


def test_processes_stop_at_the_pids_limit(client: openai.OpenAI, emulator: RunningEmulator) -> None:
    """Today: 1,000 of 1,000 processes started."""
    logs, cid, _ = run(client, FORKS)
    found = lines(logs)
    assert found["error"] == "EAGAIN"
    assert int(found["started"]) < LIMITS["pids_max"]
    kernel = session(emulator, cid)
    current = int((kernel.cgroup.dirs["pids"] / "pids.current").read_text())
    assert current == LIMITS["pids_max"]  # threads and processes of the container, exactly
    pids = container_pids(emulator, cid)
    client.containers.delete(cid)
    end = time.monotonic() + 5
    while any(process_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [p for p in pids if process_alive(p)]


BOMB = """
import os, time
me, made, failed = os.getpid(), 0, 0
for _ in range(8):  # 2**8 = 256 processes if nothing stops it
    try:
        if os.fork() == 0:
            made = failed = 0  # a child counts its own forks
        else:
            made += 1
    except OSError:
        failed += 1
# Every process says what it made and what was refused, then waits for the all-clear: all of
# them are alive together however slowly the machine schedules them.
fd = os.open('/tmp/bomb', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.write(fd, b'%d %d\\n' % (made, failed))
os.close(fd)
end = time.monotonic() + 60
if os.getpid() != me:
    while not os.path.exists('/tmp/bomb-over') and time.monotonic() < end:
        time.sleep(0.05)
    os._exit(0)
while time.monotonic() < end:
    rows = [tuple(map(int, r.split())) for r in open('/tmp/bomb').read().splitlines()]
    if len(rows) == 1 + sum(m for m, _ in rows):  # every process made has reported
        break
    time.sleep(0.05)
open('/tmp/bomb-over', 'w').close()
print('failed=%d' % sum(f for _, f in rows))
"""


def test_a_fork_bomb_is_held_at_the_pids_limit_and_the_container_recovers(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: every fork succeeds (256 processes from eight forks)."""
    logs, cid, _ = run(client, BOMB)
    assert int(lines(logs)["failed"]) > 0
    kernel = session(emulator, cid)
    events = (kernel.cgroup.dirs["pids"] / "pids.events").read_text()
    assert int(events.split()[1]) > 0  # forks refused at pids.max
    time.sleep(1.5)  # the bomb's processes exit
    again, _, _ = run(client, "1 + 1", cid)
    assert again == "2"


# -- disk -----------------------------------------------------------------------------------

FILL = """
import errno
written, error = 0, None
try:
    with open('{path}', 'wb') as f:
        for _ in range({chunks}):
            f.write(b'x' * (1 << 20))
            f.flush()
            written += 1
except OSError as exc:
    error = errno.errorcode[exc.errno]
print('written=%d' % written)
print('error=%s' % error)
"""


def test_writes_to_mnt_data_stop_at_the_quota_with_enospc_and_nothing_outside_grows(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: 4,096 MiB of 4,096 written to /mnt/data."""
    before = os.statvfs(emulator.settings.data_dir)
    logs, cid, _ = run(client, FILL.format(path="/mnt/data/big.bin", chunks=100))
    found = lines(logs)
    assert found["error"] == "ENOSPC"
    quota_mib = LIMITS["disk_quota"] >> 20
    assert quota_mib - 8 <= int(found["written"]) < quota_mib  # ext4 keeps a little
    kernel = session(emulator, cid)
    assert os.path.ismount(kernel.workdir)  # the quota is a file system of its own
    assert os.path.getsize(kernel.workdir / "big.bin") < LIMITS["disk_quota"]
    after = os.statvfs(emulator.settings.data_dir)
    grown = (before.f_bfree - after.f_bfree) * after.f_frsize
    assert grown < LIMITS["disk_quota"] + 16 * MIB  # the host's disk lost at most the quota


def test_writes_to_tmp_stop_at_its_size_with_enospc(client: openai.OpenAI) -> None:
    """Today: /tmp is a tmpfs of 12 GiB (half the host's memory)."""
    logs, _, _ = run(client, FILL.format(path="/tmp/big.bin", chunks=64))
    found = lines(logs)
    assert found["error"] == "ENOSPC"
    assert int(found["written"]) == LIMITS["tmp_size"] >> 20


INODES = """
import errno, os
made, error = 0, None
for i in range(100000):
    try:
        os.close(os.open('{dir}/f%d' % i, os.O_CREAT | os.O_WRONLY))
    except OSError as exc:
        error = errno.errorcode[exc.errno]
        break
    made += 1
seen = os.statvfs('{dir}')
print('made=%d' % made)
print('error=%s' % error)
print('files=%d' % seen.f_files)
print('free=%d' % seen.f_ffree)
for i in range(made):  # gone again, so the reply need not cite thousands of files
    os.unlink('{dir}/f%d' % i)
"""


@pytest.mark.parametrize("where", ["/mnt/data", "/tmp"], ids=["mnt-data", "tmp"])
def test_filling_the_inode_table_stops_at_the_inode_limit(
    client: openai.OpenAI, emulator: RunningEmulator, where: str
) -> None:
    """Today: no inode limit of its own (the host's file system, or a 12 GiB tmpfs)."""
    logs, cid, _ = run(client, INODES.format(dir=where))
    found = lines(logs)
    assert found["error"] == "ENOSPC"
    assert found["free"] == "0"  # that file system's inode table was full ...
    if where == "/mnt/data":  # ... at one inode per 16 KiB of the quota, at most disk_inodes
        assert int(found["files"]) == min(65_536, LIMITS["disk_quota"] // (16 << 10))
        assert os.statvfs(session(emulator, cid).workdir).f_files == int(found["files"])
    else:
        assert found["files"] == "65536"  # ... at tmp_inodes
        # The root directory is one of them, and a library may have left a file or two in
        # /tmp before the cell (a cache): the cell made all the rest, and not one more.
        assert 65_535 - 64 <= int(found["made"]) <= 65_535


# -- CPU ------------------------------------------------------------------------------------

BURN = """
import subprocess, sys, threading
def burn():
    while True:
        pass
threading.Thread(target=burn, daemon=True).start()
subprocess.Popen([sys.executable, '-c', 'while True: pass'])
print('started=yes')
"""


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return total / os.sysconf("SC_CLK_TCK")


def test_work_left_running_after_the_response_gets_its_cpu_quota_and_ends_with_the_container(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: a background thread keeps burning a full core after the response ended."""
    logs, cid, response = run(client, BURN)
    assert response.status == "completed"
    assert "started=yes" in logs
    pids = container_pids(emulator, cid)
    assert len(pids) >= 3  # init, kernel (with the thread), the burning child
    first, started = _cpu_seconds(pids), time.monotonic()
    time.sleep(2.0)
    used = _cpu_seconds(pids) - first
    elapsed = time.monotonic() - started
    # The quota is per 100 ms period: over ~2 s the group cannot exceed it by more than a period.
    assert used <= LIMITS["cpu_limit"] * (elapsed + 0.2) + 0.05, (used, elapsed)
    client.containers.delete(cid)
    end = time.monotonic() + 5
    while any(process_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [p for p in pids if process_alive(p)]  # threads and children gone with it


# -- live containers ------------------------------------------------------------------------


def test_the_live_container_cap_expires_the_longest_idle_container_then_answers_429(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: no cap (63 idle kernels held 3.6 GiB and nothing stopped more)."""
    cap = LIMITS["max_containers"]
    ids = [run(client, "1")[1] for _ in range(cap)]
    _, newest, _ = run(client, "1")  # one more than the cap: the longest idle one makes room
    assert client.containers.retrieve(ids[0]).status == "expired"
    assert [client.containers.retrieve(i).status for i in ids[1:]] == ["running"] * (cap - 1)
    assert client.containers.retrieve(newest).status == "running"
    assert emulator.backends.pool.live_count == cap
    # Every live container busy running code: a new one gets the service's rate-limit error.
    busy = [*ids[1:], newest]
    with concurrent.futures.ThreadPoolExecutor(cap) as threads:
        running = [
            threads.submit(run, emulator.openai(max_retries=0), "import time; time.sleep(4)", i)
            for i in busy
        ]
        for _ in range(400):
            containers = emulator.backends.containers
            if sum(containers.get(i).lock.locked() for i in busy) == cap:
                break
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as refused:
            run(client, "1")
        assert all(f.result()[2].status == "completed" for f in running)
    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert "Too many active containers" in refused.value.message


# -- network, secrets -----------------------------------------------------------------------

NETWORK = """
import socket
for addr in [('127.0.0.1', {port}), ('192.0.2.1', 443)]:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(addr)
        print('connect_%s=ok' % addr[0])
    except OSError as exc:
        print('connect_%s=%d' % (addr[0], exc.errno))
try:
    socket.getaddrinfo('example.com', 443)
    print('dns=ok')
except OSError:
    print('dns=failed')
print('ifaces=' + ','.join(sorted(n for _, n in socket.if_nameindex())))
"""


def test_the_network_is_only_a_private_loopback(client: openai.OpenAI) -> None:
    """Today: contained already (kept contained)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        logs, _, _ = run(client, NETWORK.format(port=listener.getsockname()[1]))
    found = lines(logs)
    assert found["connect_127.0.0.1"] == "111"  # ECONNREFUSED: its own loopback, empty
    assert found["connect_192.0.2.1"] == "101"  # ENETUNREACH
    assert found["dns"] == "failed"
    assert found["ifaces"] == "lo"


def test_host_secrets_never_reach_model_code(client: openai.OpenAI) -> None:
    """Today: contained already (kept contained)."""
    code = (
        "import os, glob\n"
        "seen = repr(dict(os.environ))\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        seen += open(path, 'rb').read().decode(errors='replace')\n"
        "    except OSError:\n"
        "        pass\n"
        "print('leak=%s' % ('SECRET' if " + repr(SECRET) + " in seen else 'none'))\n"
    )
    logs, _, _ = run(client, code)
    assert lines(logs)["leak"] == "none"
    assert SECRET not in logs


# -- escapes --------------------------------------------------------------------------------

PROC_SYS = """
import errno, os, subprocess
r = subprocess.run(['mount', '-o', 'remount,rw', '/proc/sys'], capture_output=True)
print('remount=%d' % r.returncode)
for path, value in (('/proc/sys/kernel/hostname', 'owned'), ('/proc/sys/net/ipv4/ip_forward', '1'),
                    ('/proc/sysrq-trigger', 'h'), ('/proc/self/oom_score_adj', '-1000'),
                    ('/sys/kernel/uevent_helper', '/x')):
    try:
        with open(path, 'w') as f:
            f.write(value)
        print('wrote_%s=yes' % path)
    except OSError as exc:
        print('wrote_%s=%s' % (path, errno.errorcode[exc.errno]))
print('sys=%s' % (os.listdir('/sys') if os.path.isdir('/sys') else 'absent'))
"""


def test_proc_and_sys_cannot_be_written(client: openai.OpenAI) -> None:
    """Today: root with CAP_SYS_ADMIN and CAP_SYS_RESOURCE (remounts, oom_score_adj -1000)."""
    logs, _, _ = run(client, PROC_SYS)
    found = lines(logs)
    assert found["remount"] != "0"
    assert "yes" not in {v for k, v in found.items() if k.startswith("wrote_")}, logs
    assert found["wrote_/proc/self/oom_score_adj"] == "EACCES"  # may not shield itself
    assert found["sys"] == "absent"


DEVICES = """
import errno, os, stat
for where in ('/tmp', '/mnt/data', '/dev/shm'):
    try:
        os.mknod(where + '/mem', 0o600 | stat.S_IFCHR, os.makedev(1, 1))
        print('mknod_%s=yes' % where)
    except OSError as exc:
        print('mknod_%s=%s' % (where, errno.errorcode[exc.errno]))
try:
    open('/dev/planted', 'w')
    print('dev_write=yes')
except OSError as exc:
    print('dev_write=' + errno.errorcode[exc.errno])
print('dev=' + ','.join(sorted(os.listdir('/dev'))))
"""


def test_device_nodes_cannot_be_made_and_dev_holds_only_harmless_ones(
    client: openai.OpenAI,
) -> None:
    """Today: root with CAP_MKNOD: a char device for /dev/mem can be made in /tmp."""
    logs, _, _ = run(client, DEVICES)
    found = lines(logs)
    for where in ("/tmp", "/mnt/data", "/dev/shm"):
        assert found[f"mknod_{where}"] == "EPERM"
    assert found["dev_write"] == "EROFS"  # one /dev for every container: read-only
    harmless = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"}
    assert set(found["dev"].split(",")) <= harmless | {"core", "fd", "stdin", "stdout", "stderr"}


SETUID = """
import os, stat, subprocess
found = []
for d in ('/usr/bin', '/usr/sbin', '/bin', '/sbin'):
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        try:
            st = os.stat(os.path.join(d, name))
        except OSError:
            continue
        if st.st_mode & stat.S_ISUID:
            found.append(os.path.join(d, name))
print('setuid=' + ','.join(found))
r = subprocess.run(['mount', '-o', 'remount,rw', '/'], capture_output=True, text=True)
print('mount_as_setuid=%d' % r.returncode)
status = open('/proc/self/status').read()
print('nnp=' + status.split('NoNewPrivs:')[1].split()[0])
print('nosuid=' + str(all('nosuid' in l.split()[5] for l in open('/proc/self/mountinfo')
                          if l.split()[4] in ('/usr', '/mnt/data', '/tmp'))))
"""


def test_setuid_binaries_grant_nothing(client: openai.OpenAI) -> None:
    """Today: the code is root, so setuid does not even matter."""
    logs, _, _ = run(client, SETUID)
    found = lines(logs)
    assert found["nnp"] == "1"  # the kernel ignores setuid bits under no_new_privs ...
    assert found["nosuid"] == "True"  # ... and every mount is nosuid anyway
    assert found["mount_as_setuid"] != "0"  # the setuid mount(8) stays uid 1000


PTRACE = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
for target in (1, os.getpid()):
    r = libc.ptrace(PTRACE_ATTACH, target, None, None)
    print('attach_%s=%s' % (target == 1, 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()]))
for path in ('/proc/1/mem', '/proc/1/root/', '/proc/1/environ'):
    try:
        os.listdir(path) if path.endswith('/') else open(path, 'rb').read(1)
        print('read_%s=yes' % path)
    except OSError as exc:
        print('read_%s=%s' % (path, errno.errorcode[exc.errno]))
"""


def test_model_code_cannot_ptrace_or_read_into_the_containers_init(client: openai.OpenAI) -> None:
    """Today: root with CAP_SYS_PTRACE: ptrace and /proc/1/mem work."""
    logs, _, _ = run(client, PTRACE)
    found = lines(logs)
    assert found["attach_True"] == "EPERM"  # the container's init (pid 1)
    assert found["attach_False"] == "EPERM"  # even itself: seccomp refuses ptrace
    for path in ("/proc/1/mem", "/proc/1/root/", "/proc/1/environ"):
        assert found[f"read_{path}"] in ("EACCES", "EPERM"), logs


def test_model_code_cannot_see_or_signal_the_manager_or_other_containers(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: contained (a pid namespace per kernel); kept contained, and the init survives."""
    _, other, _ = run(client, "1")
    code = (
        "import os, signal\n"
        f"try:\n    os.kill({os.getpid()}, 0)\n    print('manager=visible')\n"
        "except ProcessLookupError:\n    print('manager=invisible')\n"
        "print('pids=%d' % len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
        "os.kill(1, signal.SIGKILL)  # the container's init ignores it from inside\n"
        "print('init_survived=yes')\n"
    )
    logs, _, _ = run(client, code)
    found = lines(logs)
    assert found["manager"] == "invisible"
    assert int(found["pids"]) <= 3  # its init and itself (and a short-lived child at most)
    assert found["init_survived"] == "yes"
    assert run(client, "2 + 2", other)[0] == "4"


CHANNEL = """
import glob, os, socket, stat
print('runtime=' + ','.join(glob.glob('/tmp/cigate-k-*') + glob.glob('/run/*')), flush=True)
for fd in map(int, os.listdir('/proc/self/fd')):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode) and fd > 2:
            os.write(fd, b'\\xff\\xff\\xff\\xff' + b'garbage' * 100)
    except OSError:
        pass
"""


def test_garbage_on_the_kernels_channel_ends_only_that_kernel(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: the kernel's runtime directory (connection file with its key, ipc sockets) is
    bind-mounted writable into the sandbox."""
    _, other, _ = run(client, "'other'")
    logs, cid, response = run(client, CHANNEL)
    assert response.status == "completed"  # the manager read a bad frame, not a crash
    assert logs.splitlines()[0] == "runtime="
    assert "KernelDied: The Python kernel died (it broke the kernel protocol" in logs
    assert run(client, "1 + 1", cid)[0] == "2"  # a new kernel for that container
    assert run(client, "3 + 3", other)[0] == "6"  # the other container never noticed
    assert emulator.http_client().get("/_emulator/health").json() == {"status": "ok"}


def test_other_containers_directories_are_not_reachable(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: contained for paths; kept contained, including through /proc/1/root and mounts."""
    _, other, _ = run(client, "open('/mnt/data/theirs.txt', 'w').write('private')")
    theirs = session(emulator, other).workdir
    code = (
        "import os\n"
        f"print('path=%s' % os.path.exists({str(theirs)!r}))\n"
        f"print('parent=%s' % os.path.exists({str(theirs.parent)!r}))\n"
        "print('mounts=' + ','.join(l.split()[4] for l in open('/proc/self/mountinfo')\n"
        "                           if l.split()[4].startswith('/mnt')))\n"
        "found = []\n"
        "for top in ('/mnt', '/tmp', '/proc/1/root/mnt'):\n"
        "    try:\n"
        "        for root, dirs, files in os.walk(top):\n"
        "            found += [f for f in files if f == 'theirs.txt']\n"
        "    except OSError:\n"
        "        pass\n"
        "print('found=%d' % len(found))\n"
    )
    logs, _, _ = run(client, code)
    found = lines(logs)
    assert found["path"] == "False"
    assert found["parent"] == "False"
    assert found["mounts"] == "/mnt/data"
    assert found["found"] == "0"


FLOOD = """
import json, os, stat, struct, threading
def is_socket(fd):
    try:
        return fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
sock = next(fd for fd in map(int, os.listdir('/proc/self/fd')) if is_socket(fd))
def frame(parent):
    body = json.dumps({'msg_type': 'stream', 'parent': parent,
                       'content': {'name': 'stdout', 'text': 'x' * 1000}}).encode()
    return struct.pack('!I', len(body)) + body
def flood(parent, count):
    blob = frame(parent) * 100
    for _ in range(count // 100):
        os.write(sock, blob)
line = 'y' * 999
for _ in range(50_000):  # ~50 MB printed the ordinary way
    print(line)
flood(get_ipython().channel.parent, 50_000)  # ~50 MB more, forged as this cell's output
threading.Thread(target=flood, args=('not-asked-for', 200_000), daemon=True).start()
"""


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_kernel_flooding_its_channel_costs_the_manager_bounded_memory(
    client: openai.OpenAI, emulator: RunningEmulator
) -> None:
    """Today: a cell's output is collected without a bound (50 MB printed, 50 MB in the
    response). Now one cell's output is capped, and the channel is read only for the running
    cell, a few frames ahead: forged and unasked-for frames cost the manager nothing."""
    _, other, _ = run(client, "'other'")
    before = _rss()
    logs, cid, response = run(client, FLOOD)
    assert response.status == "completed"
    assert len(logs) <= (1 << 20) + 2048  # output.MAX_STREAM, plus the truncation note
    assert "[output truncated" in logs
    time.sleep(1.0)  # the background flood keeps writing: nobody reads it, nothing queues
    assert run(client, "3 + 3", other)[0] == "6"
    answer = run(client, "4 + 4", cid)[0]
    if answer != "8":
        # The background flood's writes can interleave with the kernel's own frames: the
        # manager then reads garbage, stops that kernel and says so; the container goes on.
        assert answer.startswith("KernelDied:"), answer
        assert "broke the kernel protocol" in answer
        assert run(client, "4 + 4", cid)[0] == "8"
    assert _rss() - before < 96 * MIB  # the emulator runs in this process
