"""Seed 004's REST flow with plain ``requests`` over the emulator's real server (curl-equivalent).

Bearer token = an unsigned Entra-style JWT for ``https://cognitiveservices.azure.com``, dated
``api-version``, no ``OpenAI-Beta`` header: exactly the calls the seed's REST tab shows.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from cigate.emulator.auth import make_test_jwt
from cigate.testing.plugin import RunningEmulator

VERSION = {"api-version": "2024-12-01-preview"}
CSV = b"sector,operating_profit\nTRANSPORTATION,5\n"
PROMPT = """Chart it.
```python
import glob
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
df = pd.read_csv(glob.glob("/mnt/data/*nifty.csv")[0])
df.plot.bar(x="sector", y="operating_profit").get_figure().savefig("/mnt/data/chart.png")
```
"""


def test_seed_004_rest_flow_with_a_bearer_token_and_a_dated_api_version(
    emulator: RunningEmulator,
) -> None:
    base = emulator.handle.url + "/openai"
    auth = {"Authorization": "Bearer " + make_test_jwt(aud="https://cognitiveservices.azure.com")}
    with requests.Session() as http:
        http.headers.update(auth)

        def call(method: str, path: str, **kw: Any) -> Any:
            response = http.request(method, base + path, params=VERSION, timeout=30, **kw)
            assert response.status_code == 200, response.text
            return response.json()

        uploaded = call(
            "POST", "/files", data={"purpose": "assistants"}, files={"file": ("nifty.csv", CSV)}
        )
        assert uploaded["id"].startswith("assistant-")
        assistant = call(
            "POST",
            "/assistants",
            json={
                "instructions": "You are an AI assistant that can write code.",
                "tools": [{"type": "code_interpreter"}],
                "model": "gpt-4o-mini",
                "tool_resources": {"code_interpreter": {"file_ids": [uploaded["id"]]}},
            },
        )
        thread = call("POST", "/threads", data="")
        call("POST", f"/threads/{thread['id']}/messages", json={"role": "user", "content": PROMPT})
        run = call("POST", f"/threads/{thread['id']}/runs", json={"assistant_id": assistant["id"]})
        deadline = time.monotonic() + 60
        while run["status"] in ("queued", "in_progress"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
            run = call("GET", f"/threads/{thread['id']}/runs/{run['id']}")
        assert run["status"] == "completed"
        messages = call("GET", f"/threads/{thread['id']}/messages")
        reply = messages["data"][0]
        image = reply["content"][0]
        assert image["type"] == "image_file"
        file_id = image["image_file"]["file_id"]
        assert file_id.startswith("assistant-")
        content = http.get(f"{base}/files/{file_id}/content", params=VERSION, timeout=30)
        assert content.status_code == 200
        assert content.content.startswith(b"\x89PNG")


def test_the_dated_surface_without_api_version_is_resource_not_found(
    emulator: RunningEmulator,
) -> None:
    response = requests.get(
        emulator.handle.url + "/openai/assistants",
        headers={"api-key": emulator.api_key},
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_the_openai_path_requires_the_beta_header(emulator: RunningEmulator) -> None:
    url = emulator.handle.url + "/v1/assistants"
    headers = {"Authorization": "Bearer " + emulator.api_key}
    refused = requests.get(url, headers=headers, timeout=30)
    assert refused.status_code == 400
    assert "OpenAI-Beta: assistants=v2" in refused.json()["error"]["message"]
    ok = requests.get(url, headers={**headers, "OpenAI-Beta": "assistants=v2"}, timeout=30)
    assert ok.status_code == 200
    assert ok.json()["object"] == "list"
