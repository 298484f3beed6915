"""The plugin's emulator also listens for HTTPS: one app, one state, on both listeners."""

from __future__ import annotations

import httpx2
import openai
import pytest
import requests

from cigate.testing.plugin import RunningEmulator


def test_the_https_listener_serves_the_same_emulator_to_openai_and_requests(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert emulator.https_url.startswith("https://127.0.0.1:")
    assert emulator.https_url != emulator.base_url.replace("http://", "https://")
    plain = emulator.openai()
    made = plain.files.create(file=("both.txt", b"one state"), purpose="assistants")
    for name, value in emulator.tls.env().items():
        monkeypatch.setenv(name, value)
    with openai.OpenAI(
        base_url=emulator.https_url + "/openai/v1/", api_key=emulator.api_key, max_retries=0
    ) as over_tls:
        assert over_tls.files.content(made.id).read() == b"one state"
    with requests.Session() as session:
        r = session.get(
            f"{emulator.https_url}/openai/v1/files/{made.id}", headers=emulator.auth_headers
        )
    assert (r.status_code, r.json()["filename"]) == (200, "both.txt")


def test_the_https_listener_is_refused_by_a_client_that_does_not_trust_the_local_ca(
    emulator: RunningEmulator,
) -> None:
    with (
        httpx2.Client(verify=True, trust_env=False) as untrusting,
        pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get(emulator.https_url + "/openai/v1/files")
    with httpx2.Client(verify=emulator.tls.client_context(), trust_env=False) as trusting:
        r = trusting.get(emulator.https_url + "/openai/v1/files")
    assert r.status_code == 401  # authenticated like the plain listener
