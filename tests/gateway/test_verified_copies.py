"""The gateway stores only bytes that passed the client's checks, and serves nothing else.

The emulator answers every container-file download with HTTP 200 and an error document (a
fault Azure and proxies really produce). The gateway must never serve that document as the
user's file, on any download path, and must serve the true bytes once the upstream recovers.
"""

from __future__ import annotations

import pytest

from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import CODE_TOOL, LiveGateway, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

DATA = bytes(range(256)) * 40
WRITE = "open('/mnt/data/f.bin', 'wb').write(bytes(range(256)) * 40)"
CONTENT = "**/containers/*/files/*/content"


def _bodies(gw: LiveGateway, f: dict) -> dict[str, tuple[int, bytes]]:
    """Status and body of the file on every download path the gateway offers."""
    http = gw.http()
    cid, cfile = f["container_id"], f["upstream_file_id"]
    paths = {
        "gateway id": f"/files/{f['id']}/content",
        "cfile id": f"/files/{cfile}/content",
        "containers facade": f"/openai/v1/containers/{cid}/files/{cfile}/content",
        "by path": f"/responses/{f['response_id']}/files/by-path/f.bin",
    }
    out = {}
    for name, path in paths.items():
        r = http.get(path)
        out[name] = (r.status_code, r.content)
    return out


#: The upstream's other answers while the download fault lasts: with the container's records
#: the size check alone would catch the document; without them only the document check can.
OTHERS = {
    "records-answer": [],
    "records-fail-too": [
        {"path": "**/containers/*/files", "method": "GET", "status": 500},
        {"path": "**/containers/*/files/*", "method": "GET", "status": 500},
    ],
}


@pytest.mark.parametrize("others", list(OTHERS.values()), ids=list(OTHERS))
def test_an_error_document_sent_with_200_is_never_served_and_the_true_bytes_are_once_it_stops(
    live_gateway: LiveGateway, emulator: RunningEmulator, others: list[dict]
) -> None:
    faults = [
        emulator.control.add_fault(path=CONTENT, method="GET", status=500, error_in_200=True),
        *(emulator.control.add_fault(**rule) for rule in others),
    ]
    response = live_gateway.openai().responses.create(
        model="gpt-4.1", input=code_input(WRITE), tools=CODE_TOOL
    )
    [f] = live_gateway.harvested(response.id, listed=False)  # the listing may fail too
    for path, (status, body) in _bodies(live_gateway, f).items():
        assert status == 502, (path, status, body[:200])
        assert b"carrying an error" in body, path
    [f] = live_gateway.harvested(response.id, listed=False)
    assert f["state"] == "failed", f
    assert f["error"]["kind"] == "upstream_unavailable"
    assert "HTTP 200 carrying an error" in f["error"]["message"]

    for fault in faults:
        emulator.control.remove_fault(fault)
    for path, (status, body) in _bodies(live_gateway, f).items():
        assert (path, status, body) == (path, 200, DATA)
    [again] = live_gateway.harvested(response.id, listed=False)
    assert (again["state"], again["bytes"]) == ("stored", len(DATA))
