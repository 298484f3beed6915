"""The body rules both apps share (``cigate.web.bodies``): what is refused, what is not.

The refusals are also driven through both apps by ``tests/*/test_hostile_input.py`` and the
fuzz tests; here each rule is pinned at its edges (64 levels pass, 65 do not; a 64-character
number passes, 65 do not) and the guard is driven with hand-made ASGI messages, so what it
reads, when it refuses and what it lets through is visible.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cigate.web.bodies import (
    INVALID_JSON_MESSAGE,
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    STATE_KEY,
    BodyError,
    BodyGuard,
    content_length,
    parse_json,
    parse_json_object,
)
from tests.hostile import BODIES, BadBody


@pytest.mark.parametrize("bad", BODIES, ids=[b.id for b in BODIES])
def test_every_corpus_body_is_refused_with_its_kind(bad: BadBody) -> None:
    with pytest.raises(BodyError) as info:
        parse_json_object(bad.raw)
    assert (info.value.kind, info.value.status) == (bad.kind, bad.status)
    if bad.kind == "invalid_json":
        assert info.value.message == INVALID_JSON_MESSAGE


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, None, id="64-levels"),
        pytest.param(b"1" * MAX_NUMBER_CHARS, int("1" * MAX_NUMBER_CHARS), id="64-digit-int"),
        pytest.param(b"-1.7976931348623157e+308", -1.7976931348623157e308, id="largest-double"),
        pytest.param(b"1e-400", 0.0, id="underflow-is-zero"),
        pytest.param(b'"\\ud83d\\ude00"', "\U0001f600", id="surrogate-pair"),
        pytest.param(b'"\\\\ud800"', "\\ud800", id="escaped-backslash-then-u"),
        pytest.param(b'"' + b"[{" * 5000 + b'"', "[{" * 5000, id="brackets-in-a-string"),
        pytest.param(b'"' + b"9" * 5000 + b'"', "9" * 5000, id="digits-in-a-string"),
        pytest.param(b'{"a": {"a": 1}}', {"a": {"a": 1}}, id="same-name-at-two-levels"),
        pytest.param(b' \t\r\n{"k": "\xc3\xa9\\u0000"} \n', {"k": "\u00e9\x00"}, id="ws-nul-utf8"),
        pytest.param(b"-0", 0, id="minus-zero"),
    ],
)
def test_valid_json_at_the_edges_of_the_rules_is_read(raw: bytes, value: Any) -> None:
    assert parse_json(raw) == (json.loads(raw) if value is None else value)


def test_one_level_or_one_character_more_is_refused() -> None:
    deeper = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    assert parse_json(b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH)
    with pytest.raises(BodyError, match="nested too deeply"):
        parse_json(deeper)
    with pytest.raises(BodyError, match="too long"):
        parse_json(b"1" * (MAX_NUMBER_CHARS + 1))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param([(b"content-length", b"12")], 12, id="digits"),
        pytest.param([(b"content-length", b"7, 7")], 7, id="repeated-equal"),
        pytest.param([(b"content-length", b"9" * 40)], 10**18, id="beyond-any-cap"),
    ],
)
def test_content_length_is_read_strictly(
    headers: list[tuple[bytes, bytes]], expected: int | None
) -> None:
    assert content_length(headers) == expected


@pytest.mark.parametrize(
    "value",
    [b"", b"-1", b"+1", b"1.0", b"0x1", b"1 2", b"7, 8", b"\xd9\xa1", b"\xff"],
    ids=["empty", "negative", "plus", "decimal", "hex", "space", "two", "arabic-digit", "byte"],
)
def test_a_malformed_content_length_is_refused(value: bytes) -> None:
    with pytest.raises(BodyError) as info:
        content_length([(b"content-length", value)])
    assert info.value.kind == "invalid_content_length"


class Recorder:
    """An ASGI app that reads the whole body and reports what it saw."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.parsed: Any = None
        self.error: BodyError | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        try:
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except BodyError as exc:
            self.error = exc
        self.body = b"".join(chunks)
        self.parsed = scope.get("state", {}).get(STATE_KEY)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def drive(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes], *, json_limit: int = 100
) -> tuple[Recorder, list[int], int]:
    """Run one request through a guard over a ``Recorder``: (app, statuses sent, chunks read)."""
    app = Recorder()
    refused: list[int] = []
    pending = list(chunks)

    def refuse(exc: BodyError) -> Any:
        async def answer(scope: Any, receive: Any, send: Any) -> None:
            refused.append(exc.status or 0)

        return answer

    guard = BodyGuard(app, json_limit=json_limit, upload_limit=None, refuse=refuse)

    async def receive() -> dict[str, Any]:
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {"type": "http", "method": "POST", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return app, refused, len(chunks) - len(pending)


def test_a_declared_size_over_the_cap_is_refused_before_a_byte_is_read() -> None:
    app, refused, read = drive([(b"content-length", b"101")], [b"x" * 101])
    assert (refused, read, app.body) == ([413], 0, None)


def test_an_undeclared_body_is_refused_the_moment_it_passes_the_cap() -> None:
    app, _, read = drive([], [b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60])
    assert app.error is not None
    assert (app.error.status, read) == (413, 2)  # the third chunk was never asked for


def test_a_multipart_body_is_not_capped_without_an_upload_limit() -> None:
    ctype = (b"content-type", b"multipart/form-data; boundary=b")
    app, refused, _ = drive([ctype], [b"x" * 100] * 5)
    assert (app.error, app.body, refused) == (None, b"x" * 500, [])


@pytest.mark.parametrize(
    ("declared", "chunks"),
    [(b"5", [b"abc"]), (b"2", [b"abc"]), (b"3", [b"ab", b"cd"])],
    ids=["shorter", "longer", "longer-in-the-second-chunk"],
)
def test_a_body_that_does_not_match_its_content_length_is_refused(
    declared: bytes, chunks: list[bytes]
) -> None:
    app, _, _ = drive([(b"content-length", declared)], chunks)
    assert app.error is not None
    assert app.error.kind == "invalid_content_length"


def test_a_json_body_is_parsed_once_and_handed_on_whole() -> None:
    ctype = (b"content-type", b"application/json; charset=utf-8")
    app, _, _ = drive([ctype], [b'{"a": ', b"[1, 2]}"])
    assert (app.error, app.body, app.parsed) == (None, b'{"a": [1, 2]}', {"a": [1, 2]})


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[1]", "invalid_type"),
        (b'{"a": NaN}', "invalid_json"),
        (b"[" * 90 + b"]" * 90, "json_too_deep"),
    ],
    ids=["array", "nan", "90-levels"],
)
def test_a_json_body_is_refused_when_the_app_first_reads_it(body: bytes, kind: str) -> None:
    ctype = (b"content-type", b"application/problem+json")
    app, refused, _ = drive([ctype], [body], json_limit=1000)
    assert refused == []  # not before the app ran (it authenticates first)
    assert app.error is not None
    assert app.error.kind == kind


def test_an_empty_json_body_is_left_to_the_handler() -> None:
    app, _, _ = drive([(b"content-type", b"application/json")], [b" \n"])
    assert (app.error, app.body, app.parsed) == (None, b" \n", None)
