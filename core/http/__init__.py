"""The HTTP side: ``app`` (the ASGI application, built once), ``middleware``
(request context, auth), ``routes`` and ``endpoints`` (where a body is parsed
and a model call begins), ``streaming`` relays, ``server`` (hypercorn).

The model call itself is :mod:`sluiceway.calls`."""
