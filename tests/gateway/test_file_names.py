"""No file is lost to its name: model code writes hostile names, the gateway keeps every file.

The code writes ``tests.names.HOSTILE_PATHS`` (hidden files, ``..x``, ``....``, backslashes,
control characters, quotes, ``;``, ``%``, Unicode, bytes that are not UTF-8, 255-byte names,
subdirectories) through the gateway's Responses API; the gateway (both storage backends)
harvests every one, serves its exact bytes, and sends a ``Content-Disposition`` whose
``filename*`` gives a browser back the name the code wrote (as the API shows it: U+FFFD for
bytes that are not UTF-8). The name is kept verbatim in the file's record.
"""

from __future__ import annotations

import openai
import pytest

from cigate.testing.plugin import RunningEmulator
from tests.gateway.harness import GatewayHarness
from tests.gateway.live import CODE_TOOL, LiveGateway, code_input
from tests.names import HOSTILE_PATHS, basename, content, filename_from, write_cell

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]


def test_every_file_the_code_writes_is_harvested_and_served_under_its_exact_name(
    live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    response = live_gateway.openai().responses.create(
        model="gpt-4.1", input=code_input(write_cell()), tools=CODE_TOOL
    )
    files = live_gateway.harvested(response.id, at_least=len(HOSTILE_PATHS))
    assert len(files) == len(HOSTILE_PATHS)
    by_name = {f["filename"]: f for f in files}
    assert set(by_name) == {basename(p) for p in HOSTILE_PATHS}
    http = live_gateway.http()
    sdk = live_gateway.openai()
    for index, path in enumerate(HOSTILE_PATHS):
        name = basename(path)
        record = by_name[name]
        assert record["state"] == "stored", record
        assert record["bytes"] == len(content(index, path))
        got = http.get(f"/files/{record['id']}/content")
        assert got.status_code == 200
        assert got.content == content(index, path)
        assert filename_from(got.headers["content-disposition"]) == name
        assert got.headers["content-disposition"].isascii()
        via_sdk = sdk.containers.files.content.retrieve(
            record["upstream_file_id"], container_id=record["container_id"]
        )
        assert via_sdk.read() == content(index, path)


SAME_NAME = """
import os
for d in ('a', 'b', 'c/d'):
    os.makedirs('/mnt/data/' + d, exist_ok=True)
    open(f'/mnt/data/{d}/report.csv', 'w').write(f'made in {d}\\n')
"""


def test_files_with_one_name_in_different_directories_keep_their_own_paths(
    live_gateway: LiveGateway,
) -> None:
    response = live_gateway.openai().responses.create(
        model="gpt-4.1", input=code_input(SAME_NAME), tools=CODE_TOOL
    )
    files = live_gateway.harvested(response.id, at_least=3)
    assert sorted(f["path"] for f in files) == [
        "/mnt/data/a/report.csv",
        "/mnt/data/b/report.csv",
        "/mnt/data/c/d/report.csv",
    ]
    http = live_gateway.http()
    sdk = live_gateway.openai()
    for f in files:
        directory = f["path"].removeprefix("/mnt/data/").rsplit("/", 1)[0]
        expected = f"made in {directory}\n".encode()
        assert f["filename"] == "report.csv"
        assert http.get(f"/files/{f['id']}/content").content == expected
        relpath = f["path"].removeprefix("/mnt/data/")
        by_path = http.get(f"/responses/{response.id}/files/by-path/{relpath}")
        assert (by_path.status_code, by_path.content) == (200, expected)
        meta = sdk.containers.files.retrieve(f["upstream_file_id"], container_id=f["container_id"])
        assert meta.path == f["path"]


def test_a_by_path_link_serves_the_file_listed_at_that_path_else_the_one_cited_by_name(
    gateway: GatewayHarness,
) -> None:
    tenant = gateway.add_tenant("acme")
    cid = "cntr_same"
    gateway.put_file(
        tenant, b"in a", "report.csv", container_id=cid, response_id="resp_1",
        path="/mnt/data/a/report.csv",
    )  # fmt: skip
    gateway.put_file(tenant, b"cited, path not listed yet", "report.csv", container_id=cid)
    rows = gateway.call(gateway.services.meta.list_files, tenant.id, container_id=cid)
    assert [r.path for r in rows] == ["/mnt/data/a/report.csv", None]
    gateway.call(_same_response, gateway, tenant.id, rows[1].id)
    get = gateway.client.get
    a = get("/responses/resp_1/files/by-path/a/report.csv", headers=tenant.headers)
    assert (a.status_code, a.content) == (200, b"in a")
    b = get("/responses/resp_1/files/by-path/b/report.csv", headers=tenant.headers)
    assert (b.status_code, b.content) == (200, b"cited, path not listed yet")


async def _same_response(gateway: GatewayHarness, tenant_id: str, file_id: str) -> None:
    row = await gateway.services.meta.get_file(tenant_id, file_id)
    assert row is not None
    await gateway.cited_file(
        tenant_id,
        row.filename,
        container_id=row.container_id,
        file_id=row.upstream_file_id,
        response_id="resp_1",
    )


@pytest.mark.parametrize("name", ["..", "."], ids=["dot-dot", "dot"])
def test_an_upload_the_service_refuses_by_name_is_refused_through_the_gateway(
    live_gateway: LiveGateway, name: str
) -> None:
    sdk = live_gateway.openai()
    with pytest.raises(openai.BadRequestError) as info:
        sdk.files.create(file=(name, b"x"), purpose="assistants")
    assert info.value.body["code"] == "invalid_value"  # type: ignore[index]
    container = sdk.containers.create(name="uploads")
    with pytest.raises(openai.BadRequestError):
        sdk.containers.files.create(container.id, file=(name, b"x"))
    assert list(sdk.files.list()) == []
