"""Containers and container files through the real openai SDK (api-reference 3)."""

from __future__ import annotations

import openai
import pytest
import requests

from cigate.testing.plugin import RunningEmulator


@pytest.fixture
def client(emulator: RunningEmulator) -> openai.OpenAI:
    return emulator.openai(max_retries=0)


def _bad_request(excinfo: pytest.ExceptionInfo[openai.BadRequestError]) -> dict[str, object]:
    assert excinfo.value.status_code == 400
    body = excinfo.value.body
    assert isinstance(body, dict)
    return body


# -- containers ----------------------------------------------------------------------------


def test_a_container_is_created_with_the_requested_name_and_expiry(client: openai.OpenAI) -> None:
    container = client.containers.create(
        name="c1", expires_after={"anchor": "last_active_at", "minutes": 30}, memory_limit="4g"
    )
    assert container.id.startswith("cntr_")
    assert (container.name, container.status, container.memory_limit) == ("c1", "running", "4g")
    assert container.expires_after is not None
    assert container.expires_after.anchor == "last_active_at"
    assert container.expires_after.minutes == 30


def test_a_new_container_defaults_to_twenty_idle_minutes_and_1g(client: openai.OpenAI) -> None:
    container = client.containers.create(name="defaults")
    assert container.expires_after is not None
    assert container.expires_after.minutes == 20
    assert container.memory_limit == "1g"


def test_file_ids_given_at_creation_are_copied_into_the_container(
    client: openai.OpenAI,
) -> None:
    uploaded = client.files.create(file=("in.txt", b"hello"), purpose="assistants")
    container = client.containers.create(name="with-files", file_ids=[uploaded.id])
    files = list(client.containers.files.list(container.id))
    assert [f.source for f in files] == ["user"]
    assert files[0].path.endswith("-in.txt")
    content = client.containers.files.content.retrieve(files[0].id, container_id=container.id)
    assert content.read() == b"hello"


def test_a_container_is_retrieved_by_id(client: openai.OpenAI) -> None:
    created = client.containers.create(name="r")
    fetched = client.containers.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.name == "r"


def test_containers_are_listed_newest_first_and_paged_by_the_sdk(client: openai.OpenAI) -> None:
    made = [client.containers.create(name=f"c{i}").id for i in range(5)]
    first_page = client.containers.list(limit=2)
    assert [c.id for c in first_page.data] == made[::-1][:2]
    assert first_page.has_more is True
    assert [c.id for c in client.containers.list(limit=2)] == made[::-1]
    assert [c.id for c in client.containers.list(limit=2, order="asc")] == made


def test_containers_can_be_filtered_by_name(client: openai.OpenAI) -> None:
    client.containers.create(name="keep")
    client.containers.create(name="other")
    assert [c.name for c in client.containers.list(extra_query={"name": "keep"})] == ["keep"]


def test_the_list_envelope_always_has_every_field(emulator: RunningEmulator) -> None:
    http = emulator.http_client(headers=emulator.auth_headers)
    body = http.get("/openai/v1/containers").json()
    assert body == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_deleting_a_container_answers_container_deleted_and_forgets_it(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="d")
    client.containers.delete(container.id)  # the SDK ignores the body and returns None
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(container.id)
    other = client.containers.create(name="d2")
    raw = emulator.http_client(headers=emulator.auth_headers).delete(
        f"/openai/v1/containers/{other.id}"
    )
    assert raw.json() == {"id": other.id, "object": "container.deleted", "deleted": True}


def test_an_unknown_container_is_a_404_with_the_openai_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.retrieve("cntr_nope")
    assert info.value.body == {
        "message": "Container with id 'cntr_nope' not found.",
        "type": "invalid_request_error",
        "param": "container_id",
        "code": None,
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        pytest.param({}, "name", "missing_required_parameter", id="name-missing"),
        pytest.param({"name": 3}, "name", "invalid_type", id="name-not-a-string"),
        pytest.param(
            {"name": "x", "memory_limit": "3g"},
            "memory_limit",
            "invalid_value",
            id="memory-limit-unknown",
        ),
        pytest.param(
            {"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}},
            "expires_after.anchor",
            "invalid_value",
            id="anchor-not-last-active",
        ),
        pytest.param(
            {"name": "x", "expires_after": {"anchor": "last_active_at"}},
            "expires_after.minutes",
            "missing_required_parameter",
            id="minutes-missing",
        ),
        pytest.param(
            {"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}},
            "expires_after.minutes",
            "integer_below_min_value",
            id="minutes-zero",
        ),
        pytest.param(
            {"name": "x", "file_ids": "file-1"},
            "file_ids",
            "invalid_type",
            id="file-ids-not-a-list",
        ),
    ],
)
def test_an_invalid_create_request_is_a_400_naming_the_parameter(
    emulator: RunningEmulator, body: dict[str, object], param: str, code: str
) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).post(
        "/openai/v1/containers", json=body
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]


