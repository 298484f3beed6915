"""The ``emulator`` fixture's API, as other test suites use it."""

from __future__ import annotations

import httpx2
import openai

from cigate.testing.plugin import RunningEmulator, current_mode


def test_the_urls_follow_the_azure_resource_root(emulator: RunningEmulator) -> None:
    assert emulator.base_url.startswith("http://127.0.0.1:")
    assert emulator.v1_url == emulator.base_url + "/openai/v1/"
    assert emulator.openai_url == emulator.base_url + "/v1/"
    assert emulator.mode == current_mode()


def test_the_sdk_factories_point_at_the_emulator(emulator: RunningEmulator) -> None:
    assert str(emulator.openai().base_url) == emulator.v1_url
    assert isinstance(emulator.async_openai(), openai.AsyncOpenAI)
    azure = emulator.azure_openai()
    assert isinstance(azure, openai.AzureOpenAI)
    assert str(azure.base_url).startswith(emulator.base_url + "/openai")
    assert isinstance(emulator.async_azure_openai(), openai.AsyncAzureOpenAI)


def test_the_http_client_reaches_the_root_without_credentials(emulator: RunningEmulator) -> None:
    client = emulator.http_client()
    assert isinstance(client, httpx2.Client)
    assert client.get("/openai/v1/files").status_code == 401
    assert client.get("/openai/v1/files", headers=emulator.auth_headers).status_code == 200


async def test_the_async_http_client_works_from_the_tests_loop(emulator: RunningEmulator) -> None:
    async with emulator.async_http_client(headers=emulator.auth_headers) as client:
        response = await client.get("/openai/v1/containers")
    assert response.json()["object"] == "list"


def test_each_test_starts_from_a_reset_emulator_part_one(emulator: RunningEmulator) -> None:
    emulator.openai().containers.create(name="leftover")
    emulator.control.add_fault(path="/openai/v1/files", status=500)


def test_each_test_starts_from_a_reset_emulator_part_two(emulator: RunningEmulator) -> None:
    assert list(emulator.openai().containers.list()) == []
    assert emulator.control.faults() == []


def test_validated_bodies_are_counted(emulator: RunningEmulator) -> None:
    emulator.openai().containers.create(name="counted")
    assert emulator.recorder.checked >= 1
    assert emulator.recorder.failures == []
