"""``--metrics-port``: ``/metrics`` on its own listener of a real ``cigate gateway serve``
process, and nowhere else; that listener answers nothing but ``/metrics`` and ``/healthz``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from cigate.exceptions import ConfigurationError
from cigate.gateway.settings import GatewaySettings
from cigate.testing.services import free_port
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.live import serve_process

TOKEN = "scrape-token"


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(tenant port, metrics port) of one gateway process for the module."""
    home: Path = tmp_path_factory.mktemp("metrics-port")
    settings = on_local_disk(
        home,
        upstream=DEAD_UPSTREAM,
        upstream_key="k",
    )
    port, metrics_port = free_port(), free_port()
    proc = serve_process(settings, port, home, metrics_port=str(metrics_port), metrics_token=TOKEN)
    try:
        yield port, metrics_port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_metrics_are_served_on_their_own_port_and_count_the_tenant_port(
    ports: tuple[int, int],
) -> None:
    port, metrics_port = ports
    auth = {"authorization": f"Bearer {TOKEN}"}
    main = httpx2.get(f"http://127.0.0.1:{port}/metrics", headers=auth)
    assert main.status_code == 404
    assert set(main.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    scraped = httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics", headers=auth)
    assert scraped.status_code == 200
    assert 'cigate_requests_total{method="GET",route="/healthz",status="200"}' in scraped.text
    assert httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/readyz"),
        ("GET", "/files/gwf_x/content"),
        ("POST", "/openai/v1/responses"),
        ("GET", "/openai/v1/containers"),
        ("GET", "/links/lnk_x?expires=1&signature=x"),
        ("GET", "/metrics/"),
        ("GET", "//metrics"),
    ],
    ids=["readyz", "file", "responses", "containers", "link", "trailing-slash", "double-slash"],
)
def test_the_metrics_port_answers_nothing_else(
    ports: tuple[int, int], method: str, path: str
) -> None:
    _, metrics_port = ports
    r = httpx2.request(method, f"http://127.0.0.1:{metrics_port}{path}", json={})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert httpx2.get(f"http://127.0.0.1:{metrics_port}/healthz").status_code == 200


@pytest.mark.parametrize("metrics_port", [8080, -1, 70000], ids=["same-as-port", "neg", "big"])
def test_a_metrics_port_that_cannot_work_fails_at_start_up(metrics_port: int) -> None:
    with pytest.raises(ConfigurationError, match="--metrics-port"):
        GatewaySettings(port=8080, metrics_port=metrics_port)
