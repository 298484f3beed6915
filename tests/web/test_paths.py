"""The canonical path: every non-canonical spelling is refused, and every accepted path is read
the same way by every component that reads paths (uvicorn, Starlette, httpx, our encoder)."""

from __future__ import annotations

import random
from urllib.parse import unquote

import httpx2
import pytest
from starlette.requests import Request

from cigate.testing.spellings import spellings
from cigate.web.paths import (
    AmbiguousQueryError,
    NonCanonicalPathError,
    check_query,
    check_segment,
    encode,
    split,
)

PREFIXES = ("/openai/v1", "/v1", "/openai")
SAMPLE = "/openai/v1/containers/cntr_1/files"
#: Every spelling but the canonical one and ``case-third`` (``/openai/v1/CONTAINERS/…``): a
#: family name is not a prefix; the gateway's tenancy table refuses it (test_default_deny).
BAD = [
    s
    for s in spellings(SAMPLE, at=(1, 2), detours=[("cntr_b", "cntr_1")])[1:]
    if s.name != "case-third"
]


@pytest.mark.parametrize("spelling", BAD, ids=[s.name for s in BAD])
def test_every_non_canonical_spelling_is_refused(spelling) -> None:
    path, _, query = spelling.target.partition(b"?")

    def edge() -> None:
        split(path, prefixes=PREFIXES)
        check_query(query)

    with pytest.raises((NonCanonicalPathError, AmbiguousQueryError)):
        edge()


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        (b"/", ()),
        (SAMPLE.encode(), ("openai", "v1", "containers", "cntr_1", "files")),
        (b"/r/by-path/a%20b/%C3%A9t%C3%A9.csv", ("r", "by-path", "a b", "été.csv")),
        (b"/x/a+b,c=d:e@f!$&'()*", ("x", "a+b,c=d:e@f!$&'()*")),
        (b"/x/%3B%2B%3a", ("x", ";+:")),
        (b"/x/a..b/...", ("x", "a..b", "...")),
        (b"/openai/v1x/y", ("openai", "v1x", "y")),
    ],
    ids=[
        "root",
        "api-path",
        "escaped-utf8",
        "sub-delims",
        "escaped-reserved",
        "dots-in-names",
        "prefix-lookalike",
    ],
)
def test_canonical_paths_are_decoded_once(raw: bytes, segments: tuple[str, ...]) -> None:
    assert split(raw, prefixes=PREFIXES) == segments


@pytest.mark.parametrize(
    "raw",
    [b"/OpenAI/v1/files", b"/openai/V1/files", b"/V1/files", b"/OPENAI/files", b"/Openai"],
    ids=["azure-case", "version-case", "openai-case", "legacy-case", "bare-prefix"],
)
def test_a_prefix_spelled_in_another_letter_case_is_refused(raw: bytes) -> None:
    with pytest.raises(NonCanonicalPathError, match="the prefix is spelled"):
        split(raw, prefixes=PREFIXES)


#: Foundry's prefixes: ``{name}`` segments stand for any project (or subscription) name.
NAMED = (
    "/api/projects/{project}/openai/v1",
    "/api/projects/{project}",
    "/api/projects",
    "/agents/v1.0/subscriptions/{s}/resourceGroups/{rg}/providers/"
    "Microsoft.MachineLearningServices/workspaces/{p}",
)
HUB = "/agents/v1.0/subscriptions/S/resourceGroups/RG/providers/Microsoft.MachineLearningServices"


@pytest.mark.parametrize(
    "raw",
    [
        b"/API/projects/P/files",
        b"/api/Projects/P/files",
        b"/api/projects/P/OpenAI/v1/files",
        b"/api/projects/P/openai/V1/files",
        b"/Api/projects",
        b"/agents/v1.0/subscriptions/S/resourcegroups/RG/providers/"
        b"Microsoft.MachineLearningServices/workspaces/P/threads",
        HUB.lower().encode() + b"/workspaces/P/threads",
    ],
    ids=[
        "api-case",
        "projects-case",
        "openai-case-after-project",
        "v1-case-after-project",
        "bare-projects",
        "hub-resource-groups-case",
        "hub-all-lower",
    ],
)
def test_a_named_prefix_spelled_in_another_letter_case_is_refused(raw: bytes) -> None:
    with pytest.raises(NonCanonicalPathError, match="the prefix is spelled"):
        split(raw, prefixes=NAMED)


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/projects/MyProject/openai/v1/files",
        b"/api/projects/MYPROJECT/threads",
        b"/api/projects/p/openaiv1/x",
        HUB.encode() + b"/workspaces/Any-Name/threads",
    ],
    ids=["mixed-case-project", "upper-project", "lookalike-after-project", "hub-names"],
)
def test_a_name_inside_a_prefix_is_any_segment_in_any_case(raw: bytes) -> None:
    assert split(raw, prefixes=NAMED) == tuple(unquote(raw.decode()).strip("/").split("/"))


