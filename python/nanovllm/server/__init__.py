"""The OpenAI-compatible HTTP server behind ``nanovllm serve`` (FastAPI on uvicorn).

``main(argv)`` in :mod:`nanovllm.server.main` is the command; :func:`build_app` in
:mod:`nanovllm.server.app` builds the ASGI app over a running engine.
"""

from nanovllm.server.main import main

__all__ = ["main"]
