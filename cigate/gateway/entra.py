"""Callers sign in with Microsoft Entra ID: access tokens checked against the organisation's keys.

A bearer token that is not a gateway key (``cgk_…``) is, when ``entra_jwks_url`` is set, an
Entra access token. It is accepted only when all of this holds:

* the algorithm is RS256, RS384 or RS512 (pinned: ``none``, HS* and every other one are
  refused before any key is looked at, so an HMAC "signed" with the public key cannot pass);
* its ``kid`` names an RSA key of the configured JWKS, which is fetched over HTTP(S), cached
  for ``entra_jwks_max_age`` seconds and fetched again at once when a token names a key it
  does not hold (key rotation), at most once per ``entra_jwks_refetch`` seconds (an attacker
  sending random ``kid`` values cannot turn the gateway into a JWKS flooder);
* the signature, ``iss`` (one of ``entra_issuers``), ``aud`` (one of ``entra_audiences``),
  ``exp`` and ``nbf`` (with ``_LEEWAY`` seconds of clock skew) check out;
* the claim ``entra_claim`` (``tid``, ``appid``, ``azp``, ``oid`` or ``groups``) has a value
  ``entra_tenants`` maps to a gateway tenant (``VALUE=TENANT_NAME`` pairs, comma-separated;
  for ``groups``, exactly one tenant among the caller's groups).

A token that fails is a 401, an unmapped caller a 403, and signing keys that cannot be fetched
(none cached) a 503, each in the OpenAI error shape and without the token's content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
import jwt

from cigate.exceptions import AccessDeniedError, ConfigurationError, UpstreamUnavailableError
from cigate.storage.metadata import MetadataStore

if TYPE_CHECKING:
    from cigate.gateway.settings import GatewaySettings

__all__ = [
    "ALGORITHMS",
    "CLAIMS",
    "EntraCallers",
    "EntraConfig",
    "looks_like_jwt",
    "parse_mapping",
]

log = logging.getLogger(__name__)

#: The RS256 family: the only algorithms Entra signs access tokens with.
ALGORITHMS = ("RS256", "RS384", "RS512")
#: Claims a caller can be mapped by.
CLAIMS = ("tid", "appid", "azp", "oid", "groups")
#: Seconds of clock skew allowed on ``exp`` and ``nbf``.
_LEEWAY = 60
_HINT = "Sign in for the gateway's audience (see 'Entra callers' in docs/gateway.md)."
_SETTINGS_HINT = "See 'Entra callers' in docs/gateway.md."


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: a JWS compact token (a gateway key never looks like one)."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts[:2]) and len(token) <= 16_384


def parse_mapping(raw: str) -> dict[str, str]:
    """``VALUE=TENANT,VALUE=TENANT`` -> ``{value: tenant name}`` (a configuration error if bad)."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        value, sep, name = pair.partition("=")
        if not sep or not value.strip() or not name.strip():
            raise ConfigurationError(
                f"CIGATE_GATEWAY_ENTRA_TENANTS: {pair!r} is not CLAIM_VALUE=TENANT_NAME",
                hint=_SETTINGS_HINT,
            )
        mapping[value.strip()] = name.strip()
    return mapping


def _denied(message: str) -> AccessDeniedError:
    return AccessDeniedError(f"Invalid Entra access token: {message}.", hint=_HINT, status=401)


@dataclass
class _Keys:
    by_kid: dict[str, Any]
    fetched_at: float


@dataclass(frozen=True)
class EntraConfig:
    """The Entra settings, checked when the app is created (before any store is opened)."""

    jwks_url: str
    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    claim: str
    tenants: dict[str, str]
    max_age: float = 3600.0
    refetch: float = 60.0

    def __post_init__(self) -> None:
        if not self.jwks_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"CIGATE_GATEWAY_ENTRA_JWKS_URL must be an http(s) URL: {self.jwks_url!r}",
                hint=_SETTINGS_HINT,
            )
        if not self.issuers or not self.audiences:
            raise ConfigurationError(
                "Entra callers need CIGATE_GATEWAY_ENTRA_ISSUERS and _AUDIENCES",
                hint=_SETTINGS_HINT,
            )
        if self.claim not in CLAIMS:
            raise ConfigurationError(
                f"CIGATE_GATEWAY_ENTRA_CLAIM must be one of {', '.join(CLAIMS)}, "
                f"not {self.claim!r}",
                hint=_SETTINGS_HINT,
            )

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> EntraConfig | None:
        """The configuration, or ``None`` when callers use gateway keys only."""
        if not settings.entra_jwks_url:
            return None

        def split(raw: str) -> tuple[str, ...]:
            return tuple(v.strip() for v in raw.split(",") if v.strip())

        return cls(
            jwks_url=settings.entra_jwks_url,
            issuers=split(settings.entra_issuers),
            audiences=split(settings.entra_audiences),
            claim=settings.entra_claim,
            tenants=parse_mapping(settings.entra_tenants),
            max_age=settings.entra_jwks_max_age,
            refetch=settings.entra_jwks_refetch,
        )


