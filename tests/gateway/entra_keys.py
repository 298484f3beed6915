"""An organisation's Entra signing keys, made by the suite: RSA keys, tokens, a JWKS endpoint.

The JWKS is served over real HTTP on 127.0.0.1 (the gateway fetches it as it would
``https://login.microsoftonline.com/{tid}/discovery/v2.0/keys``); a test can rotate its keys,
take it down and count how often it was fetched.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cigate.emulator.server import ServerHandle, run_in_thread

TENANT_GUID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://sts.windows.net/{TENANT_GUID}/"
AUDIENCE = "https://cognitiveservices.azure.com"


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        entry = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**entry, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self, alg: str = "RS256", **claims: Any) -> str:
        """An access token as Entra issues them for the Cognitive Services audience."""
        now = int(time.time())
        body = {
            "aud": AUDIENCE,
            "iss": ISSUER,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "tid": TENANT_GUID,
            "oid": str(uuid.uuid4()),
            "appid": str(uuid.uuid4()),
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private, algorithm=alg, headers={"kid": self.kid})


@dataclass
class Jwks:
    """The JWKS endpoint: ``keys`` are published, ``down`` answers 503, ``hits`` counts GETs."""

    keys: list[SigningKey]
    down: bool = False
    hits: int = 0
    handle: ServerHandle | None = None

    @property
    def url(self) -> str:
        assert self.handle is not None
        return f"{self.handle.url}/discovery/v2.0/keys"

    async def _serve(self, request: Request) -> Response:
        self.hits += 1
        if self.down:
            return Response("unavailable", status_code=503)
        return JSONResponse({"keys": [k.jwk() for k in self.keys]})


def serve_jwks(keys: list[SigningKey]) -> Iterator[Jwks]:
    jwks = Jwks(keys)
    app = Starlette(routes=[Route("/discovery/v2.0/keys", jwks._serve, methods=["GET"])])
    jwks.handle = run_in_thread(app, "127.0.0.1", 0)
    try:
        yield jwks
    finally:
        jwks.handle.stop()
