"""Hostile request input, shared by the emulator's and the gateway's hostile-input tests.

``BODIES`` is the hand-written corpus of known-bad JSON bodies (the adversarial review's 23
``Internal Server Error`` inputs and their kin), each with the refusal it must get: a status
and the ``kind`` of :class:`cigate.web.bodies.BodyError` (the error ``code`` both apps send,
``None`` on the emulator for a plain syntax error). ``RANGES``, ``QUERIES`` and ``HEADERS`` are
the same for the other parts of a request. ``assert_error_shape`` is the one check of an error
answer: the OpenAI envelope, or Azure's gateway envelope where the emulator imitates it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx2

__all__ = [
    "BODIES",
    "HEADERS",
    "QUERIES",
    "RANGES",
    "BadBody",
    "assert_error_shape",
    "assert_no_5xx",
]

_REQUEST = b'{"model": "gpt-4o-mini", "name": "x", "input": "hi", "role": "user", "content": "hi"'


@dataclass(frozen=True)
class BadBody:
    id: str
    raw: bytes
    #: The ``kind``/``code`` of the refusal (``invalid_json`` is a null code on the emulator).
    kind: str
    status: int = 400
    content_type: str = "application/json"


def _with(extra: bytes) -> bytes:
    """A plausible request body with ``extra`` (``, "k": v`` bytes) before its closing brace."""
    return _REQUEST + extra + b"}"


BODIES: list[BadBody] = [
    # the review's 500s
    BadBody("nan", _with(b', "temperature": NaN'), "invalid_json"),
    BadBody("infinity", _with(b', "temperature": Infinity'), "invalid_json"),
    BadBody("minus-infinity", _with(b', "top_p": -Infinity'), "invalid_json"),
    BadBody("nan-top-level", b"NaN", "invalid_json"),
    BadBody("lone-high-surrogate", _with(b', "instructions": "\\ud800"'), "invalid_json"),
    BadBody("lone-low-surrogate-in-a-name", _with(b', "\\udc00": 1'), "invalid_json"),
    BadBody(
        "reversed-surrogate-pair", _with(b', "instructions": "\\ude00\\ud83d"'), "invalid_json"
    ),
    BadBody(
        "10000-digit-integer", _with(b', "max_output_tokens": 1' + b"0" * 10_000), "invalid_number"
    ),
    BadBody("5000-digit-negative-integer", _with(b', "seed": -' + b"9" * 5_000), "invalid_number"),
    BadBody("long-fraction", _with(b', "temperature": 0.' + b"1" * 100), "invalid_number"),
    BadBody("exponent-overflow", _with(b', "temperature": 1e400'), "invalid_number"),
    BadBody("negative-exponent-overflow", _with(b', "temperature": -1e999'), "invalid_number"),
    BadBody(
        "arrays-50000-deep", _with(b', "tools": ' + b"[" * 50_000 + b"]" * 50_000), "json_too_deep"
    ),
    BadBody("arrays-200000-deep-unclosed", _with(b', "tools": ' + b"[" * 200_000), "json_too_deep"),
    BadBody(
        "objects-100000-deep",
        _with(b', "metadata": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        "json_too_deep",
    ),
    BadBody("arrays-65-deep", _with(b', "tools": ' + b"[" * 65 + b"]" * 65), "json_too_deep"),
    # UTF-8
    BadBody("invalid-utf8-byte", _with(b', "instructions": "\xff\xfe"'), "invalid_json"),
    BadBody("overlong-slash", _with(b', "instructions": "\xc0\xaf"'), "invalid_json"),
    BadBody("overlong-nul", _with(b', "instructions": "\xe0\x80\x80"'), "invalid_json"),
    BadBody("encoded-surrogate-cesu8", _with(b', "instructions": "\xed\xa0\x80"'), "invalid_json"),
    BadBody("beyond-unicode", _with(b', "instructions": "\xf4\x90\x80\x80"'), "invalid_json"),
    BadBody("truncated-sequence", _with(b', "instructions": "\xe2\x82"'), "invalid_json"),
    BadBody("latin1-name", _with(b', "caf\xe9": 1'), "invalid_json"),
    BadBody("utf8-bom", b"\xef\xbb\xbf" + _with(b""), "invalid_json"),
    BadBody("utf16-body", _with(b"").decode().encode("utf-16"), "invalid_json"),
    # syntax
    BadBody("truncated", _REQUEST, "invalid_json"),
    BadBody("trailing-garbage", _with(b"") + b" {}", "invalid_json"),
    BadBody("single-quotes", b"{'model': 'gpt-4o-mini'}", "invalid_json"),
    BadBody("comment", b'{"model": "m" /* hi */}', "invalid_json"),
    BadBody("raw-control-character", _with(b', "instructions": "a\x01b"'), "invalid_json"),
    BadBody("unescaped-newline", _with(b', "instructions": "a\nb"'), "invalid_json"),
    BadBody("nul-byte-outside-strings", _with(b"\x00"), "invalid_json"),
    BadBody("bad-escape", _with(b', "instructions": "\\x41"'), "invalid_json"),
    BadBody("leading-zero", _with(b', "seed": 007'), "invalid_json"),
    BadBody("plus-sign", _with(b', "seed": +1'), "invalid_json"),
    BadBody("hex-number", _with(b', "seed": 0x10'), "invalid_json"),
    BadBody("non-breaking-space-as-whitespace", b"\xc2\xa0" + _with(b""), "invalid_json"),
    BadBody("not-json-at-all", b"model=gpt-4o-mini&input=hi", "invalid_json"),
    BadBody("whitespace-then-garbage", b"   \t\r\n x", "invalid_json"),
    # duplicate names: one reading only
    BadBody(
        "duplicate-name",
        b'{"model": "a", "model": "b", "name": "x", "input": "hi"}',
        "duplicate_key",
    ),
    BadBody("duplicate-nested-name", _with(b', "metadata": {"k": "1", "k": "2"}'), "duplicate_key"),
    # an object is required
    BadBody("top-level-array", b'[{"model": "m"}]', "invalid_type"),
    BadBody("top-level-string", b'"hello"', "invalid_type"),
    BadBody("top-level-number", b"42", "invalid_type"),
    BadBody("top-level-null", b"null", "invalid_type"),
    BadBody("top-level-true", b"true", "invalid_type"),
    # the same bytes sent as another content type are still read as JSON where JSON is needed
    BadBody(
        "nan-as-text-plain",
        _with(b', "temperature": NaN'),
        "invalid_json",
        content_type="text/plain",
    ),
    BadBody(
        "deep-as-form-urlencoded",
        b"[" * 100_000,
        "json_too_deep",
        content_type="application/x-www-form-urlencoded",
    ),
]

#: ``Range`` headers for a download of a 26-byte file: every answer must be 200, 206 or 416.
RANGES: list[tuple[str, str]] = [
    ("5000-digit-start", "bytes=" + "9" * 5000 + "-"),
    ("5000-digit-end", "bytes=0-" + "9" * 5000),
    ("5000-digit-suffix", "bytes=-" + "9" * 5000),
    ("many-ranges", "bytes=" + ",".join(f"{i}-{i}" for i in range(2000))),
    ("negative", "bytes=-5--1"),
    ("reversed", "bytes=9-3"),
    ("garbage", "bytes=abc-def"),
    ("empty-spec", "bytes="),
    ("only-dash", "bytes=-"),
    ("zero-suffix", "bytes=-0"),
    ("other-unit", "items=0-3"),
    ("no-unit", "0-3"),
    ("unicode-digits", "bytes=\u0661-\u0662"),
    ("latin1-bytes", "bytes=\xff-\xfe"),
    ("long-garbage", "x" * 60_000),
    ("past-end", "bytes=26-"),
    ("fractional", "bytes=1.5-2"),
    ("spaces", "bytes = 1 - 2"),
]

#: Query strings for list endpoints: every answer is the service's 400 or a 200 page.
QUERIES: list[tuple[str, str]] = [
    ("limit-5000-digits", "limit=1" + "0" * 5000),
    ("limit-minus-one", "limit=-1"),
    ("limit-zero", "limit=0"),
    ("limit-float", "limit=1.5"),
    ("limit-word", "limit=ten"),
    ("limit-unicode-digits", "limit=%D9%A1"),
    ("limit-repeated", "limit=1&limit=2&limit=-3"),
    ("limit-empty", "limit="),
    ("after-invalid-utf8", "after=%FF%FE%C0%AF"),
    ("after-encoded-surrogate", "after=%ED%A0%80"),
    ("after-nul", "after=%00"),
    ("after-30k", "after=" + "x" * 30_000),
    ("order-sideways", "order=sideways"),
    ("order-repeated", "order=asc&order=sideways"),
    ("many-parameters", "&".join(f"p{i}={i}" for i in range(5000))),
    ("bare-percent", "limit=%"),
    ("include-bogus", "include%5B%5D=bogus"),
]

#: Header sets sent with an otherwise good request: never a 5xx.
HEADERS: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("100k-header-value", [(b"x-long", b"a" * 100_000)]),
    ("non-latin1-bytes", [(b"x-bytes", "\u00e9\u2603".encode())]),
    ("raw-high-bytes", [(b"x-bytes", bytes(range(128, 256)))]),
    ("if-none-match-garbage", [(b"if-none-match", b'W/"' + b'"' * 2000)]),
    ("if-range-garbage", [(b"if-range", b"\xff\xfe" * 100), (b"range", b"bytes=0-1")]),
    ("content-type-garbage", [(b"content-type", b"\xff/\xfe; boundary=\x00")]),
    ("openai-beta-garbage", [(b"openai-beta", b"\xff" * 1000)]),
    ("accept-garbage", [(b"accept", b"\x00\xff*/*")]),
    ("many-headers", [(f"x-h{i}".encode(), b"v") for i in range(500)]),
]


def _jwt(payload: bytes) -> bytes:
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    return b"Bearer eyJhbGciOiJub25lIn0." + body + b".c2ln"


#: Credentials that must be a 401, never a 5xx (bearer tokens the emulator decodes as JWTs).
BAD_CREDENTIALS: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("jwt-deep-payload", [(b"authorization", _jwt(b"[" * 100_000))]),
    ("jwt-nan-payload", [(b"authorization", _jwt(b'{"aud": NaN, "exp": Infinity}'))]),
    ("jwt-huge-exp", [(b"authorization", _jwt(b'{"aud": "x", "exp": 1' + b"0" * 5000 + b"}"))]),
    ("jwt-surrogate", [(b"authorization", _jwt(b'{"aud": "\\ud800"}'))]),
    ("jwt-not-base64", [(b"authorization", b"Bearer a.\xff\xfe.c")]),
    ("api-key-high-bytes", [(b"api-key", b"\xff\xfe\x00")]),
    ("bearer-high-bytes", [(b"authorization", b"Bearer \xe9\xff")]),
    ("scheme-only", [(b"authorization", b"Bearer")]),
]


def assert_no_5xx(response: httpx2.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])


def assert_error_shape(response: httpx2.Response) -> dict[str, Any]:
    """A 4xx in the OpenAI envelope (or Azure's ``{code, message}``): returns ``error``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type"),
        response.text[:300],
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), error
    assert isinstance(error.get("message"), str), error
    if set(error) == {"code", "message"}:  # Azure's gateway envelope: code is a string
        assert isinstance(error["code"], str), error
    else:
        assert set(error) == {"message", "type", "param", "code"}, error
        for key in ("type", "param", "code"):
            assert error[key] is None or isinstance(error[key], str), error
    return error
