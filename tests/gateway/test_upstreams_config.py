"""The upstreams file is checked at start-up, and the pool spreads new work as documented."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.exceptions import BadInputError, ConfigurationError
from cigate.gateway import probes
from cigate.gateway.affinity import Destination
from cigate.gateway.app import create_app
from cigate.gateway.edge import parse_api_path
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.gateway.upstreams import Pool, UpstreamConfig, load_upstreams

GOOD = """
[[upstreams]]
name = "east"
url = "https://east.openai.azure.com"
key = "k-east"
models = ["gpt-4.1"]
weight = 2

[[upstreams]]
name = "west"
url = "https://west.openai.azure.com"
auth = "entra"
scope = "https://cognitiveservices.azure.com/.default"
"""


def _load(tmp_path: Path, text: str, name: str = "upstreams.toml", **kw: object) -> list:
    path = tmp_path / name
    path.write_text(text)
    return load_upstreams(GatewaySettings(upstreams_file=str(path), **kw))  # type: ignore[arg-type]


def test_a_toml_file_lists_upstreams_with_their_auth_models_and_weights(tmp_path: Path) -> None:
    east, west = _load(tmp_path, GOOD)
    assert (east.name, east.url, east.auth, east.key, east.weight) == (
        "east",
        "https://east.openai.azure.com",
        "key",
        "k-east",
        2,
    )
    assert east.models == frozenset({"gpt-4.1"})
    assert (west.auth, west.key, west.models, west.weight) == ("entra", "", frozenset(), 1)
    settings = west.settings(GatewaySettings(upstreams_file="x"))
    assert (settings.upstream, settings.upstream_auth) == ("https://west.openai.azure.com", "entra")


def test_keys_can_come_from_a_variable_or_a_mounted_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EAST_KEY", "from-env")
    (tmp_path / "west.key").write_text("from-file\n")
    doc = {
        "upstreams": [
            {"name": "east", "url": "https://e.example", "key_env": "EAST_KEY"},
            {"name": "west", "url": "https://w.example", "key_file": "west.key"},
        ]
    }
    east, west = _load(tmp_path, json.dumps(doc), "upstreams.json")
    assert (east.key, west.key) == ("from-env", "from-file")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"k-east\r\nX-Injected: 1\n", "control character"),  # would split the api-key header
        (b"k-\x00east", "control character"),
        (b"\xff\xfe", "not UTF-8"),
        (b"\n\n", "is empty"),
    ],
    ids=["line-break", "nul", "not-utf8", "empty"],
)
def test_a_key_file_is_one_printable_line_like_every_credential_file(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    """The upstreams file's key files go through the gateway's one credential-file reader."""
    (tmp_path / "east.key").write_bytes(content)
    doc = {"upstreams": [{"name": "east", "url": "https://e.example", "key_file": "east.key"}]}
    with pytest.raises(ConfigurationError, match=reason) as failed:
        _load(tmp_path, json.dumps(doc), "upstreams.json")
    assert "east.key" in failed.value.message
    assert "Several upstreams" in failed.value.hint


def test_the_single_upstream_is_the_list_of_one_named_default() -> None:
    settings = GatewaySettings(upstream="https://r.example", upstream_key="k")
    (only,) = load_upstreams(settings)
    assert (only.name, only.url, only.key) == ("default", "https://r.example", "k")
    assert only.settings(settings) is settings  # exactly as before


BAD = {
    "no-entries": ("upstreams = []", "lists no upstreams"),
    "not-toml": ("[[upstreams]\nname=", "is not valid"),
    "bad-name": ('[[upstreams]]\nname = "East Coast"\nurl = "https://e"\nkey = "k"', "name must"),
    "duplicate-names": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey = "k"\n'
        '[[upstreams]]\nname = "a"\nurl = "https://w"\nkey = "k"',
        "must be unique",
    ),
    "not-http": ('[[upstreams]]\nname = "a"\nurl = "ftp://e"\nkey = "k"', "http(s) URL"),
    "project": (
        '[[upstreams]]\nname = "a"\nurl = "https://r.services.ai.azure.com/api/projects/p"\n'
        'key = "k"',
        "Foundry project",
    ),
    "bad-auth": ('[[upstreams]]\nname = "a"\nurl = "https://e"\nauth = "basic"', "auth must"),
    "no-key": ('[[upstreams]]\nname = "a"\nurl = "https://e"', "exactly one of key"),
    "two-keys": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey = "k"\nkey_env = "K"',
        "exactly one of key",
    ),
    "unset-variable": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey_env = "CIGATE_TEST_UNSET_KEY"',
        "is not set",
    ),
    "missing-key-file": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey_file = "nope.key"',
        "cannot read key_file",
    ),
    "models-not-a-list": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey = "k"\nmodels = "gpt-4.1"',
        "models must",
    ),
    "weight-zero": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey = "k"\nweight = 0',
        "weight",
    ),
    "weight-bool": (
        '[[upstreams]]\nname = "a"\nurl = "https://e"\nkey = "k"\nweight = true',
        "weight",
    ),
    "typo": ('[[upstreams]]\nname = "a"\nurl = "https://e"\nkey = "k"\nwieght = 2', "unknown"),
}


@pytest.mark.parametrize(("text", "message"), list(BAD.values()), ids=list(BAD))
def test_a_wrong_upstreams_file_fails_start_up_with_what_and_where(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as failed:
        _load(tmp_path, text)
    assert message in failed.value.message
    assert "Several upstreams" in failed.value.hint


def test_the_file_and_a_single_upstream_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        _load(tmp_path, GOOD, upstream="https://r.example")


def test_a_missing_file_and_an_unknown_balance_mode_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_upstreams(GatewaySettings(upstreams_file=str(tmp_path / "absent.toml")))
    with pytest.raises(ConfigurationError, match="UPSTREAM_BALANCE"):
        _load(tmp_path, GOOD, upstream_balance="random")


def test_create_app_checks_the_upstreams_file_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "u.toml").write_text('[[upstreams]]\nname = "a"\nurl = "https://e"')
    with pytest.raises(ConfigurationError, match="exactly one of key"):
        create_app(GatewaySettings(upstreams_file=str(tmp_path / "u.toml")))


def _pool(*configs: UpstreamConfig, answer: Any = None) -> Pool:
    """A pool of ``configs``; with ``answer``, each member's requests get its answers."""
    base = GatewaySettings(upstreams_file="x")
    members = [
        Upstream(
            c.settings(base),
            name=c.name,
            client=(httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) if answer else None),
        )
        for c in configs
    ]
    return Pool(configs, members)


