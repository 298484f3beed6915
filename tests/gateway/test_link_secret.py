"""The link secret replicas share: from a variable or a mounted file, never invented by a replica.

A link one replica signs must download from every other (they share the metadata store); a
replica started without migrating (``--no-migrate``) without a configured secret refuses to
start instead of inventing its own; a secret file is read as a Secret mounts it, and every
malformed one is a start-up ``ConfigurationError``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cigate.exceptions import ConfigurationError
from cigate.gateway.links import MIN_SECRET_LENGTH, load_link_secret
from cigate.gateway.settings import GatewaySettings
from tests.gateway.conftest import DEAD_UPSTREAM, Backend
from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage

SECRET = "k3Q9vX2pL7mN4rT8wY1zA6bC0dE5fG9h-shared"


def _settings(backend: Backend, **options: object) -> GatewaySettings:
    return GatewaySettings(
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        database=backend.database,
        blobs=backend.blobs,
        **options,  # type: ignore[arg-type]
    )


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_link_one_replica_signs_downloads_from_another_sharing_the_secret_file(
    postgres_azurite: Backend, tmp_path: Path
) -> None:
    secret_file = tmp_path / "link-secret"
    secret_file.write_text(SECRET + "\n")  # as a Kubernetes Secret mounts it
    with GatewayHarness(_settings(postgres_azurite)) as first:  # the migration job's role
        tenant = first.add_tenant("acme")
        row = first.put_file(tenant, b"shared bytes", "s.txt")
    replica = _settings(postgres_azurite, migrate=False, link_secret_file=str(secret_file))
    other = replace(replica, link_secret_file="", link_secret=SECRET)  # the variable, same secret
    with GatewayHarness(replica) as a, GatewayHarness(other) as b:
        created = a.client.post(f"/files/{row.id}/links", headers=tenant.headers)
        assert created.status_code == 201, created.text
        url = _path(created.json()["url"])
        for gateway in (a, b):
            r = gateway.client.get(url)
            assert (r.status_code, r.content) == (200, b"shared bytes")


def test_replicas_that_invented_their_own_secret_would_refuse_each_others_links(
    postgres_azurite: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Why a replica must not invent one: the failure the refusal prevents, shown."""
    homes = []
    for name in ("a", "b"):
        monkeypatch.setenv("CIGATE_HOME", str(tmp_path / name))
        homes.append(load_link_secret(_settings(postgres_azurite)))
    assert homes[0] != homes[1]
    warnings = [r for r in caplog.records if r.name == "cigate.gateway.links"]
    assert len(warnings) == 2  # each one said so
    assert "other gateways sharing the store will refuse them" in warnings[0].getMessage()
    with pytest.raises(ConfigurationError, match="needs the link secret every replica shares"):
        load_link_secret(_settings(postgres_azurite, migrate=False))


def test_a_replica_without_a_configured_secret_does_not_start(
    postgres_azurite: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIGATE_HOME", str(tmp_path / "first"))
    with GatewayHarness(_settings(postgres_azurite)):
        pass  # migrated
    monkeypatch.setenv("CIGATE_HOME", str(tmp_path))
    harness = GatewayHarness(_settings(postgres_azurite, migrate=False))
    with pytest.raises(ConfigurationError, match="--no-migrate"), harness:
        pass
    assert not (tmp_path / "gateway-link-secret").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "at least 32"),
        (b"\n\n", "at least 32"),
        (b"x" * (MIN_SECRET_LENGTH - 1), "at least 32"),
        (b"\xff" * 40, "not UTF-8"),
        (b"a" * 20 + b"\x00" + b"a" * 20, "printable"),
    ],
    ids=["missing", "empty", "only-newlines", "one-short", "not-utf8", "nul-inside"],
)
def test_a_bad_secret_file_is_a_start_up_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=message):
        load_link_secret(GatewaySettings(link_secret_file=str(path)))


def test_a_short_secret_variable_and_both_sources_at_once_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_link_secret(GatewaySettings(link_secret="short"))
    (tmp_path / "s").write_text(SECRET)
    with pytest.raises(ConfigurationError, match="not both"):
        load_link_secret(GatewaySettings(link_secret=SECRET, link_secret_file=str(tmp_path / "s")))


def test_generated_secret_files_are_either_used_exactly_or_refused(tmp_path: Path) -> None:
    """500 files of hostile bytes: the secret is the file's stripped text, or a clear error."""
    rng = random.Random(14)
    printable = [b"a", b"Z", b"0", b" ", b"=", b"+", b"/", b"\xc3\xa9"]
    hostile = [b"\n", b"\r", b"\t", b"\x00", b"\x1b", b"\xff", b"\xe2\x80\xae", b"\xc3"]
    path = tmp_path / "secret"
    accepted = refused = 0
    for _ in range(500):
        parts = [rng.choice(printable) for _ in range(rng.randrange(0, 60))]
        if rng.random() < 0.5:  # one hostile byte somewhere
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(hostile))
        raw = b"".join(parts) + rng.choice([b"", b"\n", b"\r\n", b" \n\n"])
        path.write_bytes(raw)
        try:
            secret = load_link_secret(GatewaySettings(link_secret_file=str(path)))
        except ConfigurationError:
            refused += 1
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            assert len(text) < MIN_SECRET_LENGTH or not text.isprintable(), raw
        else:
            accepted += 1
            assert secret == raw.decode("utf-8").strip().encode()
            assert len(secret.decode()) >= MIN_SECRET_LENGTH
            assert secret.decode().isprintable()
    assert accepted
    assert refused
