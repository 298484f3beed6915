"""Assistants v2 semantics over the code-interpreter sandbox (api-reference §4.2-4.4).

The Assistants API is the older, durable sibling of the Responses API: the same code interpreter,
but its generated files become Files-API files (``assistant-…`` on Azure) that outlive the
container, cited as ``image_file`` blocks and ``file_path`` annotations. The pieces:

* ``objects``: the state records (assistant, thread, message, run, step) and their wire shapes;
* ``backend``: ``AssistantsBackend``, CRUD, validation and pagination, one active run per thread;
* ``executor``: ``RunExecutor``, which drives one run through the scripted model and the thread's
  container, turning cells into run steps and files into message content, live;
* ``stream``: the run's event log and its ``event: …`` / ``data: …`` framing, ending ``[DONE]``.

Like the Responses engine, nothing here knows HTTP: the emulator's ``assistants`` module maps
routes onto the backend, and the gateway's self-hosted interpreter could do the same later.
"""

from cigate.engine.assistants.backend import AssistantsBackend
from cigate.engine.assistants.objects import Assistant, Message, Run, RunStep, Thread
from cigate.engine.assistants.stream import RunEventLog, encode_assistant_sse

__all__ = [
    "Assistant",
    "AssistantsBackend",
    "Message",
    "Run",
    "RunEventLog",
    "RunStep",
    "Thread",
    "encode_assistant_sse",
]
