"""``cigate gateway migrate`` and ``--no-migrate``: one job migrates, replicas only check.

Every schema version a database can be at (each prefix of the migrations, a gap, one ahead)
is tried on SQLite and PostgreSQL: ``migrate`` brings it to the newest and says from which
version; a store opened without migrating refuses everything but the newest, and writes
nothing while refusing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from cigate.cli import main
from cigate.exceptions import ConfigurationError, StorageError
from cigate.gateway.settings import GatewaySettings
from cigate.storage import MetadataStore, migrations
from cigate.storage._db import create_engine
from cigate.storage.migrations import MIGRATIONS, applied_versions
from cigate.testing.services import PostgresServer

pytestmark = pytest.mark.storage

NEWEST = MIGRATIONS[-1].version
ALL = [m.version for m in MIGRATIONS]


@pytest.fixture(params=["sqlite-disk", "postgres-azurite"], ids=["sqlite", "postgres"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes empty databases on one backend (as many as a test needs)."""
    made: list[str] = []
    if request.param == "sqlite-disk":

        def make() -> str:
            made.append(f"sqlite:///{tmp_path / f'db{len(made)}.db'}")
            return made[-1]

        yield make
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")

    def make_pg() -> str:
        made.append(postgres.create_database())
        return made[-1]

    yield make_pg
    for url in made:
        postgres.drop_database(url.rsplit("/", 1)[1])


