"""The shared core of finding and fetching files, used by the client and the gateway alike.

It knows no sink: the client writes what it fetches to disk, the gateway to its blob store.

* :mod:`~cigate.harvest.refs`: ``FileRef`` and discovery (citations, stream events, listings,
  Assistants messages); :mod:`~cigate.harvest.sse`: splitting a raw SSE stream into events.
* :mod:`~cigate.harvest.classify`: every upstream failure as one member of the error tree;
  :mod:`~cigate.harvest.retry`: the one retry policy (with the server's ``retry-after``).
* :mod:`~cigate.harvest.naming`: safe names for files named by model-written code;
  :mod:`~cigate.harvest.content_types`: what a file is, from its name and first bytes.
"""
