"""rok's registry: lineage of buckets, runs and versions in SQL; queries over NATS and HTTP; the web pages.

For the web pages and other in-process callers: :class:`Queries` (the query layer), :func:`create_app` (the
HTTP app) and :func:`get_queries` (the query layer of the app serving a request).
"""

from rok_registry.api import create_app, get_queries
from rok_registry.queries import Queries

__all__ = ["Queries", "create_app", "get_queries"]