def test_the_memory_limit_error_lists_the_supported_values(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.containers.create(name="x", memory_limit="3g")  # type: ignore[arg-type]
    assert _bad_request(info)["message"] == (
        "Invalid value: '3g'. Supported values are: '1g', '4g', '16g', '64g'."
    )


def test_a_body_that_is_not_json_is_a_400(emulator: RunningEmulator) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).post(
        "/openai/v1/containers", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("We could not parse the JSON body")


def test_an_unknown_file_id_at_creation_is_a_404_and_creates_nothing(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.create(name="x", file_ids=["assistant-missing"])
    assert info.value.body == {
        "message": "No such File object: assistant-missing",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    assert list(client.containers.list()) == []


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        pytest.param(
            "limit=0",
            "integer_below_min_value",
            "Invalid 'limit': integer below minimum value. "
            "Expected a value >= 1, but got 0 instead.",
            id="limit-zero",
        ),
        pytest.param(
            "limit=101",
            "integer_above_max_value",
            "Invalid 'limit': integer above maximum value. "
            "Expected a value <= 100, but got 101 instead.",
            id="limit-101",
        ),
        pytest.param(
            "limit=ten",
            "invalid_type",
            "Invalid 'limit': expected an integer, but got 'ten' instead.",
            id="limit-not-a-number",
        ),
        pytest.param(
            "order=sideways",
            "invalid_value",
            "Invalid value: 'sideways'. Supported values are: 'asc' and 'desc'.",
            id="order-unknown",
        ),
    ],
)
@pytest.mark.parametrize(
    "path",
    ["/openai/v1/containers", "/openai/v1/containers/{cid}/files"],
    ids=["containers", "container-files"],
)
def test_list_queries_are_validated_like_openai(
    emulator: RunningEmulator,
    client: openai.OpenAI,
    *,
    path: str,
    query: str,
    code: str,
    message: str,
) -> None:
    cid = client.containers.create(name="q").id
    response = emulator.http_client(headers=emulator.auth_headers).get(
        path.format(cid=cid) + "?" + query
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (code, message)


# -- container files -----------------------------------------------------------------------


def test_an_uploaded_file_is_stored_with_a_hash_prefix_and_source_user(
    client: openai.OpenAI,
) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("data.csv", b"a,b\n1,2\n"))
    assert created.id.startswith("cfile_")
    assert created.object == "container.file"
    assert created.source == "user"
    assert created.bytes == 8
    assert created.container_id == container.id
    assert created.path.startswith("/mnt/data/")
    assert created.path.endswith("-data.csv")


def test_a_files_api_file_is_copied_in_by_json_file_id(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("report.txt", b"copied"), purpose="assistants")
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file_id=uploaded.id)
    assert created.source == "user"
    assert created.path.endswith("-report.txt")
    content = client.containers.files.content.retrieve(created.id, container_id=container.id)
    assert content.read() == b"copied"


def test_a_container_file_id_is_not_a_files_api_id(client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("a.txt", b"a"))
    with pytest.raises(openai.NotFoundError):
        client.containers.files.create(container.id, file_id=created.id)


