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
exactly one place, :meth:`Upstream.send`. So do failures of the gateway's own credential: a
token that cannot be obtained, or a 401/403 from the upstream (a wrong key, a missing role) is
the operator's to fix, not the tenant's, so the tenant gets a 502 in the OpenAI envelope and
the log one line with the fix (:class:`CredentialAlarm`: once, then at most every few
minutes). Its :attr:`Upstream.harvest` is the harvest core's
:class:`~cigate.harvest.fetch.UpstreamAPI`: file downloads use the same URLs and credential,
through a connection pool of their own (:class:`HarvestSide`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx2
from opentelemetry.propagate import inject

from cigate.exceptions import BadInputError, ConfigurationError, UpstreamUnavailableError
from cigate.gateway import metrics, tracing
from cigate.gateway.settings import GatewaySettings
from cigate.harvest.classify import error_message, from_http
from cigate.web.netstream import use_asyncio_network
from cigate.web.paths import encode

__all__ = [
    "HOP_BY_HOP",
    "IDEMPOTENT",
    "CredentialAlarm",
    "TokenCredential",
    "Upstream",
    "UpstreamCredentialError",
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


class UpstreamCredentialError(UpstreamUnavailableError):
    """The gateway's own upstream credential failed: a 502 for the tenant (the same ``kind``,
    so a file copy that met it is retried by the sweep once the operator fixed it)."""

    #: Already logged by :class:`CredentialAlarm`: the error renderer does not log it again.
    logged = True


#: Seconds between two log lines about the same failing credential.
ALARM_INTERVAL = 300.0
#: Bytes of a 401/403 body read to tell a refused credential from a refused operation: past
#: it the rest is not read (a hostile upstream's endless 401 must not grow memory).
AUTH_BODY_LIMIT = 64 * 1024
#: Azure/OpenAI ``error.code`` values that refuse the gateway's own credential: a wrong or
#: expired key or token, key auth switched off, or an identity without the role.
CREDENTIAL_CODES = frozenset(
    {
        "401",
        "403",
        "invalidauthenticationtoken",
        "authenticationtypedisabled",
        "permissiondenied",
        "invalid_api_key",
        "unauthorized",
        "forbidden",
    }
)


class CredentialAlarm:
    """Logs a failing upstream credential once (then at most every ``interval`` s) with its
    fix, counts every failure in ``cigate_upstream_auth_failures``, and notes the recovery."""

    def __init__(self, interval: float = ALARM_INTERVAL) -> None:
        self.interval = interval
        self.failing = False
        self._last: dict[str, float] = {}

    def raised(self, reason: str, detail: str, hint: str) -> UpstreamCredentialError:
        metrics.UPSTREAM_AUTH_FAILURES.labels(reason).inc()
        now = time.monotonic()
        last = self._last.get(reason)
        if last is None or now - last >= self.interval:
            self._last[reason] = now
            log.error(
                "the upstream credential failed (%s): %s. Fix: %s "
                "(logged once per %.0f s while it lasts; tenants get a 502)",
                reason,
                detail,
                hint,
                self.interval,
            )
        self.failing = True
        what = "was refused by the upstream" if reason == "rejected" else "could not be obtained"
        return UpstreamCredentialError(
            f"The gateway's credential for its upstream {what}; the gateway's operator "
            "can see why in its log.",
            status=502,
        )

    def recovered(self) -> None:
        """An answer that is no refusal: noted once per interval too (a credential refused
        on some calls only flaps between the two)."""
        if self.failing:
            self.failing = False
            now = time.monotonic()
            last = self._last.get("recovered")
            if last is None or now - last >= self.interval:
                self._last["recovered"] = now
                log.warning("the upstream credential is accepted again")


def unavailable(exc: httpx2.TransportError) -> UpstreamUnavailableError:
    """The one mapping of a transport failure: 503 when this process has no free upstream
    connection, 504 for a timeout, 502 for anything else."""
    if isinstance(exc, httpx2.PoolTimeout):
        return UpstreamUnavailableError(
            "all of this gateway process's upstream connections are in use",
            status=503,
            hint="Try again shortly. Operators: raise CIGATE_GATEWAY_UPSTREAM_CONNECTIONS "
            "or run more replicas.",
            retry_after=1.0,
        )
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
        name: str = "default",
    ) -> None:
        #: The configured name (:mod:`cigate.gateway.upstreams`): in logs, metrics, the store.
        self.name = name
        self.settings = settings
        base = settings.upstream.rstrip("/")
        self._v1_base = base if base.endswith("/v1") else f"{base}/openai/v1"
        self._legacy_base = f"{base.removesuffix('/v1').removesuffix('/openai')}/openai"
        self._project_base = base if settings.upstream_project is not None else None
        #: Clients' calls (:meth:`send`), at most ``upstream_connections`` at once.
        self.client = client or _pooled_client(settings, settings.upstream_connections)
        #: The harvest core's view: the same URLs and credential, a pool of its own.
        self.harvest = HarvestSide(
            self, client or _pooled_client(settings, settings.harvest_connections)
        )
        self._credential = credential
        self._token_provider: Callable[[], Awaitable[str]] | None = None
        self.alarm = CredentialAlarm()
        for pooled in self._pools:
            # Every call (forwarded, or the harvest's downloads and listings) has its 401/403
            # turned into the alarm's 502.
            pooled.event_hooks["response"].append(self._check_credential_accepted)
            # Every call also carries the current span's traceparent (tracing on), and the
            # harvest core's calls, which do not go through send(), are timed here.
            pooled.event_hooks["request"].append(self._before_send)
            pooled.event_hooks["response"].insert(0, self._observe_harvest)
        self._v1_path = urlsplit(self._v1_base).path.rstrip("/")

    @property
    def _pools(self) -> tuple[httpx2.AsyncClient, ...]:
        """The forwarding and the harvest's client, each once (one client given serves both)."""
        return tuple(dict.fromkeys((self.client, self.harvest.client)))

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
        """A token from azure-identity's bearer token provider (cached, refreshed before it
        expires); any failure to get one is the operator's: a logged 502, never a 500."""
        if self._token_provider is None:
            try:
                from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
            except ImportError as exc:  # pragma: no cover - azure-identity is a dependency
                raise ConfigurationError("--upstream-auth entra needs azure-identity") from exc
            if self._credential is None:
                self._credential = DefaultAzureCredential()
            self._token_provider = get_bearer_token_provider(
                self._credential,  # type: ignore[arg-type]
                self.settings.entra_scope,
            )
        try:
            return await self._token_provider()
        except Exception as exc:  # every credential fails its own way; all are the operator's
            raise self.alarm.raised(
                "credential",
                f"{type(exc).__name__}: {_first_line(exc)}",
                "give the gateway a working Microsoft Entra ID identity (managed identity, "
                "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or `az login`) with the "
                "role 'Cognitive Services OpenAI User' for the scope " + self.settings.entra_scope,
            ) from exc

    async def check_credential(self) -> None:
        """Readiness: a token can be obtained, and the upstream accepts the credential."""
        response = await self.send("GET", self.v1_url("models"), stream=True)
        await response.aclose()

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
                method,
                url,
                headers=_wire_headers(merged),
                params=params,
                content=content,
                extensions={_FORWARD: True},
            )
            started = time.perf_counter()
            try:
                with tracing.span(f"upstream {method}", **{"http.request.method": method}) as sp:
                    response = await self.client.send(request, stream=stream)
                    if sp is not None:
                        sp.set_attribute("http.response.status_code", response.status_code)
            except _DEAD_CONNECTION as exc:
                if attempt == 1 and replayable:
                    # A pooled keep-alive connection the upstream had closed: nothing reached
                    # it, or nothing that cannot be done again. Once more, on a new connection.
                    log.info("retrying %s %s on a new connection: %r", method, url, exc)
                    continue
                self._observe(method, "error", started)
                raise unavailable(exc) from exc
            except httpx2.TransportError as exc:
                self._observe(method, "error", started)
                raise unavailable(exc) from exc
            self._observe(method, metrics.status_label(response.status_code), started)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _observe(method: str, status: str, started: float) -> None:
        scope = metrics.SCOPE.get()
        route = metrics.route_label(scope) if scope is not None else "unmatched"
        metrics.UPSTREAM_SECONDS.labels(metrics.method_label(method), status, route).observe(
            time.perf_counter() - started
        )

    async def _before_send(self, request: httpx2.Request) -> None:
        """Request hook: the W3C ``traceparent`` of the current span (the upstream call's, or
        the harvest copy's) when tracing is on; the start of a harvest call's clock."""
        if tracing.TRACER.get() is not None:
            carrier: dict[str, str] = {}
            inject(carrier)
            for name, value in carrier.items():
                request.headers[name] = value
        if _FORWARD not in request.extensions:
            request.extensions[_STARTED] = time.perf_counter()

    async def _observe_harvest(self, response: httpx2.Response) -> None:
        """Response hook: a harvest call's time to headers, under ``harvest`` and the upstream
        path template (forwarded calls are timed by :meth:`send`)."""
        started = response.request.extensions.get(_STARTED)
        if started is None:
            return
        path = response.request.url.path.removeprefix(self._v1_path).strip("/")
        metrics.UPSTREAM_SECONDS.labels(
            metrics.method_label(response.request.method),
            metrics.status_label(response.status_code),
            metrics.harvest_route(path.split("/")),
        ).observe(time.perf_counter() - started)

    async def _check_credential_accepted(self, response: httpx2.Response) -> None:
        """Response hook: a 401/403 that refuses the gateway's credential raises the alarm's
        502; anything else clears the alarm.

        The body (at most :data:`AUTH_BODY_LIMIT` bytes) tells a refused credential from a
        refused operation by its ``error.code`` (:data:`CREDENTIAL_CODES`; a 401 always is
        one); only without a code, by the message: Azure's plain-text CheckAccess 403 refuses
        an operation on this endpoint, not the credential, and goes on to the caller (the
        harvest core records it with its own hint; the body read here is still readable).
        """
        if response.status_code not in (401, 403):
            if self.alarm.failing:
                self.alarm.recovered()
            return
        body = await _capped_body(response)
        message, code = error_message(body)
        if not _refuses_credential(response.status_code, message, code):
            return
        refused = from_http(
            response.status_code,
            body,
            response.headers,
            what=f"{response.request.method} {response.request.url.path}",
            uses_entra=self.uses_entra,
        )
        await response.aclose()
        hint = refused.hint
        if self.settings.upstream_auth == "key" and "key based" not in refused.message.lower():
            hint = (
                "check --upstream-key (CIGATE_GATEWAY_UPSTREAM_KEY): it must be a key of the "
                f"resource {self.settings.upstream} (Keys and Endpoint in the Azure portal)"
            )
        raise self.alarm.raised("rejected", refused.message[:500], hint)

    async def read(self, response: httpx2.Response) -> bytes:
        """The whole body of a streamed ``response``, which is closed; failures become 502/504."""
        try:
            return await response.aread()
        except httpx2.TransportError as exc:
            raise unavailable(exc) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        for pooled in self._pools:
            await pooled.aclose()
        if self._credential is not None:
            await self._credential.close()


