"""Signed download links: a URL that works without a gateway key, until it expires or is revoked.

``POST /files/{id}/links`` records the link in the metadata store (so it can be revoked and
audited) and returns ``/links/{link_id}?expires=TS&signature=HMAC``. The HMAC-SHA256 over link
id, file id and expiry, keyed with the gateway's link secret, makes a URL impossible to forge or
to stretch; the store makes it revocable. Every way a link can be wrong (unknown, tampered,
expired, revoked) gets the same 403, so the answer tells an attacker nothing. A link that is
still validly signed but whose file was erased answers the file's 404 (``erased_links``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cigate.exceptions import AccessDeniedError, BadInputError, ConfigurationError
from cigate.gateway.body_refs import json_body, read_capped
from cigate.gateway.context import services
from cigate.gateway.errors import not_found
from cigate.gateway.files import resolve
from cigate.gateway.serving import serve_file
from cigate.gateway.settings import (
    SETTINGS_HINT,
    GatewaySettings,
    cigate_home,
    read_secret_file,
)

__all__ = ["create_link", "load_link_secret", "revoke_link", "serve_link", "sign"]

_MAX_TTL = 30 * 24 * 3600
log = logging.getLogger(__name__)


def load_link_secret(settings: GatewaySettings) -> bytes:
    """The configured secret (``link_secret`` or ``link_secret_file``), else one generated
    once and kept in ``$CIGATE_HOME``.

    Every gateway process sharing a metadata store must use the same secret, or a link one
    replica signs is refused by the next: a gateway started without migrating (a replica,
    ``migrate=False``) never invents one, it needs the secret configured (docs/deploy.md).
    """
    if settings.link_secret and settings.link_secret_file:
        raise ConfigurationError(
            "set CIGATE_GATEWAY_LINK_SECRET or CIGATE_GATEWAY_LINK_SECRET_FILE, not both",
            hint=SETTINGS_HINT,
        )
    if settings.link_secret_file:
        name = settings.link_secret_file
        label = f"CIGATE_GATEWAY_LINK_SECRET_FILE={name!r}"
        return _checked(read_secret_file(Path(name), label), "the file's secret")
    if settings.link_secret:
        return _checked(settings.link_secret, "CIGATE_GATEWAY_LINK_SECRET")
    if not settings.migrate:
        raise ConfigurationError(
            "a gateway started with --no-migrate (a replica) needs the link secret every "
            "replica shares: each would otherwise invent its own, and links one signs would "
            "fail on the others",
            hint="Set CIGATE_GATEWAY_LINK_SECRET_FILE to a mounted Secret (or "
            "CIGATE_GATEWAY_LINK_SECRET); make one with `openssl rand -base64 48`.",
        )
    if not settings.database_url.startswith("sqlite"):
        log.warning(
            "no CIGATE_GATEWAY_LINK_SECRET(_FILE): this gateway signs links with a secret of "
            "its own; other gateways sharing the store will refuse them (docs/deploy.md)"
        )
    path = Path(cigate_home()) / "gateway-link-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


#: Shortest configured secret: 32 characters (a generated one has 64).
MIN_SECRET_LENGTH = 32


def _checked(secret: str, where: str) -> bytes:
    if len(secret) < MIN_SECRET_LENGTH or not secret.isprintable():
        raise ConfigurationError(
            f"{where} must be at least {MIN_SECRET_LENGTH} printable characters "
            f"(got {len(secret)})",
            hint="Make one with `openssl rand -base64 48`.",
        )
    return secret.encode()


def sign(secret: bytes, link_id: str, file_id: str, expires: int) -> str:
    message = f"{link_id}\n{file_id}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _invalid() -> AccessDeniedError:
    return AccessDeniedError(
        "This download link is invalid, expired or revoked.",
        hint="Ask for a new link (POST /files/{id}/links).",
        status=403,
    )


async def create_link(request: Request) -> Response:
    """``POST /files/{id}/links`` with an optional JSON body ``{"expires_in": SECONDS}``."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    row = await resolve(svc, tenant_id, request.path_params["file_id"])
    ttl = svc.settings.link_ttl
    if (await read_capped(request, 64 * 1024)).strip():
        body = await json_body(request, 64 * 1024)
        given = body.get("expires_in", ttl) if isinstance(body, dict) else None
        if isinstance(given, bool) or not isinstance(given, int):
            raise BadInputError('Body must be a JSON object like {"expires_in": 3600}.')
        ttl = given
    if not 1 <= ttl <= _MAX_TTL:
        raise BadInputError(f"expires_in must be between 1 and {_MAX_TTL} seconds.")
    expires = int(time.time()) + ttl
    link = await svc.meta.create_link(
        tenant_id, row.id, expires_at=datetime.fromtimestamp(expires, UTC)
    )
    signature = sign(svc.link_secret, link.id, row.id, expires)
    url = f"{svc.public_base(request)}/links/{link.id}?expires={expires}&signature={signature}"
    return JSONResponse(
        {
            "id": link.id,
            "object": "cigate.link",
            "file_id": row.id,
            "url": url,
            "expires_at": expires,
        },
        status_code=201,
    )


async def revoke_link(request: Request) -> Response:
    """``DELETE /files/{id}/links/{link_id}``: the link stops working at once."""
    svc = services(request)
    tenant_id = await svc.tenants.tenant_id(request)
    row = await resolve(svc, tenant_id, request.path_params["file_id"])
    link_id = request.path_params["link_id"]
    link = await svc.meta.get_link(link_id)
    if link is None or link.tenant_id != tenant_id or link.file_id != row.id:
        raise not_found("link", link_id)
    await svc.meta.revoke_link(tenant_id, link_id)
    return JSONResponse({"id": link_id, "object": "cigate.link.deleted", "deleted": True})


def _signed(
    secret: bytes, link_id: str, file_id: str, expires_at: datetime, *, expires: int, signature: str
) -> bool:
    """Whether ``expires``/``signature`` are the ones this link was issued with, unexpired."""
    good = sign(secret, link_id, file_id, expires)
    return (
        hmac.compare_digest(good.encode(), signature.encode("utf-8", "replace"))
        and expires == int(expires_at.timestamp())
        and expires > time.time()
    )


async def serve_link(request: Request) -> Response:
    """``GET``/``HEAD /links/{link_id}?expires=&signature=``: no key needed."""
    svc = services(request)
    link_id = request.path_params["link_id"]
    try:
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        raise _invalid() from None
    signature = request.query_params.get("signature", "")
    link = await svc.meta.get_link(link_id)
    if link is None:
        erased = await svc.meta.erased_link(link_id)
        # A link that was valid: its file's answer, once signed right.
        if erased is not None and _signed(
            svc.link_secret, link_id, *erased, expires=expires, signature=signature
        ):
            raise not_found("file", erased[0])
        raise _invalid()
    if link.revoked_at is not None or not _signed(
        svc.link_secret,
        link.id,
        link.file_id,
        link.expires_at,
        expires=expires,
        signature=signature,
    ):
        raise _invalid()
    row = await svc.meta.get_file(link.tenant_id, link.file_id)
    if row is None:
        raise _invalid()
    return await serve_file(request, svc, row, actor=f"link:{link.id}", tenant_id=link.tenant_id)
