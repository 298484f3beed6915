"""Per-container control groups: memory, processes and CPU, enforced by the kernel.

Each pool makes one group ``cigate-sbx-<pid>-<hex>`` beneath the manager's own group in every
controller it can write, and one child group per container. It prefers cgroup v2 (a group
whose ``cgroup.subtree_control`` can enable ``memory pids cpu``) and falls back, controller by
controller, to the v1 hierarchies (``/sys/fs/cgroup/<controller>``); what neither offers is
left to rlimits by the caller and reported (:attr:`CgroupSystem.mechanisms`).

* memory: ``memory.max`` (+ ``swap.max`` 0) / ``memory.limit_in_bytes`` (+ ``memsw``,
  ``swappiness`` 0), all processes of the container together, tmpfs pages they write
  (``/tmp``, ``/dev/shm``) included; the kernel's OOM killer ends a process of the container,
  never the host's. ``oom_kills()`` tells the manager that this is what happened.
* processes: ``pids.max`` (threads count too).
* CPU: ``cpu.max`` / ``cpu.cfs_quota_us`` (a quota of ``cores`` per period) and equal weight.
* killing: ``cgroup.kill`` (v2) or freeze, SIGKILL every member, thaw (v1 freezer), so a
  forking process cannot outrun the kill; then the groups are removed.

Groups left by a manager that was SIGKILLed are removed by the next pool's :func:`sweep`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from cigate.sandbox.reaper import pid_exists

log = logging.getLogger(__name__)

PREFIX = "cigate-sbx-"
CONTROLLERS = ("memory", "pids", "cpu")
_PERIOD_US = 100_000
_OWNER = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class _Hierarchy:
    """One place a controller is mounted, and where this process sits in it."""

    version: int
    mount: Path
    own: str  # this process's group path within the hierarchy

    @property
    def own_dir(self) -> Path:
        return self.mount / self.own.lstrip("/")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(fstype, mount point, super options) of every cgroup mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                    found.append((rfields[0], fields[4], set(rfields[2].split(","))))
    except OSError:
        pass
    return found


def _own_paths() -> tuple[str | None, dict[str, str]]:
    """This process's v2 path and v1 path per controller (``/proc/self/cgroup``)."""
    v2, v1 = None, {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                v2 = path
            for name in controllers.split(","):
                v1[name] = path
    return v2, v1


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _write_if_exists(path: Path, value: int) -> None:
    """Swap accounting may be off (the file is missing or refuses writes): then there is no
    swap to limit."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        try:
            _write(path, str(value))
        except OSError as exc:
            if exc.errno != errno.EINVAL or path.exists() is False:
                raise


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _usable_v2(mount: Path, own: str) -> tuple[_Hierarchy, set[str]] | None:
    """A v2 group whose children can have our controllers (we may enable them there)."""
    hierarchy = _Hierarchy(2, mount, own)
    base = hierarchy.own_dir
    try:
        available = set(_read(base / "cgroup.controllers").split())
        enabled = set(_read(base / "cgroup.subtree_control").split())
    except OSError:
        return None
    wanted = set(CONTROLLERS) & available
    missing = wanted - enabled
    if missing:
        try:
            _write(base / "cgroup.subtree_control", " ".join("+" + c for c in sorted(missing)))
        except OSError as exc:  # EBUSY: our group has processes (no-internal-process rule)
            log.info("cgroup v2 at %s: cannot enable %s: %s", base, sorted(missing), exc)
            return None
    return hierarchy, wanted


@dataclass
class CgroupSystem:
    """Where each controller is managed for one pool; ``mechanisms`` says which is used."""

    v2: _Hierarchy | None = None
    v2_controllers: set[str] = field(default_factory=set)
    v1: dict[str, _Hierarchy] = field(default_factory=dict)
    name: str = ""
    mechanisms: dict[str, str] = field(default_factory=dict)

    @classmethod
    def probe(cls, *, freezer: bool = True) -> CgroupSystem:
        """Find writable controllers and make this pool's parent groups in them.

        ``freezer=False`` skips the v1 freezer (a pid namespace per container already kills
        everything at once): one cgroup migration less per container, and each costs an RCU
        grace period in v1.
        """
        system = cls(name=f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        v2_path, v1_paths = _own_paths()
        mounts = _mounts()
        for fstype, point, _ in mounts:
            if fstype == "cgroup2" and v2_path is not None:
                found = _usable_v2(Path(point), v2_path)
                if found is not None and found[1]:
                    system.v2, system.v2_controllers = found
                break
        v1_wanted = [*CONTROLLERS, "freezer"] if freezer else list(CONTROLLERS)
        for fstype, point, options in mounts:
            if fstype != "cgroup":
                continue
            for name in v1_wanted:
                if name in options and name in v1_paths and name not in system.v1:
                    system.v1[name] = _Hierarchy(1, Path(point), v1_paths[name])
        system._make_parents()
        return system

    def _make_parents(self) -> None:
        if self.v2 is not None:
            try:
                parent = self.v2.own_dir / self.name
                parent.mkdir()
                controllers = " ".join("+" + c for c in sorted(self.v2_controllers))
                _write(parent / "cgroup.subtree_control", controllers)
            except OSError as exc:
                log.info("cgroup v2 unusable: %s", exc)
                self.v2, self.v2_controllers = None, set()
        for name in list(self.v1):
            if name in self.v2_controllers:
                del self.v1[name]
                continue
            try:
                (self.v1[name].own_dir / self.name).mkdir()
            except OSError as exc:
                log.info("cgroup v1 %s unusable: %s", name, exc)
                del self.v1[name]
        for name in CONTROLLERS:
            if name in self.v2_controllers:
                self.mechanisms[name] = "cgroup v2"
            elif name in self.v1:
                self.mechanisms[name] = "cgroup v1"
        if self.v2 is not None:
            self.mechanisms["kill"] = "cgroup v2 cgroup.kill"
        elif "freezer" in self.v1:
            self.mechanisms["kill"] = "cgroup v1 freezer"

    def has(self, controller: str) -> bool:
        return controller in self.mechanisms

    def _dirs(self) -> list[Path]:
        dirs = [h.own_dir / self.name for h in self.v1.values()]
        if self.v2 is not None:
            dirs.append(self.v2.own_dir / self.name)
        return dirs

    def create(self, name: str) -> Cgroup:
        """A new empty group for one container (``name`` is unique within the pool)."""
        group = Cgroup(self, name)
        try:
            for path in group.dirs.values():
                path.mkdir()
        except OSError:
            group.remove()
            raise
        return group

    def close(self) -> None:
        """Remove this pool's parent groups (every container group must be gone)."""
        for path in self._dirs():
            _remove_tree(path)


class Cgroup:
    """One container's groups, one per hierarchy in use."""

    def __init__(self, system: CgroupSystem, name: str) -> None:
        self.system = system
        self.name = name
        self.dirs: dict[str, Path] = {}
        for controller, hierarchy in system.v1.items():
            self.dirs[controller] = hierarchy.own_dir / system.name / name
        if system.v2 is not None:
            self.dirs["v2"] = system.v2.own_dir / system.name / name

    def _dir(self, controller: str) -> tuple[Path, int] | None:
        if controller in self.system.v2_controllers:
            return self.dirs["v2"], 2
        if controller in self.dirs:
            return self.dirs[controller], 1
        return None

    def add(self, pid: int) -> None:
        """Move ``pid`` (and the threads of its process) into every hierarchy's group."""
        for path in self.dirs.values():
            _write(path / "cgroup.procs", str(pid))

    def set_memory(self, limit: int) -> None:
        found = self._dir("memory")
        if found is None:
            return
        path, version = found
        if version == 2:
            _write(path / "memory.max", str(limit))
            with contextlib.suppress(OSError):
                _write(path / "memory.swap.max", "0")
            with contextlib.suppress(OSError):
                _write(path / "memory.oom.group", "0")
            return
        memsw = path / "memory.memsw.limit_in_bytes"
        current = int(_read(path / "memory.limit_in_bytes"))
        # memsw (memory + swap) must stay >= the memory limit: when raising, raise memsw
        # first; when lowering, lower the memory limit first.
        if limit > current:
            _write_if_exists(memsw, limit)
        _write(path / "memory.limit_in_bytes", str(limit))
        if limit <= current:
            _write_if_exists(memsw, limit)
        # Without swap accounting (no memsw) the group could still spill into swap; a v1
        # group's swappiness 0 forbids swapping in its own limit's reclaim.
        with contextlib.suppress(OSError):
            _write(path / "memory.swappiness", "0")

    def set_pids(self, limit: int) -> None:
        found = self._dir("pids")
        if found is not None:
            _write(found[0] / "pids.max", str(limit))

    def set_cpu(self, cores: float) -> None:
        found = self._dir("cpu")
        if found is None:
            return
        path, version = found
        quota = max(1000, int(cores * _PERIOD_US))
        if version == 2:
            _write(path / "cpu.max", f"{quota} {_PERIOD_US}")
        else:
            _write(path / "cpu.cfs_period_us", str(_PERIOD_US))
            _write(path / "cpu.cfs_quota_us", str(quota))

    def oom_kills(self) -> int:
        """Processes of this group the kernel's OOM killer ended so far."""
        found = self._dir("memory")
        if found is None:
            return 0
        path, version = found
        name = "memory.events" if version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in _read(path / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def memory_peak(self) -> int | None:
        found = self._dir("memory")
        if found is None:
            return None
        path, version = found
        name = "memory.peak" if version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int(_read(path / name))
        return None

    def cpu_usage_ns(self) -> int | None:
        """CPU time used by the group's processes so far (nanoseconds)."""
        if "cpu" in self.system.v2_controllers:
            with contextlib.suppress(OSError, ValueError):
                for line in _read(self.dirs["v2"] / "cpu.stat").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) * 1000
            return None
        path = self.dirs.get("cpu")  # v1: when cpuacct is mounted with cpu ("cpu,cpuacct")
        if path is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(_read(path / "cpuacct.usage"))
        return None

    def pids(self) -> list[int]:
        """Every process in the group (from whichever hierarchy lists them)."""
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                return [int(p) for p in _read(path / "cgroup.procs").split()]
        return []

    def kill_all(self) -> None:
        """SIGKILL every process in the group, forks included; returns once none is left."""
        if "v2" in self.dirs:
            with contextlib.suppress(OSError):
                _write(self.dirs["v2"] / "cgroup.kill", "1")
        freezer = self.dirs.get("freezer")
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            if freezer is not None:
                _freeze(freezer, "FROZEN")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                _freeze(freezer, "THAWED")
            time.sleep(0.01)
        log.error("cgroup %s: processes survived 100 rounds of SIGKILL", self.name)

    def remove(self) -> None:
        """Remove the group's directories (members must be gone; retried while they exit)."""
        for path in self.dirs.values():
            _rmdir_retry(path)


def _freeze(path: Path, state: str) -> None:
    with contextlib.suppress(OSError):
        _write(path / "freezer.state", state)
        for _ in range(100):
            if _read(path / "freezer.state").strip() == state:
                return
            time.sleep(0.001)


def _rmdir_retry(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("could not remove cgroup %s: %s", path, exc)
                return
            time.sleep(0.01)
    log.warning("cgroup %s stayed busy", path)


def _remove_tree(path: Path) -> None:
    """Kill what is left in a group tree and remove it, deepest first."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        _remove_tree(child)
    with contextlib.suppress(OSError):
        for pid in _read(path / "cgroup.procs").split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    _rmdir_retry(path)


def sweep() -> int:
    """Remove pool groups whose manager process is gone (it was SIGKILLed); return how many."""
    removed = 0
    v2_path, v1_paths = _own_paths()
    bases: set[Path] = set()
    for fstype, point, options in _mounts():
        if fstype == "cgroup2" and v2_path is not None:
            bases.add(Path(point) / v2_path.lstrip("/"))
        elif fstype == "cgroup":
            for name in options & set(v1_paths):
                bases.add(Path(point) / v1_paths[name].lstrip("/"))
    for base in bases:
        with contextlib.suppress(OSError):
            for entry in base.iterdir():
                match = _OWNER.match(entry.name)
                if match and entry.is_dir() and not pid_exists(int(match.group(1))):
                    _remove_tree(entry)
                    removed += 1
    return removed
