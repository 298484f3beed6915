"""The Conversations API and ``conversation=`` on responses, through the openai SDK (every body
the emulator sends is checked against the OpenAPI description by the fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai import OpenAI

from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]


@pytest.fixture(params=["project-v1", "azure-v1"], ids=["project-v1", "azure-v1"])
def client(request: pytest.FixtureRequest, emulator: RunningEmulator) -> OpenAI:
    if request.param == "project-v1":
        return emulator.openai(base_url=emulator.project_url("42", tls=False) + "/openai/v1/")
    return emulator.openai()


def _say(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def test_a_conversation_is_created_read_updated_and_deleted(client: OpenAI) -> None:
    made = client.conversations.create(items=[_say("one"), _say("two")], metadata={"k": "v"})
    assert made.id.startswith("conv_")
    assert (made.object, made.metadata) == ("conversation", {"k": "v"})
    assert client.conversations.retrieve(made.id).created_at == made.created_at
    updated = client.conversations.update(made.id, metadata={"k": "w"})
    assert updated.metadata == {"k": "w"}
    deleted = client.conversations.delete(made.id)
    assert (deleted.id, deleted.deleted) == (made.id, True)
    with pytest.raises(openai.NotFoundError, match=f"Conversation with id '{made.id}' not found"):
        client.conversations.retrieve(made.id)


def test_items_list_newest_first_by_default_and_page_until_has_more_is_false(
    client: OpenAI,
) -> None:
    conversation = client.conversations.create()
    texts = [f"m{i}" for i in range(7)]
    client.conversations.items.create(conversation.id, items=[_say(t) for t in texts[:4]])
    added = client.conversations.items.create(conversation.id, items=[_say(t) for t in texts[4:]])
    assert [i.type for i in added.data] == ["message"] * 3
    first = client.conversations.items.list(conversation.id, limit=3)
    assert first.has_more is True
    everything = list(client.conversations.items.list(conversation.id, limit=3))
    shown = [item.content[0].text for item in everything]  # type: ignore[union-attr]
    assert shown == texts[::-1]
    ascending = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [i.id for i in ascending] == [i.id for i in everything][::-1]
    one = client.conversations.items.retrieve(ascending[2].id, conversation_id=conversation.id)
    assert one.id == ascending[2].id
    after_delete = client.conversations.items.delete(
        ascending[2].id, conversation_id=conversation.id
    )
    assert (after_delete.object, after_delete.id) == ("conversation", conversation.id)
    left = [i.id for i in client.conversations.items.list(conversation.id, order="asc")]
    assert left == [i.id for i in ascending if i.id != ascending[2].id]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"items": [_say(str(i)) for i in range(21)]}, "items"),
        ({"items": ["not an item"]}, "items[0]"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"items": [{"type": "shell_call", "id": "x"}]}, "items[0].type"),
        ({"items": [{"type": "message", "role": "robot", "content": "x"}]}, "items[0].role"),
        ({"items": [{"type": "message", "role": "user"}]}, "items[0].content"),
        ({"items": [{**_say("a"), "id": "msg_1"}, {**_say("b"), "id": "msg_1"}]}, "items[1].id"),
    ],
    ids=[
        "21-items",
        "item-not-an-object",
        "metadata-not-strings",
        "unknown-item-type",
        "unknown-role",
        "no-content",
        "repeated-id",
    ],
)
def test_bad_conversation_bodies_are_400_naming_the_parameter(
    client: OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.create(**kwargs)
    assert caught.value.body["param"] == param  # type: ignore[index]


def test_responses_in_a_conversation_see_its_items_append_theirs_and_keep_the_sandbox(
    client: OpenAI,
) -> None:
    conversation = client.conversations.create(items=[_say("Remember: x = 6")])
    first = client.responses.create(
        model=MODEL,
        conversation=conversation.id,
        input="```python\nx = 6\nopen('/mnt/data/kept.txt', 'w').write('kept')\n```",
        tools=AUTO,
    )
    assert first.conversation is not None
    assert first.conversation.id == conversation.id
    second = client.responses.create(
        model=MODEL,
        conversation={"id": conversation.id},
        input="```python\nprint(x * 7, open('/mnt/data/kept.txt').read())\n```",
        tools=AUTO,
    )
    first_call = next(i for i in first.output if i.type == "code_interpreter_call")
    second_call = next(i for i in second.output if i.type == "code_interpreter_call")
    assert second_call.container_id == first_call.container_id
    assert "42 kept" in second.output_text
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    output_ids = [o.id for o in (*first.output, *second.output)]
    assert [i.id for i in items if i.id in output_ids] == output_ids
    # the seed item, then each response's input before its output
    assert len(items) == 1 + 1 + len(first.output) + 1 + len(second.output)


def test_an_unknown_conversation_is_404_and_nothing_runs(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="Conversation with id 'conv_nope' not found"):
        client.responses.create(model=MODEL, conversation="conv_nope", input="hi")


def test_an_item_id_already_in_the_conversation_is_refused(client: OpenAI) -> None:
    conversation = client.conversations.create(items=[{**_say("a"), "id": "msg_mine"}])
    with pytest.raises(openai.BadRequestError, match="already exists"):
        client.conversations.items.create(conversation.id, items=[{**_say("b"), "id": "msg_mine"}])
    assert len(list(client.conversations.items.list(conversation.id))) == 1


async def test_concurrent_responses_in_one_conversation_each_append_every_item_once(
    emulator: RunningEmulator,
) -> None:
    client = emulator.async_openai()
    conversation = await client.conversations.create()
    count = 6  # bounded: each runs one cell in the conversation's one container
    responses = await asyncio.gather(
        *(
            client.responses.create(
                model=MODEL,
                conversation=conversation.id,
                input=f"```python\nprint({i} * 7)\n```",
                tools=AUTO,
            )
            for i in range(count)
        )
    )
    containers = {
        item.container_id
        for r in responses
        for item in r.output
        if item.type == "code_interpreter_call"
    }
    items = [i async for i in client.conversations.items.list(conversation.id, limit=100)]
    ids = [i.id for i in items]
    assert len(ids) == len(set(ids))
    assert len(items) == count + sum(len(r.output) for r in responses)
    assert {o.id for r in responses for o in r.output} <= set(ids)
    assert len(containers) == 1  # the conversation keeps one sandbox
    await client.close()


def test_a_streamed_response_in_a_conversation_appends_its_items_when_it_ends(
    client: OpenAI,
) -> None:
    conversation = client.conversations.create()
    with client.responses.stream(
        model=MODEL,
        conversation=conversation.id,
        input="```python\nprint(6 * 7)\n```",
        tools=AUTO,
    ) as stream:
        final = stream.get_final_response()
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [i.id for i in items][1:] == [o.id for o in final.output]
    assert items[0].type == "message"
