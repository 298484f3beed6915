"""File serving per RFC 9110 and the security rules: Range, ETag, HEAD, names, HTML/SVG."""

from __future__ import annotations

import re

import pytest

from cigate.gateway.serving import CSP
from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage

DATA = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def stored(gateway: GatewayHarness) -> tuple[GatewayHarness, dict[str, str], str]:
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, DATA, "report.csv")
    return gateway, tenant.headers, f"/files/{row.id}/content"


def test_a_download_returns_the_exact_bytes_with_safe_headers(stored) -> None:
    gw, headers, url = stored
    r = gw.client.get(url, headers=headers)
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["content-type"].split(";")[0] == "text/csv"
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
    )
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == CSP
    assert re.fullmatch(r'"[0-9a-f]{64}"', r.headers["etag"])
    assert r.headers["accept-ranges"] == "bytes"


def test_head_answers_the_headers_of_get_without_a_body(stored) -> None:
    gw, headers, url = stored
    get = gw.client.get(url, headers=headers)
    head = gw.client.head(url, headers=headers)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-length", "content-type", "etag", "content-disposition"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-9", 206, DATA[0:10], "bytes 0-9/10240"),
        ("bytes=10-", 206, DATA[10:], "bytes 10-10239/10240"),
        ("bytes=-5", 206, DATA[-5:], "bytes 10235-10239/10240"),
        ("bytes=10000-99999", 206, DATA[10000:], "bytes 10000-10239/10240"),
        ("bytes=10240-", 416, b"", "bytes */10240"),
        ("bytes=-0", 416, b"", "bytes */10240"),
        ("bytes=9-2", 200, DATA, None),
        ("bytes=0-1,5-6", 200, DATA, None),
        ("items=0-5", 200, DATA, None),
    ],
    ids=[
        "first-ten",
        "open-ended",
        "suffix",
        "end-clamped",
        "start-past-end",
        "empty-suffix",
        "reversed-ignored",
        "multi-range-ignored",
        "other-unit-ignored",
    ],
)
def test_range_requests_follow_rfc_9110(stored, range_header, status, body, content_range) -> None:
    gw, headers, url = stored
    r = gw.client.get(url, headers={**headers, "range": range_header})
    assert r.status_code == status
    assert r.content == body
    assert r.headers.get("content-range") == content_range
    if status != 416:
        assert r.headers["content-length"] == str(len(body))


def test_if_none_match_with_the_etag_answers_304(stored) -> None:
    gw, headers, url = stored
    etag = gw.client.head(url, headers=headers).headers["etag"]
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = gw.client.get(url, headers={**headers, "if-none-match": value})
        assert r.status_code == 304, value
        assert r.content == b""
        assert r.headers["etag"] == etag
    assert gw.client.get(url, headers={**headers, "if-none-match": '"x"'}).status_code == 200


def test_if_range_serves_the_range_only_while_the_etag_matches(stored) -> None:
    gw, headers, url = stored
    etag = gw.client.head(url, headers=headers).headers["etag"]
    same = gw.client.get(url, headers={**headers, "range": "bytes=0-3", "if-range": etag})
    assert (same.status_code, same.content) == (206, DATA[:4])
    changed = gw.client.get(url, headers={**headers, "range": "bytes=0-3", "if-range": '"old"'})
    assert (changed.status_code, changed.content) == (200, DATA)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("page.html", "text/html; charset=utf-8"),
        ("chart.svg", "image/svg+xml"),
    ],
    ids=["html", "svg"],
)
def test_active_content_is_served_as_an_inert_attachment(
    gateway: GatewayHarness, name: str, content_type: str
) -> None:
    tenant = gateway.add_tenant("acme")
    payload = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    row = gateway.put_file(tenant, payload, name)
    r = gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["content-type"] == content_type
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "sandbox" in r.headers["content-security-policy"]


HOSTILE = {
    "traversal": "../../../../etc/passwd",
    "windows-traversal": "..\\..\\boot.ini",
    "quotes": "a\"b'c.txt",
    "crlf-injection": "x.txt\r\nSet-Cookie: stolen=1\r\n",
    "very-long": "a" * 5000 + ".txt",
    "unicode": "résumé – 報告.pdf",
    "nul-and-controls": "a\x00b\x07c.txt",
    "semicolon-params": 'x.txt"; filename="evil.exe',
}


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_names_neither_escape_the_store_nor_break_headers(
    gateway: GatewayHarness, tmp_path, name: str
) -> None:
    tenant = gateway.add_tenant("acme")
    before = set(tmp_path.rglob("*"))
    row = gateway.put_file(tenant, b"payload", name)
    created = set(tmp_path.rglob("*")) - before
    blobs = gateway.settings.blobs_url
    assert all(str(p).startswith(blobs) for p in created), created
    r = gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)
    assert r.status_code == 200
    assert r.content == b"payload"
    assert "set-cookie" not in r.headers
    disposition = r.headers["content-disposition"]
    assert "\r" not in disposition
    assert "\n" not in disposition
    assert disposition.isascii()
    assert disposition.count('"') == 2  # only the fallback's own quotes
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert "/" not in fallback
    assert "\\" not in fallback
    assert ".." not in fallback.split("_")
    assert len(disposition) < 1200
    meta = gateway.client.get(f"/files/{row.id}", headers=tenant.headers).json()
    assert meta["state"] == "stored"  # the original name is kept in the record, not on a path


def test_an_empty_file_downloads_as_zero_bytes(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    row = gateway.put_file(tenant, b"", "empty.txt")
    r = gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")
    ranged = gateway.client.get(
        f"/files/{row.id}/content", headers={**tenant.headers, "range": "bytes=0-"}
    )
    assert ranged.status_code == 416
