"""``GET /files``: the caller's stored files, newest first, in OpenAI-list pages (the web page's
API). Pages cover every file once, filters and cursors of another tenant's objects get the
unknown-id answer, bad parameters a 400 in the OpenAI envelope; on both storage backends."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.harness import GatewayHarness, Tenant
from tests.hostile import assert_error_shape

pytestmark = pytest.mark.storage


def _pages(gw: GatewayHarness, tenant: Tenant, query: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = ""
    while True:
        answer = gw.client.get(f"/files?limit={limit}{query}{after}", headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        ids = [f["id"] for f in body["data"]]
        assert body["object"] == "list"
        assert (body["first_id"], body["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))
        pages.append(ids)
        if not body["has_more"]:
            return pages
        after = f"&after={body['last_id']}"


@pytest.fixture
def listed(gateway: GatewayHarness) -> tuple[GatewayHarness, Tenant, Tenant, list[str]]:
    """Tenant A with 7 files (ids oldest first, as the store orders them), tenant B with 1."""
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    rows = []
    for i in range(7):
        row = gateway.put_file(
            a,
            f"file {i}".encode(),
            f"f{i}.txt",
            response_id="resp_a1" if i < 3 else "resp_a2",
            container_id="cntr_a1" if i % 2 else "cntr_a2",
        )
        rows.append(row)
    # Equal timestamps (a coarse clock) are ordered by id: the order of the store's pages.
    ids = [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id))]
    for cid in ("cntr_a1", "cntr_a2"):
        gateway.call(gateway.services.meta.claim, a.id, "container", cid)
    gateway.put_file(b, b"b's", "b.txt", response_id="resp_b", container_id="cntr_b")
    gateway.call(gateway.services.meta.claim, b.id, "container", "cntr_b")
    return gateway, a, b, ids


@pytest.mark.parametrize(
    "limit", [1, 3, 7, 100], ids=["limit-1", "limit-3", "limit-7", "limit-100"]
)
def test_pages_list_every_file_of_the_tenant_once_newest_first(listed, limit: int) -> None:
    gw, a, _, ids = listed
    pages = _pages(gw, a, "", limit)
    assert [i for page in pages for i in page] == ids[::-1]
    assert all(len(page) <= limit for page in pages)
    assert [i for page in _pages(gw, a, "&order=asc", limit) for i in page] == ids


def test_a_file_row_says_what_the_page_shows(listed) -> None:
    gw, a, _, ids = listed
    row = gw.client.get("/files?limit=1", headers=a.headers).json()["data"][0]
    assert row["id"] == ids[-1]
    assert (row["object"], row["filename"], row["state"], row["bytes"]) == (
        "cigate.file",
        "f6.txt",
        "stored",
        6,
    )
    assert (row["response_id"], row["container_id"]) == ("resp_a2", "cntr_a2")
    assert row["download_url"].endswith(f"/files/{ids[-1]}/content")


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("&response_id=resp_a1", [0, 1, 2]),
        ("&response_id=resp_a2", [3, 4, 5, 6]),
        ("&container_id=cntr_a1", [1, 3, 5]),
        ("&container_id=cntr_a1&response_id=resp_a2", [3, 5]),
    ],
    ids=["response-1", "response-2", "container", "both"],
)
def test_filters_keep_only_the_files_of_that_response_or_container(
    listed, query: str, wanted: list[int]
) -> None:
    gw, a, _, ids = listed
    assert [i for page in _pages(gw, a, query, 2) for i in page] == [ids[i] for i in wanted[::-1]]


def test_tenant_b_lists_only_its_own_file(listed) -> None:
    gw, _a, b, ids = listed
    body = gw.client.get("/files?limit=100", headers=b.headers).json()
    assert [f["filename"] for f in body["data"]] == ["b.txt"]
    assert not any(i in gw.client.get("/files", headers=b.headers).text for i in ids)


@pytest.mark.parametrize(
    ("param", "theirs", "what"),
    [
        ("after", 0, "file"),
        ("response_id", "resp_a1", "response"),
        ("container_id", "cntr_a1", "container"),
    ],
    ids=["after", "response", "container"],
)
def test_an_id_of_another_tenant_is_answered_as_one_that_never_existed(
    listed, param: str, theirs: Any, what: str
) -> None:
    gw, a, b, ids = listed
    value = ids[theirs] if isinstance(theirs, int) else theirs
    made_up = value[:-1] + ("x" if value[-1] != "x" else "y")
    answers = []
    for ident in (value, made_up):
        answer = gw.client.get(f"/files?{param}={ident}", headers=b.headers)
        error = assert_error_shape(answer)
        answers.append((answer.status_code, error["message"].replace(ident, "ID")))
    assert answers[0] == answers[1] == (404, f"No {what} found with id 'ID'.")
    # A itself gets its page.
    assert gw.client.get(f"/files?{param}={value}", headers=a.headers).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=1e3",
        "order=newest",
        "order=",
        "after=%00",
        "response_id=r%0A",
        "container_id=" + "c" * 600,
    ],
    ids=[
        "limit-word",
        "limit-float",
        "order-word",
        "order-empty",
        "after-nul",
        "response-newline",
        "container-600",
    ],
)
def test_bad_parameters_are_a_400_in_the_openai_envelope(listed, query: str) -> None:
    gw, a, _, _ = listed
    answer = gw.client.get(f"/files?{query}", headers=a.headers)
    assert answer.status_code == 400, answer.text
    assert assert_error_shape(answer)["type"] == "invalid_request_error"


def test_the_listing_needs_a_key(listed) -> None:
    gw, *_ = listed
    answer = gw.client.get("/files")
    assert answer.status_code == 401
    assert_error_shape(answer)