async def test_new_work_is_spread_by_weight_and_skips_an_upstream_marked_down() -> None:
    pool = _pool(
        UpstreamConfig("a", "https://a.example", "none", weight=2),
        UpstreamConfig("b", "https://b.example", "none"),
    )
    try:
        firsts = Counter(pool.candidates("m")[0].name for _ in range(30))
        assert firsts == {"a": 20, "b": 10}
        # Smoothly interleaved, never three of one in a row with these weights.
        order = "".join(pool.candidates("m")[0].name for _ in range(9))
        assert "aaa" not in order
        assert "bb" not in order
        pool.failed("a", "test")
        assert [u.name for u in pool.candidates("m")] == ["b", "a"]  # a: last resort only
        pool.succeeded("a")
        assert {pool.candidates("m")[0].name for _ in range(3)} == {"a", "b"}
    finally:
        await pool.aclose()


async def test_new_work_goes_only_to_upstreams_serving_its_model() -> None:
    pool = _pool(
        UpstreamConfig("a", "https://a.example", "none", models=frozenset({"gpt-4.1"})),
        UpstreamConfig("b", "https://b.example", "none", models=frozenset({"o4-mini"})),
    )
    try:
        assert {pool.candidates("o4-mini")[0].name for _ in range(5)} == {"b"}
        assert [u.name for u in pool.candidates("gpt-4.1")] == ["a"]
        assert {u.name for u in pool.candidates(None)} == {"a", "b"}  # names no model
        with pytest.raises(BadInputError, match="not served by any upstream") as refused:
            pool.candidates("gpt-5")
        assert refused.value.status == 404
    finally:
        await pool.aclose()


