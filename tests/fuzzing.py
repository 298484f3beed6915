"""Generated hostile requests for both apps' fuzz tests: from the OpenAPI description and beyond.

Three sources, all deterministic (``derandomize=True``, fixed ``max_examples``) so CI replays
the same inputs:

* :func:`schema_cases`: ``schemathesis`` cases of a JSON operation of the OpenAPI description
  that ships with cigate (``cigate.testing.schema.spec_path()``), valid (``positive``) and
  schema-violating (``negative``) bodies and query strings, with the test's real path ids;
* :func:`hostile_bodies`: bytes built from the operation's own field names (read from the same
  description) holding hostile values: tokens that are not JSON or break a rule of
  :mod:`cigate.web.bodies` (``NaN``, ``1e999``, 70-level nesting, lone surrogates, invalid
  UTF-8, duplicate names, 5,000-digit numbers) spliced anywhere into otherwise normal JSON,
  plus raw random bytes;
* :func:`hostile_queries` and :func:`hostile_header_values` for query strings and headers.

``FUZZ`` holds the hypothesis settings; ``Tally`` counts what was sent and what came back.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cigate.testing.schema import spec_path
from tests.hostile import assert_error_shape

__all__ = [
    "FUZZ",
    "JSON_OPERATIONS",
    "Tally",
    "hostile_bodies",
    "hostile_header_values",
    "hostile_queries",
    "schema_cases",
]


def fuzz_settings(examples: int) -> Any:
    """Fixed count, fixed seed, no example database, no deadline (the machine is shared)."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


FUZZ = fuzz_settings

#: The JSON operations of the description that both apps serve, by their path template
#: (``{c}``-style ids are the test's own objects; see the ``World`` of each test module).
JSON_OPERATIONS: dict[str, str] = {
    "/responses": "/responses",
    "/containers": "/containers",
    "/containers/{container_id}/files": "/containers/{c}/files",
    "/assistants": "/assistants",
    "/assistants/{assistant_id}": "/assistants/{a}",
    "/threads": "/threads",
    "/threads/{thread_id}": "/threads/{t}",
    "/threads/runs": "/threads/runs",
    "/threads/{thread_id}/messages": "/threads/{t}/messages",
    "/threads/{thread_id}/messages/{message_id}": "/threads/{t}/messages/{m}",
    "/threads/{thread_id}/runs": "/threads/{t}/runs",
    "/threads/{thread_id}/runs/{run_id}": "/threads/{t}/runs/{r}",
}


@functools.cache
def _schema() -> Any:
    return schemathesis.openapi.from_path(str(spec_path()))


def schema_cases(template: str, mode: str) -> st.SearchStrategy[Any]:
    """``schemathesis`` cases of ``POST template`` (JSON bodies) in ``mode``."""
    operation = _schema()[template]["POST"]
    return operation.as_strategy(
        generation_mode=GenerationMode(mode), media_type="application/json"
    )


def _resolve(node: Any, components: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """The properties a request schema names (``$ref``, ``allOf``, ``anyOf`` followed)."""
    if not isinstance(node, dict) or depth > 8:
        return {}
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _resolve(components.get(name, {}), components, depth + 1)
    found: dict[str, Any] = dict(node.get("properties", {}))
    for key in ("allOf", "anyOf", "oneOf"):
        for part in node.get(key, []):
            found.update(_resolve(part, components, depth + 1))
    return found


@functools.cache
def field_names(template: str) -> tuple[str, ...]:
    """The request body fields the description gives ``POST template``."""
    raw = _schema().raw_schema
    body = raw["paths"][template]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return tuple(sorted(_resolve(body, raw["components"]["schemas"])))


@dataclass(frozen=True)
class Raw:
    """Bytes written into a generated body exactly as they are."""

    data: bytes


#: Each breaks a rule of :mod:`cigate.web.bodies` (or is an odd but valid value).
HOSTILE_TOKENS: list[bytes] = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1E400",
    b"1" + b"0" * 5000,
    b"0." + b"0" * 80 + b"1",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\xff\xfe"',
    b'"\xc0\xaf"',
    b'"\xed\xa0\x80"',
    b"[" * 70 + b"]" * 70,
    b'{"a":' * 70 + b"0" + b"}" * 70,
    b'{"k": 1, "k": 2}',
    b"'single'",
    b"undefined",
    b"0x10",
    b"01",
    b'"\x01"',
    # valid but odd: must be a 200 or a clean 4xx
    b'"\\u0000"',
    b"-0",
    b"1e-999",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1" * 64,
    b"[" * 60 + b"]" * 60,
    b'"' + b"x" * 100_000 + b'"',
    b'""',
    b"[]",
    b"{}",
    b'"\xf0\x9f\x98\x80"',
    b'"../../etc/passwd"',
    b'"\\r\\n\\u2028"',
]

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_TOKENS).map(Raw),
)
json_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def dump(value: Any) -> bytes:
    """JSON bytes of ``value`` with every :class:`Raw` written as it is."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, dict):
        items = (dump(str(k)) + b":" + dump(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    return json.dumps(value).encode()


@st.composite
def _body_for(draw: st.DrawFn, template: str, base: dict[str, Any]) -> bytes:
    names = field_names(template)
    chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True)) if names else []
    overrides = {name: draw(json_values) for name in chosen}
    return dump({**base, **overrides})


def hostile_bodies(template: str, base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Bodies for ``POST template``: ``base`` with some of the operation's fields set to
    generated values holding hostile tokens; whole hostile values; random bytes."""
    return st.one_of(
        _body_for(template, base),
        _body_for(template, base),
        json_values.map(dump),
        st.binary(max_size=300),
    )


_NUMBERISH = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.sampled_from(["", "-0", "1.5", "1e3", "0x10", "\u0661", "NaN", "%FF"]),
)
_TEXTISH = st.one_of(
    st.text(max_size=40), _NUMBERISH, st.binary(max_size=40).map(lambda b: b.hex())
)


def hostile_queries() -> st.SearchStrategy[list[tuple[str, str]]]:
    """Query parameters of the list and retrieve endpoints with hostile values, repeated."""
    names = st.sampled_from(
        ["limit", "after", "before", "order", "include[]", "stream", "starting_after", "x"]
    )
    return st.lists(st.tuples(names, _TEXTISH), max_size=6)


def hostile_header_values() -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """Download-relevant headers with arbitrary bytes (no CR/LF: no client can send those)."""
    names = st.sampled_from(
        [b"range", b"if-none-match", b"if-range", b"content-type", b"openai-beta", b"x-fuzz"]
    )
    value = st.one_of(
        st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        _NUMBERISH.map(lambda s: ("bytes=" + s + "-").encode()),
        _NUMBERISH.map(lambda s: ("bytes=-" + s).encode()),
    )
    return st.lists(st.tuples(names, value), max_size=4)


@dataclass
class Tally:
    """What a fuzz run sent and got: counts per status class, and the failures."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    def check(self, response: httpx2.Response, *, download: bool = False) -> None:
        """No 5xx; a 4xx in the error shape (a download's 416 has no body, by RFC 9110)."""
        self.sent += 1
        self.statuses[response.status_code] += 1
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400 and not (download and response.status_code == 416):
            assert_error_shape(response)

    def summary(self) -> str:
        classes = Counter(f"{s // 100}xx" for s in self.statuses.elements())
        return f"{self.sent} requests, " + ", ".join(
            f"{k}: {v}" for k, v in sorted(classes.items())
        )
