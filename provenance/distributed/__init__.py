"""Running the reindex stages beyond one process: Ray (``provenance reindex --ray``; extra ``[ray]``).

Importing this package loads no Ray; :class:`RayRunner` does when it runs.
"""

from .ray_runner import RayRunner

__all__ = ["RayRunner"]
