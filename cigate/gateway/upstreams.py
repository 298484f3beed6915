"""Several upstreams: their configuration, their health, and which one gets new work.

An operator lists the upstream resources (regions, deployments) in a TOML or JSON file named
by ``CIGATE_GATEWAY_UPSTREAMS_FILE`` (a Kubernetes ConfigMap or Secret mounted as a file); keys
can stay out of it (``key_env``, ``key_file``). Without the file the single ``--upstream`` is
the list of one, named ``default``, and the gateway behaves exactly as it did before.

:class:`Pool` holds one :class:`~cigate.gateway.upstream.Upstream` per entry. Where a call goes
is :mod:`cigate.gateway.affinity`'s decision; the pool answers two questions for it: which
upstream a recorded name means (:meth:`Pool.holder`), and in which order new work tries the
upstreams serving a model (:meth:`Pool.candidates`): smooth weighted round robin over the
healthy ones, then the ones marked down. Round robin, not least-busy: a replica only sees its
own in-flight calls, so least-busy would chase a local picture of a shared load, while
round robin spreads every replica's new work by the configured weights whatever the others do.
Health is passive: a connect error, a timeout, a 5xx or a 429 marks an upstream down for a
back-off (doubled per failure in a row); an answer below 500 brings it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cigate.exceptions import BadInputError, ConfigurationError, UpstreamUnavailableError
from cigate.gateway import metrics
from cigate.gateway.settings import GatewaySettings, read_secret_file
from cigate.gateway.upstream import Upstream

__all__ = ["BALANCE_MODES", "DEFAULT_NAME", "Pool", "UpstreamConfig", "load_upstreams"]

log = logging.getLogger(__name__)

#: How new work is spread: per request (round robin), or per tenant (each tenant's home).
BALANCE_MODES = ("request", "tenant")
#: The name of the single ``--upstream``.
DEFAULT_NAME = "default"
#: Upstream names: short, lower case, safe as a metric label and in a log line.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_AUTH = ("key", "entra", "none")
_KEYS = frozenset(
    {"name", "url", "auth", "key", "key_env", "key_file", "scope", "models", "weight"}
)
#: Entries a file may list (each has its own connection pool).
MAX_UPSTREAMS = 32
#: Back-off doublings for an upstream failing again and again.
_MAX_DOUBLINGS = 5
_HINT = 'See "Several upstreams" in docs/gateway.md.'


@dataclass(frozen=True)
class UpstreamConfig:
    """One configured upstream."""

    name: str
    url: str
    auth: str = "key"
    key: str = field(default="", repr=False)
    #: Entra scope; empty: the one the URL implies.
    scope: str = ""
    #: Models/deployments it serves; empty: every model.
    models: frozenset[str] = frozenset()
    weight: int = 1

    def settings(self, base: GatewaySettings) -> GatewaySettings:
        """``base`` with this upstream in place of ``--upstream`` (its own client and key)."""
        if self.name == DEFAULT_NAME and not base.upstreams_file:
            return base
        return replace(
            base,
            upstream=self.url,
            upstream_auth=self.auth,
            upstream_key=self.key,
            upstream_scope=self.scope,
        )


def load_upstreams(settings: GatewaySettings) -> list[UpstreamConfig]:
    """The configured upstreams, checked; the first one is the default.

    Raises :class:`ConfigurationError` with the entry and the fix for anything wrong.
    """
    if settings.upstream_balance not in BALANCE_MODES:
        raise ConfigurationError(
            f"CIGATE_GATEWAY_UPSTREAM_BALANCE must be one of {', '.join(BALANCE_MODES)}, "
            f"not {settings.upstream_balance!r}",
            hint=_HINT,
        )
    if not settings.upstreams_file:
        settings.require_upstream()
        return [
            UpstreamConfig(
                DEFAULT_NAME,
                settings.upstream,
                settings.upstream_auth,
                settings.upstream_key,
                settings.upstream_scope,
            )
        ]
    if settings.upstream:
        raise ConfigurationError(
            "set either --upstream or CIGATE_GATEWAY_UPSTREAMS_FILE, not both", hint=_HINT
        )
    if settings.code_interpreter == "self":
        raise ConfigurationError(
            "--code-interpreter self runs with one upstream; CIGATE_GATEWAY_UPSTREAMS_FILE "
            "lists several",
            hint=_HINT,
        )
    path = Path(settings.upstreams_file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"cannot read the upstreams file {path}: {exc}", hint=_HINT
        ) from exc
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(
            f"the upstreams file {path} is not valid: {exc}", hint=_HINT
        ) from exc
    entries = data.get("upstreams") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(
            f"the upstreams file {path} lists no upstreams (a non-empty 'upstreams' list, "
            "[[upstreams]] tables in TOML)",
            hint=_HINT,
        )
    if len(entries) > MAX_UPSTREAMS:
        raise ConfigurationError(
            f"at most {MAX_UPSTREAMS} upstreams, not {len(entries)}", hint=_HINT
        )
    configs = [_entry(i, entry, path.parent) for i, entry in enumerate(entries)]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"upstream names must be unique: {names}", hint=_HINT)
    return configs


def _entry(index: int, entry: Any, base: Path) -> UpstreamConfig:
    where = f"upstreams[{index}]"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be a table/object", hint=_HINT)
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown setting(s) {unknown}; known: {sorted(_KEYS)}", hint=_HINT
        )
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{where}: name must be 1-40 characters a-z, 0-9, '_' or '-', not {name!r}",
            hint=_HINT,
        )
    where = f"upstream {name!r}"
    url, auth, scope = entry.get("url"), entry.get("auth", "key"), entry.get("scope", "")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{where}: url must be an http(s) URL, not {url!r}", hint=_HINT)
    if "/api/projects/" in url:
        raise ConfigurationError(
            f"{where}: a Foundry project endpoint can only be the single --upstream", hint=_HINT
        )
    if auth not in _AUTH:
        raise ConfigurationError(f"{where}: auth must be one of {_AUTH}, not {auth!r}", hint=_HINT)
    if not isinstance(scope, str):
        raise ConfigurationError(f"{where}: scope must be a string", hint=_HINT)
    key = _key(where, entry, base) if auth == "key" else ""
    models = entry.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigurationError(f"{where}: models must be a list of names", hint=_HINT)
    weight = entry.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 1000:
        raise ConfigurationError(f"{where}: weight must be an integer 1-1000", hint=_HINT)
    return UpstreamConfig(name, url, auth, key, scope, frozenset(models), weight)


def _key(where: str, entry: dict[str, Any], base: Path) -> str:
    """The API key of an ``auth = "key"`` entry, from exactly one of its three sources."""
    given = [k for k in ("key", "key_env", "key_file") if k in entry]
    if len(given) != 1:
        raise ConfigurationError(
            f"{where}: auth 'key' needs exactly one of key, key_env (a variable's name) or "
            f"key_file (a mounted Secret), not {given or 'none'}",
            hint=_HINT,
        )
    source, value = given[0], entry[given[0]]
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: {source} must be a non-empty string", hint=_HINT)
    if source == "key_env":
        key = os.environ.get(value, "")
        if not key:
            raise ConfigurationError(f"{where}: the variable {value} is not set", hint=_HINT)
        return key
    if source == "key_file":
        key = read_secret_file(base / value, f"key_file {value!r} of {where}", hint=_HINT)
        if not key:
            raise ConfigurationError(f"{where}: key_file {value} is empty", hint=_HINT)
        return key
    return value


@dataclass
class _Health:
    down_until: float = 0.0
    failures: int = 0
    #: Smooth weighted round robin's running weight.
    current: int = 0


class Pool:
    """The configured upstreams of one gateway process and their passive health."""

    def __init__(
        self,
        configs: Sequence[UpstreamConfig],
        members: Sequence[Upstream],
        *,
        down_seconds: float = 5.0,
    ) -> None:
        self.configs = {c.name: c for c in configs}
        self.members = {c.name: m for c, m in zip(configs, members, strict=True)}
        self.default = members[0]
        self.down_seconds = down_seconds
        self._health = {c.name: _Health() for c in configs}
        for config in configs:
            metrics.UPSTREAM_UP.labels(config.name).set(1)

    @property
    def several(self) -> bool:
        return len(self.members) > 1

    def holder(self, recorded: str | None, what: str) -> Upstream:
        """The upstream a recorded name means (``None``: the default one, which holds every
        object recorded before there were several). ``what`` names the object for the error
        when the name is no longer configured (503: never a guess at another upstream)."""
        if recorded is None:
            return self.default
        if recorded in self.members:
            return self.members[recorded]
        if not self.several:
            return self.default  # one upstream: nothing else it could be
        if "://" in recorded:  # a response row from before several upstreams held the URL
            for name, config in self.configs.items():
                if config.url.rstrip("/") == recorded.rstrip("/"):
                    return self.members[name]
            return self.default
        raise UpstreamUnavailableError(
            f"The upstream '{recorded[:64]}' that holds {what} is not configured on this "
            "gateway any more; the call is not sent to another upstream.",
            status=503,
        )

    def candidates(self, model: str | None, home_of: str | None = None) -> list[Upstream]:
        """The upstreams new work for ``model`` may go to, in the order to try them (work
        that names no model, such as a new container or an upload, may go to any).

        Healthy ones first: the next by smooth weighted round robin, or, with ``home_of``
        (a tenant id), that tenant's own order (weighted rendezvous hashing: the same for
        every replica, and only the tenants of an upstream that goes move); then the ones
        marked down, soonest back first (a last resort when every one is down).
        """
        serving = [
            name
            for name, config in self.configs.items()
            if model is None or not config.models or model in config.models
        ]
        if not serving:
            raise BadInputError(
                f"The model '{str(model)[:100]}' is not served by any upstream of this gateway.",
                status=404,
            )
        now = time.monotonic()
        healthy = [n for n in serving if self._health[n].down_until <= now]
        down = sorted(
            (n for n in serving if n not in healthy), key=lambda n: self._health[n].down_until
        )
        if home_of is not None:
            healthy.sort(key=lambda n: self._score(home_of, n), reverse=True)
        elif healthy:
            first = self._next(healthy)
            healthy.remove(first)
            healthy.insert(0, first)
        return [self.members[n] for n in (*healthy, *down)]

    def _score(self, key: str, name: str) -> float:
        """Weighted rendezvous hashing's score of upstream ``name`` for ``key``."""
        digest = hashlib.sha256(f"{key}\x00{name}".encode()).digest()
        unit = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)  # in (0, 1)
        return -self.configs[name].weight / math.log(unit)

    def _next(self, names: list[str]) -> str:
        """Smooth weighted round robin (nginx's): deterministic, spreads by weight."""
        total = 0
        best = names[0]
        for name in names:
            health = self._health[name]
            health.current += self.configs[name].weight
            total += self.configs[name].weight
            if health.current > self._health[best].current:
                best = name
        self._health[best].current -= total
        return best

    def failed(self, name: str, reason: str, retry_after: float | None = None) -> None:
        """A connect error, timeout, 5xx or 429 from ``name``: no new work for a back-off."""
        health = self._health[name]
        health.failures += 1
        pause = self.down_seconds * 2.0 ** min(health.failures - 1, _MAX_DOUBLINGS)
        if retry_after is not None:
            pause = min(max(pause, retry_after), self.down_seconds * 2.0**_MAX_DOUBLINGS)
        health.down_until = time.monotonic() + pause
        metrics.UPSTREAM_UP.labels(name).set(0)
        metrics.UPSTREAM_FAILURES.labels(name, reason).inc()
        if self.several:  # with one upstream there is nothing to move new work to
            log.warning("upstream %s marked down for %.1f s: %s", name, pause, reason)

    def succeeded(self, name: str) -> None:
        health = self._health[name]
        if health.failures or health.down_until:
            if self.several:
                log.info("upstream %s answers again", name)
            health.failures, health.down_until = 0, 0.0
            metrics.UPSTREAM_UP.labels(name).set(1)

    def is_down(self, name: str) -> bool:
        return self._health[name].down_until > time.monotonic()

    async def aclose(self) -> None:
        for member in self.members.values():
            await member.aclose()