def test_creating_a_file_without_file_or_file_id_is_a_400(client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    with pytest.raises(openai.BadRequestError) as info:
        client.containers.files.create(container.id)
    assert _bad_request(info)["message"] == "Missing required parameter: 'file_id'."


def test_container_files_are_listed_newest_first_and_paged(client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    made = [
        client.containers.files.create(container.id, file=(f"f{i}.txt", b"x" * i)).id
        for i in range(5)
    ]
    page = client.containers.files.list(container.id, limit=2)
    assert page.has_more is True
    assert [f.id for f in client.containers.files.list(container.id, limit=2)] == made[::-1]
    ordered = client.containers.files.list(container.id, limit=3, order="asc")
    assert [f.id for f in ordered] == made


def test_a_container_file_is_retrieved_by_id(client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("a.txt", b"abc"))
    fetched = client.containers.files.retrieve(created.id, container_id=container.id)
    assert fetched.model_dump() == created.model_dump()


def test_deleting_a_container_file_answers_container_file_deleted(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("a.txt", b"abc"))
    raw = emulator.http_client(headers=emulator.auth_headers).delete(
        f"/openai/v1/containers/{container.id}/files/{created.id}"
    )
    assert raw.json() == {"id": created.id, "object": "container.file.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.files.retrieve(created.id, container_id=container.id)
    assert info.value.body == {
        "message": f"File {created.id} not found on container {container.id}.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_the_sdk_deletes_a_container_file(client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("a.txt", b"abc"))
    client.containers.files.delete(created.id, container_id=container.id)
    assert list(client.containers.files.list(container.id)) == []


def test_content_is_served_raw_with_a_type_from_the_name_and_a_length(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("t.csv", b"x,y\n"))
    response = emulator.http_client(headers=emulator.auth_headers).get(
        f"/openai/v1/containers/{container.id}/files/{created.id}/content",
        headers={"accept": "application/binary"},
    )
    assert response.status_code == 200
    assert response.content == b"x,y\n"
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-length"] == "4"


def test_the_seeds_plain_requests_download_works(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("out.bin", bytes(range(256))))
    endpoint = emulator.base_url
    download_url = f"{endpoint}/openai/v1/containers/{container.id}/files/{created.id}/content"
    response = requests.get(
        download_url,
        headers={"api-key": emulator.api_key},
        params={"api-version": "preview"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.content == bytes(range(256))


def test_an_unknown_container_file_is_a_404(client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve("cfile_nope", container_id=container.id)


# -- expiry --------------------------------------------------------------------------------


def test_an_idle_container_expires_after_twenty_minutes(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("a.txt", b"abc"))
    emulator.control.advance_clock(19 * 60)
    assert client.containers.retrieve(container.id).status == "running"
    emulator.control.advance_clock(2 * 60)
    assert client.containers.retrieve(container.id).status == "expired"
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve(created.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.list(container.id)
    response = requests.get(
        f"{emulator.base_url}/openai/v1/containers/{container.id}/files/{created.id}/content",
        headers={"api-key": emulator.api_key},
        params={"api-version": "preview"},
        timeout=30,
    )
    assert response.status_code == 404


def test_activity_keeps_a_container_alive(emulator: RunningEmulator, client: openai.OpenAI) -> None:
    container = client.containers.create(name="c")
    emulator.control.advance_clock(15 * 60)
    client.containers.files.create(container.id, file=("a.txt", b"abc"))
    emulator.control.advance_clock(15 * 60)
    assert client.containers.retrieve(container.id).status == "running"


def test_an_expired_container_is_still_listed_as_expired_and_can_be_deleted(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="c")
    result = emulator.control.advance_clock(21 * 60)
    assert container.id in result["expired_containers"]
    assert [c.status for c in client.containers.list()] == ["expired"]
    client.containers.delete(container.id)
    assert list(client.containers.list()) == []


# -- async ---------------------------------------------------------------------------------


async def test_the_async_sdk_creates_uploads_lists_and_downloads(
    emulator: RunningEmulator,
) -> None:
    async with emulator.async_openai(max_retries=0) as client:
        container = await client.containers.create(name="async")
        created = await client.containers.files.create(container.id, file=("a.txt", b"async"))
        listed = [f.id async for f in client.containers.files.list(container.id)]
        assert listed == [created.id]
        content = await client.containers.files.content.retrieve(
            created.id, container_id=container.id
        )
        assert content.read() == b"async"
        await client.containers.delete(container.id)


@pytest.mark.sandbox
def test_a_file_written_by_code_is_listed_as_assistant_with_its_real_path(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    container_id = client.containers.create(name="code").id
    backend = emulator.backends.containers
    container = backend.get(container_id)
    code = (
        "import os\n"
        "os.makedirs('/mnt/data/out', exist_ok=True)\n"
        "open('/mnt/data/out/report.csv', 'w').write('a,b\\n')\n"
    )
    run = emulator.run_on_loop(backend.run_code(container, code, timeout=30))
    assert run.result.error is None, run.result.logs
    [listed] = list(client.containers.files.list(container_id))
    assert (listed.source, listed.path) == ("assistant", "/mnt/data/out/report.csv")
    content = client.containers.files.content.retrieve(listed.id, container_id=container_id)
    assert content.read() == b"a,b\n"