class HarvestSide:
    """An upstream as the harvest core sees it (:class:`~cigate.harvest.fetch.UpstreamAPI`).

    Its calls (listings, file records, downloads, and the on-demand fetch of a file a client
    asks for before it is stored) go through a connection pool of their own, at most
    ``harvest_connections``: a backlog of copies never takes a connection a forwarded call
    needs, nor a relayed stream one the harvest needs. Two pools are also cheaper to
    run than one: httpcore walks every connection of a pool on each request and release, and
    the clients' pool holds one connection per live stream.
    """

    def __init__(self, upstream: Upstream, client: httpx2.AsyncClient) -> None:
        self.client = client
        self._upstream = upstream
        self.v1_url = upstream.v1_url
        self.auth_headers = upstream.auth_headers

    @property
    def default_query(self) -> Mapping[str, str]:
        return self._upstream.default_query

    @property
    def uses_entra(self) -> bool:
        return self._upstream.uses_entra


def _pooled_client(settings: GatewaySettings, connections: int) -> httpx2.AsyncClient:
    """A client with at most ``connections`` to the upstream; a call that finds all in use
    waits ``connect_timeout`` for one."""
    client = httpx2.AsyncClient(
        timeout=httpx2.Timeout(
            settings.read_timeout,
            connect=settings.connect_timeout,
            pool=settings.connect_timeout,
        ),
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=50),
        follow_redirects=False,
    )
    use_asyncio_network(client)
    return client