class EntraCallers:
    """Verifies callers' Entra tokens and names their gateway tenant."""

    def __init__(
        self,
        meta: MetadataStore,
        config: EntraConfig,
        *,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.meta = meta
        self.jwks_url = config.jwks_url
        self.issuers = list(config.issuers)
        self.audiences = list(config.audiences)
        self.claim = config.claim
        self.tenants = config.tenants
        self.max_age = config.max_age
        self.refetch = config.refetch
        self._client = client or httpx2.AsyncClient(timeout=10.0)  # proxies as for the upstream
        self._keys: _Keys | None = None
        self._last_fetch = float("-inf")
        self._fetching = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def tenant_id(self, token: str) -> str:
        """The gateway tenant id of the caller presenting ``token`` (401/403/503 otherwise)."""
        claims = await self.verify(token)
        values = claims.get(self.claim)
        candidates = values if isinstance(values, list) else [values]
        names = {self.tenants[v] for v in candidates if isinstance(v, str) and v in self.tenants}
        if len(names) != 1:
            why = "is not mapped to" if not names else "maps to more than one"
            raise AccessDeniedError(
                f"This Entra identity ({self.claim}) {why} a gateway tenant.",
                hint="Ask the gateway's operator to map it (CIGATE_GATEWAY_ENTRA_TENANTS).",
                status=403,
            )
        tenant = await self.meta.tenant_by_name(names.pop())
        if tenant is None:
            raise AccessDeniedError(
                "This Entra identity is mapped to a gateway tenant that does not exist.",
                hint="Ask the gateway's operator to create it (`cigate gateway tenant add`).",
                status=403,
            )
        return tenant.id

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once every check of the module docstring passed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _denied("not a signed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise _denied(f"algorithm {str(alg)[:20]!r} is not accepted")
        if not isinstance(kid, str) or not kid:
            raise _denied("no key id")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audiences,
                issuer=self.issuers,
                leeway=_LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _denied("it has expired") from None
        except jwt.ImmatureSignatureError:
            raise _denied("it is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _denied("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise _denied("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise _denied("bad signature") from None
        except jwt.PyJWTError as exc:
            raise _denied(type(exc).__name__) from None
        return claims

    async def _key(self, kid: str) -> Any:
        """The public key ``kid`` names, fetching the key set when it is stale or lacks it."""
        keys = self._keys
        now = time.monotonic()
        stale = keys is None or now - keys.fetched_at > self.max_age
        if stale or kid not in keys.by_kid:  # type: ignore[union-attr]
            await self._refresh(force=not stale)
            keys = self._keys
        if keys is None:
            raise UpstreamUnavailableError(
                "The gateway cannot check Entra tokens now: its signing keys cannot be fetched.",
                hint="The gateway's log names the JWKS URL and the failure.",
                status=503,
            )
        if kid not in keys.by_kid:
            raise _denied("unknown signing key")
        return keys.by_kid[kid]

    async def _refresh(self, *, force: bool) -> None:
        """Fetch the key set, unless one was fetched within ``refetch`` seconds (``force``:
        a token named an unknown key) or another request fetches it now."""
        async with self._fetching:
            now = time.monotonic()
            if now - self._last_fetch < self.refetch:
                return
            if not force and self._keys is not None and now - self._keys.fetched_at <= self.max_age:
                return
            self._last_fetch = now
            try:
                response = await self._client.get(self.jwks_url)
                response.raise_for_status()
                document = response.json()
            except (httpx2.HTTPError, ValueError) as exc:
                log.warning("cannot fetch the Entra signing keys from %s: %s", self.jwks_url, exc)
                return  # keep what is cached: a JWKS outage does not lock out known keys
            self._keys = _Keys(_rsa_keys(document), now)


def _rsa_keys(document: Any) -> dict[str, Any]:
    """The RSA signing keys of a JWKS document, by ``kid`` (anything else is ignored)."""
    found: dict[str, Any] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
            continue
        try:
            found[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256").key
        except jwt.PyJWTError as exc:
            log.warning("ignoring Entra signing key %r: %s", entry["kid"], exc)
    return found
