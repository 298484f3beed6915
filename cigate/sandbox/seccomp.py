"""The seccomp filter model-written code runs under: a classic BPF program built here, no library.

What it refuses, with ``EPERM`` (a denied call fails like any other, so code sees an ordinary
``PermissionError``): every call that changes the system or reaches into other processes or
the kernel's larger attack surfaces.

* mounts and roots: ``mount``, ``umount2``, ``pivot_root``, ``chroot``, the new mount API
  (``open_tree``, ``move_mount``, ``fsopen``, ``fsconfig``, ``fsmount``, ``fspick``,
  ``mount_setattr``);
* namespaces: ``unshare``, ``setns``, and ``clone`` with any ``CLONE_NEW*`` flag (so no new
  user namespace); ``clone3`` answers ``ENOSYS`` so the C library falls back to ``clone``,
  whose flags a filter can read;
* other processes: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``, ``pidfd_getfd``,
  ``process_madvise``, ``migrate_pages``, ``move_pages``;
* the kernel: ``init_module``, ``finit_module``, ``delete_module``, ``kexec_load``,
  ``kexec_file_load``, ``reboot``, ``swapon``, ``swapoff``, ``acct``, ``quotactl(_fd)``,
  ``syslog``, ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, ``keyctl``,
  ``add_key``, ``request_key``, ``open_by_handle_at``, ``name_to_handle_at``,
  ``lookup_dcookie``, ``fanotify_init``, ``vhangup``, ``sethostname``, ``setdomainname``,
  ``iopl``/``ioperm`` and the obsolete x86 ``uselib``, ``_sysctl``, ``*_module`` calls;
* the clock: ``clock_settime``, ``clock_adjtime``, ``settimeofday``, ``adjtimex``;
* ``personality`` other than the harmless values (query, ``PER_LINUX``, ``ADDR_NO_RANDOMIZE``);
* ``ioctl(TIOCSTI)`` and ``ioctl(TIOCLINUX)`` (typing into a terminal);
* ``socket(AF_VSOCK)``: vsock is not network-namespaced and reaches the hypervisor host.

A call from another ABI (i386 or x32 on x86_64, arm32 on aarch64) kills the process: the
numbers above would mean something else there.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import struct
from dataclasses import dataclass

from cigate.sandbox import linux

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little-endian).
_OFF_NR = 0
_OFF_ARCH = 4


def _arg_low(index: int) -> int:
    return 16 + 8 * index


# Classic BPF opcodes.
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_BIT = 0x40000000

#: Denied calls and their numbers per architecture (None: the call does not exist there).
DENIED: dict[str, tuple[int | None, int | None]] = {
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "unshare": (272, 97),
    "setns": (308, 268),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    "process_madvise": (440, 440),
    "migrate_pages": (256, 238),
    "move_pages": (279, 239),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "syslog": (103, 116),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "lookup_dcookie": (212, 18),
    "fanotify_init": (300, 262),
    "vhangup": (153, 58),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "settimeofday": (164, 170),
    "adjtimex": (159, 171),
    "iopl": (172, None),
    "ioperm": (173, None),
    "uselib": (134, None),
    "_sysctl": (156, None),
    "create_module": (174, None),
    "get_kernel_syms": (177, None),
    "query_module": (178, None),
    "nfsservctl": (180, 42),
}
_CLONE = (56, 220)
_CLONE3 = (435, 435)
_IOCTL = (16, 29)
_PERSONALITY = (135, 92)
_SOCKET = (41, 198)

#: ``clone`` flags that would create a namespace.
NAMESPACE_FLAGS = (
    linux.CLONE_NEWNS
    | linux.CLONE_NEWCGROUP
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWUSER
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWNET
)
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
#: personality() values Docker's default profile allows: PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE
#: combinations, and the query.
_PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
_AF_VSOCK = 40


@dataclass(frozen=True)
class _Ins:
    code: int
    k: int
    jt: str | int = 0
    jf: str | int = 0


def _assemble(program: list[_Ins | str]) -> bytes:
    """Resolve label names to relative jumps and encode ``struct sock_filter`` entries."""
    labels: dict[str, int] = {}
    ins: list[_Ins] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(ins)
        else:
            ins.append(item)
    out = bytearray()
    for index, one in enumerate(ins):

        def offset(target: str | int, index: int = index) -> int:
            if isinstance(target, int):
                return target
            jump = labels[target] - index - 1
            if not 0 <= jump <= 255:
                raise ValueError(f"seccomp jump to {target} out of range")
            return jump

        out += struct.pack("=HBBI", one.code, offset(one.jt), offset(one.jf), one.k)
    return bytes(out)


def build(machine: str = linux.MACHINE) -> bytes:
    """The filter for ``machine`` ("x86_64" or "aarch64") as raw ``sock_filter`` entries."""
    if machine not in _ARCH:
        raise OSError(errno.ENOSYS, f"no seccomp filter for {machine}")
    slot = 0 if machine == "x86_64" else 1
    prog: list[_Ins | str] = [
        _Ins(_LD_ABS, _OFF_ARCH),
        _Ins(_JEQ, _ARCH[machine], 0, "kill"),
        _Ins(_LD_ABS, _OFF_NR),
    ]
    if machine == "x86_64":
        prog.append(_Ins(_JGE, _X32_BIT, "kill"))
    prog += [
        _Ins(_JEQ, _CLONE3[slot], "enosys"),
        _Ins(_JEQ, _CLONE[slot], "clone"),
        _Ins(_JEQ, _IOCTL[slot], "ioctl"),
        _Ins(_JEQ, _PERSONALITY[slot], "personality"),
        _Ins(_JEQ, _SOCKET[slot], "socket"),
    ]
    for numbers in DENIED.values():
        nr = numbers[slot]
        if nr is not None:
            prog.append(_Ins(_JEQ, nr, "deny"))
    prog += [
        _Ins(_RET, RET_ALLOW),
        "clone",
        _Ins(_LD_ABS, _arg_low(0)),
        _Ins(_JSET, NAMESPACE_FLAGS, "deny"),
        _Ins(_RET, RET_ALLOW),
        "ioctl",
        _Ins(_LD_ABS, _arg_low(1)),
        _Ins(_JEQ, _TIOCSTI, "deny"),
        _Ins(_JEQ, _TIOCLINUX, "deny"),
        _Ins(_RET, RET_ALLOW),
        "personality",
        _Ins(_LD_ABS, _arg_low(0)),
        *[_Ins(_JEQ, value, "allow") for value in _PERSONALITIES],
        _Ins(_RET, RET_ERRNO | errno.EPERM),
        "socket",
        _Ins(_LD_ABS, _arg_low(0)),
        _Ins(_JEQ, _AF_VSOCK, "deny"),
        "allow",
        _Ins(_RET, RET_ALLOW),
        "deny",
        _Ins(_RET, RET_ERRNO | errno.EPERM),
        "enosys",
        _Ins(_RET, RET_ERRNO | errno.ENOSYS),
        "kill",
        _Ins(_RET, RET_KILL_PROCESS),
    ]
    return _assemble(prog)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def denied_here(machine: str = linux.MACHINE) -> list[str]:
    """The calls refused outright on ``machine`` (some exist on one architecture only)."""
    slot = 0 if machine == "x86_64" else 1
    return [name for name, numbers in DENIED.items() if numbers[slot] is not None]


@functools.cache
def program() -> bytes:
    """This machine's filter, built once (the template builds it before forking)."""
    return build()


def install(filter_program: bytes | None = None) -> None:
    """Set ``no_new_privs`` and load the filter on the calling thread (before any other exists:
    threads started later inherit it)."""
    program_bytes = program() if filter_program is None else filter_program
    buf = ctypes.create_string_buffer(program_bytes, len(program_bytes))
    fprog = _Fprog(len(program_bytes) // 8, ctypes.addressof(buf))
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.prctl(linux.PR_SET_SECCOMP, linux.SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
