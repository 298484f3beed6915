"""The Files API through the real openai SDK (api-reference 4.1), Azure and OpenAI flavours."""

from __future__ import annotations

import re

import openai
import pytest

from cigate.testing.plugin import RunningEmulator

AZURE_ID = re.compile(r"^assistant-[0-9A-Za-z]{22}$")
OPENAI_ID = re.compile(r"^file-[0-9A-Za-z]{22}$")


@pytest.fixture
def client(emulator: RunningEmulator) -> openai.OpenAI:
    return emulator.openai(max_retries=0)


def test_an_upload_on_an_azure_path_gets_an_assistant_id(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
    assert AZURE_ID.match(uploaded.id)
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == ("notes.txt", 5, "assistants")
    assert uploaded.object == "file"
    assert uploaded.status == "processed"


def test_an_upload_on_the_openai_path_gets_a_file_id(emulator: RunningEmulator) -> None:
    client = emulator.openai(base_url=emulator.openai_url, max_retries=0)
    uploaded = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    assert OPENAI_ID.match(uploaded.id)


def test_an_upload_through_the_dated_azure_surface_works(emulator: RunningEmulator) -> None:
    client = emulator.azure_openai(api_version="2024-05-01-preview", max_retries=0)
    uploaded = client.files.create(file=("a.csv", b"1,2"), purpose="assistants")
    assert AZURE_ID.match(uploaded.id)
    assert client.files.content(uploaded.id).read() == b"1,2"


def test_an_upload_may_carry_an_expiry(client: openai.OpenAI) -> None:
    uploaded = client.files.create(
        file=("a.txt", b"x"),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert uploaded.expires_at == uploaded.created_at + 3600


def test_a_file_past_its_expiry_is_gone(emulator: RunningEmulator, client: openai.OpenAI) -> None:
    uploaded = client.files.create(
        file=("a.txt", b"x"),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    emulator.control.advance_clock(3601)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_files_are_listed_newest_first_and_filtered_by_purpose(client: openai.OpenAI) -> None:
    a = client.files.create(file=("a.txt", b"a"), purpose="assistants")
    b = client.files.create(file=("b.jsonl", b"{}"), purpose="batch")
    c = client.files.create(file=("c.txt", b"c"), purpose="assistants")
    assert [f.id for f in client.files.list()] == [c.id, b.id, a.id]
    assert [f.id for f in client.files.list(purpose="assistants")] == [c.id, a.id]
    assert [f.id for f in client.files.list(order="asc", limit=1)] == [a.id, b.id, c.id]


def test_a_file_is_retrieved_by_id(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("a.txt", b"abc"), purpose="assistants")
    assert client.files.retrieve(uploaded.id).model_dump() == uploaded.model_dump()


def test_file_content_is_the_uploaded_bytes(client: openai.OpenAI) -> None:
    data = bytes(range(256)) * 10
    uploaded = client.files.create(file=("blob.bin", data), purpose="assistants")
    assert client.files.content(uploaded.id).read() == data


def test_deleting_a_file_answers_deleted_and_removes_it(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("a.txt", b"abc"), purpose="assistants")
    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/openai/v1/files/{id}/content", id="v1-content"),
        pytest.param("/openai/v1/files/{id}", id="v1-retrieve"),
        pytest.param(
            "/openai/files/{id}/content?api-version=2025-04-01-preview", id="legacy-content"
        ),
    ],
)
def test_a_container_file_id_at_files_is_azures_exact_not_found(
    emulator: RunningEmulator, path: str
) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).get(
        path.format(id="cfile_6903bf45e3288191af3d56e6d23c3a4d")
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "notFound", "message": "The specified entity cannot be found."}
    }


def test_an_unknown_file_on_the_openai_path_is_openais_not_found(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai(base_url=emulator.openai_url, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve("file-nope")
    assert info.value.body == {
        "message": "No such File object: file-nope",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }


def test_user_data_is_refused_on_azure_with_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.txt", b"a"), purpose="user_data")
    assert info.value.code == "invalid_value"
    assert info.value.param == "purpose"
    assert "'user_data' is not supported on Azure OpenAI" in info.value.message


def test_an_unknown_purpose_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.txt", b"a"), purpose="nonsense")  # type: ignore[arg-type]
    assert info.value.param == "purpose"


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        pytest.param({"purpose": "assistants"}, None, "file", id="no-file"),
        pytest.param({}, {"file": ("a.txt", b"a")}, "purpose", id="no-purpose"),
        pytest.param(
            {
                "purpose": "assistants",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "60",
            },
            {"file": ("a.txt", b"a")},
            "expires_after.seconds",
            id="expiry-too-short",
        ),
        pytest.param(
            {
                "purpose": "assistants",
                "expires_after[anchor]": "last_active_at",
                "expires_after[seconds]": "3600",
            },
            {"file": ("a.txt", b"a")},
            "expires_after.anchor",
            id="expiry-wrong-anchor",
        ),
    ],
)
def test_an_invalid_upload_is_a_400_naming_the_parameter(
    emulator: RunningEmulator,
    data: dict[str, str],
    files: dict[str, tuple[str, bytes]] | None,
    param: str,
) -> None:
    http = emulator.http_client(headers=emulator.auth_headers)
    response = http.post("/openai/v1/files", data=data, files=files or {"other": ("x", b"")})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_the_files_list_limit_may_go_up_to_ten_thousand(emulator: RunningEmulator) -> None:
    http = emulator.http_client(headers=emulator.auth_headers)
    assert http.get("/openai/v1/files?limit=10000").status_code == 200
    too_many = http.get("/openai/v1/files?limit=10001")
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "integer_above_max_value"


def test_the_files_list_defaults_to_ten_thousand_and_other_lists_to_twenty(
    emulator: RunningEmulator, client: openai.OpenAI
) -> None:
    # §4.1: Files lists take limit 1-10000, default 10000; the others 1-100, default 20 (§7.8).
    for i in range(21):
        client.files.create(file=(f"f{i}.txt", b"x"), purpose="assistants")
    http = emulator.http_client(headers=emulator.auth_headers)
    for _ in range(21):
        http.post("/openai/v1/assistants", json={"model": "gpt-4.1"})
    files = http.get("/openai/v1/files").json()
    assert (len(files["data"]), files["has_more"]) == (21, False)
    assistants = http.get("/openai/v1/assistants").json()
    assert (len(assistants["data"]), assistants["has_more"]) == (20, True)
    for path, limit in (("files", 0), ("assistants", 0), ("assistants", 101)):
        refused = http.get(f"/openai/v1/{path}", params={"limit": limit})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "limit"


def test_the_files_backend_can_create_assistants_output_files(emulator: RunningEmulator) -> None:
    record = emulator.backends.files.create("plot.png", b"\x89PNG", "assistants_output", azure=True)
    client = emulator.openai(max_retries=0)
    assert client.files.retrieve(record.id).purpose == "assistants_output"
    assert client.files.content(record.id).read() == b"\x89PNG"


async def test_the_async_sdk_uploads_and_downloads(emulator: RunningEmulator) -> None:
    async with emulator.async_azure_openai(max_retries=0) as client:
        uploaded = await client.files.create(file=("a.txt", b"async"), purpose="assistants")
        assert AZURE_ID.match(uploaded.id)
        content = await client.files.content(uploaded.id)
        assert content.read() == b"async"
        assert [f.id async for f in client.files.list()] == [uploaded.id]
