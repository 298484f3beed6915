"""TLS on both servers: ``--ssl-certfile/--ssl-keyfile`` (and ``CIGATE_SSL_*``), and
``cigate emulator serve --tls``, whose printed variables make requests and openai trust it."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import requests
from click.testing import CliRunner

from cigate.cli import main
from cigate.testing.plugin import RunningEmulator
from cigate.web.tls import LocalTLS, make_local_tls


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn's serving loop replaced by a recorder (the socket is bound for real)."""
    calls: list[dict[str, Any]] = []

    def fake_run(server: Any, sockets: list[socket.socket]) -> None:
        (sock,) = sockets
        config = server.config
        calls.append({"certfile": config.ssl_certfile, "keyfile": config.ssl_keyfile})
        sock.close()

    monkeypatch.setattr("uvicorn.Server.run", fake_run)
    return calls


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> LocalTLS:
    return make_local_tls(tmp_path_factory.mktemp("pair"))


def _gateway_args(tmp_path: Path) -> list[str]:
    return [
        "gateway",
        "serve",
        "--upstream",
        "http://127.0.0.1:9",
        "--upstream-key",
        "k",
        "--database",
        f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}",
        "--blobs",
        str(tmp_path / "blobs"),
        "--port",
        "0",
    ]


@pytest.mark.parametrize("command", ["emulator", "gateway"], ids=["emulator", "gateway"])
def test_both_servers_serve_https_with_a_certificate_from_options_or_the_environment(
    served: list[dict[str, Any]],
    pair: LocalTLS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    base = (
        ["emulator", "serve", "--port", "0"] if command == "emulator" else _gateway_args(tmp_path)
    )
    by_option = CliRunner().invoke(
        main, [*base, "--ssl-certfile", str(pair.certfile), "--ssl-keyfile", str(pair.keyfile)]
    )
    assert by_option.exit_code == 0, by_option.output
    assert re.search(r"https://127\.0\.0\.1:\d+", by_option.output)
    assert "http://" not in by_option.output.replace(" -> http://127.0.0.1:9", "")
    monkeypatch.setenv("CIGATE_SSL_CERTFILE", str(pair.certfile))
    monkeypatch.setenv("CIGATE_SSL_KEYFILE", str(pair.keyfile))
    by_env = CliRunner().invoke(main, base)
    assert by_env.exit_code == 0, by_env.output
    want = {"certfile": str(pair.certfile), "keyfile": str(pair.keyfile)}
    assert served == [want, want]


@pytest.mark.parametrize(
    "which",
    ["cert-only", "key-only", "missing-cert", "key-of-another-cert", "cert-as-key"],
    ids=["cert-only", "key-only", "missing-cert", "key-of-another-cert", "cert-as-key"],
)
@pytest.mark.parametrize("command", ["emulator", "gateway"], ids=["emulator", "gateway"])
def test_a_bad_certificate_pair_is_one_line_before_listening(
    served: list[dict[str, Any]], pair: LocalTLS, tmp_path: Path, which: str, command: str
) -> None:
    other = make_local_tls(tmp_path / "other")
    options = {
        "cert-only": ["--ssl-certfile", str(pair.certfile)],
        "key-only": ["--ssl-keyfile", str(pair.keyfile)],
        "missing-cert": [
            "--ssl-certfile",
            str(tmp_path / "nope.pem"),
            "--ssl-keyfile",
            str(pair.keyfile),
        ],
        "key-of-another-cert": [
            "--ssl-certfile",
            str(pair.certfile),
            "--ssl-keyfile",
            str(other.keyfile),
        ],
        "cert-as-key": ["--ssl-certfile", str(pair.certfile), "--ssl-keyfile", str(pair.certfile)],
    }[which]
    base = (
        ["emulator", "serve", "--port", "0"] if command == "emulator" else _gateway_args(tmp_path)
    )
    result = CliRunner().invoke(main, [*base, *options])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "hint:" in result.stderr
    assert served == []


def test_tls_and_a_certificate_of_ones_own_are_not_combined(
    served: list[dict[str, Any]], pair: LocalTLS
) -> None:
    result = CliRunner().invoke(
        main, ["emulator", "serve", "--tls", "--ssl-certfile", str(pair.certfile)]
    )
    assert result.exit_code == 2
    assert "--tls" in result.stderr
    assert served == []


def test_the_local_ca_passes_strict_verification_for_both_host_names(pair: LocalTLS) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pair.certfile, pair.keyfile)
    for host in ("127.0.0.1", "localhost"):
        client_ctx = pair.client_context()
        client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            client = socket.create_connection(("127.0.0.1", port))
            accepted, _ = listener.accept()
            srv = server_ctx.wrap_socket(accepted, server_side=True, do_handshake_on_connect=False)
            cli = client_ctx.wrap_socket(
                client, server_hostname=host, do_handshake_on_connect=False
            )
            cli.setblocking(False)
            srv.setblocking(False)
            done = set()
            for _ in range(200):  # bounded handshake pump, both ends on this thread
                for name, end in (("cli", cli), ("srv", srv)):
                    if name in done:
                        continue
                    try:
                        end.do_handshake()
                        done.add(name)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                if done == {"cli", "srv"}:
                    break
            assert done == {"cli", "srv"}, host
            cli.close()
            srv.close()
    assert pair.keyfile.stat().st_mode & 0o077 == 0
    bundle = pair.bundle.read_text()
    assert bundle.endswith(pair.ca.read_text())
    assert bundle.count("BEGIN CERTIFICATE") > 10  # certifi's roots come first


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``cigate emulator serve --tls`` as users run it, and what it printed."""
    data = tmp_path_factory.mktemp("emu")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cigate", "emulator", "serve", "--tls", "--port", "0"),
            *("--pool-size", "1", "--api-key", "tls-key", "--data-dir", str(data)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    printed: dict[str, str] = {}
    try:
        for _ in range(200):  # the banner, then uvicorn's start-up lines
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("Azure v1 base URL:"):
                printed["v1"] = line.split()[-1]
            elif line.startswith("TLS CA certificate:"):
                printed["ca"] = line.split()[-1]
            elif line.startswith("Trust it"):
                printed.update(re.findall(r"(\w+)=(\S+)", line))
            elif "Application startup complete" in line:
                break
        assert {"v1", "ca", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"} <= set(printed), printed
        yield printed
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a connection left open keeps uvicorn waiting
            proc.kill()
            proc.wait(30)
        proc.stdout.close()


def test_emulator_tls_prints_a_ca_and_a_bundle_that_requests_and_openai_trust(
    tls_emulator: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = tls_emulator["v1"]
    assert v1.startswith("https://127.0.0.1:")
    assert tls_emulator["REQUESTS_CA_BUNDLE"] == tls_emulator["SSL_CERT_FILE"]
    headers = {"api-key": "tls-key"}
    # Untrusted, the certificate is refused (it is really TLS, with an unknown CA) ...
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(v1 + "files", headers=headers, timeout=30)
    with (
        openai.OpenAI(base_url=v1, api_key="tls-key", max_retries=0) as untrusting,
        pytest.raises(openai.APIConnectionError),
    ):
        untrusting.files.list()
    # ... and plain HTTP on the TLS port gets nothing useful.
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(v1.replace("https://", "http://") + "files", headers=headers, timeout=30)
    # With the two printed variables, both libraries talk to it unchanged.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_emulator["REQUESTS_CA_BUNDLE"])
    monkeypatch.setenv("SSL_CERT_FILE", tls_emulator["SSL_CERT_FILE"])
    with requests.Session() as session:
        r = session.get(v1 + "files", headers=headers, timeout=30)
    assert (r.status_code, r.json()["object"]) == (200, "list")
    with openai.OpenAI(base_url=v1, api_key="tls-key", max_retries=0) as client:
        made = client.files.create(file=("tls.txt", b"over tls"), purpose="assistants")
        assert client.files.content(made.id).read() == b"over tls"
    assert Path(tls_emulator["ca"]).read_text() in Path(tls_emulator["SSL_CERT_FILE"]).read_text()


@pytest.mark.storage
def test_the_gateway_serves_https_to_an_sdk_that_trusts_its_certificate(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cigate gateway serve --ssl-…`` for real: a tenant's openai client over TLS, through the
    gateway to the emulator and back."""
    pair = emulator.tls
    database = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    added = CliRunner().invoke(main, ["gateway", "tenant", "add", "tls", "--database", database])
    assert added.exit_code == 0, added.output
    key = added.output.strip()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CIGATE_SSL_CERTFILE": str(pair.certfile),
        "CIGATE_SSL_KEYFILE": str(pair.keyfile),
    }
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cigate", "gateway", "serve", "--port", "0"),
            *("--upstream", emulator.base_url, "--upstream-key", emulator.api_key),
            *("--database", database, "--blobs", str(tmp_path / "blobs")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        url = None
        for _ in range(200):  # the banner, then uvicorn's start-up lines
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"cigate gateway on (https://\S+)", line)
            url = found.group(1) if found else url
            if "Application startup complete" in line:
                break
        assert url is not None
        assert url.startswith("https://127.0.0.1:")
        for name, value in pair.env().items():
            monkeypatch.setenv(name, value)
        with openai.OpenAI(base_url=url + "/openai/v1/", api_key=key, max_retries=0) as client:
            made = client.files.create(file=("via.txt", b"through tls"), purpose="assistants")
            assert client.files.content(made.id).read() == b"through tls"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
