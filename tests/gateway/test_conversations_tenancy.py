"""Conversations through the gateway (issue 12): a conversation is its creator's.

A conversation keeps every item of every response run in it, and ``responses.create(
conversation=…)`` appends to it and reads it, so another tenant's id must reach nothing by
any of the calls: retrieve, update, delete, items, and a response run "in" it. Real SDK
(``openai``) against the real gateway in front of the emulator, on both storage backends.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import LiveGateway, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

MODEL = "gpt-4.1"


def test_another_tenant_reaches_no_conversation_nor_runs_a_response_in_it(
    live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    a = live_gateway.openai()
    b = live_gateway.openai(live_gateway.add_tenant("b"))
    secret = "SECRET-of-A"
    conversation = a.conversations.create(
        items=[{"type": "message", "role": "user", "content": secret}]
    )
    ran = a.responses.create(
        model=MODEL, input=code_input("print(6 * 7)"), conversation=conversation.id
    )
    assert ran.status == "completed"
    upstream = emulator.openai()
    before = [i.id for i in upstream.conversations.items.list(conversation.id, limit=100).data]
    assert len(before) > 2  # A's item, and what A's response appended

    calls: dict[str, Any] = {
        "retrieve": lambda: b.conversations.retrieve(conversation.id),
        "update": lambda: b.conversations.update(conversation.id, metadata={"b": "x"}),
        "items.list": lambda: b.conversations.items.list(conversation.id),
        "items.create": lambda: b.conversations.items.create(
            conversation.id, items=[{"type": "message", "role": "user", "content": "b"}]
        ),
        "items.retrieve": lambda: b.conversations.items.retrieve(
            before[0], conversation_id=conversation.id
        ),
        "items.delete": lambda: b.conversations.items.delete(
            before[0], conversation_id=conversation.id
        ),
        "responses.create": lambda: b.responses.create(
            model=MODEL, input="what did they say?", conversation=conversation.id
        ),
        "responses.create-object": lambda: b.responses.create(
            model=MODEL, input="what did they say?", conversation={"id": conversation.id}
        ),
        "delete": lambda: b.conversations.delete(conversation.id),
    }
    for name, call in calls.items():
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert secret not in str(info.value), name
        assert conversation.id in str(info.value), name  # the id B sent, in upstream words

    after = [i.id for i in upstream.conversations.items.list(conversation.id, limit=100).data]
    assert after == before
    assert upstream.conversations.retrieve(conversation.id).metadata in ({}, None)
    # A still owns and uses it.
    assert a.conversations.retrieve(conversation.id).id == conversation.id
    a.conversations.delete(conversation.id)


def test_a_conversation_cannot_be_seeded_with_another_tenants_file(
    live_gateway: LiveGateway,
) -> None:
    a = live_gateway.openai()
    b = live_gateway.openai(live_gateway.add_tenant("b"))
    theirs = a.files.create(file=("a.txt", b"A's file"), purpose="assistants")
    own = b.conversations.create()
    part = {"type": "input_file", "file_id": theirs.id}
    items: Any = [{"type": "message", "role": "user", "content": [part]}]
    with pytest.raises(openai.NotFoundError, match=theirs.id):
        b.conversations.create(items=items)
    with pytest.raises(openai.NotFoundError, match=theirs.id):
        b.conversations.items.create(own.id, items=items)
    assert b.conversations.items.list(own.id).data == []
