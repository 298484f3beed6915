"""Displayed figures are files, as on the real service: every image the code only displays
(``plt.show()``) is saved into the container as ``cfile_<id>.png``, listed, downloadable and
cited; a figure the code saved too keeps both files (seed 000's ``filename: cfile_689df4….png``)."""

from __future__ import annotations

import base64
import re
from typing import Any

from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]
OUTPUTS: Any = ["code_interpreter_call.outputs"]
FIGURE_NAME = re.compile(r"^(cfile_[0-9a-f]{32})\.png$")
PNG = b"\x89PNG\r\n\x1a\n"
CODE = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.bar(["a", "b"], [1, 2])
fig.savefig("/mnt/data/saved.png")
plt.show()
fig2, ax2 = plt.subplots()
ax2.plot([1, 2, 3])
plt.show()
"""


def test_each_displayed_figure_becomes_a_cited_container_file_next_to_the_saved_one(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    response = client.responses.create(
        model=MODEL, input=f"Chart it.\n```python\n{CODE}```\n", tools=AUTO, include=OUTPUTS
    )
    call = next(item for item in response.output if item.type == "code_interpreter_call")
    displayed = [
        base64.b64decode(o.url.split(",", 1)[1]) for o in call.outputs or [] if o.type == "image"
    ]
    assert len(displayed) == 2  # the outputs still carry the images, as before
    files = {f.path: f for f in client.containers.files.list(container_id=call.container_id)}
    figures = {}
    for path, listed in files.items():
        match = FIGURE_NAME.match(path.removeprefix("/mnt/data/"))
        if match:
            assert listed.id == match.group(1)  # named after its own id
            assert listed.source == "assistant"
            figures[listed.id] = client.containers.files.content.retrieve(
                listed.id, container_id=call.container_id
            ).read()
    assert "/mnt/data/saved.png" in files
    assert sorted(figures.values()) == sorted(displayed)
    assert all(data.startswith(PNG) for data in figures.values())
    message = response.output[-1]
    assert message.type == "message"
    cited = {
        (a.file_id, a.filename)
        for a in message.content[0].annotations
        if a.type == "container_file_citation"
    }
    assert {(i, f"{i}.png") for i in figures} <= cited
    assert (files["/mnt/data/saved.png"].id, "saved.png") in cited


def test_a_figure_shows_up_in_the_sandbox_for_the_next_cell(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    first = client.responses.create(
        model=MODEL,
        input="```python\nimport matplotlib.pyplot as plt\nplt.plot([1])\nplt.show()\n```",
        tools=AUTO,
    )
    call = next(item for item in first.output if item.type == "code_interpreter_call")
    check = (
        "import glob\n"
        "print(sorted(p.rsplit('/', 1)[1] for p in glob.glob('/mnt/data/cfile_*.png')))"
    )
    second = client.responses.create(
        model=MODEL,
        input=f"```python\n{check}\n```",
        tools=[{"type": "code_interpreter", "container": call.container_id}],
        include=OUTPUTS,
    )
    logs = next(i for i in second.output if i.type == "code_interpreter_call").outputs
    assert logs is not None
    listed = [f.id for f in client.containers.files.list(container_id=call.container_id)]
    (figure,) = [i for i in listed if i.startswith("cfile_")]
    assert any(o.type == "logs" and f"{figure}.png" in o.logs for o in logs)
