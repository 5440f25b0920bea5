"""The object store: one interface (``Store``), several implementations.

- ``EmbeddedStore``: in memory, persisted to SQLite, with group commit and watch history.
- ``HTTPStore``: a client of mlplane's (Kubernetes-style) HTTP API, with the same interface.
"""

from mlplane.control.store.base import ListResult, Store, Watch, WatchEvent

__all__ = ["Store", "Watch", "WatchEvent", "ListResult"]