async def test_a_tenant_home_is_stable_and_tenants_are_spread() -> None:
    pool = _pool(
        UpstreamConfig("a", "https://a.example", "none"),
        UpstreamConfig("b", "https://b.example", "none"),
    )
    try:
        homes = {f"t{n}": pool.candidates(None, home_of=f"t{n}")[0].name for n in range(200)}
        assert all(pool.candidates(None, home_of=t)[0].name == h for t, h in homes.items())
        spread = Counter(homes.values())
        assert min(spread.values()) > 60, spread  # about half each
        pool.failed("a", "test")  # a's tenants move to b while a is down; b's stay
        assert {pool.candidates(None, home_of=t)[0].name for t in homes} == {"b"}
    finally:
        await pool.aclose()


async def test_a_recorded_name_that_is_no_longer_configured_is_a_503_not_a_guess() -> None:
    pool = _pool(
        UpstreamConfig("a", "https://a.example", "none"),
        UpstreamConfig("b", "https://b.example", "none"),
    )
    try:
        assert pool.holder(None, "x").name == "a"  # recorded before several upstreams
        assert pool.holder("https://b.example/", "x").name == "b"  # an old row's URL
        with pytest.raises(Exception, match="not configured on this gateway") as gone:
            pool.holder("c", "container 'cntr_1'")
        assert getattr(gone.value, "status", None) == 503
    finally:
        await pool.aclose()


@pytest.mark.parametrize(
    ("headers", "at_least", "at_most"),
    [
        ({"retry-after-ms": "40000"}, 39.0, 41.0),  # Azure's hint, in milliseconds
        ({"x-ms-retry-after-ms": "30000"}, 29.0, 31.0),
        ({"retry-after": "20"}, 19.0, 21.0),
        ({"retry-after": "-5"}, 4.0, 6.0),  # nonsense: the pool's own 5 s back-off
        ({}, 4.0, 6.0),
    ],
)
async def test_a_429_keeps_new_work_off_for_as_long_as_the_upstream_asks(
    headers: dict[str, str], at_least: float, at_most: float
) -> None:
    """The upstream's own wait (``retry-after-ms`` first, as Azure sends it) decides how
    long new work avoids it; before, only ``retry-after`` in seconds was read."""
    configs = (
        UpstreamConfig("a", "https://a.example", "none"),
        UpstreamConfig("b", "https://b.example", "none"),
    )

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "a.example":
            return httpx2.Response(429, headers=headers, json={"error": {"code": "429"}})
        return httpx2.Response(200, json={"id": "resp_1"})

    pool = _pool(*configs, answer=answer)
    try:
        api = parse_api_path("/openai/v1/responses")
        assert api is not None
        dest = Destination(pool, pool.candidates("m"))
        assert dest.candidates[0].name == "a"
        response = await dest.send("POST", api, content=b"{}")
        assert response.status_code == 200  # new work moved on to b
        assert dest.upstream.name == "b"
        paused = pool._health["a"].down_until - time.monotonic()
        assert at_least <= paused <= at_most
    finally:
        await pool.aclose()


async def test_readiness_checks_every_upstream_at_once_so_one_that_hangs_hides_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two upstreams never answer their readiness call, the third does: within the one
    readiness budget the gateway is ready and the pool knows all three. Before, they were
    asked in turn, the hung first one used up the budget, and /readyz said 503."""
    monkeypatch.setattr(probes, "READY_TIMEOUT", 0.5)
    configs = (
        UpstreamConfig("a", "https://a.example", "none"),
        UpstreamConfig("b", "https://b.example", "none"),
        UpstreamConfig("c", "https://c.example", "none"),
    )

    async def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.host in ("a.example", "b.example"):
            await asyncio.sleep(30)
        return httpx2.Response(200, json={"data": []})

    pool = _pool(*configs, answer=answer)
    try:
        began = time.monotonic()
        await asyncio.wait_for(probes.any_upstream(pool), probes.READY_TIMEOUT)
        assert time.monotonic() - began < probes.READY_TIMEOUT
        assert pool.is_down("a")
        assert pool.is_down("b")
        assert not pool.is_down("c")
    finally:
        await pool.aclose()
