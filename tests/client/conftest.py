"""Helpers for client tests: configs that reach the emulator, uploads, a test credential."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cigate.client._config import ClientConfig, resolve_config
from cigate.harvest.refs import FileRef
from cigate.testing.plugin import RunningEmulator

AUDIENCE = "https://cognitiveservices.azure.com"


def unsigned_jwt(aud: str = AUDIENCE, lifetime: float = 3600) -> str:
    """A JWT-shaped token with ``aud`` and ``exp`` (unsigned: the emulator does not verify)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"aud": aud, "exp": int(time.time() + lifetime), "oid": "test"}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@dataclass
class AccessToken:
    token: str
    expires_on: int


class FakeCredential:
    """A TokenCredential with no network: returns an unsigned JWT for the asked scope."""

    def __init__(self, aud: str = AUDIENCE) -> None:
        self.aud = aud
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(unsigned_jwt(self.aud), int(time.time() + 3600))


def fast(config: ClientConfig, **changes: Any) -> ClientConfig:
    """Tests do not wait: short backoff, small retry budget."""
    return config.with_options(
        **{"backoff": 0.01, "backoff_max": 0.05, "max_retry_wait": 5.0, **changes}
    )


@pytest.fixture
def config(emulator: RunningEmulator) -> ClientConfig:
    """Key auth against the emulator's Azure-style root, over real HTTP."""
    return fast(resolve_config(endpoint=emulator.base_url, api_key=emulator.api_key, env={}))


@pytest.fixture
def entra_config(emulator: RunningEmulator) -> ClientConfig:
    """Entra ID auth (a test credential) against the emulator."""
    cred = FakeCredential()
    return fast(resolve_config(endpoint=emulator.base_url, credential=cred, env={}))  # type: ignore[arg-type]


def upload(
    emulator: RunningEmulator, name: str, data: bytes, container: str | None = None
) -> FileRef:
    """Put ``data`` into a (new) container; the FileRef a citation would give."""
    client = emulator.openai()
    cid = container or client.containers.create(name="test").id
    record = client.containers.files.create(cid, file=(name, data))
    return FileRef(file_id=record.id, filename=name, container_id=cid, source="citation")


def leftovers(directory: Path) -> list[str]:
    """Temporary or partial files left in a download directory (must be none)."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".cigate-"))
