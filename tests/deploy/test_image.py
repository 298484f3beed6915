"""The real image, built and run with podman (``CIGATE_TEST_IMAGE=1`` only: minutes, root).

What it proves on a machine with podman and debootstrap: the base builds from Debian packages,
the image builds from the hash-checked lock, ``migrate`` migrates a fresh PostgreSQL database,
a ``--no-migrate`` replica without the shared link secret refuses to start, and two replicas
(PostgreSQL + Azurite, sharing the secret from a mounted file) serve the official SDK's
streaming code-interpreter request to the emulator: the file is stored, downloads whole from
the other replica, and a link one replica signs works on the other. The process runs as uid
10001 on a read-only root, and the image's HEALTHCHECK passes.

The podman flags below are the ones this sandboxed machine needs (vfs storage, runc: crun
refuses the hybrid cgroup hierarchy, chroot builds, lower rlimits, host network); on a normal
host ``podman build``/``run`` need none of them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from openai import OpenAI

from cigate.storage.migrations import MIGRATIONS
from cigate.testing.plugin import RunningEmulator
from cigate.testing.services import AzuriteServer, PostgresServer
from cigate.testing.storage_fixtures import azure_blob_url

pytestmark = [pytest.mark.image, pytest.mark.storage, pytest.mark.sandbox, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/cigate-base:bookworm"
IMAGE = "localhost/cigate-gateway:test"
#: This sandbox's flags (see the module docstring); CIGATE_TEST_PODMAN_FLAGS and
#: CIGATE_TEST_PODMAN_RUN_FLAGS replace them on a host that needs none or others.
PODMAN = [
    "podman",
    *shlex.split(
        os.environ.get(
            "CIGATE_TEST_PODMAN_FLAGS",
            "--storage-driver vfs --runtime runc --cgroup-manager cgroupfs",
        )
    ),
]
RUN = [
    *PODMAN,
    "run",
    *shlex.split(
        os.environ.get(
            "CIGATE_TEST_PODMAN_RUN_FLAGS",
            "--network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096",
        )
    ),
]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CODE = "data = bytes(range(256)) * 5000\nopen('/mnt/data/numbers.bin', 'wb').write(data)\n"
EXPECTED = bytes(range(256)) * 5000


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def image() -> str:
    """The base (debootstrap) when missing, then the gateway image from this checkout."""
    assert shutil.which("podman"), "CIGATE_TEST_IMAGE=1 needs podman (apt-get install podman)"
    if _podman(*PODMAN, "image", "exists", BASE, check=False).returncode != 0:
        env = {**os.environ, "PODMAN_FLAGS": " ".join(PODMAN[1:])}
        subprocess.run([str(ROOT / "deploy/build-base.sh"), BASE], check=True, env=env)
    build = [*PODMAN, "build", "--format", "docker", "--isolation", "chroot", "--network=host"]
    if CA_BUNDLE.exists():  # a TLS-inspecting proxy's CA, as a build secret (never a layer)
        build += ["--secret", f"id=pip_cert,src={CA_BUNDLE}"]
    _podman(*build, "--build-arg", f"BASE_IMAGE={BASE}", "-f", "deploy/Dockerfile", "-t", IMAGE,
            str(ROOT))  # fmt: skip
    return IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def containers() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        _podman(*PODMAN, "rm", "--force", "--time", "5", name, check=False)


def _wait_ready(port: int, name: str) -> None:
    """Until /readyz answers 200 (bounded by count: 600 tries, 0.1 s apart)."""
    for _ in range(600):
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/readyz", trust_env=False).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if _podman(*PODMAN, "container", "exists", name, check=False).returncode != 0:
            break
        time.sleep(0.1)
    logs = _podman(*PODMAN, "logs", name, check=False)
    raise AssertionError(f"{name} never became ready:\n{logs.stdout}{logs.stderr}")


def test_the_image_migrates_then_two_replicas_serve_the_sdk_and_share_links(
    *,
    image: str,
    emulator: RunningEmulator,
    postgres_server: PostgresServer,
    azurite_server: AzuriteServer,
    tmp_path: Path,
    containers: list[str],
) -> None:
    database = postgres_server.create_database()
    blobs = azure_blob_url(f"img{uuid.uuid4().hex[:12]}", azurite_server.connection_string)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "link_secret").write_text("Vx9Lq2Rt7Kp4Mz8Nw1Bc6Hd3Jf5Gs0Ya-image-test\n")
    (secrets / "upstream_key").write_text(emulator.api_key + "\n")
    (secrets / "link_secret").chmod(0o644)
    (secrets / "upstream_key").chmod(0o644)
    store = ["-e", f"CIGATE_GATEWAY_DATABASE={database}", "-e", f"CIGATE_GATEWAY_BLOBS={blobs}"]

    migrated = _podman(*RUN, "--rm", *store, image, "migrate")
    newest = MIGRATIONS[-1].version
    assert migrated.stdout.startswith(
        f"migrated the metadata store from schema version 0 to {newest}"
    )

    upstream = [
        *store,
        "-e", f"CIGATE_GATEWAY_UPSTREAM={emulator.base_url}",
        "-e", "CIGATE_GATEWAY_UPSTREAM_KEY_FILE=/run/secrets/upstream_key",
        "-v", f"{secrets}:/run/secrets:ro",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
    ]  # fmt: skip
    refused = _podman(*RUN, "--rm", *upstream, image, "serve", "--no-migrate", check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "needs the link secret every replica shares" in refused.stdout + refused.stderr

    ports = [_free_port(), _free_port()]
    for port in ports:
        name = f"cigate-test-{uuid.uuid4().hex[:8]}"
        containers.append(name)
        _podman(*RUN, "-d", "--name", name, *upstream,
                "-e", "CIGATE_GATEWAY_LINK_SECRET_FILE=/run/secrets/link_secret",
                "-e", f"CIGATE_GATEWAY_PORT={port}", image, "serve", "--no-migrate")  # fmt: skip
    for port, name in zip(ports, containers, strict=True):
        _wait_ready(port, name)

    key = _podman(*RUN, "--rm", *store, image, "tenant", "add", "acme").stdout.strip()
    assert key.startswith("cgk_")
    one, two = (f"http://127.0.0.1:{port}" for port in ports)
    client = OpenAI(base_url=f"{one}/openai/v1/", api_key=key, max_retries=0)
    events = list(
        client.responses.create(
            model="gpt-4.1",
            input=f"Please run this.\n```python\n{CODE}```\n",
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
            stream=True,
        )
    )
    assert events[-1].type == "response.completed"
    response_id = events[-1].response.id

    other = httpx2.Client(base_url=two, headers={"authorization": f"Bearer {key}"}, timeout=60,
                          trust_env=False)  # fmt: skip
    files: list[dict[str, object]] = []
    for _ in range(600):  # bounded by count; the harvest takes well under a second here
        files = other.get(f"/responses/{response_id}/files").json()["data"]
        if files and all(f["state"] != "pending" for f in files):
            break
        time.sleep(0.1)
    assert [(f["filename"], f["state"]) for f in files] == [("numbers.bin", "stored")]
    file_id = files[0]["id"]
    assert other.get(f"/files/{file_id}/content").content == EXPECTED

    first = httpx2.Client(base_url=one, headers={"authorization": f"Bearer {key}"}, timeout=60,
                          trust_env=False)  # fmt: skip
    link = urlsplit(first.post(f"/files/{file_id}/links").json()["url"])
    served = httpx2.get(f"{two}{link.path}?{link.query}", trust_env=False)
    assert (served.status_code, served.content) == (200, EXPECTED)

    name = containers[0]
    assert _podman(*PODMAN, "exec", name, "id", "-u").stdout.strip() == "10001"
    touched = _podman(*PODMAN, "exec", name, "touch", "/opt/cigate/x", check=False)
    assert "Read-only file system" in touched.stderr
    assert _podman(*PODMAN, "healthcheck", "run", name, check=False).returncode == 0
    first.close()
    other.close()
