"""The gateway's one connection to the upstream service: URLs, credential, and failure mapping.

Clients authenticate to the gateway with gateway keys; the upstream only ever sees the gateway's
own credential (an API key, or a Microsoft Entra ID token refreshed before it expires). Path
mapping lives here, in :meth:`Upstream.url`, so every forwarding route, the harvester and the
Files-API fallback agree on it. It takes decoded segments (a request's canonical ones, see
:mod:`cigate.gateway.edge`, or ids) and spells them with :func:`cigate.web.paths.encode`:

* ``/openai/v1/X`` and ``/v1/X`` -> ``{upstream}/openai/v1/X`` (or ``{upstream}/X`` when the
  upstream URL already ends in ``/v1``, as ``https://api.openai.com/v1`` does);
* legacy ``/openai/X?api-version=...`` -> ``{upstream}/openai/X`` with the query kept;
* a Foundry project's classic surface ``/api/projects/P/X`` -> ``{upstream}/X``, where the
  upstream is that project's endpoint (its ``/openai/v1`` is the project's v1 surface, which
  the rules above already give).

Connection failures become ``UpstreamUnavailableError`` with status 502 (504 for timeouts) in
exactly one place, :meth:`Upstream.send`. The class is also the harvest core's
:class:`~cigate.harvest.fetch.UpstreamAPI`: file downloads go through the same client and
credential.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import httpx2

from cigate.exceptions import BadInputError, ConfigurationError, UpstreamUnavailableError
from cigate.gateway.settings import GatewaySettings
from cigate.web.paths import encode

__all__ = [
    "HOP_BY_HOP",
    "IDEMPOTENT",
    "TokenCredential",
    "Upstream",
    "forwardable_headers",
    "unavailable",
]

log = logging.getLogger(__name__)

#: Headers that describe one connection, never the message (RFC 9110 section 7.6.1), plus the
#: ones the gateway owns (the caller's credential must never reach the upstream) and the ones
#: that would override the method or path the gateway classified.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "api-key",
        "accept-encoding",
        "content-encoding",
        # Headers some servers and proxies (IIS, ASP.NET, Spring, APIM policies) read as the
        # real method or path: the gateway classified the request by its own method and path.
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
    }
)


#: Methods a request may be sent again with (RFC 9110 section 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: What sending on a connection the other side had already closed raises: the request never
#: got an answer ("Server disconnected without sending a response", a reset on write or read).
_DEAD_CONNECTION = (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)


class TokenCredential(Protocol):
    """The part of ``azure.identity.aio`` credentials the gateway uses."""

    async def get_token(self, *scopes: str) -> Any: ...

    async def close(self) -> None: ...


def forwardable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers of one side that may be copied to the other."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _wire_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as the bytes the client sent (Starlette decoded them as Latin-1), so a value
    with bytes beyond ASCII goes up unchanged instead of failing to encode; a value with a
    control character (NUL, CR, LF, ...) no HTTP connection can carry is the client's 400."""
    out = []
    for name, value in headers.items():
        if _CONTROL.search(value):
            raise BadInputError(f"Invalid value in the request header {name[:100]!r}.")
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out


def unavailable(exc: httpx2.TransportError) -> UpstreamUnavailableError:
    """The one mapping of a transport failure: 504 for a timeout, 502 for anything else."""
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamUnavailableError(
            f"the upstream did not answer in time ({type(exc).__name__})", status=504
        )
    return UpstreamUnavailableError(
        f"cannot reach the upstream: {type(exc).__name__}: {exc}", status=502
    )


