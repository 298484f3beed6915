"""The gateway's Prometheus metrics (``cigate_*``) and the ``GET /metrics`` endpoint.

Every metric lives in one registry of the process (:data:`REGISTRY`, not the client
library's global one, so importing the gateway registers nothing elsewhere). Labels are
chosen so that no caller can grow their number: a request is counted under its route
*template* (``/files/{file_id}``, never the path it asked for), its method folded to the
known ones (``OTHER`` for the rest) and its status; nothing carries a tenant name or id,
a file id or a path. ``/metrics`` (:mod:`cigate.gateway.probes`) is served only when
``--metrics`` is on, and behind ``--metrics-token`` when one is set.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "REGISTRY",
    "SCOPE",
    "harvest_route",
    "method_label",
    "route_label",
    "status_label",
]

REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: Seconds: from a fast cached key check to a long stream or download.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

REQUESTS = Counter(
    "cigate_requests",
    "Requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "cigate_request_duration_seconds",
    "Time from a request's arrival to the last byte of its answer, by route template.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "cigate_upstream_duration_seconds",
    "Time from sending a request upstream to its response headers, by method, status "
    "('error': no response) and route: the gateway route template a forwarded call answers, "
    "or 'harvest ' and the upstream path template of a harvest download or listing.",
    ["method", "status", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_AUTH_FAILURES = Counter(
    "cigate_upstream_auth_failures",
    "Upstream calls that failed on the gateway's own credential: 'rejected' (the upstream "
    "answered 401/403) or 'credential' (no token could be obtained).",
    ["reason"],
    registry=REGISTRY,
)
UPSTREAM_REQUESTS = Counter(
    "cigate_upstream_requests",
    "Calls sent to each configured upstream (label: its configured name), by status "
    "('error': no response).",
    ["upstream", "status"],
    registry=REGISTRY,
)
UPSTREAM_FAILURES = Counter(
    "cigate_upstream_failures",
    "Failures that marked a configured upstream down (connect error, timeout, 5xx, 429).",
    ["upstream", "reason"],
    registry=REGISTRY,
)
UPSTREAM_UP = Gauge(
    "cigate_upstream_up",
    "1 while a configured upstream takes new work, 0 while it is marked down.",
    ["upstream"],
    registry=REGISTRY,
)
SSE_EVENTS = Counter(
    "cigate_sse_events_relayed",
    "Server-sent events of Responses streams relayed to clients.",
    registry=REGISTRY,
)
FILES_HARVESTED = Counter(
    "cigate_files_harvested",
    "Files copied into the gateway's storage and verified.",
    registry=REGISTRY,
)
FILES_FAILED = Counter(
    "cigate_files_failed",
    "File copies recorded as failed, by the error's kind (e.g. container_expired, "
    "upstream_unavailable, integrity).",
    ["reason"],
    registry=REGISTRY,
)
BYTES_STORED = Counter(
    "cigate_bytes_stored",
    "Bytes of files copied into the blob store.",
    registry=REGISTRY,
)
BYTES_SERVED = Counter(
    "cigate_bytes_served",
    "Bytes of stored files sent to clients (downloads and signed links).",
    registry=REGISTRY,
)
HARVEST_LAG = Histogram(
    "cigate_harvest_lag_seconds",
    "Time from a file's first sighting to its bytes stored.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
STORE_UP = Gauge(
    "cigate_store_up",
    "1 when the store answered its last check (readiness or scrape), 0 otherwise.",
    ["store"],
    registry=REGISTRY,
)

#: The ASGI scope of the request being answered (set by :mod:`cigate.gateway.observe`), so an
#: upstream call is labelled with the route template it serves.
SCOPE: ContextVar[MutableMapping[str, Any] | None] = ContextVar("cigate_scope", default=None)
#: The words of the upstream paths the harvest core and the sweep ask; any other segment is an
#: id.
_HARVEST_WORDS = frozenset({"containers", "files", "content", "responses", "models"})

#: Methods counted under their own name; any other (a client may send any token) is OTHER.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in _METHODS else "OTHER"


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def route_label(scope: MutableMapping[str, Any]) -> str:
    """The template of the route that answered (``unmatched`` when none did: an edge
    refusal or an unknown path), so label values are bounded by the app's routes."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def harvest_route(path_segments: list[str]) -> str:
    """``harvest /containers/{id}/files/{id}/content``: a harvest call's upstream path with
    every id replaced (its shapes are the harvest core's own, so the values stay few)."""
    if len(path_segments) > 5:
        return "harvest other"
    return "harvest /" + "/".join(s if s in _HARVEST_WORDS else "{id}" for s in path_segments)
