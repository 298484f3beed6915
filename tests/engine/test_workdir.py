"""The descriptor-level rules of ``cigate.engine.workdir``, attacked the way model code would.

Every test runs with both resolvers: ``openat2`` (this kernel has it) and the per-component
``O_NOFOLLOW`` fallback used where it is missing. The races are bounded in count.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cigate.engine import workdir

SECRET = b"host secret: must never be read through a container\n"
REAL = b"the container's own bytes\n" * 10

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (``renameat2(RENAME_EXCHANGE)``), as hostile code can."""
    if _libc.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture(params=["openat2", "per-component"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not workdir.using_openat2():
            pytest.skip("this kernel has no openat2: only the fallback can be tested here")
    else:
        monkeypatch.setattr(workdir, "_openat2", None)
    return str(request.param)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host directory outside the container, holding a secret under names the container
    uses too."""
    outside = tmp_path / "host"
    (outside / "sub").mkdir(parents=True)
    (outside / "data.bin").write_bytes(SECRET)
    (outside / "sub" / "data.bin").write_bytes(SECRET)
    return outside


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A container directory and a descriptor of it."""
    root = tmp_path / "container"
    (root / "sub").mkdir(parents=True)
    (root / "data.bin").write_bytes(REAL)
    (root / "sub" / "data.bin").write_bytes(REAL)
    fd = workdir.open_directory(root)
    try:
        yield root, fd
    finally:
        os.close(fd)


def _read(fd: int, relpath: bytes) -> bytes | None:
    opened = workdir.open_regular(fd, relpath)
    if opened is None:
        return None
    with opened:
        return opened.read_all()


@pytest.mark.usefixtures("resolver")
def test_a_regular_file_is_opened_and_read_from_its_descriptor(box: tuple[Path, int]) -> None:
    _, fd = box
    assert _read(fd, b"data.bin") == REAL
    assert _read(fd, b"sub/data.bin") == REAL
    st = workdir.stat_regular(fd, b"sub/data.bin")
    assert st is not None
    assert st.st_size == len(REAL)


@pytest.mark.usefixtures("resolver")
@pytest.mark.parametrize(
    "plant",
    [
        "symlink-to-host-file",
        "symlink-to-proc-environ",
        "relative-symlink-escaping",
        "symlink-inside-the-container",
        "parent-dir-is-symlink-to-host",
        "parent-dir-is-symlink-inside",
        "directory",
        "fifo",
        "socket",
        "missing",
    ],
)
def test_nothing_but_a_regular_file_beneath_the_directory_is_opened(
    box: tuple[Path, int], host: Path, plant: str
) -> None:
    root, fd = box
    target = root / "x" / "data.bin" if plant.startswith("parent") else root / "data.bin"
    os.unlink(root / "data.bin")
    if plant == "symlink-to-host-file":
        os.symlink(host / "data.bin", target)
    elif plant == "symlink-to-proc-environ":
        os.symlink("/proc/self/environ", target)
    elif plant == "relative-symlink-escaping":
        os.symlink("../host/data.bin", target)
    elif plant == "symlink-inside-the-container":
        os.symlink("sub/data.bin", target)
    elif plant == "parent-dir-is-symlink-to-host":
        os.symlink(host, root / "x")
    elif plant == "parent-dir-is-symlink-inside":
        os.symlink("sub", root / "x")
    elif plant == "directory":
        target.mkdir()
    elif plant == "fifo":
        os.mkfifo(target)  # opening it for reading would block the server forever
    elif plant == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(target))
    relpath = os.fsencode(target.relative_to(root))
    assert workdir.open_regular(fd, relpath) is None
    assert workdir.stat_regular(fd, relpath) is None


@pytest.mark.usefixtures("resolver")
@pytest.mark.parametrize(
    "relpath",
    [b"", b"/etc/passwd", b"../host/data.bin", b"sub/../data.bin", b"./data.bin", b"a//b", b"a\0b"],
    ids=["empty", "absolute", "parent", "dotdot-inside", "dot", "empty-component", "nul"],
)
def test_paths_that_are_not_plain_and_relative_are_refused_before_any_system_call(
    box: tuple[Path, int], relpath: bytes
) -> None:
    _, fd = box
    with pytest.raises(ValueError, match="relative path"):
        workdir.open_regular(fd, relpath)


@pytest.mark.usefixtures("resolver")
def test_an_open_file_keeps_serving_its_own_bytes_after_the_name_is_swapped(
    box: tuple[Path, int], host: Path
) -> None:
    root, fd = box
    opened = workdir.open_regular(fd, b"data.bin")
    assert opened is not None
    with opened:
        decoy = root / "decoy"
        os.symlink(host / "data.bin", decoy)
        exchange(root / "data.bin", decoy)
        assert opened.read_all() == REAL
        assert opened.pread(5, 4) == REAL[4:9]


#: Swaps per race, and lookups the main thread makes meanwhile.
RACE_LOOKUPS = 4000


@pytest.mark.usefixtures("resolver")
@pytest.mark.parametrize(
    ("relpath", "swapped", "decoy_kind"),
    [
        (b"data.bin", "data.bin", "symlink-to-host-file"),
        (b"data.bin", "data.bin", "symlink-to-proc-environ"),
        (b"data.bin", "data.bin", "fifo"),
        (b"data.bin", "data.bin", "directory"),
        (b"sub/data.bin", "sub", "symlink-to-host-dir"),
    ],
    ids=["host-file", "proc-environ", "fifo", "directory", "parent-to-host-dir"],
)
def test_lookups_racing_swaps_get_the_real_bytes_or_nothing(
    box: tuple[Path, int], host: Path, relpath: bytes, swapped: str, decoy_kind: str
) -> None:
    root, fd = box
    decoy = root / "decoy"
    if decoy_kind == "symlink-to-host-file":
        os.symlink(host / "data.bin", decoy)
    elif decoy_kind == "symlink-to-proc-environ":
        os.symlink("/proc/self/environ", decoy)
    elif decoy_kind == "fifo":
        os.mkfifo(decoy)
    elif decoy_kind == "directory":
        decoy.mkdir()
    else:
        os.symlink(host, decoy)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set() and swaps < 100 * RACE_LOOKUPS:
            exchange(root / swapped, decoy)
            swaps += 1

    thread = threading.Thread(target=swap)
    thread.start()
    results: dict[str, int] = {"real": 0, "none": 0, "wrong": 0}
    try:
        # At least RACE_LOOKUPS, and on until both states were seen: on a loaded machine the
        # swapper may not be scheduled at all during a short run (bounded at 10x).
        for count in range(10 * RACE_LOOKUPS):
            got = _read(fd, relpath)
            key = "none" if got is None else "real" if got == REAL else "wrong"
            results[key] += 1
            if count >= RACE_LOOKUPS and results["real"] and results["none"]:
                break
            if count % 256 == 255:
                time.sleep(0)  # hand the GIL to the swapper now and then
    finally:
        stop.set()
        thread.join()
    assert results["wrong"] == 0, results
    assert swaps > 0
    assert results["real"] > 0, results  # the file was there part of the time


# -- scan ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("resolver")
def test_scan_lists_every_regular_file_with_any_name_and_nothing_else(
    box: tuple[Path, int], host: Path
) -> None:
    root, fd = box
    names = [b".htaccess", b"..x", b"....", b"..\\..\\win.txt", b"new\nline", b"\xff\xfe.bin"]
    for name in names:
        (root / os.fsdecode(name)).write_bytes(name)
    (root / ".hidden-dir").mkdir()
    (root / ".hidden-dir" / "in.txt").write_bytes(b"in")
    os.symlink(host / "data.bin", root / "link")
    os.symlink(host, root / "linked-dir")
    os.mkfifo(root / "fifo")
    found = workdir.scan(fd)
    assert found.complete
    assert set(found.files) == {
        b"data.bin",
        b"sub/data.bin",
        b".hidden-dir/in.txt",
        *names,
    }


@pytest.mark.usefixtures("resolver")
def test_scan_stops_after_its_entry_bound(box: tuple[Path, int]) -> None:
    root, fd = box
    for i in range(300):
        (root / f"f{i:03}").write_bytes(b"")
    found = workdir.scan(fd, max_entries=100)
    assert not found.complete
    assert found.entries == 100
    assert len(found.files) <= 100


@pytest.mark.usefixtures("resolver")
def test_scan_does_not_descend_past_its_depth_bound(box: tuple[Path, int]) -> None:
    root, fd = box
    deep = root
    for level in range(1, 41):
        deep = deep / "d"
        deep.mkdir()
        (deep / "f").write_bytes(str(level).encode())
    found = workdir.scan(fd, max_depth=5)
    assert not found.complete
    depths = {p.count(b"/") for p in found.files if p.startswith(b"d/")}
    assert depths == {1, 2, 3, 4, 5}
    default = workdir.scan(fd)
    assert not default.complete
    assert max(p.count(b"/") for p in default.files) == workdir.MAX_DEPTH


# -- writing, moving, removing -------------------------------------------------------------


@pytest.mark.usefixtures("resolver")
@pytest.mark.parametrize("plant", ["symlink-to-host-file", "dangling-symlink", "regular-file"])
def test_a_write_replaces_whatever_is_at_the_name_and_never_follows_it(
    box: tuple[Path, int], host: Path, tmp_path: Path, plant: str
) -> None:
    root, fd = box
    staging = tmp_path / "staging"
    staging.mkdir()
    target = root / "upload.txt"
    if plant == "symlink-to-host-file":
        os.symlink(host / "data.bin", target)
    elif plant == "dangling-symlink":
        os.symlink(host / "created-by-the-server", target)
    else:
        target.write_bytes(b"old")
    with workdir.directory(staging) as staging_fd:
        st = workdir.write_file(fd, b"upload.txt", b"uploaded", staging_fd=staging_fd)
    assert st.st_size == 8
    assert not target.is_symlink()
    assert target.read_bytes() == b"uploaded"
    assert (host / "data.bin").read_bytes() == SECRET
    assert not (host / "created-by-the-server").exists()
    assert list(staging.iterdir()) == []


@pytest.mark.usefixtures("resolver")
def test_a_write_onto_a_directory_fails_and_leaves_nothing_behind(
    box: tuple[Path, int], tmp_path: Path
) -> None:
    root, fd = box
    staging = tmp_path / "staging"
    staging.mkdir()
    (root / "upload.txt").mkdir()
    with workdir.directory(staging) as staging_fd, pytest.raises(IsADirectoryError):
        workdir.write_file(fd, b"upload.txt", b"uploaded", staging_fd=staging_fd)
    assert list(staging.iterdir()) == []
    assert (root / "upload.txt").is_dir()


@pytest.mark.usefixtures("resolver")
def test_unlink_never_removes_a_file_through_a_swapped_parent(
    box: tuple[Path, int], host: Path
) -> None:
    root, fd = box
    shutil.rmtree(root / "sub")
    os.symlink(host / "sub", root / "sub")
    assert workdir.unlink(fd, b"sub/data.bin") is False
    assert (host / "sub" / "data.bin").read_bytes() == SECRET
    assert workdir.unlink(fd, b"data.bin") is True
    assert not (root / "data.bin").exists()


def test_moving_uploads_takes_regular_files_only(tmp_path: Path, host: Path) -> None:
    src, dst, staging = tmp_path / "src", tmp_path / "dst", tmp_path / "staging"
    for d in (src, dst, staging):
        d.mkdir()
    (src / "a.csv").write_bytes(b"a")
    (src / ".b").write_bytes(b"b")
    os.symlink(host / "data.bin", src / "link")
    with (
        workdir.directory(src) as s,
        workdir.directory(dst) as d,
        workdir.directory(staging) as st,
    ):
        assert workdir.move_files(s, d, staging_fd=st) == 2
    assert sorted(p.name for p in dst.iterdir()) == [".b", "a.csv"]


def test_removing_a_container_tree_never_follows_its_symlinks(tmp_path: Path, host: Path) -> None:
    """The clean-up at expiry is ``shutil.rmtree``: descriptor-based on Linux."""
    assert shutil.rmtree.avoids_symlink_attacks
    root = tmp_path / "container"
    (root / "d").mkdir(parents=True)
    os.symlink(host, root / "to-host")
    os.symlink(host, root / "d" / "to-host")
    os.symlink(host / "data.bin", root / "d" / "file-link")
    shutil.rmtree(root)
    assert not root.exists()
    assert (host / "data.bin").read_bytes() == SECRET
    assert (host / "sub" / "data.bin").read_bytes() == SECRET
