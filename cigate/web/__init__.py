"""What both ASGI apps (the emulator and the gateway) share at their HTTP edge.

They never import each other, so the rules each must apply the same way live here:
:mod:`~cigate.web.paths` (one canonical spelling of a request path, decided once before any
routing), :mod:`~cigate.web.bodies` (request bodies: size caps, ``Content-Length``, strict JSON)
and :mod:`~cigate.web.files` (the HTTP rules of a file download: ETag, Range, HEAD,
``Content-Disposition``).
"""
