"""OpenTelemetry traces, configured by the standard ``OTEL_*`` variables and off without them.

:func:`provider_from_env` builds a tracer provider only when an exporter is asked for
(``OTEL_TRACES_EXPORTER=otlp|console``, or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``);
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off. The SDK itself reads
the rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``). Without a provider no span object is made at all.

The request span is opened by :mod:`cigate.gateway.observe`, which also sets the app's tracer
in :data:`TRACER` for the request's context; :func:`span` opens a child there (the upstream
call, a harvest copy) and does nothing when no tracer is set. Work a request starts in the
background inherits its context, so a file copy is a child of the request that saw the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import AttributeValue

from cigate.exceptions import ConfigurationError

__all__ = ["TRACER", "provider_from_env", "span"]

#: The tracer of the app serving the current request or background task (None: tracing off).
TRACER: ContextVar[Tracer | None] = ContextVar("cigate_tracer", default=None)
_HINT = "See 'Traces' in docs/gateway.md."


def provider_from_env(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider exporting where ``OTEL_*`` says, or None when traces are not asked for."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    exporters = [
        _exporter(n.strip(), env) for n in names.split(",") if n.strip() not in ("", "none")
    ]
    if not exporters:
        return None
    attributes = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes[SERVICE_NAME] = "cigate-gateway"
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console or none)", hint=_HINT
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTLP protocol {protocol!r} is not supported: the gateway exports http/protobuf",
            hint="Set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (port 4318). " + _HINT,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


@contextlib.contextmanager
def span(name: str, **attributes: AttributeValue) -> Iterator[Span | None]:
    """A child span of the current one when tracing is on; nothing (None) when it is off."""
    tracer = TRACER.get()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current