#: Request extensions: sent by :meth:`Upstream.send` (timed there), and a harvest call's start.
_FORWARD = "cigate.forward"
_STARTED = "cigate.started"


async def _capped_body(response: httpx2.Response) -> bytes:
    """At most :data:`AUTH_BODY_LIMIT` bytes of ``response``'s body. A body that ends within
    the cap stays readable by the caller; a longer one is cut off and the response closed."""
    if response.is_stream_consumed:  # read already (an in-memory body)
        return (await response.aread())[:AUTH_BODY_LIMIT]
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size > AUTH_BODY_LIMIT:
                await response.aclose()
                return b"".join(chunks)[:AUTH_BODY_LIMIT]
    except httpx2.TransportError:
        await response.aclose()
        return b"".join(chunks)[:AUTH_BODY_LIMIT]
    body = b"".join(chunks)
    # Complete: give it back to the response, as aread() would have left it.
    response._content = body  # httpx2 keeps a read body here (aread() sets it)
    response.stream = httpx2.ByteStream(body)
    return body


def _refuses_credential(status: int, message: str, code: str | None) -> bool:
    """Whether a 401/403 refuses the gateway's credential (not one operation)."""
    if code is not None:
        return status == 401 or code.strip().lower() in CREDENTIAL_CODES
    return "checkaccess" not in message.lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
