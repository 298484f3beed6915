"""Who may call the emulator: API keys and Microsoft Entra ID bearer tokens (api-reference 6.2).

Accepted: ``api-key: K``, ``Authorization: Bearer K``, or ``Authorization: Bearer <JWT>`` whose
``aud`` is one of the two Azure OpenAI audiences and whose ``exp`` (if present) is in the future.
The JWT's **signature is not verified**: the emulator is a local test double, not a security
boundary, and it cannot reach Entra ID to fetch signing keys. Expiry is judged by wall time, not
by the emulator's movable clock, because token lifetimes belong to the client's world.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cigate.web.bodies import BodyError, parse_json

#: ``aud`` values of tokens for the scopes ``https://cognitiveservices.azure.com/.default`` and
#: ``https://ai.azure.com/.default``.
AUDIENCES = ("https://cognitiveservices.azure.com", "https://ai.azure.com")
#: What a Foundry project endpoint accepts (``https://ai.azure.com/.default``), and the
#: hub-based form of azure-ai-projects 1.0.0b* (``https://ml.azure.com/.default``).
FOUNDRY_AUDIENCES = ("https://ai.azure.com",)
HUB_AUDIENCES = ("https://ml.azure.com", "https://ai.azure.com")

#: Azure's message for a bearer token it refuses (wrong audience, expired, malformed).
AZURE_ENTRA_401_MESSAGE = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)


@dataclass(frozen=True)
class AuthResult:
    """Outcome of checking one request's credentials."""

    ok: bool
    #: "api-key", "bearer-key" or "jwt" when ok; why not otherwise.
    method: str
    #: True when no credential was sent at all.
    missing: bool = False
    #: True when a JWT was sent and refused (Azure words this 401 differently).
    bad_token: bool = False


def check(
    headers: Iterable[tuple[bytes, bytes]],
    keys: tuple[str, ...],
    *,
    audiences: tuple[str, ...] = AUDIENCES,
) -> AuthResult:
    """Check the raw ASGI headers against the accepted keys and token ``audiences``."""
    api_key: str | None = None
    authorization: str | None = None
    for name, value in headers:
        lname = name.lower()
        if lname == b"api-key":
            api_key = value.decode("latin-1").strip()
        elif lname == b"authorization":
            authorization = value.decode("latin-1").strip()
    if api_key:
        if _known(api_key, keys):
            return AuthResult(True, "api-key")
        return AuthResult(False, "unknown api-key")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return AuthResult(False, "unsupported authorization scheme")
        if _known(token, keys):
            return AuthResult(True, "bearer-key")
        claims = decode_jwt_claims(token)
        if claims is None:
            return AuthResult(False, "unknown bearer key")
        if not _audience_ok(claims.get("aud"), audiences):
            return AuthResult(False, "token audience not accepted", bad_token=True)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= time.time():
            return AuthResult(False, "token expired", bad_token=True)
        return AuthResult(True, "jwt")
    return AuthResult(False, "no credentials", missing=True)


def decode_jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWS, unverified; None if the token is not shaped like a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = parse_json(base64.urlsafe_b64decode(payload))
    except (ValueError, BodyError):  # binascii.Error is a ValueError
        return None
    return claims if isinstance(claims, dict) else None


def make_test_jwt(*, aud: str = AUDIENCES[0], lifetime: float = 3600.0, **claims: Any) -> str:
    """An unsigned (``alg: none``) JWT the emulator accepts; for tests and examples."""

    def b64(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    body = {"aud": aud, "iat": now, "nbf": now, "exp": int(now + lifetime), **claims}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}.c2ln"


def _known(candidate: str, keys: tuple[str, ...]) -> bool:
    return any(hmac.compare_digest(candidate.encode(), k.encode()) for k in keys)


def _audience_ok(aud: object, audiences: tuple[str, ...]) -> bool:
    values = aud if isinstance(aud, list) else [aud]
    return any(isinstance(v, str) and v.rstrip("/") in audiences for v in values)