def _at_version(url: str, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrate ``url`` to exactly ``version`` (0: leave it empty) as an older cigate would."""
    if version == 0:
        return
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:version])
        asyncio.run(MetadataStore.migrate(url))


def _versions(url: str) -> list[int] | None:
    """The recorded versions, or None when there is no ``schema_migrations`` table at all."""

    async def read() -> list[int] | None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                has = await conn.run_sync(lambda sync: inspect(sync).has_table("schema_migrations"))
            return await applied_versions(engine) if has else None
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _open(url: str, *, migrate: bool) -> None:
    async def run() -> None:
        store = await MetadataStore.open(url, migrate=migrate)
        await store.close()

    asyncio.run(run())


def _migrate(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["gateway", "migrate", "--database", url])
    return result.exit_code, result.output


def test_migrate_brings_every_older_version_to_the_newest_and_says_from_which(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in range(NEWEST):
        url = new_database()
        _at_version(url, version, monkeypatch)
        code, output = _migrate(url)
        applied = ", ".join(map(str, ALL[version:]))
        assert (code, output) == (
            0,
            f"migrated the metadata store from schema version {version} to {NEWEST} "
            f"(applied {applied})\n",
        ), f"from version {version}"
        assert _versions(url) == ALL
        assert _migrate(url) == (
            0,
            f"the metadata store is at schema version {NEWEST}: nothing to do\n",
        )


def test_a_store_opened_without_migrating_refuses_every_older_version_and_writes_nothing(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in range(NEWEST):
        url = new_database()
        _at_version(url, version, monkeypatch)
        before = _versions(url)
        missing = ", ".join(map(str, ALL[version:]))
        with pytest.raises(StorageError) as caught:
            _open(url, migrate=False)
        assert str(caught.value) == (
            f"the database is at schema version {version}, this cigate needs {NEWEST} "
            f"(missing: {missing}) and was started without migrating"
        )
        assert "cigate gateway migrate" in (caught.value.hint or "")
        assert _versions(url) == before  # None (no table) stays None: nothing was written
        assert _migrate(url)[0] == 0
        _open(url, migrate=False)  # now current: opens


def test_a_store_with_a_gap_in_its_migrations_is_refused_without_migrating(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    assert _migrate(url)[0] == 0

    async def drop(version: int) -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("DELETE FROM schema_migrations WHERE version = :v"), {"v": version}
                )
        finally:
            await engine.dispose()

    asyncio.run(drop(ALL[len(ALL) // 2]))
    with pytest.raises(StorageError, match=rf"missing: {ALL[len(ALL) // 2]}\)"):
        _open(url, migrate=False)


def test_an_older_cigate_refuses_a_newer_schema_with_and_without_migrating(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_database()
    assert _migrate(url)[0] == 0
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:-1])  # this image is one behind
    for migrate in (True, False):
        with pytest.raises(StorageError, match=f"schema version {NEWEST}, newer than"):
            _open(url, migrate=migrate)
    code, output = _migrate(url)
    assert code == StorageError.exit_code
    assert f"error: the database is at schema version {NEWEST}, newer than" in output
    assert "Traceback" not in output
    assert _versions(url) == ALL


def test_serve_with_no_migrate_stops_before_listening_on_a_store_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIGATE_HOME", str(tmp_path))
    monkeypatch.setenv("CIGATE_GATEWAY_MIGRATE", "false")
    monkeypatch.setenv("CIGATE_GATEWAY_LINK_SECRET", "s" * 32)
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    result = CliRunner().invoke(
        main,
        ["gateway", "serve", "--upstream", "http://127.0.0.1:9", "--upstream-auth", "none",
         "--database", url, "--port", "0"],
    )  # fmt: skip
    assert result.exit_code == StorageError.exit_code, result.output
    assert f"error: the database is at schema version 0, this cigate needs {NEWEST}" in (
        result.output
    )
    assert "cigate gateway migrate" in result.output
    assert "Traceback" not in result.output
    assert _versions(url) is None


def test_serve_with_no_migrate_and_no_shared_link_secret_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIGATE_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    assert _migrate(url)[0] == 0
    result = CliRunner().invoke(
        main,
        ["gateway", "serve", "--no-migrate", "--upstream", "http://127.0.0.1:9",
         "--upstream-auth", "none", "--database", url, "--port", "0"],
    )  # fmt: skip
    assert result.exit_code == ConfigurationError.exit_code, result.output
    assert "needs the link secret every replica shares" in result.output
    assert "CIGATE_GATEWAY_LINK_SECRET_FILE" in result.output
    assert not (tmp_path / "gateway-link-secret").exists()  # it invented none


def test_migrate_on_an_unreachable_database_is_one_line(unused_tcp_port: int) -> None:
    url = f"postgresql://nobody@127.0.0.1:{unused_tcp_port}/none"
    code, output = _migrate(url)
    assert code == StorageError.exit_code
    assert output.startswith("error: ")
    assert "Traceback" not in output


def test_migrate_uses_the_same_default_database_as_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIGATE_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["gateway", "migrate"])
    assert result.exit_code == 0, result.output
    assert _versions(f"sqlite:///{tmp_path / 'gateway.db'}") == ALL


@pytest.mark.parametrize(
    "name", ["upstream_key", "database", "blobs", "metrics_token", "kernel_gateway_token"]
)
def test_a_credential_setting_can_come_from_a_mounted_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    secret = tmp_path / name
    secret.write_text("value-from-the-secret\n")
    monkeypatch.setenv(f"CIGATE_GATEWAY_{name.upper()}_FILE", str(secret))
    assert getattr(GatewaySettings.from_env(), name) == "value-from-the-secret"
    monkeypatch.setenv(f"CIGATE_GATEWAY_{name.upper()}", "inline")
    with pytest.raises(ConfigurationError, match="not both"):
        GatewaySettings.from_env()


@pytest.mark.parametrize("content", [None, b"\xff\xfe"], ids=["missing-file", "not-utf8"])
def test_an_unreadable_secret_file_is_a_start_up_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("CIGATE_GATEWAY_UPSTREAM_KEY_FILE", str(path))
    with pytest.raises(ConfigurationError, match="cannot read CIGATE_GATEWAY_UPSTREAM_KEY_FILE"):
        GatewaySettings.from_env()


@pytest.mark.parametrize(
    "url",
    ["mysql://somewhere/db", "not a url at all ://"],
    ids=["other-database", "not-a-url"],
)
def test_migrate_with_a_bad_database_url_is_one_line_and_a_hint(url: str) -> None:
    code, output = _migrate(url)
    assert code == ConfigurationError.exit_code, output
    assert output.startswith("error: ")
    assert "hint: " in output
    assert "Traceback" not in output


def test_generated_secret_files_give_the_value_or_one_line_never_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 database URL files with hostile bytes, through `cigate gateway migrate`.

    Each migrates (a printable SQLite path), or ends with one ``error:`` line and a hint: never
    a traceback, never exit 1. A NUL inside crashed sqlite3 before the check existed.
    """
    rng = random.Random(1414)
    hostile = ["\x00", "\n", "\r", "\t", "\x1b", "\u202e", "\x7f", "\ufeff", "é", " "]
    path = tmp_path / "database_url"
    monkeypatch.setenv("CIGATE_GATEWAY_DATABASE_FILE", str(path))
    outcomes: dict[int, int] = {}
    for n in range(100):
        name = [rng.choice("ab-_") for _ in range(rng.randrange(1, 6))]
        if rng.random() < 0.6:  # one hostile character somewhere
            name.insert(rng.randrange(len(name) + 1), rng.choice(hostile))
        name = "".join(name)
        url = f"sqlite:///{tmp_path}/db{n}-{name}.db" + rng.choice(["", "\n", "\r\n"])
        path.write_bytes(url.encode("utf-8", "surrogatepass"))
        result = CliRunner().invoke(main, ["gateway", "migrate"])
        outcomes[result.exit_code] = outcomes.get(result.exit_code, 0) + 1
        assert result.exit_code in (0, ConfigurationError.exit_code), (url, result.output)
        assert "Traceback" not in result.output
        if result.exit_code == 0:
            assert url.strip().isprintable(), url
        else:
            assert result.output.startswith("error: "), result.output
    assert set(outcomes) == {0, ConfigurationError.exit_code}, outcomes
