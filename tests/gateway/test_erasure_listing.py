"""What the gateway says about an erased file besides its own paths: the pass-through container
listing never names it, and its signed links answer 404 like the file.

The upstream still holds the file after the gateway erased its copy; its live listing of the
container is relayed with the erased entries (and ``first_id``/``last_id`` naming them) left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from cigate import ids
from cigate.gateway.retention import RetentionSweep
from tests.gateway.conftest import Backend, serving_settings
from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage

CONTAINER = ids.container_id()
FILES = [ids.container_file_id() for _ in range(3)]


UPLOADS = ["file-" + "a" * 24, "file-" + "b" * 24]


def _upstream(request: httpx2.Request) -> httpx2.Response:
    """The live container: three files, whatever the gateway erased; the Files API: two."""
    if request.url.path.endswith("/v1/files"):
        data = [{"id": f, "object": "file", "bytes": 3, "purpose": "assistants"} for f in UPLOADS]
        return httpx2.Response(200, json={"object": "list", "data": data, "has_more": False})
    data = [
        {"id": f, "object": "container.file", "bytes": 3, "path": f"/mnt/data/{f}"} for f in FILES
    ]
    body = {"object": "list", "data": data, "first_id": FILES[0], "last_id": FILES[-1]}
    return httpx2.Response(200, json={**body, "has_more": False})


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayHarness]:
    settings = serving_settings(backend, resume_interval=3600, retention_interval=0)
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(_upstream))
    with GatewayHarness(settings, upstream_client=client) as harness:
        yield harness


@pytest.mark.parametrize("erased", [[0], [2], [0, 1, 2]], ids=["first", "last", "all"])
def test_the_live_container_listing_leaves_out_erased_files(
    gateway: GatewayHarness, erased: list[int]
) -> None:
    tenant = gateway.add_tenant("acme")
    other = gateway.add_tenant("other")
    gateway.call(gateway.services.meta.claim, tenant.id, "container", CONTAINER)
    rows = [
        gateway.put_file(tenant, b"abc", f"{i}.txt", container_id=CONTAINER, file_id=f)
        for i, f in enumerate(FILES)
    ]
    url = f"/openai/v1/containers/{CONTAINER}/files"
    before = gateway.client.get(url, headers=tenant.headers)
    assert [f["id"] for f in before.json()["data"]] == FILES
    for i in erased:
        assert gateway.client.delete(f"/files/{rows[i].id}", headers=tenant.headers).is_success
    after = gateway.client.get(url, headers=tenant.headers)
    assert after.status_code == 200
    kept = [f for i, f in enumerate(FILES) if i not in erased]
    page = after.json()
    assert [f["id"] for f in page["data"]] == kept
    assert (page["first_id"], page["last_id"]) == ((kept[0], kept[-1]) if kept else (None, None))
    for i in erased:
        assert FILES[i] not in after.text
    assert int(after.headers["content-length"]) == len(after.content)
    # Another tenant's erasure of the same upstream ids is not this tenant's (it owns nothing).
    assert gateway.client.get(url, headers=other.headers).status_code == 404
    assert json.loads(before.content)["has_more"] is False


def test_a_signed_link_to_an_erased_file_answers_404_like_the_file(
    gateway: GatewayHarness,
) -> None:
    """Only a link that was valid: a tampered, revoked or unknown one still gets the 403 every
    wrong link gets (no oracle without the link secret)."""
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"abc", "a.txt", container_id=ids.container_id())
    make = lambda: gateway.client.post(f"/files/{row.id}/links", headers=tenant.headers)  # noqa: E731
    good, revoked = make().json(), make().json()
    assert gateway.client.delete(
        f"/files/{row.id}/links/{revoked['id']}", headers=tenant.headers
    ).is_success
    assert gateway.client.delete(f"/files/{row.id}", headers=tenant.headers).is_success
    parts = urlsplit(good["url"])
    r = gateway.client.get(f"{parts.path}?{parts.query}")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["message"] == f"No file found with id '{row.id}'."
    assert r.json() == gateway.client.get(f"/files/{row.id}", headers=tenant.headers).json()
    query = parse_qs(parts.query)
    tampered = f"{parts.path}?expires={query['expires'][0]}&signature={'0' * 64}"
    stretched = (
        f"{parts.path}?expires={int(query['expires'][0]) + 1}&signature={query['signature'][0]}"
    )
    r_revoked = urlsplit(revoked["url"])
    for wrong in (tampered, stretched, f"{r_revoked.path}?{r_revoked.query}"):
        assert gateway.client.get(wrong).status_code == 403, wrong


def test_the_retention_sweep_forgets_erased_links_only_once_they_expired(
    gateway: GatewayHarness,
) -> None:
    """The erased-links table does not grow for ever: an expired entry goes, a live one stays."""
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"abc", "a.txt", container_id=ids.container_id())
    post = lambda ttl: gateway.client.post(  # noqa: E731
        f"/files/{row.id}/links", headers=tenant.headers, json={"expires_in": ttl}
    ).json()
    short, long = post(1), post(3600)
    assert gateway.client.delete(f"/files/{row.id}", headers=tenant.headers).is_success
    meta = gateway.services.meta
    assert gateway.call(meta.erased_link, short["id"]) is not None
    while gateway.call(meta.erased_link, short["id"])[1].timestamp() >= time.time():
        time.sleep(0.1)  # the one-second link expires (bounded: its expiry is at most 1 s away)
    sweep = RetentionSweep(meta, gateway.services.blobs, gateway.services.tasks, 0)
    gateway.call(sweep.once)
    assert gateway.call(meta.erased_link, short["id"]) is None
    assert gateway.call(meta.erased_link, long["id"]) is not None
    parts = urlsplit(long["url"])
    assert gateway.client.get(f"{parts.path}?{parts.query}").status_code == 404


def test_the_files_api_listing_leaves_out_erased_files(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    svc = gateway.services

    async def adopt() -> list[str]:
        rows = []
        for f in UPLOADS:
            await svc.meta.claim(tenant.id, "file", f)
            row = await svc.meta.upsert_file(
                tenant.id,
                kind="files_api",
                upstream_file_id=f,
                container_id=None,
                response_id=None,
                filename=f"{f}.txt",
                origin="assistants",
            )
            rows.append(row.id)
        return rows

    rows = gateway.call(adopt)
    listed = gateway.client.get("/openai/v1/files", headers=tenant.headers)
    assert [f["id"] for f in listed.json()["data"]] == UPLOADS
    assert gateway.client.delete(f"/files/{rows[0]}", headers=tenant.headers).is_success
    after = gateway.client.get("/openai/v1/files", headers=tenant.headers)
    assert after.status_code == 200
    assert [f["id"] for f in after.json()["data"]] == UPLOADS[1:]
    assert UPLOADS[0] not in after.text
