"""Containers and container files through the real openai SDK (api-reference 3)."""

from __future__ import annotations

import openai
import pytest

from cigate.testing.plugin import RunningEmulator


def test_a_container_is_created_with_the_requested_name_and_expiry(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    container = client.containers.create(
        name="c1", expires_after={"anchor": "last_active_at", "minutes": 30}, memory_limit="4g"
    )
    assert container.id.startswith("cntr_")
    assert container.name == "c1"
    assert container.status == "running"
    assert container.expires_after is not None
    assert container.expires_after.minutes == 30
    assert container.memory_limit == "4g"


def test_an_uploaded_file_is_listed_and_downloaded_byte_for_byte(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    container = client.containers.create(name="c")
    created = client.containers.files.create(container.id, file=("data.csv", b"a,b\n1,2\n"))
    assert created.source == "user"
    assert created.path.endswith("-data.csv")
    content = client.containers.files.content.retrieve(created.id, container_id=container.id)
    assert content.read() == b"a,b\n1,2\n"


def test_an_unknown_container_is_a_404(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.retrieve("cntr_nope")
    assert info.value.status_code == 404
