"""Where one call goes: the upstream holding what it names, or a healthy one for new work.

Every forwarding handler asks :func:`destination` (after its ownership checks) and sends
through the answer, so the rule lives in one place:

* a call that names objects (in its path: ``containers/{id}``, ``responses/{id}``, ``threads/
  {id}`` …; in its JSON body: a container in ``tools``, ``previous_response_id``, ``file_ids``,
  ``conversation``, ``assistant_id`` …) goes to the upstream recorded for them in the metadata
  store (:meth:`~cigate.storage.metadata_owners.OwnerQueries.placements`), **only** there,
  also when it is down: then the answer is a 502 saying which upstream holds what, never a
  failover that would reach a different resource (a 404 at best, another tenant's object of
  the same id at worst). Objects recorded before there were several upstreams, and objects
  the store never recorded, belong to the first (default) upstream;
* a call naming objects of two upstreams is refused with a 400 before anything is sent;
* new work (nothing named: a new response with ``container: {"type": "auto"}``, a new
  container, an upload, a stateless call) goes to a healthy upstream serving its model
  (:meth:`~cigate.gateway.upstreams.Pool.candidates`): the next by round robin, or the
  tenant's home upstream with ``CIGATE_GATEWAY_UPSTREAM_BALANCE=tenant`` and always for new
  assistants, threads and uploads (a run must find them on one upstream); it fails over to
  the next one only while no byte of the answer was relayed and the request can be sent
  again: a body held in memory, or a streamed upload none of which was read yet (a
  connection refused);
* calls of families the gateway forwards without recording their objects (an operator's
  ``CIGATE_GATEWAY_ALLOW_UNSCOPED``: vector stores, batches …) always go to the default
  upstream, which is where their objects are then always made.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
from starlette.requests import Request

from cigate.exceptions import BadInputError, UpstreamUnavailableError
from cigate.gateway import body_refs, metrics
from cigate.gateway.context import Services
from cigate.gateway.edge import ApiPath, api_path
from cigate.gateway.logs import UPSTREAM_STATE_KEY
from cigate.gateway.tenancy import SCOPED, classify
from cigate.gateway.upstream import Upstream, UpstreamCredentialError
from cigate.gateway.upstreams import Pool
from cigate.harvest.classify import saturated
from cigate.harvest.retry import parse_retry_after
from cigate.storage.metadata_owners import PlacedKind

__all__ = ["Destination", "destination", "references"]

log = logging.getLogger(__name__)

#: The object kind an id right after each family names (``containers/{id}`` …).
_PATH_KINDS: dict[str, PlacedKind] = {
    "containers": "container",
    "files": "file",
    "responses": "response",
    "assistants": "assistant",
    "threads": "thread",
    "conversations": "conversation",
    "agents": "agent",
}
#: Families whose new objects go to the tenant's home upstream whatever the balance mode: a
#: run joins an assistant and a thread that were created separately, and an uploaded file is
#: made to be named later (by an assistant, a thread, a container, a response).
_HOMED = frozenset({"assistants", "threads", "files"})


@dataclass
class Destination:
    """The upstream(s) one call may go to, in order; ``pinned_by`` names what pins it."""

    pool: Pool
    candidates: Sequence[Upstream]
    pinned_by: str | None = None
    chosen: Upstream | None = None
    #: The request's ``scope["state"]``: the access line names the upstream that answered.
    state: dict[str, Any] | None = None

    @property
    def upstream(self) -> Upstream:
        """The upstream that answered (before sending: the first candidate)."""
        return self.chosen or self.candidates[0]

    async def send(
        self,
        method: str,
        api: ApiPath,
        *,
        content: bytes | AsyncIterator[bytes] | None = None,
        **kwargs: Any,
    ) -> httpx2.Response:
        """Send to the first candidate; new work moves on to the next one on a connect error,
        timeout, 5xx or 429 while the request can still be sent again (nothing relayed yet)."""
        tracked = _Tracked(content) if isinstance(content, AsyncIterator) else None
        #: The first candidate that had no free connection: when the rest are down too, that
        #: is the answer (503, try again in a second), not the last one's 502.
        busy: UpstreamUnavailableError | None = None
        for i, up in enumerate(self.candidates):
            last = i == len(self.candidates) - 1
            body = tracked.stream() if tracked is not None else content
            try:
                url = up.url(api.form, api.segments)
                response = await up.send(method, url, content=body, **kwargs)
            except UpstreamUnavailableError as exc:
                metrics.UPSTREAM_REQUESTS.labels(up.name, "error").inc()
                if not saturated(exc):  # new work still moves on, the upstream stays up
                    self.pool.failed(up.name, "unreachable")
                elif busy is None:
                    busy = exc
                if self.pinned_by is not None:
                    raise self._held_elsewhere(up, exc) from exc
                if last or (tracked is not None and tracked.started):
                    if busy is not None and busy is not exc:
                        raise busy from busy.__cause__  # still this process's own limit
                    raise
                log.warning("new work fails over from upstream %s: %s", up.name, exc.message)
                continue
            status = response.status_code
            metrics.UPSTREAM_REQUESTS.labels(up.name, metrics.status_label(status)).inc()
            if status >= 500 or status == 429:
                self.pool.failed(up.name, f"status {status}", parse_retry_after(response.headers))
                again = self.pinned_by is None and not last
                if again and (tracked is None or not tracked.started):
                    await response.aclose()
                    log.warning("new work fails over from upstream %s: status %d", up.name, status)
                    continue
            else:
                self.pool.succeeded(up.name)
            self.chosen = up
            if self.state is not None:
                self.state[UPSTREAM_STATE_KEY] = up.name
            return response
        raise AssertionError("unreachable")  # pragma: no cover - the last one returns or raises

    def _held_elsewhere(self, up: Upstream, exc: UpstreamUnavailableError) -> Exception:
        if isinstance(exc, UpstreamCredentialError):
            return exc  # the credential alarm's own 502 (already logged with its fix)
        if saturated(exc):
            return exc  # this process's connection cap, not the upstream: 503, Retry-After
        return UpstreamUnavailableError(
            f"The upstream '{up.name}' that holds {self.pinned_by} is unavailable "
            f"({exc.message}); calls about it are never sent to another upstream. Try again "
            "when it is back.",
            status=exc.status if exc.status in (502, 503, 504) else 502,
        )


class _Tracked:
    """A streamed request body that can tell whether any of it was read (then it cannot be
    sent to another upstream)."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self.source = source
        self.started = False

    async def stream(self) -> AsyncIterator[bytes]:
        async for chunk in self.source:
            self.started = True
            yield chunk