class Upstream:
    """Builds upstream URLs, adds the credential, sends, and maps transport failures."""

    def __init__(
        self,
        settings: GatewaySettings,
        client: httpx2.AsyncClient | None = None,
        credential: TokenCredential | None = None,
    ) -> None:
        self.settings = settings
        base = settings.upstream.rstrip("/")
        self._v1_base = base if base.endswith("/v1") else f"{base}/openai/v1"
        self._legacy_base = f"{base.removesuffix('/v1').removesuffix('/openai')}/openai"
        self._project_base = base if settings.upstream_project is not None else None
        self.client = client or httpx2.AsyncClient(
            timeout=httpx2.Timeout(
                settings.read_timeout, connect=settings.connect_timeout, pool=None
            ),
            limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        self._credential = credential
        self._token: tuple[str, float] | None = None

    def url(self, form: Literal["v1", "legacy", "project"], segments: Sequence[str]) -> str:
        """The upstream URL of decoded path ``segments`` (after the API prefix) in ``form``.

        Each segment is checked and escaped by :func:`cigate.web.paths.encode`: an id
        holding ``/``, ``..`` or an escape is refused (404), never read as more path.
        """
        if form == "project":
            if self._project_base is None:  # the edge's ProjectGate refused it already
                raise BadInputError("the upstream is not a Foundry project endpoint", status=404)
            base = self._project_base
        else:
            base = self._legacy_base if form == "legacy" else self._v1_base
        return f"{base}/{encode(segments)}"

    def v1_url(self, *segments: str) -> str:
        """URL of a v1 resource, e.g. ``v1_url("containers", cid, "files")``."""
        return self.url("v1", segments)

    @property
    def default_query(self) -> Mapping[str, str]:
        """None: the v1 paths the harvest uses need no ``api-version`` (harvest core protocol)."""
        return {}

    @property
    def uses_entra(self) -> bool:
        return self.settings.upstream_auth == "entra"

    async def auth_headers(self) -> dict[str, str]:
        mode = self.settings.upstream_auth
        if mode == "key":
            return {"api-key": self.settings.upstream_key}
        if mode == "entra":
            return {"authorization": f"Bearer {await self._entra_token()}"}
        return {}

    async def _entra_token(self) -> str:
        if self._token and self._token[1] - time.time() > 300:
            return self._token[0]
        if self._credential is None:
            try:
                from azure.identity.aio import DefaultAzureCredential
            except ImportError as exc:  # pragma: no cover - azure-identity is a dependency
                raise ConfigurationError("--upstream-auth entra needs azure-identity") from exc
            self._credential = DefaultAzureCredential()
        token = await self._credential.get_token(self.settings.entra_scope)
        self._token = (str(token.token), float(token.expires_on))
        return self._token[0]

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        content_length: str | None = None,
        stream: bool = False,
    ) -> httpx2.Response:
        """Send one request with the gateway's credential; transport failures become 502/504.

        An idempotent request whose content can be sent again is retried once, on a new
        connection, when the connection it went out on turns out dead (a pooled keep-alive
        connection the upstream closed). A POST never is: it may have reached the upstream.
        With ``stream=True`` the caller owns the response and must ``aclose()`` it. A streamed
        ``content`` goes up chunked unless ``content_length`` (the client's own header) is
        given: some servers refuse chunked uploads, and the client already declared the size.
        """
        merged = forwardable_headers(headers or {})
        if content_length is not None and content_length.isdigit():
            merged["content-length"] = content_length
        merged["accept-encoding"] = "identity"  # relay bytes as they are; the tee parses them
        merged.update(await self.auth_headers())
        replayable = method.upper() in IDEMPOTENT and not isinstance(content, AsyncIterator)
        for attempt in (1, 2):
            request = self.client.build_request(
                method, url, headers=_wire_headers(merged), params=params, content=content
            )
            try:
                return await self.client.send(request, stream=stream)
            except _DEAD_CONNECTION as exc:
                if attempt == 1 and replayable:
                    # A pooled keep-alive connection the upstream had closed: nothing reached
                    # it, or nothing that cannot be done again. Once more, on a new connection.
                    log.info("retrying %s %s on a new connection: %r", method, url, exc)
                    continue
                raise unavailable(exc) from exc
            except httpx2.TransportError as exc:
                raise unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, response: httpx2.Response) -> bytes:
        """The whole body of a streamed ``response``, which is closed; failures become 502/504."""
        try:
            return await response.aread()
        except httpx2.TransportError as exc:
            raise unavailable(exc) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._credential is not None:
            await self._credential.close()
