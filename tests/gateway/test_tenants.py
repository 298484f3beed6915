"""Tenants: keys are required, and another tenant's ids answer exactly like unknown ids."""

from __future__ import annotations

import pytest

from cigate import ids
from tests.gateway.harness import GatewayHarness, Tenant

pytestmark = pytest.mark.storage


def _endpoints(row_id: str, cfile: str, cntr: str, resp: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/files/{row_id}"),
        ("GET", f"/files/{row_id}/content"),
        ("HEAD", f"/files/{row_id}/content"),
        ("GET", f"/files/{cfile}"),
        ("GET", f"/files/{cfile}/content"),
        ("POST", f"/files/{row_id}/links"),
        ("GET", f"/responses/{resp}/files"),
        ("GET", f"/openai/v1/responses/{resp}"),
        ("DELETE", f"/openai/v1/responses/{resp}"),
        ("GET", f"/openai/v1/responses/{resp}/input_items"),
        ("GET", f"/openai/v1/containers/{cntr}/files"),
        ("GET", f"/openai/v1/containers/{cntr}/files/{cfile}"),
        ("GET", f"/openai/v1/containers/{cntr}/files/{cfile}/content"),
        ("GET", f"/v1/containers/{cntr}/files/{cfile}/content"),
        ("GET", f"/openai/v1/files/{cfile}"),
        ("GET", f"/openai/v1/files/{cfile}/content"),
        ("GET", f"/openai/v1/files/{row_id}/content"),
    ]


@pytest.fixture
def two_tenants(gateway: GatewayHarness) -> tuple[GatewayHarness, Tenant, Tenant, list]:
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    cfile, cntr, resp = ids.container_file_id(), ids.container_id(), ids.response_id()
    row = gateway.put_file(
        a, b"secret", "a.txt", container_id=cntr, file_id=cfile, response_id=resp
    )
    theirs = _endpoints(row.id, cfile, cntr, resp)
    unknown = _endpoints(
        "gwf_" + "0" * 32, ids.container_file_id(), ids.container_id(), ids.response_id()
    )
    return gateway, a, b, list(zip(theirs, unknown, strict=True))


def test_the_owner_reaches_every_endpoint(two_tenants) -> None:
    gw, a, _b, pairs = two_tenants
    for (method, url), _ in pairs:
        if ("/responses/" in url and "/openai/" in url) or url.startswith("/v1/responses"):
            continue  # forwarded upstream; covered end to end
        r = gw.client.request(method, url, headers=a.headers)
        assert r.status_code in (200, 201), (method, url, r.text)


def test_another_tenants_ids_answer_exactly_like_unknown_ids(two_tenants) -> None:
    gw, _a, b, pairs = two_tenants
    for (method, url), (_, unknown_url) in pairs:
        theirs = gw.client.request(method, url, headers=b.headers)
        unknown = gw.client.request(method, unknown_url, headers=b.headers)
        assert theirs.status_code == 404, (method, url)
        assert unknown.status_code == 404, (method, unknown_url)
        if method != "HEAD":
            # Same envelope; only the id the caller typed differs.
            mine = theirs.json()["error"]
            other = unknown.json()["error"]
            assert mine["type"] == other["type"]
            assert mine["code"] == other["code"]
            assert b"secret" not in theirs.content


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer cgk_wrong"}, {"api-key": "nope"}, {"authorization": "Basic x"}],
    ids=["no-key", "unknown-bearer", "unknown-api-key", "wrong-scheme"],
)
def test_requests_without_a_valid_key_get_an_openai_shaped_401(
    gateway: GatewayHarness, headers: dict[str, str]
) -> None:
    r = gateway.client.get("/files/gwf_x/content", headers=headers)
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_the_azure_api_key_header_is_accepted_like_a_bearer_key(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("azure-style")
    row = gateway.put_file(tenant, b"hello", "h.txt")
    r = gateway.client.get(f"/files/{row.id}/content", headers={"api-key": tenant.key})
    assert (r.status_code, r.content) == (200, b"hello")
