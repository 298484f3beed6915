"""A container or response with more files than one page: every file is found and served.

The containers facade and the by-path link used to look a file up in the first 100 rows of its
container or response; the 101st and later were never found. Now each lookup is direct and each
list is paginated to its end. The upstream is dead: everything comes from the store.
"""

from __future__ import annotations

import pytest

from cigate import ids
from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage

FILES = 130


def _fill(gateway: GatewayHarness) -> tuple[dict, str, str, list]:
    tenant = gateway.add_tenant("acme")
    container, response = ids.container_id(), "resp_" + "a" * 48
    rows = [
        gateway.put_file(
            tenant,
            f"file {i}".encode(),
            f"f{i:03}.txt",
            container_id=container,
            response_id=response,
            path=f"/mnt/data/d{i % 3}/f{i:03}.txt",
        )
        for i in range(FILES)
    ]
    return tenant.headers, container, response, rows


def test_the_files_past_the_hundredth_of_a_container_are_found_on_every_path(
    gateway: GatewayHarness,
) -> None:
    headers, container, response, rows = _fill(gateway)
    http = gateway.client
    for i in (0, 99, 100, FILES - 1):
        row = rows[i]
        base = f"/openai/v1/containers/{container}/files/{row.upstream_file_id}"
        record = http.get(base, headers=headers)
        assert (record.status_code, record.json()["path"]) == (200, row.path), i
        content = http.get(f"{base}/content", headers=headers)
        assert (content.status_code, content.content) == (200, f"file {i}".encode()), i
        linked = http.get(
            f"/responses/{response}/files/by-path/d{i % 3}/f{i:03}.txt", headers=headers
        )
        assert (linked.status_code, linked.content) == (200, f"file {i}".encode()), i


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_the_facade_list_pages_through_every_file_of_a_container(
    gateway: GatewayHarness, order: str
) -> None:
    """Through the store (the upstream is down), as the SDK's auto-pagination reads it."""
    headers, container, _, rows = _fill(gateway)
    seen: list[str] = []
    after = None
    for _ in range(FILES):  # bounded: a list that never ends fails here
        params = {"limit": "50", "order": order, **({"after": after} if after else {})}
        page = gateway.client.get(
            f"/openai/v1/containers/{container}/files", params=params, headers=headers
        ).json()
        seen += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    expected = [r.upstream_file_id for r in rows]
    assert seen == (expected if order == "asc" else expected[::-1])


def test_a_response_lists_every_file_page_by_page(gateway: GatewayHarness) -> None:
    headers, _, response, rows = _fill(gateway)
    seen: list[str] = []
    after = None
    for _ in range(FILES):
        params = {"limit": "40", **({"after": after} if after else {})}
        page = gateway.client.get(
            f"/responses/{response}/files", params=params, headers=headers
        ).json()
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [r.id for r in rows]
