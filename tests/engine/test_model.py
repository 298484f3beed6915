"""The scripted model: which cells it runs, and what it answers."""

from __future__ import annotations

from typing import Any

import pytest

from cigate.engine.containers import ContainerFile
from cigate.engine.model import (
    Conversation,
    Reply,
    RunCode,
    ScriptedModel,
    ToolResult,
    extract_code_blocks,
)
from cigate.sandbox.base import DisplayImage, ExecutionError, ExecutionResult


def conversation(
    text: str | list[dict[str, Any]],
    *,
    instructions: str | None = None,
    code_interpreter: bool = True,
    tool_choice: str = "auto",
) -> Conversation:
    if isinstance(text, str):
        items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": text}]
    else:
        items = text
    return Conversation(
        instructions=instructions,
        items=items,
        latest_input=items,
        code_interpreter=code_interpreter,
        tool_choice=tool_choice,
    )


def cfile(relpath: str) -> ContainerFile:
    return ContainerFile(
        id=f"cfile_{relpath}", container_id="cntr_1", relpath=relpath, source="assistant",
        created_at=0, bytes=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "blocks"),
    [
        pytest.param("```python\nprint(1)\n```", ["print(1)\n"], id="one-block"),
        pytest.param("a\n```python\nx = 1\n```\nb\n```py\ny = 2\n```", ["x = 1\n", "y = 2\n"],
                     id="two-blocks-py-alias"),
        pytest.param("```python\r\nprint(1)\r\n```\r\n", ["print(1)\n"], id="crlf"),
        pytest.param("```js\nconsole.log(1)\n```", [], id="other-language"),
        pytest.param("```\nprint(1)\n```", [], id="no-language"),
        pytest.param("```python\nprint('```')\n```", ["print('```')\n"], id="fence-inside-a-line"),
        pytest.param("  ```python\n  x = 1\n  ```", ["  x = 1\n"], id="indented-fence"),
    ],
)  # fmt: skip
def test_code_blocks_are_the_fenced_python_blocks_in_order(text: str, blocks: list[str]) -> None:
    assert extract_code_blocks(text) == blocks


async def test_each_block_is_one_code_call_then_a_reply() -> None:
    model = ScriptedModel()
    conv = conversation("```python\na = 1\n```\n```python\nprint(a)\n```")
    assert await model.next_step(conv, []) == RunCode("a = 1\n")
    first = ToolResult("a = 1\n", ExecutionResult())
    assert await model.next_step(conv, [first]) == RunCode("print(a)\n")
    second = ToolResult("print(a)\n", ExecutionResult(stdout="1\n"))
    step = await model.next_step(conv, [first, second])
    assert isinstance(step, Reply)
    assert step.text.startswith("I ran 2 code cells.")
    assert "```\n1\n```" in step.text


async def test_the_last_user_message_of_the_input_is_the_one_that_counts() -> None:
    items = [
        {"type": "message", "role": "user", "content": "```python\nold = 1\n```"},
        {"type": "message", "role": "assistant", "content": "ok"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "```python\nnew = 2\n```"}],
        },
    ]
    assert await ScriptedModel().next_step(conversation(items), []) == RunCode("new = 2\n")


async def test_instructions_supply_the_code_when_the_input_has_none() -> None:
    conv = conversation("go", instructions="```python\nprint('from instructions')\n```")
    assert await ScriptedModel().next_step(conv, []) == RunCode("print('from instructions')\n")


async def test_text_without_code_gets_a_deterministic_echo() -> None:
    step = await ScriptedModel().next_step(conversation("Hello   there,\nmodel"), [])
    assert isinstance(step, Reply)
    assert step.text.startswith("You said: Hello there, model\n")
    assert step == await ScriptedModel().next_step(conversation("Hello there, model"), [])


@pytest.mark.parametrize(
    ("code_interpreter", "tool_choice"),
    [pytest.param(False, "auto", id="no-tool"), pytest.param(True, "none", id="tool-choice-none")],
)
async def test_code_without_an_enabled_code_interpreter_is_not_run(
    code_interpreter: bool, tool_choice: str
) -> None:
    conv = conversation(
        "```python\n1\n```", code_interpreter=code_interpreter, tool_choice=tool_choice
    )
    step = await ScriptedModel().next_step(conv, [])
    assert step == Reply(
        "I found 1 python block but cannot run code: this request does not enable the "
        "code_interpreter tool."
    )


def test_the_report_links_every_changed_file_once_with_its_sandbox_url() -> None:
    from cigate.engine.model import report

    a, b = cfile("out/a.csv"), cfile("b.png")
    text = report(
        [
            ToolResult("x", ExecutionResult(), changed=(a,)),
            ToolResult("y", ExecutionResult(images=[DisplayImage("image/png", b"")]), (a, b)),
        ]
    )
    assert text.endswith(
        "Files:\n- [a.csv](sandbox:/mnt/data/out/a.csv)\n- [b.png](sandbox:/mnt/data/b.png)"
    )
    assert "It displayed 1 image." in text


def test_the_report_names_errors_and_interrupted_cells() -> None:
    from cigate.engine.model import report

    error = ExecutionError("ZeroDivisionError", "division by zero", ["Traceback", "..."])
    text = report(
        [
            ToolResult("1/0", ExecutionResult(stdout="before\n", error=error)),
            ToolResult("sleep", ExecutionResult(timed_out=True)),
        ]
    )
    assert "Cell 1 raised ZeroDivisionError: division by zero" in text
    assert "before" in text
    assert "Traceback" not in text
    assert "Cell 2 exceeded its time limit and was interrupted." in text
