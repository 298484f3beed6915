"""Client settings: every option and environment variable, read once, plus endpoint resolution.

Users arrive with whatever their samples taught them: an Azure resource URL, a Foundry URL, a
v1 base URL, an OpenAI base URL, a dated ``api-version`` from an old notebook. Containers exist
only under ``/openai/v1/`` (api-reference §6.1, §6.3), so everything is normalised to one v1 base
URL here, and a misfit (a dated api-version on a v1 URL) becomes a warning instead of a
mysterious 404 later. Precedence: explicit argument / CLI option > ``CIGATE_*`` > the seeds'
``AOAI_*`` > the SDKs' ``AZURE_OPENAI_*`` / ``OPENAI_*`` (table in docs/configuration.md).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from cigate.exceptions import ApiVersionError, ConfigurationError

if TYPE_CHECKING:
    import httpx2
    from azure.core.credentials import TokenCredential
    from openai import AsyncOpenAI, OpenAI

__all__ = [
    "DEFAULT_SCOPE",
    "ENV_TABLE",
    "ClientConfig",
    "TokenSource",
    "normalise_base_url",
    "resolve_config",
]

DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
FOUNDRY_SCOPE = "https://ai.azure.com/.default"
OPENAI_BASE = "https://api.openai.com/v1/"
_AZURE_HOSTS = (".openai.azure.com", ".services.ai.azure.com", ".cognitiveservices.azure.com")
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

AuthMode = Literal["auto", "key", "entra"]
EndpointKind = Literal["azure", "openai"]

#: setting -> environment variables, highest precedence first (the documented table).
ENV_TABLE: dict[str, tuple[str, ...]] = {
    "endpoint": ("CIGATE_ENDPOINT", "AOAI_API_BASE", "AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL"),
    "api_key": ("CIGATE_API_KEY", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"),
    "api_version": ("CIGATE_API_VERSION", "AOAI_API_VERSION", "OPENAI_API_VERSION"),
    "model": ("CIGATE_MODEL", "AOAI_DEPLOYMENT", "AZURE_OPENAI_DEPLOYMENT"),
    "auth": ("CIGATE_AUTH",),
    "scope": ("CIGATE_TOKEN_SCOPE",),
    "out": ("CIGATE_OUT",),
    "concurrency": ("CIGATE_CONCURRENCY",),
    "retries": ("CIGATE_RETRIES",),
    "backoff": ("CIGATE_BACKOFF",),
    "backoff_max": ("CIGATE_BACKOFF_MAX",),
    "max_retry_wait": ("CIGATE_MAX_RETRY_WAIT",),
    "timeout": ("CIGATE_TIMEOUT",),
    "run_timeout": ("CIGATE_RUN_TIMEOUT",),
}


@dataclass(frozen=True)
class ClientConfig:
    """Resolved client settings. Build with :func:`resolve_config`; never logs secrets."""

    #: Normalised v1 base URL, always ending in ``/`` (``…/openai/v1/`` or ``…/v1/``).
    base_url: str
    kind: EndpointKind = "azure"
    api_key: str | None = field(default=None, repr=False)
    #: Any ``azure.core.credentials.TokenCredential``; used when there is no key.
    credential: TokenCredential | None = field(default=None, repr=False)
    scope: str = DEFAULT_SCOPE
    #: ``None`` (send none) or ``"preview"``; dated versions are dropped with a warning.
    api_version: str | None = None
    model: str | None = None
    out: str = "downloads"
    #: Downloads at once. 16 so that a response's usual handful of files (and the issue's
    #: ten-file harvest) downloads in one wave: each container download is bounded per
    #: connection by the service, so a second wave would double the harvest's wall time.
    concurrency: int = 16
    #: Attempts per download step (first try included).
    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 8.0
    #: A server asking us to wait longer than this fails at once (as the SDK does past 120 s).
    max_retry_wait: float = 120.0
    timeout: float = 120.0
    #: Longest a polled Assistants run may take before the client cancels it and fails. The
    #: service expires a run 10 minutes after it starts, so the default only catches a hang.
    run_timeout: float = 900.0
    warnings: tuple[str, ...] = ()
    _tokens: TokenSource | None = field(default=None, repr=False, compare=False)

    def with_options(self, **changes: Any) -> ClientConfig:
        """A copy with some fields changed (tests shorten the backoff this way)."""
        return replace(self, **changes)

    # -- credentials -------------------------------------------------------------------------

    @property
    def uses_entra(self) -> bool:
        return self.api_key is None

    def token_source(self) -> TokenSource:
        """The cached, refreshing token source for Entra ID (created on first use)."""
        if self._tokens is None:
            credential = self.credential
            if credential is None:
                try:
                    from azure.identity import DefaultAzureCredential
                except ImportError as exc:  # pragma: no cover - a declared dependency
                    raise ConfigurationError("azure-identity is not installed") from exc
                credential = DefaultAzureCredential()
            object.__setattr__(self, "_tokens", TokenSource(credential, self.scope))
        assert self._tokens is not None
        return self._tokens

    def auth_headers(self) -> dict[str, str]:
        """Headers for one request: ``api-key`` on Azure, else ``Authorization: Bearer``."""
        if self.api_key is not None:
            if self.kind == "azure":
                return {"api-key": self.api_key}
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"Authorization": f"Bearer {self.token_source().token()}"}

    async def aauth_headers(self) -> dict[str, str]:
        """Async twin of :meth:`auth_headers` (token refresh runs off the event loop)."""
        if self.api_key is not None:
            return self.auth_headers()
        return {"Authorization": f"Bearer {await self.token_source().atoken()}"}

    @property
    def default_query(self) -> dict[str, str]:
        return {"api-version": self.api_version} if self.api_version else {}

    # -- SDK clients ---------------------------------------------------------------------------

    def openai_client(self, http_client: httpx2.Client | None = None) -> OpenAI:
        """``OpenAI(base_url=v1, api_key=key or token provider)`` (api-reference §6.3)."""
        from openai import OpenAI

        key: str | Callable[[], str] = (
            self.api_key if self.api_key is not None else self.token_source().token
        )
        return OpenAI(
            base_url=self.base_url,
            api_key=key,
            default_query=self.default_query or None,
            timeout=self.timeout,
            http_client=http_client,
        )

    def async_openai_client(self, http_client: httpx2.AsyncClient | None = None) -> AsyncOpenAI:
        """The async twin of :meth:`openai_client`."""
        from openai import AsyncOpenAI

        if self.api_key is not None:
            return AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                default_query=self.default_query or None,
                timeout=self.timeout,
                http_client=http_client,
            )
        return AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.token_source().atoken,
            default_query=self.default_query or None,
            timeout=self.timeout,
            http_client=http_client,
        )


class TokenSource:
    """Entra ID bearer tokens for one scope: cached, refreshed 5 minutes before expiry.

    Tokens are never logged or put in ``repr``; the credential is asked again only when the
    cached token is about to expire, so a long run keeps working across token lifetimes.
    """

    REFRESH_MARGIN = 300.0

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self._credential = credential
        self.scope = scope
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenSource(scope={self.scope!r})"

    def _fresh(self) -> bool:
        return self._token is not None and time.time() < self._expires_on - self.REFRESH_MARGIN

    def token(self) -> str:
        """A valid token (blocking; may call the credential)."""
        with self._lock:
            if not self._fresh():
                from cigate.exceptions import AccessDeniedError

                try:
                    access = self._credential.get_token(self.scope)
                except Exception as exc:
                    raise AccessDeniedError(
                        f"could not get a Microsoft Entra ID token for {self.scope}: "
                        f"{type(exc).__name__}",
                        hint="Sign in (`az login`), or pass an API key with --api-key / "
                        "AZURE_OPENAI_API_KEY.",
                    ) from exc
                self._token, self._expires_on = access.token, float(access.expires_on)
            assert self._token is not None
            return self._token

    async def atoken(self) -> str:
        """Async twin: returns the cached token at once, refreshes in a worker thread."""
        if self._fresh():
            assert self._token is not None
            return self._token
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.token)


def normalise_base_url(url: str) -> tuple[str, EndpointKind, list[str]]:
    """Map any accepted endpoint form to ``(v1 base URL, kind, notes)``.

    Azure resource and Foundry URLs (with or without ``/openai``, legacy paths, deployment
    paths) become ``https://HOST/openai/v1/``; OpenAI-style URLs keep their ``/v1``; a bare
    host that is not api.openai.com is taken as an Azure-style resource (the emulator, the
    gateway). A host that is not Azure's keeps the path in front of ``/openai``: an API
    management or proxy prefix (``https://apim.contoso.com/aoai/``) is part of the route.
    """
    raw = url.strip()
    if "://" not in raw:
        # Cloud endpoints are TLS; a local emulator or gateway (`localhost:8000`) is plain HTTP.
        local = raw.lower().startswith(("localhost", "127.", "[::1]"))
        raw = ("http://" if local else "https://") + raw
    parts = urlsplit(raw)
    if not parts.netloc:
        raise ConfigurationError(f"not an endpoint URL: {url!r}")
    host = (parts.hostname or "").lower()
    path = parts.path.rstrip("/")
    notes: list[str] = []
    azure_host = host.endswith(_AZURE_HOSTS)
    if host == "api.openai.com" or (not azure_host and _is_openai_path(path)):
        base = path if path.endswith("/v1") else path + "/v1"
        return urlunsplit((parts.scheme, parts.netloc, base + "/", "", "")), "openai", notes
    segments = path.split("/")
    if "/openai/v1" in path:
        base = path[: path.index("/openai/v1") + len("/openai/v1")]
    elif "/api/projects/" in path + "/":
        at = segments.index("api")
        base = "/".join(segments[: at + 3]) + "/openai/v1"
    else:
        # A proxy prefix stays (nothing sits in front of /openai on Azure's own hosts).
        prefix = "/".join(segments[: segments.index("openai")]) if "openai" in segments else path
        if azure_host:
            prefix = ""
        rest = path[len(prefix) :]
        if rest not in ("/openai", ""):
            notes.append(
                f"endpoint path {parts.path!r} is a legacy/deployment path; using "
                f"{prefix}/openai/v1/ (containers exist only on v1)"
            )
        base = prefix + "/openai/v1"
    return urlunsplit((parts.scheme, parts.netloc, base + "/", "", "")), "azure", notes


def _is_openai_path(path: str) -> bool:
    return path.endswith("/v1") and "/openai/" not in path + "/"


def _first(
    explicit: object, names: tuple[str, ...], env: Mapping[str, str]
) -> tuple[Any, str | None]:
    if explicit is not None:
        return explicit, "argument"
    for name in names:
        value = env.get(name)
        if value:
            return value, name
    return None, None


def _given(value: object, default: float) -> object:
    """``value`` unless unset: an explicit 0 (``--backoff 0``) is a choice, not the default."""
    return default if value is None else value


def _number(value: object, name: str, conv: Callable[[Any], float | int]) -> Any:
    try:
        return conv(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from exc


def _seconds(value: object, default: float, name: str) -> float:
    """A positive duration; 0 or less is refused, never silently read as the default."""
    seconds = float(_number(_given(value, default), name, float))
    if not seconds > 0:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds, got {value!r}",
            hint=f"Leave it unset for the default ({default:g} s).",
        )
    return seconds


def resolve_config(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    api_version: str | None = None,
    model: str | None = None,
    auth: str | None = None,
    scope: str | None = None,
    credential: TokenCredential | None = None,
    out: str | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    backoff_max: float | None = None,
    max_retry_wait: float | None = None,
    timeout: float | None = None,
    run_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Resolve settings from arguments and the environment (arguments win)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str | None] = {}
    explicit = {
        "endpoint": endpoint,
        "api_key": api_key,
        "api_version": api_version,
        "model": model,
        "auth": auth,
        "scope": scope,
        "out": out,
        "concurrency": concurrency,
        "retries": retries,
        "backoff": backoff,
        "backoff_max": backoff_max,
        "max_retry_wait": max_retry_wait,
        "timeout": timeout,
        "run_timeout": run_timeout,
    }
    for name, names in ENV_TABLE.items():
        values[name], sources[name] = _first(explicit[name], names, env)

    warnings: list[str] = []
    mode = (values["auth"] or "auto").lower()
    if mode not in ("auto", "key", "entra"):
        raise ConfigurationError(f"auth must be auto, key or entra, not {mode!r}")
    if credential is not None and explicit["auth"] is None:
        mode = "entra"
    key = values["api_key"] if mode != "entra" else None
    if mode == "key" and not key:
        raise ConfigurationError(
            "auth=key but no API key is set",
            hint="Pass --api-key or set AZURE_OPENAI_API_KEY (or CIGATE_API_KEY).",
        )

    raw_endpoint = values["endpoint"]
    if raw_endpoint is None:
        if key and sources["api_key"] == "OPENAI_API_KEY":
            raw_endpoint = OPENAI_BASE
        else:
            raise ConfigurationError(
                "no endpoint is set",
                hint="Pass --endpoint https://RESOURCE.openai.azure.com/ or set "
                "AZURE_OPENAI_ENDPOINT (or AOAI_API_BASE); `cigate demo` needs none.",
            )
    base_url, kind, notes = normalise_base_url(str(raw_endpoint))
    warnings.extend(notes)
    if kind == "openai" and not key:
        raise ConfigurationError(
            "OpenAI endpoints need an API key", hint="Set OPENAI_API_KEY or pass --api-key."
        )

    version = _api_version(values["api_version"], sources["api_version"], warnings)
    # A Foundry project endpoint wants tokens for ai.azure.com (a resource's audience is a 401).
    project = "/api/projects/" in urlsplit(base_url).path
    chosen_scope = values["scope"] or (FOUNDRY_SCOPE if project else DEFAULT_SCOPE)
    if not chosen_scope.endswith("/.default"):
        warnings.append(f"token scope {chosen_scope!r} does not end in /.default")

    return ClientConfig(
        base_url=base_url,
        kind=kind,
        api_key=key or None,
        credential=credential,
        scope=chosen_scope,
        api_version=version,
        model=values["model"],
        out=values["out"] or "downloads",
        concurrency=max(1, int(_number(_given(values["concurrency"], 16), "concurrency", int))),
        retries=max(1, int(_number(_given(values["retries"], 4), "retries", int))),
        backoff=_number(_given(values["backoff"], 0.5), "backoff", float),
        backoff_max=_number(_given(values["backoff_max"], 8.0), "backoff_max", float),
        max_retry_wait=_number(_given(values["max_retry_wait"], 120.0), "max_retry_wait", float),
        timeout=_seconds(values["timeout"], 120.0, "timeout"),
        run_timeout=_seconds(values["run_timeout"], 900.0, "run_timeout"),
        warnings=tuple(warnings),
    )


def _api_version(value: str | None, source: str | None, warnings: list[str]) -> str | None:
    """Only ``preview`` is sent on v1; ``v1`` is the default; dated versions are dropped."""
    if not value:
        return None
    version = str(value).strip()
    if version.lower() == "v1":
        return None
    if version.lower() == "preview":
        return "preview"
    if _DATED.match(version):
        warnings.append(
            f"ignoring api-version {version} (from {source}): dated versions belong to legacy "
            "/openai/... paths and containers exist only on /openai/v1/; "
            "use no api-version or 'preview'"
        )
        return None
    raise ApiVersionError(
        f"unknown api-version {version!r}",
        hint="On the v1 API use no api-version, 'v1' or 'preview'.",
    )
