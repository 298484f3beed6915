"""Signed links work without a key until they expire or are revoked; downloads are audited."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_signed_link_downloads_without_a_key_and_is_audited(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"link me", "l.txt")
    created = gateway.client.post(
        f"/files/{row.id}/links", headers=tenant.headers, json={"expires_in": 60}
    )
    assert created.status_code == 201
    link = created.json()
    r = gateway.client.get(_path(link["url"]))
    assert (r.status_code, r.content) == (200, b"link me")
    assert r.headers["content-disposition"].startswith("attachment;")
    gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)

    def audited() -> list:
        return gateway.call(gateway.services.meta.list_downloads, tenant.id, row.id)

    deadline = time.monotonic() + 5
    while len(audited()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = audited()
    assert {d.actor for d in records} == {f"link:{link['id']}", f"tenant:{tenant.id}"}
    assert all(d.bytes_sent == 7 and d.status == 200 for d in records)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda u: u.replace("signature=", "signature=0"),
        lambda u: u.replace("expires=", "expires=9"),
        lambda u: u.split("?")[0],
        lambda u: u.replace("/links/gwl_", "/links/gwl_0"),
    ],
    ids=["signature", "expiry", "no-query", "link-id"],
)
def test_a_tampered_link_is_refused(gateway: GatewayHarness, tamper) -> None:
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"x", "x.txt")
    url = gateway.client.post(f"/files/{row.id}/links", headers=tenant.headers).json()["url"]
    r = gateway.client.get(tamper(_path(url)))
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "This download link is invalid, expired or revoked."


def test_a_revoked_link_stops_working(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"x", "x.txt")
    link = gateway.client.post(f"/files/{row.id}/links", headers=tenant.headers).json()
    assert gateway.client.get(_path(link["url"])).status_code == 200
    revoked = gateway.client.delete(f"/files/{row.id}/links/{link['id']}", headers=tenant.headers)
    assert revoked.status_code == 200
    assert gateway.client.get(_path(link["url"])).status_code == 403


def test_an_expired_link_stops_working(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"x", "x.txt")
    link = gateway.client.post(
        f"/files/{row.id}/links", headers=tenant.headers, json={"expires_in": 1}
    ).json()
    time.sleep(1.1)
    assert gateway.client.get(_path(link["url"])).status_code == 403


def test_another_tenant_cannot_revoke_a_link(gateway: GatewayHarness) -> None:
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    row = gateway.put_file(a, b"x", "x.txt")
    link = gateway.client.post(f"/files/{row.id}/links", headers=a.headers).json()
    r = gateway.client.delete(f"/files/{row.id}/links/{link['id']}", headers=b.headers)
    assert r.status_code == 404
    assert gateway.client.get(_path(link["url"])).status_code == 200
