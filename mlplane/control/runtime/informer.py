"""Informers: list, then watch, keep a local cache, and tell handlers what changed.

A watch that breaks (server restart, ``Gone``) is re-established with exponential backoff; after
``Gone`` the informer re-lists and reports the difference, so handlers never miss a deletion.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from mlplane.api.errors import Gone
from mlplane.api.meta import Object
from mlplane.control.store.base import Store

log = logging.getLogger(__name__)

# handler(event_type, old, new): ADDED (old None), MODIFIED, DELETED (new is the last state).
Handler = Callable[[str, Object | None, Object], None]


class Informer:
    def __init__(self, store: Store, model: type[Object], namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None):
        self.store, self.model = store, model
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self._cache: dict[str, Object] = {}
        self._lock = threading.RLock()
        self._handlers: list[Handler] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._watch = None
        self._thread: threading.Thread | None = None
        self.resource_version = "0"

    # -- cache reads (objects are shared: copy before changing one) -----------------------------
    def get(self, key: str) -> Object | None:
        with self._lock:
            return self._cache.get(key)

    def list(self, predicate: Callable[[Object], bool] | None = None) -> list[Object]:
        with self._lock:
            items = list(self._cache.values())
        return [o for o in items if predicate is None or predicate(o)]

    def add_handler(self, handler: Handler) -> None:
        """Register a handler; it is first called with ADDED for everything already cached."""
        with self._lock:
            self._handlers.append(handler)
            current = list(self._cache.values())
        for obj in current:
            handler("ADDED", None, obj)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Informer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer-{self.model.KIND}", daemon=True)
            self._thread.start()
        return self

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 0.05
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._watch = self.store.watch(self.model, self.namespace, self.resource_version,
                                               self.label_selector, self.field_selector)
                if self._stop.is_set():
                    self._watch.stop()
                    return
                for event in self._watch:
                    self._apply(event.type, event.object)
                    delay = 0.05
                if self._stop.is_set():
                    return
            except Gone:
                need_list = True
                continue
            except Exception as e:  # server down or restarting: back off, then resume
                if self._stop.is_set():
                    return
                log.debug("informer %s: %s; retrying in %.2fs", self.model.KIND, e, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _relist(self) -> None:
        result = self.store.list(self.model, self.namespace, self.label_selector, self.field_selector)
        fresh = {o.key: o for o in result.items}
        with self._lock:
            old = self._cache
            self._cache = dict(fresh)
            self.resource_version = result.resource_version
            handlers = list(self._handlers)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._notify(handlers, "ADDED", None, obj)
            elif prev.metadata.resource_version != obj.metadata.resource_version:
                self._notify(handlers, "MODIFIED", prev, obj)
        for key, obj in old.items():
            if key not in fresh:
                self._notify(handlers, "DELETED", obj, obj)
        self._synced.set()

    def _apply(self, type_: str, obj: Object) -> None:
        key = obj.key
        with self._lock:
            old = self._cache.get(key)
            if type_ == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
            self.resource_version = obj.metadata.resource_version or self.resource_version
            handlers = list(self._handlers)
        self._notify(handlers, type_, old, obj)

    @staticmethod
    def _notify(handlers: list[Handler], type_: str, old: Object | None, new: Object) -> None:
        for h in handlers:
            try:
                h(type_, old, new)
            except Exception:
                log.exception("informer handler failed")
