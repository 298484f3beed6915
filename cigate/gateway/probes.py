"""The operator's endpoints: ``/readyz`` (readiness) and ``/metrics`` (Prometheus).

``/readyz`` is unauthenticated, for load balancers and orchestrators: it names the failing
part, never the error (which may carry host names); the gateway's log has the details. With
``--ready-check-upstream`` it also checks the upstream credential (a token can be obtained
and the upstream does not refuse it), so a gateway whose credential fails leaves rotation.

``/metrics`` is off unless ``--metrics`` (or ``--metrics-port``); with ``--metrics-token`` it
needs that bearer token. With ``--metrics-port N`` it is served only on that port's own listener,
which answers nothing else but ``/healthz`` (:class:`MetricsPortGate`), so the tenant-facing
port need not expose it. Its metrics carry no tenant name or id (see
:mod:`cigate.gateway.metrics`), but counts and latencies are still the operator's business:
expose it on an internal network or set a token (docs/gateway.md, "Metrics").
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cigate.exceptions import AccessDeniedError, BadInputError, CigateError
from cigate.gateway.context import Services, services
from cigate.gateway.errors import error_response
from cigate.gateway.metrics import REGISTRY, STORE_UP
from cigate.gateway.upstream import Upstream
from cigate.gateway.upstreams import Pool

__all__ = ["MetricsPortGate", "any_upstream", "metrics_endpoint", "readyz"]

log = logging.getLogger(__name__)

#: Seconds each readiness check may take before it counts as unavailable.
READY_TIMEOUT = 5.0
#: Seconds each store check may take during a scrape.
SCRAPE_TIMEOUT = 2.0


async def _check(name: str, check: Callable[[], Awaitable[None]], seconds: float) -> bool:
    try:
        await asyncio.wait_for(check(), seconds)
    except (CigateError, TimeoutError) as exc:
        log.warning("readiness: %s is not ready: %s", name, exc)
        ok = False
    else:
        ok = True
    if name != "upstream":
        STORE_UP.labels(name).set(1 if ok else 0)
    return ok


def _checks(svc: Services, upstream: bool) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    checks: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("database", svc.meta.check),
        ("blobs", svc.blobs.check),
    ]
    if upstream:
        checks.append(("upstream", functools.partial(any_upstream, svc.pool)))
    return checks


async def any_upstream(pool: Pool) -> None:
    """The credential check of every configured upstream, all at once (one that hangs must
    not use up the others' time); each result is the pool's health (a failing one gets no
    new work), and the gateway is ready while one of them passes."""

    async def one(name: str, member: Upstream) -> CigateError | None:
        try:
            # A little under the readiness budget: the pool hears every verdict before
            # /readyz gives up on the whole check.
            await asyncio.wait_for(member.check_credential(), READY_TIMEOUT * 0.9)
        except (CigateError, TimeoutError) as exc:
            error = exc if isinstance(exc, CigateError) else CigateError("timed out")
            log.warning("readiness: upstream %s is not ready: %s", name, error)
            pool.failed(name, "readiness")
            return error
        pool.succeeded(name)
        return None

    results = await asyncio.gather(*(one(n, m) for n, m in pool.members.items()))
    failures = [r for r in results if r is not None]
    if len(failures) == len(results):
        raise failures[0]


async def readyz(request: Request) -> Response:
    """Readiness: the stores answer (and, opted in, the upstream credential works); 503 else."""
    svc = services(request)
    named = _checks(svc, svc.settings.ready_check_upstream)
    passed = await asyncio.gather(*(_check(name, check, READY_TIMEOUT) for name, check in named))
    checks = {
        name: "ok" if ok else "unavailable" for (name, _), ok in zip(named, passed, strict=True)
    }
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the text exposition format; 404 unless enabled, 401 without the token."""
    svc = services(request)
    settings = svc.settings
    if not (settings.metrics or settings.metrics_port):
        raise BadInputError("Invalid URL (GET /metrics)", status=404)
    if settings.metrics_token:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected):
            raise AccessDeniedError(
                "Missing or wrong metrics token: send 'Authorization: Bearer TOKEN'.",
                hint="The token is the gateway's --metrics-token.",
                status=401,
            )
    for name, check in _checks(svc, upstream=False):
        await _check(name, check, SCRAPE_TIMEOUT)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


#: What the metrics listener answers; everything else there is a 404.
_METRICS_PORT_PATHS = frozenset({"/metrics", "/healthz"})


class MetricsPortGate:
    """With ``--metrics-port``: requests that arrived on that listener (the local port in
    the ASGI ``server`` of the connection) reach only ``/metrics`` and ``/healthz``; on every
    other listener ``/metrics`` is a 404 like any unknown path."""

    def __init__(self, app: ASGIApp, *, port: int) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.port and scope["type"] == "http":
            server = scope.get("server")
            if server is not None and server[1] == self.port:
                refused = scope["path"] not in _METRICS_PORT_PATHS
            else:
                refused = scope["path"] == "/metrics"
            if refused:
                answer = error_response(
                    404,
                    f"Invalid URL ({scope['method']} {scope['path'][:200]})",
                    type_="invalid_request_error",
                    code=None,
                    headers=None,
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
