"""What model code can do to its container's directory, and what the API answers.

The code owns ``/mnt/data``: it can replace a listed file by a symlink (to a host file, to the
emulator's ``/proc/self/environ``), a directory or a FIFO, or a parent directory by a symlink
to a host directory; it can plant a symlink where an upload will land, and write files under
any name Linux allows. Here the test does to the directory what such code does after the diff
(the backend cannot tell who did it), then checks the API: only regular files inside the
directory are listed or served, the host is never read or written, and no name is lost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import openai
import pytest

from cigate.engine import workdir
from cigate.engine.containers import Container, ContainerBackend
from cigate.testing.plugin import RunningEmulator
from tests.names import HOSTILE_PATHS, basename, content, filename_from, shown, write_cell

pytestmark = pytest.mark.sandbox

SECRET = b"host bytes that no container may see\n"


@pytest.fixture
def client(emulator: RunningEmulator) -> openai.OpenAI:
    return emulator.openai(max_retries=0)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "data.bin").write_bytes(SECRET)
    return outside


def _backend(emulator: RunningEmulator) -> ContainerBackend:
    backend: ContainerBackend = emulator.backends.containers
    return backend


def _container_with_code(emulator: RunningEmulator, client: openai.OpenAI, code: str) -> Container:
    backend = _backend(emulator)
    container = backend.get(client.containers.create(name="disk").id)
    run = emulator.run_on_loop(backend.run_code(container, code, timeout=60))
    assert run.result.error is None, run.result.logs
    return container


WRITE_TWO = """
import os
os.makedirs('/mnt/data/sub', exist_ok=True)
open('/mnt/data/data.bin', 'wb').write(b'real')
open('/mnt/data/sub/data.bin', 'wb').write(b'real too')
"""


@pytest.mark.parametrize(
    "replacement",
    [
        "symlink-to-host-file",
        "symlink-to-proc-environ",
        "symlink-to-a-file-inside",
        "directory",
        "fifo",
        "parent-is-symlink-to-host-dir",
    ],
)
def test_a_file_the_code_replaced_by_something_else_is_neither_listed_nor_served(
    emulator: RunningEmulator, client: openai.OpenAI, host: Path, replacement: str
) -> None:
    container = _container_with_code(emulator, client, WRITE_TWO)
    files = {f.path: f.id for f in client.containers.files.list(container.id)}
    d = container.directory
    if replacement == "parent-is-symlink-to-host-dir":
        target, name = "/mnt/data/sub/data.bin", d / "sub" / "data.bin"
        shutil.rmtree(d / "sub")
        os.symlink(host, d / "sub")
    else:
        target, name = "/mnt/data/data.bin", d / "data.bin"
        name.unlink()
        if replacement == "symlink-to-host-file":
            os.symlink(host / "data.bin", name)
        elif replacement == "symlink-to-proc-environ":
            os.symlink("/proc/self/environ", name)
        elif replacement == "symlink-to-a-file-inside":
            os.symlink("sub/data.bin", name)
        elif replacement == "directory":
            name.mkdir()
        else:
            os.mkfifo(name)
    file_id = files[target]
    listed = {f.path for f in client.containers.files.list(container.id)}
    assert target not in listed
    assert len(listed) == 1
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.files.retrieve(file_id, container_id=container.id)
    assert info.value.body["message"] == f"File {file_id} not found on container {container.id}."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve(file_id, container_id=container.id)
    http = emulator.http_client(headers=emulator.auth_headers)
    head = http.head(f"/openai/v1/containers/{container.id}/files/{file_id}/content")
    assert head.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.containers.files.delete(file_id, container_id=container.id)
    assert (host / "data.bin").read_bytes() == SECRET


def test_deleting_a_file_never_removes_a_host_file_through_a_swapped_parent(
    emulator: RunningEmulator, client: openai.OpenAI, host: Path
) -> None:
    container = _container_with_code(emulator, client, WRITE_TWO)
    files = {f.path: f.id for f in client.containers.files.list(container.id)}
    file_id = files["/mnt/data/sub/data.bin"]
    retrieved = client.containers.files.retrieve(file_id, container_id=container.id)
    assert retrieved.path == "/mnt/data/sub/data.bin"
    shutil.rmtree(container.directory / "sub")
    os.symlink(host, container.directory / "sub")
    with pytest.raises(openai.NotFoundError):
        client.containers.files.delete(file_id, container_id=container.id)
    assert (host / "data.bin").read_bytes() == SECRET
    # The same swap landing between the API's check and the removal itself:
    emulator.run_on_loop(_delete_now(_backend(emulator), container, file_id))
    assert (host / "data.bin").read_bytes() == SECRET


async def _delete_now(backend: ContainerBackend, container: Container, file_id: str) -> None:
    backend.delete_file(container, file_id)


def test_an_upload_replaces_a_symlink_planted_at_its_name_and_never_writes_the_host(
    emulator: RunningEmulator, client: openai.OpenAI, host: Path
) -> None:
    data = b"uploaded bytes"
    planted = f"{hashlib.md5(data, usedforsecurity=False).hexdigest()}-in.txt"
    container = _container_with_code(
        emulator,
        client,
        f"import os\nos.symlink({str(host / 'data.bin')!r}, '/mnt/data/{planted}')",
    )
    created = client.containers.files.create(container.id, file=("in.txt", data))
    assert created.path == f"/mnt/data/{planted}"
    assert (host / "data.bin").read_bytes() == SECRET
    assert not (container.directory / planted).is_symlink()
    got = client.containers.files.content.retrieve(created.id, container_id=container.id)
    assert got.read() == data


def test_an_upload_onto_a_directory_the_code_made_is_a_400(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    data = b"uploaded bytes"
    planted = f"{hashlib.md5(data, usedforsecurity=False).hexdigest()}-in.txt"
    container = _container_with_code(
        emulator, client, f"import os\nos.mkdir('/mnt/data/{planted}')"
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.containers.files.create(container.id, file=("in.txt", data))
    assert "a directory of that name exists" in info.value.body["message"]  # type: ignore[index]


def test_every_name_the_code_writes_is_listed_and_served_with_its_exact_name(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = _container_with_code(emulator, client, write_cell())
    listed = {f.path: f for f in client.containers.files.list(container.id, limit=100)}
    assert set(listed) == {"/mnt/data/" + shown(p) for p in HOSTILE_PATHS}
    http = emulator.http_client(headers=emulator.auth_headers)
    for index, path in enumerate(HOSTILE_PATHS):
        record = listed["/mnt/data/" + shown(path)]
        assert (record.source, record.bytes) == ("assistant", len(content(index, path)))
        got = http.get(f"/openai/v1/containers/{container.id}/files/{record.id}/content")
        assert got.status_code == 200, path
        assert got.content == content(index, path)
        assert filename_from(got.headers["content-disposition"]) == basename(path)


def test_a_walk_past_its_bound_registers_what_it_saw_and_forgets_nothing(
    emulator: RunningEmulator,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = _container_with_code(emulator, client, "open('/mnt/data/keep.txt', 'w').write('k')")
    monkeypatch.setattr(workdir, "MAX_ENTRIES", 300)
    many = (
        "import os\n"
        "for i in range(2000):\n"
        "    open(f'/mnt/data/f{i:04}', 'wb').close()\n"
        "d = '/mnt/data/deep'\n"
        "for i in range(200):\n"
        "    d += '/d'\n"
        "os.makedirs(d)\n"
    )
    backend = _backend(emulator)
    with caplog.at_level(logging.WARNING, logger="cigate.engine.containers"):
        run = emulator.run_on_loop(backend.run_code(container, many, timeout=60))
    assert run.result.error is None, run.result.logs
    assert 0 < len(run.changed) <= 300
    assert "stopped listing after 300 entries" in caplog.text
    paths = {f.path for f in client.containers.files.list(container.id, limit=100)}
    assert "/mnt/data/keep.txt" in paths


BAD_UPLOAD_NAMES = {
    "dot-dot": b"..",
    "dot": b".",
    "empty": b"",
    "nul": b"a\x00b.txt",
    "bell": b"bell\x07.txt",
    "escape": b"esc\x1b.txt",
    "delete": b"del\x7f.txt",
    "slash": b"dir/x.txt",
    "backslash": b"..\\x.txt",
    "absolute": b"/etc/passwd",
    "traversal": b"../../x",
}


@pytest.mark.parametrize("name", list(BAD_UPLOAD_NAMES.values()), ids=list(BAD_UPLOAD_NAMES))
@pytest.mark.parametrize("where", ["files", "container-files"])
def test_an_upload_whose_name_is_not_a_plain_file_name_is_a_400(
    emulator: RunningEmulator, client: openai.OpenAI, name: bytes, where: str
) -> None:
    boundary = "cigate-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'
        ).encode()
        + name
        + (f'"\r\nContent-Type: text/plain\r\n\r\npayload\r\n--{boundary}--\r\n').encode()
    )
    if where == "files":
        url = "/openai/v1/files"
    else:
        url = f"/openai/v1/containers/{client.containers.create(name='up').id}/files"
    http = emulator.http_client(headers=emulator.auth_headers)
    response = http.post(
        url, content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "file",
        "invalid_value",
    )
    assert error["message"].startswith("Invalid file name ")
    assert list(client.files.list()) == []


@pytest.mark.parametrize(
    "name",
    [".htaccess", "..x", "....", " spaced ;%; name .txt", "single'quote.txt", "résumé 報告.pdf"],
)
def test_an_upload_with_an_unusual_but_plain_name_keeps_it_exactly(
    client: openai.OpenAI, name: str
) -> None:
    uploaded = client.files.create(file=(name, b"x"), purpose="assistants")
    assert uploaded.filename == name
    container = client.containers.create(name="c", file_ids=[uploaded.id])
    [copied] = list(client.containers.files.list(container.id))
    assert copied.path.endswith("-" + name)
    direct = client.containers.files.create(container.id, file=(name, b"y"))
    assert direct.path.endswith("-" + name)
    got = client.containers.files.content.retrieve(direct.id, container_id=container.id)
    assert got.read() == b"y"
