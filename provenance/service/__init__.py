"""The HTTP service over a read-only engine (``provenance serve``; needs the ``[serve]`` extra).

Importing this package loads neither FastAPI nor uvicorn; :func:`create_app` and :func:`serve` do.
"""

from .app import ServiceSettings, create_app, serve

__all__ = ["ServiceSettings", "create_app", "serve"]
