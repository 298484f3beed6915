"""Callers sign in with Entra access tokens: keys from a JWKS on 127.0.0.1, every check attacked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from cigate.exceptions import ConfigurationError
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.entra_keys import AUDIENCE, ISSUER, TENANT_GUID, Jwks, SigningKey, serve_jwks
from tests.gateway.harness import GatewayHarness

OTHER_GUID = "0c1e1b8a-0000-4000-8000-00000000beef"


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return SigningKey("k1")


@pytest.fixture(scope="module")
def k2() -> SigningKey:
    return SigningKey("k2")


@pytest.fixture
def jwks(k1: SigningKey) -> Iterator[Jwks]:
    yield from serve_jwks([k1])


def _harness(tmp_path: Path, jwks: Jwks, **entra: Any) -> GatewayHarness:
    settings = on_local_disk(
        tmp_path,
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        resume_interval=3600,
        **{
            "entra_jwks_url": jwks.url,
            "entra_issuers": f"{ISSUER},https://login.microsoftonline.com/{TENANT_GUID}/v2.0",
            "entra_audiences": f"{AUDIENCE},api://cigate-gateway",
            "entra_tenants": f"{TENANT_GUID}=analytics,{OTHER_GUID}=finance",
            "entra_jwks_refetch": 0.0,
            **entra,
        },
    )
    return GatewayHarness(settings)


@pytest.fixture
def gateway(tmp_path: Path, jwks: Jwks) -> Iterator[GatewayHarness]:
    with _harness(tmp_path, jwks) as harness:
        yield harness


def _call(gateway: GatewayHarness, token: str) -> tuple[int, dict[str, Any]]:
    r = gateway.client.get("/audit", headers={"authorization": f"Bearer {token}"})
    return r.status_code, r.json()


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def _claims(**extra: Any) -> dict[str, Any]:
    body = jwt.decode(SigningKey("x").token(), options={"verify_signature": False})
    return {**body, **extra}


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_a_token_of_a_mapped_entra_tenant_signs_in_as_its_gateway_tenant(
    gateway: GatewayHarness, k1: SigningKey, alg: str
) -> None:
    analytics = gateway.add_tenant("analytics")
    finance = gateway.add_tenant("finance")
    row = gateway.put_file(analytics, b"for analytics", "a.txt")
    headers = {"authorization": f"Bearer {k1.token(alg)}"}
    got = gateway.client.get(f"/files/{row.id}/content", headers=headers)
    assert (got.status_code, got.content) == (200, b"for analytics")
    other = {"authorization": f"Bearer {k1.token(alg, tid=OTHER_GUID)}"}
    assert gateway.client.get(f"/files/{row.id}/content", headers=other).status_code == 404
    # Gateway keys keep working beside tokens.
    assert gateway.client.get(f"/files/{row.id}", headers=analytics.headers).status_code == 200
    assert gateway.client.get(f"/files/{row.id}", headers=finance.headers).status_code == 404


def _hs256_with_public_key(key: SigningKey) -> str:
    """Algorithm confusion: an HMAC whose secret is the RSA public key a verifier holds."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = _unsigned(_claims(), header)[:-1].encode()
    mac = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


BAD_TOKENS = {
    "expired": lambda k: k.token(exp=1_000_000_000, nbf=999_000_000, iat=999_000_000),
    "not-yet-valid": lambda k: k.token(nbf=4_000_000_000, exp=4_000_003_600),
    "no-expiry": lambda k: k.token(exp=None),
    "wrong-audience": lambda k: k.token(aud="https://management.azure.com"),
    "no-audience": lambda k: k.token(aud=None),
    "wrong-issuer": lambda k: k.token(iss=f"https://sts.windows.net/{OTHER_GUID}/"),
    "issuer-prefix": lambda k: k.token(iss=ISSUER + "x"),
    "foreign-key-same-kid": lambda k: SigningKey("k1").token(),
    "unknown-kid": lambda k: SigningKey("nobody").token(),
    "no-kid": lambda k: jwt.encode(_claims(), k.private, algorithm="RS256"),
    "alg-none": lambda k: _unsigned(_claims(), {"alg": "none", "typ": "JWT", "kid": k.kid}),
    "alg-None": lambda k: _unsigned(_claims(), {"alg": "None", "kid": k.kid}) + "sig",
    "hs256-public-key": _hs256_with_public_key,
    "hs256-secret": lambda k: jwt.encode(
        _claims(), "secret" * 6, algorithm="HS256", headers={"kid": k.kid}
    ),
    "ps256": lambda k: k.token("PS256"),
    "tampered-claims": lambda k: _swap_payload(k.token(), tid=OTHER_GUID),
    "truncated": lambda k: k.token()[:-10],
    "garbage": lambda k: "eyJhbGciOiJSUzI1NiJ9.e30.!!!",
}


def _swap_payload(token: str, **extra: Any) -> str:
    """The token with other claims under the original signature."""
    head, _, sig = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(_claims(**extra)).encode()).rstrip(b"=")
    return f"{head}.{payload.decode()}.{sig}"


