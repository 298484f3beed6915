"""The seccomp filter itself: built for both architectures, loaded in a forked child.

The probes through the product path (model code in a container) are in test_containment.py;
here the program is checked directly, call by call, including the argument filters.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

import pytest

from cigate.sandbox import linux, seccomp

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(30)]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _in_filtered_child(calls: list[tuple[int, ...]]) -> list[int]:
    """Run each raw system call in a child under the filter; return each errno (0: allowed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            seccomp.install()
            results = []
            for call in calls:
                args = [ctypes.c_long(a) for a in call]
                ctypes.set_errno(0)
                result = _libc.syscall(*args)
                results.append(0 if result >= 0 else ctypes.get_errno())
            os.write(write_end, struct.pack(f"{len(results)}i", *results))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return list(struct.unpack(f"{len(calls)}i", data))


def _nr(name: str) -> int:
    numbers = seccomp.DENIED[name]
    nr = numbers[0] if linux.MACHINE == "x86_64" else numbers[1]
    assert nr is not None
    return nr


def test_the_filter_is_built_for_both_architectures_with_jumps_in_range() -> None:
    for machine in ("x86_64", "aarch64"):
        program = seccomp.build(machine)
        assert len(program) % 8 == 0
        assert 60 < len(program) // 8 < 256  # a classic BPF program, well under the limits
    with pytest.raises(OSError, match="no seccomp filter"):
        seccomp.build("riscv64")


PROBED = (
    *("mount", "umount2", "ptrace", "keyctl", "bpf", "perf_event_open", "init_module", "reboot"),
    *("unshare", "setns", "pivot_root", "chroot", "swapon", "kexec_load", "open_by_handle_at"),
    *("userfaultfd", "add_key", "request_key", "clock_settime", "io_uring_setup", "open_tree"),
)


@pytest.mark.skipif(not linux.SUPPORTED, reason="the filter exists for x86_64 and aarch64 only")
@pytest.mark.parametrize("name", PROBED)
def test_every_denied_call_fails_with_eperm(name: str) -> None:
    assert _in_filtered_child([(_nr(name), 0, 0, 0, 0, 0)]) == [errno.EPERM]


@pytest.mark.skipif(not linux.SUPPORTED, reason="the filter exists for x86_64 and aarch64 only")
def test_argument_filters_refuse_namespaces_terminal_injection_and_vsock_only() -> None:
    x86 = linux.MACHINE == "x86_64"
    clone, clone3, ioctl, personality, socket = (
        (56, 435, 16, 135, 41) if x86 else (220, 435, 29, 92, 198)
    )
    results = _in_filtered_child(
        [
            (clone, linux.CLONE_NEWUSER | 17, 0, 0, 0, 0),  # a new user namespace: refused
            (clone, linux.CLONE_NEWNET | 17, 0, 0, 0, 0),
            (clone3, 0, 0),  # ENOSYS, so the C library falls back to clone()
            (ioctl, 0, 0x5412, 0),  # TIOCSTI
            (ioctl, -1, 0x5401, 0),  # TCGETS on a bad fd: allowed through, EBADF
            (personality, 0x0040000),  # READ_IMPLIES_EXEC: refused
            (personality, 0xFFFFFFFF),  # the query: allowed
            (socket, 40, 1, 0),  # AF_VSOCK
        ]
    )
    assert results == [
        errno.EPERM,
        errno.EPERM,
        errno.ENOSYS,
        errno.EPERM,
        errno.EBADF,
        errno.EPERM,
        0,
        errno.EPERM,
    ]