@pytest.mark.parametrize(
    "spelling",
    spellings("/api/projects/42/openai/v1/files", at=(1, 3, 5))[1:],
    ids=lambda s: s.name,
)
def test_every_non_canonical_spelling_of_a_project_path_is_refused(spelling) -> None:
    path, _, query = spelling.target.partition(b"?")

    def edge() -> None:
        split(path, prefixes=NAMED)
        check_query(query)

    with pytest.raises((NonCanonicalPathError, AmbiguousQueryError)):
        edge()


@pytest.mark.parametrize(
    "query",
    [
        b"api-version=v1&api-version=v1",
        b"api-version=2024-05-01-preview&API-Version=v1",
        b"api%2Dversion=v1&api-version=preview",
        b"API-VERSION=a&Api-Version=b",
    ],
    ids=["same-twice", "case", "escaped-name", "both-other-case"],
)
def test_api_version_named_twice_in_any_spelling_is_refused(query: bytes) -> None:
    with pytest.raises(AmbiguousQueryError):
        check_query(query)


@pytest.mark.parametrize(
    "query",
    [b"", b"api-version=v1", b"include[]=a&include[]=b&api-version=preview", b"limit=1&limit=2"],
    ids=["none", "once", "arrays", "other-names-twice"],
)
def test_other_queries_pass(query: bytes) -> None:
    check_query(query)


#: Pieces random paths are built from: plain, reserved, escaped, dangerous.
_PIECES = [
    "a",
    "Z",
    "0",
    "-",
    "_",
    "~",
    ".",
    "..",
    "/",
    "//",
    "%2e",
    "%2E",
    "%2F",
    "%2f",
    "%5C",
    "\\",
    "%",
    "%2",
    "%zz",
    "%25",
    "%252F",
    "%00",
    "%0A",
    "%7F",
    ";",
    ",",
    "+",
    "=",
    ":",
    "@",
    "!",
    "'",
    "(",
    "*",
    "%20",
    "%3B",
    "%3F",
    "%23",
    "%C3%A9",
    "%E2%80%8B",
    "%EF%BC%8E",
    "%C0%AE",
    "%FF",
    "%ED%A0%80",
    "%41",
    "%7E",
    "é",
    " ",
    "?",
]


def _random_paths(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        body = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))
        out.append(("/" + body).encode("utf-8"))
    return out


def _starlette_path(raw: bytes, segments: tuple[str, ...]) -> str:
    """``request.url.path`` of a request the edge passed on (``scope["path"]`` decoded)."""
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("h", 80),
        "path": "/" + "/".join(segments),
        "raw_path": raw,
        "query_string": b"",
        "headers": [(b"host", b"h")],
    }
    return Request(scope).url.path


def test_every_accepted_path_reads_the_same_in_every_component() -> None:
    """6,000 random paths from dangerous pieces (seeded): each is refused, or uvicorn's
    decoding, Starlette's ``request.url``, httpx's URL parser and a re-encoding all read
    exactly the segments the edge decoded."""
    accepted = refused = 0
    for raw in _random_paths(6000, seed=9):
        try:
            segments = split(raw, prefixes=PREFIXES)
        except NonCanonicalPathError:
            refused += 1
            continue
        accepted += 1
        decoded = "/" + "/".join(segments)
        assert unquote(raw.decode("ascii")) == decoded, raw  # uvicorn's scope["path"]
        assert _starlette_path(raw, segments) == decoded, raw
        url = httpx2.URL("http://h" + raw.decode("ascii"))
        assert url.raw_path == raw, raw  # httpx sends it unchanged (no dot removal)
        assert split(b"/" + encode(segments).encode("ascii")) == segments, raw
    assert accepted > 300, (accepted, refused)  # the generator reaches both sides
    assert refused > 3000, (accepted, refused)


def test_encoding_round_trips_and_refuses_what_splitting_refuses() -> None:
    rng = random.Random(11)
    alphabet = ["a", "b", " ", "+", ";", ":", "@", ",", "é", "日本", "ß", ".", "-", "~", "'"]
    for _ in range(2000):
        segments = tuple(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 4))
        )
        if any(s in (".", "..") for s in segments):
            with pytest.raises(NonCanonicalPathError):
                encode(segments)
            continue
        spelt = encode(segments)
        assert split(b"/" + spelt.encode("ascii")) == segments
        assert all(c.isascii() for c in spelt)


@pytest.mark.parametrize(
    "segment",
    [
        "",
        ".",
        "..",
        "a/b",
        "a\\b",
        "a%2Fb",
        "x?y",
        "x#y",
        "\x00",
        "\u202e",
        "\uff0e\uff0e",
        "\uff0f",
    ],
    ids=[
        "empty",
        "dot",
        "dot-dot",
        "slash",
        "backslash",
        "percent",
        "question",
        "hash",
        "nul",
        "bidi-override",
        "fullwidth-dots",
        "fullwidth-solidus",
    ],
)
def test_ids_that_would_change_the_path_are_refused_when_a_url_is_built(segment: str) -> None:
    with pytest.raises(NonCanonicalPathError):
        check_segment(segment)
    with pytest.raises(NonCanonicalPathError):
        encode(["containers", segment, "files"])


def test_an_overlong_path_is_refused_without_decoding() -> None:
    with pytest.raises(NonCanonicalPathError, match="longer than"):
        split(b"/" + b"a" * 9000)
