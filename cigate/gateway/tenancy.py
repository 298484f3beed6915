"""Default deny: every request the gateway forwards is classified before it leaves.

The upstream account is shared by every tenant, so a call the gateway forwards blindly is a
call on every tenant's objects. Each path under an API prefix is one of:

* **scoped**: the family's objects are recorded per tenant and every verb checks ownership
  before the upstream is contacted; listings are filtered (:mod:`cigate.gateway.scoped`,
  :mod:`cigate.gateway.assistants`, :mod:`cigate.gateway.proxy`). Only those routes forward a
  scoped family: a call on one that no scoped route takes (``PUT /containers``) is a 404;
* **stateless**: the exact calls in :data:`FAMILIES` that keep nothing upstream another
  tenant could read back or change (chat completions, embeddings, models, …); forwarded;
* **allowed**: a family the operator named in ``CIGATE_GATEWAY_ALLOW_UNSCOPED`` (``*``: every
  family that is not scoped); forwarded for every tenant, unscoped: the operator's choice;
* **refused**: everything else, including families this table has never heard of (403 naming
  the setting; nothing goes upstream).

:data:`FAMILIES` and :data:`OWN_ROUTES` are the one table: the catch-all reads it per call,
:func:`check_routes` makes ``create_app`` fail for a route it does not classify, and the
isolation tests generate their cases from it and from the app's routes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from starlette.routing import BaseRoute, Route

from cigate.exceptions import AccessDeniedError, BadInputError, ConfigurationError
from cigate.gateway.edge import ApiPath, parse_api_path

__all__ = [
    "ALLOW_SETTING",
    "FAMILIES",
    "OWN_ROUTES",
    "SCOPED",
    "Family",
    "Verdict",
    "check_routes",
    "classify",
    "require_forwardable",
]

ALLOW_SETTING = "CIGATE_GATEWAY_ALLOW_UNSCOPED"
Verdict = Literal["scoped", "stateless", "allowed", "refused"]


@dataclass(frozen=True)
class Family:
    """The calls under one first path segment after the API prefix."""

    name: str
    #: What the family holds and how the gateway treats it (the docs' table).
    what: str
    #: Tenant-scoped: only the scoped routes forward it, each checking ownership.
    scoped: bool = False
    #: ``(method, pattern)`` of stateless calls; ``*`` is one segment (HEAD counts as GET).
    stateless: tuple[tuple[str, str], ...] = ()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("responses", "responses, input items (the responses table)", scoped=True),
        Family("containers", "containers and container files (owners table)", scoped=True),
        Family("files", "Files-API files (owners table; store first)", scoped=True),
        Family("assistants", "Assistants (owners table)", scoped=True),
        Family("threads", "threads, messages, runs, steps (owners table)", scoped=True),
        Family(
            "chat",
            "chat completions; stored ones (GET/POST/DELETE chat/completions/…) are unscoped",
            stateless=(("POST", "chat/completions"),),
        ),
        Family("completions", "text completions", stateless=(("POST", "completions"),)),
        Family("embeddings", "embeddings", stateless=(("POST", "embeddings"),)),
        Family("moderations", "moderations", stateless=(("POST", "moderations"),)),
        Family(
            "audio",
            "speech and transcription",
            stateless=tuple(
                ("POST", f"audio/{op}") for op in ("transcriptions", "translations", "speech")
            ),
        ),
        Family(
            "images",
            "image generation",
            stateless=tuple(
                ("POST", f"images/{op}") for op in ("generations", "edits", "variations")
            ),
        ),
        Family(
            "models",
            "model listing; deleting a fine-tuned model is unscoped",
            stateless=(("GET", "models"), ("GET", "models/*")),
        ),
        Family(
            "deployments",
            "Azure's deployment-scoped stateless calls",
            stateless=tuple(
                ("POST", f"deployments/*/{op}")
                for op in (
                    "chat/completions",
                    "completions",
                    "embeddings",
                    "audio/transcriptions",
                    "audio/translations",
                    "audio/speech",
                    "images/generations",
                )
            ),
        ),
        Family("vector_stores", "vector stores and their files: unscoped"),
        Family("batches", "batches: unscoped"),
        Family("fine_tuning", "fine-tuning jobs: unscoped"),
        Family("uploads", "multipart uploads: unscoped"),
        Family("evals", "evals: unscoped"),
        Family("conversations", "conversations and their items (owners table)", scoped=True),
        Family(
            "agents", "Foundry agents v2 and their versions, by name (owners table)", scoped=True
        ),
        Family("realtime", "realtime sessions: unscoped"),
    )
}
SCOPED = frozenset(name for name, family in FAMILIES.items() if family.scoped)

#: The gateway's own endpoints (outside the API prefixes), never forwarded, and who may call
#: them: ``public`` (no key), ``link`` (a signed URL is the credential), ``tenant`` (a gateway
#: key; every id is looked up in the caller's tenant only).
OWN_ROUTES: dict[str, Literal["public", "link", "tenant"]] = {
    "/healthz": "public",
    "/readyz": "public",
    "/metrics": "public",  # off unless --metrics; --metrics-token guards it (probes.py)
    "/links/{link_id}": "link",
    "/audit": "tenant",
    "/files": "tenant",
    "/ui": "public",  # the web page and its assets hold no data (webpage.py)
    "/ui/app.js": "public",
    "/ui/app.css": "public",
    "/files/{file_id}": "tenant",
    "/files/{file_id}/content": "tenant",
    "/files/{file_id}/links": "tenant",
    "/files/{file_id}/links/{link_id}": "tenant",
    "/responses/{response_id}/files": "tenant",
    "/responses/{response_id}/files/by-path/{path:path}": "tenant",
}
#: The catch-all's path under each prefix: it classifies every call with :func:`classify`.
CATCH_ALL = "{rest:path}"


def _folded(segment: str) -> str:
    """How a case-insensitive, Unicode-folding upstream router may read a segment."""
    return unicodedata.normalize("NFKC", segment).casefold()


def _matches(pattern: str, segments: tuple[str, ...]) -> bool:
    parts = pattern.split("/")
    return len(parts) == len(segments) and all(
        p in ("*", s) for p, s in zip(parts, segments, strict=True)
    )


def classify(method: str, api: ApiPath, allowed: frozenset[str]) -> Verdict:
    """What the gateway may do with ``method`` on ``api`` (see the module docstring)."""
    if _folded(api.family) in SCOPED:
        return "scoped"
    family = FAMILIES.get(api.family)
    verb = "GET" if method == "HEAD" else method
    if family is not None and any(
        m == verb and _matches(p, api.segments) for m, p in family.stateless
    ):
        return "stateless"
    if "*" in allowed or api.family in allowed:
        return "allowed"
    return "refused"


def require_forwardable(method: str, api: ApiPath, allowed: frozenset[str]) -> None:
    """Raise unless the catch-all may forward this call (stateless or allowed)."""
    verdict = classify(method, api, allowed)
    if verdict in ("stateless", "allowed"):
        return
    where = f"{method} {api.prefix}/{api.rest}"
    if verdict == "scoped":
        raise BadInputError(
            f"Invalid URL ({where}): the gateway has no tenant-scoped route for this call.",
            status=404,
        )
    known = api.family in FAMILIES
    raise AccessDeniedError(
        f"{method} {api.prefix}/{api.family or ''}… is "
        + ("not scoped per tenant" if known else "unknown to")
        + f" this gateway, so it is refused; its operator may allow it for every tenant "
        f"with {ALLOW_SETTING}={api.family or '*'}.",
        hint="Containers, files, responses, assistants, threads, conversations and agents "
        "are tenant-scoped; "
        "ask the operator for anything else.",
        status=403,
    )


def check_routes(routes: Iterable[BaseRoute]) -> None:
    """Fail loudly (at start-up) for a route this table does not classify.

    Under an API prefix a route must serve a scoped family (it checks ownership) or be the
    catch-all (which classifies each call); outside, it must be one of :data:`OWN_ROUTES`.
    """
    for route in routes:
        if not isinstance(route, Route):
            raise ConfigurationError(f"unclassified gateway route {route!r}")
        api = parse_api_path(route.path)
        if api is None:
            if route.path not in OWN_ROUTES:
                raise ConfigurationError(
                    f"gateway route {route.path} is not in tenancy.OWN_ROUTES",
                    hint="Classify every new route in cigate/gateway/tenancy.py.",
                )
        elif api.rest != CATCH_ALL and api.family not in SCOPED:
            raise ConfigurationError(
                f"gateway route {route.path} forwards family {api.family!r}, which is not "
                "tenant-scoped in tenancy.FAMILIES",
                hint="Classify every new route in cigate/gateway/tenancy.py.",
            )


def parse_allowed(raw: str) -> frozenset[str]:
    """``CIGATE_GATEWAY_ALLOW_UNSCOPED``: comma-separated family names, or ``*``."""
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if name != "*" and not all(c.isascii() and (c.isalnum() or c in "_-.") for c in name):
            raise ConfigurationError(f"{ALLOW_SETTING}: {name!r} is not a path family name")
        if _folded(name) in SCOPED:
            raise ConfigurationError(
                f"{ALLOW_SETTING}: {name!r} is tenant-scoped and cannot be forwarded unscoped"
            )
    return names
