"""The self-hosted code interpreter: ``--code-interpreter self`` (docs/self-hosted.md).

The gateway answers requests whose tools include ``code_interpreter`` itself: the engine
(:mod:`cigate.engine`) runs the response over the gateway's own sandboxes, the upstream model
only decides what to run through a function tool (:mod:`.model`), and every file the code
writes is stored in the gateway's storage as it appears (:mod:`.service`).
"""
