"""The upstream Entra token comes from azure-identity's bearer token provider: fetched once,
reused while valid, refreshed when it is about to expire (a real AzureCliCredential runs an
``az`` the test writes)."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx2
import pytest
from azure.identity.aio import AzureCliCredential

from tests.gateway.conftest import on_local_disk
from tests.gateway.harness import GatewayHarness


def _az(tmp_path: Path, lifetime: int) -> Path:
    """An ``az`` that prints a token valid for ``lifetime`` s and counts its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    calls = tmp_path / "calls"
    az.write_text(
        "#!/bin/sh\n"
        f"echo x >> {calls}\n"
        f"n=$(wc -l < {calls})\n"
        f"exp=$(( $(date +%s) + {lifetime} ))\n"
        'printf \'{"accessToken": "tok-%s", "expires_on": %s, "tokenType": "Bearer"}\' '
        '"$n" "$exp"\n'
    )
    az.chmod(az.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize(
    ("lifetime", "tokens"),
    [(3600, {"tok-1"}), (60, {"tok-1", "tok-2", "tok-3", "tok-4"})],
    ids=["valid-for-an-hour-fetched-once", "about-to-expire-refreshed-every-time"],
)
def test_the_upstream_token_is_reused_while_valid_and_refreshed_near_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lifetime: int, tokens: set[str]
) -> None:
    monkeypatch.setenv("PATH", f"{_az(tmp_path, lifetime)}:/usr/bin:/bin")
    seen: list[str] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers["authorization"])
        return httpx2.Response(200, json={"object": "list", "data": []})

    settings = on_local_disk(
        tmp_path,
        upstream="http://upstream.test",
        upstream_auth="entra",
        allow_unscoped="*",
    )
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    credential = AzureCliCredential(process_timeout=10)
    with GatewayHarness(settings, upstream_client=client, upstream_credential=credential) as gw:
        tenant = gw.add_tenant("acme")
        for _ in range(4):
            r = gw.client.get("/openai/v1/vector_stores", headers=tenant.headers)
            assert r.status_code == 200, r.text
    assert {h.removeprefix("Bearer ") for h in seen} == tokens
    assert len(seen) == 4