async def references(svc: Services, request: Request) -> list[tuple[PlacedKind, str]]:
    """The objects a call names, in its path and in its JSON body."""
    api = api_path(request)
    refs: list[tuple[PlacedKind, str]] = []
    kind = _PATH_KINDS.get(api.family)
    if kind is not None and len(api.segments) > 1 and api.rest != "threads/runs":
        refs.append((kind, api.segments[1]))
    op = body_refs.operation(request.method, request.scope["path"])
    if op is None or request.headers.get("content-type", "").lower().startswith("multipart/"):
        return refs
    body = await body_refs.json_body(request, svc.settings.max_json_body)
    if not isinstance(body, dict):
        return refs
    refs += [("file", f) for group in body_refs.extract(op, body) for f in group.ids]
    if op == "responses":
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else []:
            container = tool.get("container") if isinstance(tool, dict) else None
            if isinstance(container, str) and container:
                refs.append(("container", container))
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            refs.append(("response", previous))
        conversation = body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if isinstance(conversation, str) and conversation:
            refs.append(("conversation", conversation))
        for key in ("agent_reference", "agent"):
            reference = body.get(key)
            name = reference.get("name") if isinstance(reference, dict) else None
            if isinstance(name, str) and name:
                refs.append(("agent", name))
    if op in ("runs.create", "threads.create_and_run"):
        assistant = body.get("assistant_id")
        if isinstance(assistant, str) and assistant:
            refs.append(("assistant", assistant))
    return refs


async def destination(svc: Services, request: Request) -> Destination:
    """Where this call goes (see the module docstring); raises the 400 for mixed upstreams."""
    found = await _destination(svc, request)
    found.state = request.scope.setdefault("state", {})
    return found


async def _destination(svc: Services, request: Request) -> Destination:
    pool = svc.pool
    if not pool.several:  # one upstream: nothing to decide, nothing to look up
        return Destination(pool, [pool.default])
    refs = await references(svc, request)
    found = await svc.meta.placements(refs) if refs else {}
    holders: dict[str, list[str]] = {}
    for kind, uid in refs:
        what = f"{kind} '{uid[:200]}'"
        holders.setdefault(pool.holder(found.get((kind, uid)), what).name, []).append(what)
    if len(holders) > 1:
        named = "; ".join(f"{', '.join(whats[:3])} on '{name}'" for name, whats in holders.items())
        raise BadInputError(
            f"This request names objects held by different upstreams ({named}); one request "
            "can only use objects of one upstream.",
            status=400,
        )
    if holders:
        name, whats = next(iter(holders.items()))
        return Destination(pool, [pool.members[name]], pinned_by=whats[0])
    api = api_path(request)
    family = api.family
    if family not in SCOPED:  # every family of _PATH_KINDS is scoped (recorded)
        verdict = classify(request.method, api, svc.settings.allowed_unscoped)
        if verdict != "stateless":
            # Objects of families the gateway does not record live on the default upstream.
            return Destination(pool, [pool.default], pinned_by=f"every {family} object")
    home = family in _HOMED or svc.settings.upstream_balance == "tenant"
    tenant = await svc.tenants.tenant_id(request) if home else None
    return Destination(pool, pool.candidates(await _model(svc, request), home_of=tenant))


async def _model(svc: Services, request: Request) -> str | None:
    """The model new work asks for (it goes to an upstream serving it): the deployment of an
    Azure ``deployments/{name}/…`` call, else the ``model`` of a JSON request body."""
    api = api_path(request)
    if api.family == "deployments" and len(api.segments) > 1:
        return api.segments[1]
    if request.method != "POST" or not request.headers.get("content-type", "").lower().startswith(
        "application/json"
    ):
        return None
    body = await body_refs.json_body(request, svc.settings.max_json_body)
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None
