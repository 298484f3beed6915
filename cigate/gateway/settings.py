"""Gateway settings: one frozen object, read once from options and ``CIGATE_GATEWAY_*``.

Every CLI option has an environment variable of the same name (``--upstream-key`` is
``CIGATE_GATEWAY_UPSTREAM_KEY``) so that a container deployment needs no command line; a secrets
directory and a dotenv file can set them too (:mod:`cigate.gateway.env`). Problems
are found here, at start-up, not on the first request (STYLE rule 6).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cigate.exceptions import ConfigurationError
from cigate.gateway.tenancy import parse_allowed

#: Where every gateway setting is explained (the hint of every configuration error here).
SETTINGS_HINT = "See the settings table in docs/gateway.md."

__all__ = ["GatewaySettings", "cigate_home"]

_AUTH_MODES = ("key", "entra", "none")
_CI_MODES = ("upstream", "self")
_INTERPRETER_APIS = ("responses", "chat")
#: The path of a Foundry project endpoint (``https://RES.services.ai.azure.com/api/projects/P``).
_PROJECT_PATH = re.compile(r"/api/projects/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/?")
#: Entra scopes: an Azure OpenAI / AI Services resource, and a Foundry project endpoint.
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
FOUNDRY_SCOPE = "https://ai.azure.com/.default"


def cigate_home() -> Path:
    """``$CIGATE_HOME`` or ``~/.cigate``: where default databases and blobs live."""
    return Path(os.environ.get("CIGATE_HOME") or Path.home() / ".cigate")


#: Largest credential file read (a key, a secret or a connection URL is far smaller).
SECRET_FILE_MAX = 64 * 1024


def read_secret_file(path: Path, label: str, *, hint: str = SETTINGS_HINT) -> str:
    """A credential from a file (a mounted Secret): its UTF-8 text without the surrounding
    whitespace (such files end with a newline), or a clear start-up error. One printable line:
    a NUL or line break inside would never be a key, a secret or a URL (and could split a
    header). Only a regular file of at most ``SECRET_FILE_MAX`` bytes: a FIFO, ``/dev/zero``
    or a wrong path to a large file would otherwise hang start-up or fill its memory.
    ``label`` names the file in the error; an empty file gives ``""``."""
    try:
        value = _read_small_file(path).decode("utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    else:
        if value.isprintable():
            return value
        reason = "it holds a control character (a value is one printable line)"
    raise ConfigurationError(f"cannot read {label}: {reason}", hint=hint)


def _read_small_file(path: Path) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer (a regular file ignores it).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, SECRET_FILE_MAX + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > SECRET_FILE_MAX:
                raise OSError(errno.EFBIG, f"larger than {SECRET_FILE_MAX // 1024} KiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class GatewaySettings:
    """Everything ``create_app`` needs; ``from_env`` fills it from the environment."""

    #: Base URL of the upstream resource, e.g. ``https://RES.openai.azure.com`` or the emulator,
    #: or a Foundry project endpoint ``https://RES.services.ai.azure.com/api/projects/P``.
    upstream: str = ""
    #: ``key`` (send ``api-key``), ``entra`` (Microsoft Entra ID bearer token) or ``none``.
    upstream_auth: str = "key"
    #: The upstream API key (``upstream_auth="key"``).
    upstream_key: str = ""
    #: Entra ID scope for ``upstream_auth="entra"``; empty: ``https://ai.azure.com/.default``
    #: for a Foundry project endpoint, ``https://cognitiveservices.azure.com/.default`` else.
    upstream_scope: str = ""
    #: Metadata store URL; empty means SQLite at ``$CIGATE_HOME/gateway.db``.
    database: str = ""
    #: Blob store URL; empty means ``$CIGATE_HOME/blobs``; ``azure://CONTAINER?...`` for Azure.
    blobs: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    #: Rewrite ``sandbox:/mnt/data/...`` links in returned text to gateway download URLs.
    rewrite_links: bool = False
    #: Public base URL of the gateway, used in download URLs; empty means the request's own.
    public_url: str = ""
    #: Secret for signed download links; empty means one kept in the metadata store's home.
    link_secret: str = ""
    #: Default lifetime of a signed link, seconds.
    link_ttl: int = 3600
    #: Concurrent file copies per gateway process.
    harvest_concurrency: int = 16
    #: Attempts per file before it is recorded as ``failed``.
    harvest_attempts: int = 4
    #: First retry delay, seconds (doubles, capped at 8 s; ``retry-after`` wins).
    harvest_backoff: float = 0.5
    #: Wait before the resume sweep tries a transiently failed file again (``upstream_unavailable``,
    #: ``rate_limited``, ``integrity``), seconds; doubles with every round, up to the next.
    harvest_retry_delay: float = 30.0
    harvest_retry_max_delay: float = 600.0
    #: Tries after which a transiently failed file is left ``failed`` (0: no background retry).
    harvest_retry_max_tries: int = 12
    #: Age (s) after which the sweep concludes a response nobody concluded (its process died
    #: mid-stream): it reads the response upstream and, once it is over, lists its containers.
    #: A stream still relayed by this process is left to it.
    harvest_relist_after: float = 60.0
    #: Seconds between sweeps for ``pending`` rows left by a crashed process.
    resume_interval: float = 5.0
    #: Seconds between retention sweeps (tenants with a retention period; 0: never sweep).
    retention_interval: float = 3600.0
    #: Lease a worker holds on a claimed ``pending`` row, seconds.
    lease_seconds: int = 60
    #: Largest JSON request body the gateway reads to check ids (bytes); larger gets a 413.
    max_json_body: int = 64 * 1024 * 1024
    #: Upstream timeouts, seconds: connect, and read between two chunks (streams can idle).
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    #: Connections one process holds open to each upstream at most: one per call in flight
    #: (a relayed stream holds its own for its whole length). A call that finds all in use
    #: waits ``connect_timeout`` for one, then gets a 503.
    upstream_connections: int = 1000
    #: Connections the harvest (listings, file records, downloads) holds open to each upstream
    #: at most, apart from the forwarding ones: a backlog of copies never delays a forwarded
    #: call. On-demand fetches for a client (a file not stored yet) share this pool. A harvest
    #: call that finds all in use waits ``connect_timeout`` for one; a retried call waits
    #: again and again without using up a try (nothing was sent), up to two minutes of
    #: waiting in all, then each wait counts as a try (``RetryPolicy.call``).
    harvest_connections: int = 100
    #: Path families the gateway does not scope per tenant that it forwards anyway, for every
    #: tenant: comma-separated (``vector_stores,batches``) or ``*`` for all. Empty (the
    #: default): only the scoped and the stateless calls go upstream, the rest is refused (403).
    #: See :mod:`cigate.gateway.tenancy`.
    allow_unscoped: str = ""
    #: Entra callers (docs/gateway.md): the organisation's JWKS URL (empty: gateway keys only),
    #: accepted issuers and audiences (comma-separated), the claim that names the caller
    #: (``tid``, ``appid``, ``azp``, ``oid``, ``groups``) and ``VALUE=TENANT_NAME`` pairs.
    entra_jwks_url: str = ""
    entra_issuers: str = ""
    entra_audiences: str = ""
    entra_claim: str = "tid"
    entra_tenants: str = ""
    #: Seconds the key set is used before it is fetched again, and the least time between two
    #: fetches (a token naming an unknown key fetches at once, at most this often).
    entra_jwks_max_age: float = 3600.0
    entra_jwks_refetch: float = 60.0
    #: Serve Prometheus metrics at ``GET /metrics`` (off: 404). See "Metrics" in docs/gateway.md.
    metrics: bool = False
    #: Bearer token ``/metrics`` requires (empty: none, e.g. behind a network policy).
    metrics_token: str = ""
    #: Serve ``/metrics`` (and ``/healthz``) on this port's own listener only, not on ``port``
    #: (0: no separate listener). Turns metrics on.
    metrics_port: int = 0
    #: ``/readyz`` also checks the upstream credential (a token, or a key the upstream accepts).
    ready_check_upstream: bool = False
    #: Identifies this process in leases; empty means host:pid.
    worker_id: str = ""
    #: ``upstream``: the provider runs ``code_interpreter``; ``self``: the gateway runs it in its
    #: own sandboxes and drives the upstream model through a function tool (docs/self-hosted.md).
    code_interpreter: str = "upstream"
    #: Models/deployments ``self`` mode applies to, comma-separated; empty: every model.
    interpreter_models: str = ""
    #: The model server ``self`` mode asks, when it is not ``upstream`` (a vLLM/Ollama/llama.cpp
    #: server, another Azure resource); its auth (``key``, ``entra``, ``none``) and key. Empty:
    #: the upstream and its credential.
    interpreter_upstream: str = ""
    interpreter_upstream_auth: str = ""
    interpreter_upstream_key: str = ""
    #: How ``self`` mode asks the upstream model: ``responses`` or ``chat`` (Chat Completions).
    interpreter_api: str = "responses"
    #: Where ``self`` mode keeps its containers' directories; empty: ``$CIGATE_HOME/interpreter``.
    interpreter_dir: str = ""
    #: Sandbox isolation of ``self`` mode: ``auto``, ``bwrap`` or ``none`` (tests only).
    interpreter_isolation: str = "auto"
    #: Kernels kept warm; live containers per tenant and on this host; seconds per cell.
    interpreter_pool_size: int = 2
    interpreter_tenant_containers: int = 8
    interpreter_max_containers: int = 64
    interpreter_exec_timeout: float = 120.0
    #: Minutes without activity after which a self-hosted container expires.
    interpreter_idle_minutes: int = 20
    #: Responses ``self`` mode keeps in memory (retrieve, replay, ``previous_response_id``);
    #: past it the oldest finished ones are forgotten (their files stay in the store).
    interpreter_kept_responses: int = 10_000
    #: Where ``self`` mode's kernels run: ``local`` (the sandbox pool) or ``remote`` (a Jupyter
    #: Kernel/Enterprise Gateway at ``kernel_gateway_url``, token ``kernel_gateway_token``).
    interpreter_kernels: str = "local"
    kernel_gateway_url: str = ""
    kernel_gateway_token: str = ""
    #: Kernelspec the remote gateway starts (EG on Kubernetes: e.g. ``python_kubernetes``).
    kernel_gateway_kernel: str = "python3"
    #: The kernels' data directory: ``/mnt/data`` where the pod mounts it; empty: a directory
    #: per kernel under the kernel's working directory (a Kernel Gateway on one host).
    kernel_gateway_data_dir: str = ""
    #: Apply pending metadata-store migrations at start-up. Off (``--no-migrate``, for replicas
    #: started after ``cigate gateway migrate``): refuse to start unless the store is at exactly
    #: this version, and require a configured link secret (docs/deploy.md).
    migrate: bool = True
    #: A file holding the link secret (a mounted Secret); instead of ``link_secret``.
    link_secret_file: str = ""
    #: Several upstreams (issue 14): a TOML or JSON file listing them (docs/gateway.md,
    #: "Several upstreams"); parsed by :mod:`cigate.gateway.upstreams`. Empty: ``--upstream``.
    upstreams_file: str = ""
    #: Seconds an upstream that failed (connect error, 5xx, 429) gets no new work; doubled per
    #: failure in a row, up to 32 times this.
    upstream_down_seconds: float = 5.0
    #: How new work is spread over several upstreams: ``request`` (round robin) or ``tenant``
    #: (each tenant's new objects on its own home upstream, so they can be used together).
    upstream_balance: str = "request"

    def __post_init__(self) -> None:
        if self.upstream_auth not in _AUTH_MODES:
            raise ConfigurationError(
                f"--upstream-auth must be one of {', '.join(_AUTH_MODES)}, "
                f"not {self.upstream_auth!r}",
                hint=SETTINGS_HINT,
            )
        parse_allowed(self.allow_unscoped)
        for value, allowed, option in (
            (self.code_interpreter, _CI_MODES, "--code-interpreter"),
            (self.interpreter_api, _INTERPRETER_APIS, "--interpreter-api"),
        ):
            if value not in allowed:
                raise ConfigurationError(
                    f"{option} must be one of {', '.join(allowed)}, not {value!r}",
                    hint=SETTINGS_HINT,
                )
        if self.interpreter_upstream and not self.interpreter_upstream.startswith(
            ("http://", "https://")
        ):
            raise ConfigurationError(
                "CIGATE_GATEWAY_INTERPRETER_UPSTREAM must be an http(s) URL", hint=SETTINGS_HINT
            )
        if self.interpreter_upstream_auth not in ("", *_AUTH_MODES):
            raise ConfigurationError(
                f"CIGATE_GATEWAY_INTERPRETER_UPSTREAM_AUTH must be one of {', '.join(_AUTH_MODES)}",
                hint=SETTINGS_HINT,
            )
        if self.interpreter_kernels not in ("local", "remote"):
            raise ConfigurationError(
                "CIGATE_GATEWAY_INTERPRETER_KERNELS must be local or remote, "
                f"not {self.interpreter_kernels!r}",
                hint=SETTINGS_HINT,
            )
        if self.interpreter_kernels == "remote" and not (
            self.kernel_gateway_url.startswith(("http://", "https://"))
            and self.kernel_gateway_token
        ):
            raise ConfigurationError(
                "remote kernels need CIGATE_GATEWAY_KERNEL_GATEWAY_URL (http or https) and "
                "CIGATE_GATEWAY_KERNEL_GATEWAY_TOKEN",
                hint=SETTINGS_HINT,
            )
        if min(self.interpreter_tenant_containers, self.interpreter_max_containers) < 1:
            raise ConfigurationError(
                "interpreter container caps must be at least 1", hint=SETTINGS_HINT
            )
        if self.upstream and not self.upstream.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"--upstream must be an http(s) URL, not {self.upstream!r}", hint=SETTINGS_HINT
            )
        path = urlsplit(self.upstream).path
        if path.startswith("/api/") and not _PROJECT_PATH.fullmatch(path):
            raise ConfigurationError(
                f"--upstream {self.upstream!r} is not a Foundry project endpoint "
                "(https://RES.services.ai.azure.com/api/projects/PROJECT)",
                hint=SETTINGS_HINT,
            )
        for name, connections in (
            ("upstream", self.upstream_connections),
            ("harvest", self.harvest_connections),
        ):
            if connections < 1:
                raise ConfigurationError(
                    f"{name} connections must be at least 1", hint=SETTINGS_HINT
                )
        if self.harvest_concurrency < 1 or self.harvest_attempts < 1:
            raise ConfigurationError(
                "harvest concurrency and attempts must be at least 1", hint=SETTINGS_HINT
            )
        if (
            self.harvest_retry_delay < 0
            or self.harvest_retry_max_delay < self.harvest_retry_delay
            or self.harvest_retry_max_tries < 0
        ):
            raise ConfigurationError(
                "harvest retry delay must be at least 0 and at most the max delay, "
                "and max tries at least 0",
                hint=SETTINGS_HINT,
            )
        if not 0 <= self.metrics_port <= 65535 or (
            self.metrics_port and self.metrics_port == self.port
        ):
            raise ConfigurationError(
                f"--metrics-port {self.metrics_port} must be a port other than --port "
                "(1-65535; 0: metrics on the main port)",
                hint=SETTINGS_HINT,
            )
        if not self.worker_id:
            object.__setattr__(self, "worker_id", f"{socket.gethostname()}:{os.getpid()}")

    def require_upstream(self) -> None:
        """Fail loudly when the gateway is started without somewhere to forward to."""
        if not self.upstream:
            raise ConfigurationError(
                "no upstream configured",
                hint="Pass --upstream https://RESOURCE.openai.azure.com "
                "(or set CIGATE_GATEWAY_UPSTREAM).",
            )
        if self.upstream_auth == "key" and not self.upstream_key:
            raise ConfigurationError(
                "--upstream-auth key needs --upstream-key (CIGATE_GATEWAY_UPSTREAM_KEY)",
                hint="Or use --upstream-auth entra to authenticate with Microsoft Entra ID.",
            )

    @property
    def upstream_project(self) -> str | None:
        """The project's name when the upstream is a Foundry project endpoint, else None."""
        match = _PROJECT_PATH.fullmatch(urlsplit(self.upstream).path)
        return match.group(1) if match else None

    @property
    def entra_scope(self) -> str:
        """The scope of the upstream's Entra tokens (Foundry projects want ai.azure.com)."""
        if self.upstream_scope:
            return self.upstream_scope
        return FOUNDRY_SCOPE if self.upstream_project is not None else COGNITIVE_SCOPE

    @cached_property
    def allowed_unscoped(self) -> frozenset[str]:
        """The families named by ``allow_unscoped`` (``*`` for all)."""
        return parse_allowed(self.allow_unscoped)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite+aiosqlite:///{cigate_home() / 'gateway.db'}"

    @property
    def blobs_url(self) -> str:
        return self.blobs or str(cigate_home() / "blobs")

    @cached_property
    def self_hosted_models(self) -> frozenset[str]:
        """The models ``self`` mode applies to (empty: all)."""
        return frozenset(m.strip() for m in self.interpreter_models.split(",") if m.strip())

    def model_upstream(self) -> GatewaySettings:
        """These settings with the interpreter's model server as the upstream (itself when
        none is set apart)."""
        if not self.interpreter_upstream:
            return self
        return replace(
            self,
            upstream=self.interpreter_upstream,
            upstream_auth=self.interpreter_upstream_auth or self.upstream_auth,
            upstream_key=self.interpreter_upstream_key,
        )

    @property
    def interpreter_path(self) -> Path:
        return Path(self.interpreter_dir) if self.interpreter_dir else cigate_home() / "interpreter"

    @classmethod
    def from_env(cls, **overrides: Any) -> GatewaySettings:
        """Settings from ``CIGATE_GATEWAY_*`` variables, ``…_FILE`` credential files and the env
        file (:mod:`cigate.gateway.env`); explicit non-None ``overrides`` (CLI options) win."""
        from cigate.gateway.env import read_settings

        values = read_settings(cls)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