@pytest.mark.parametrize("name", list(BAD_TOKENS), ids=list(BAD_TOKENS))
def test_a_token_failing_any_check_is_a_401_in_the_openai_shape(
    gateway: GatewayHarness, k1: SigningKey, name: str
) -> None:
    gateway.add_tenant("analytics")
    token = BAD_TOKENS[name](k1)
    status, body = _call(gateway, token)
    assert status == 401, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"].startswith(("Invalid Entra access token", "Invalid gateway"))
    assert token not in json.dumps(body)


def test_an_unmapped_or_ambiguous_caller_is_refused_with_a_403(
    tmp_path: Path, jwks: Jwks, k1: SigningKey
) -> None:
    with _harness(
        tmp_path, jwks, entra_claim="groups", entra_tenants="g-a=analytics,g-f=finance"
    ) as gateway:
        gateway.add_tenant("analytics")
        gateway.add_tenant("finance")
        assert _call(gateway, k1.token(groups=["g-x", "g-a"]))[0] == 200
        for groups in ([], ["g-x"], ["g-a", "g-f"], None):
            status, body = _call(gateway, k1.token(groups=groups))
            assert status == 403, groups
            assert "gateway tenant" in body["error"]["message"]


def test_a_rotated_key_is_fetched_when_a_token_first_names_it(
    gateway: GatewayHarness, jwks: Jwks, k1: SigningKey, k2: SigningKey
) -> None:
    gateway.add_tenant("analytics")
    assert _call(gateway, k1.token())[0] == 200
    assert jwks.hits == 1
    assert _call(gateway, k1.token())[0] == 200
    assert jwks.hits == 1  # cached
    assert _call(gateway, k2.token())[0] == 401  # not published yet
    jwks.keys = [k2]  # rotation: k1 retired, k2 published
    assert _call(gateway, k2.token())[0] == 200
    assert jwks.hits == 3
    assert _call(gateway, k1.token())[0] == 401  # retired: gone with the set fetched again


def test_tokens_with_unknown_key_ids_fetch_the_key_set_at_most_once_per_interval(
    tmp_path: Path, jwks: Jwks, k1: SigningKey
) -> None:
    with _harness(tmp_path, jwks, entra_jwks_refetch=3600.0) as gateway:
        gateway.add_tenant("analytics")
        assert _call(gateway, k1.token())[0] == 200
        rng = random.Random(5)
        for _ in range(50):
            forged = SigningKey.__new__(SigningKey)
            forged.kid, forged.private = f"kid-{rng.getrandbits(64):x}", k1.private
            assert _call(gateway, forged.token())[0] == 401
        assert jwks.hits == 1


def test_a_jwks_that_is_down_is_a_503_until_it_answers_and_cached_keys_keep_working(
    tmp_path: Path, jwks: Jwks, k1: SigningKey
) -> None:
    jwks.down = True
    with _harness(tmp_path, jwks) as gateway:
        gateway.add_tenant("analytics")
        status, body = _call(gateway, k1.token())
        assert status == 503
        assert body["error"]["message"] == (
            "The gateway cannot check Entra tokens now: its signing keys cannot be fetched."
        )
        assert set(body["error"]) == {"message", "type", "param", "code"}
        jwks.down = False
        assert _call(gateway, k1.token())[0] == 200
        jwks.down = True
        assert _call(gateway, k1.token())[0] == 200  # the cached key
        assert _call(gateway, SigningKey("new").token())[0] == 401


def test_without_entra_settings_a_token_is_just_an_invalid_key(
    tmp_path: Path, k1: SigningKey
) -> None:
    settings = on_local_disk(
        tmp_path,
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
    )
    with GatewayHarness(settings) as gateway:
        gateway.add_tenant("analytics")
        status, body = _call(gateway, k1.token())
        assert (status, body["error"]["message"]) == (401, "Invalid gateway key.")


@pytest.mark.parametrize(
    ("entra", "message"),
    [
        ({"entra_issuers": ""}, "need CIGATE_GATEWAY_ENTRA_ISSUERS and _AUDIENCES"),
        ({"entra_audiences": ""}, "need CIGATE_GATEWAY_ENTRA_ISSUERS and _AUDIENCES"),
        ({"entra_claim": "email"}, "CIGATE_GATEWAY_ENTRA_CLAIM must be one of"),
        ({"entra_tenants": "no-equals-sign"}, "is not CLAIM_VALUE=TENANT_NAME"),
        ({"entra_jwks_url": "file:///etc/keys.json"}, "must be an http(s) URL"),
    ],
    ids=["no-issuers", "no-audiences", "unknown-claim", "bad-mapping", "not-http"],
)
def test_a_misconfigured_entra_setting_stops_the_gateway_at_start_up(
    tmp_path: Path, jwks: Jwks, entra: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _harness(tmp_path, jwks, **entra)  # create_app, before any store is opened
