"""The client library: run a code-interpreter request and keep every file it made.

Its public names are exported by :mod:`cigate` itself (one table, ``cigate.__all__``); the
modules here are its implementation:

* ``_config``: settings, endpoint forms and credentials (API key or Microsoft Entra ID);
* ``_responses`` and ``_assistants``: a run on the Responses API or the Assistants API;
* ``_download`` with ``_atomic``: verified bytes on disk (through :mod:`cigate.harvest`);
* ``_results``, ``_render`` and ``_notebook``: results as data, tables and live notebook views;
* ``_sync``: the sync twins (they work inside Jupyter too).
"""
