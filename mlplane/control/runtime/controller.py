"""Controllers: a work queue of keys fed by informers, and workers that reconcile one key at a time.

``reconcile(key)`` reads what it needs from informer caches, calls policy code to decide, and
writes through the store. It returns ``None`` when done, or ``Requeue(after)`` to be called again
later; an exception re-queues the key with exponential backoff (logged, never fatal).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from mlplane.api.errors import Conflict, NotFound
from mlplane.api.meta import Object
from mlplane.control.runtime.informer import Informer
from mlplane.control.runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requeue:
    after: float = 0.0


Reconcile = Callable[[str], "Requeue | None"]


class Controller:
    def __init__(self, name: str, reconcile: Reconcile, *, workers: int = 1):
        self.name = name
        self.reconcile = reconcile
        self.workers = workers
        self.queue = WorkQueue(name)
        self._threads: list[threading.Thread] = []

    def watch(self, informer: Informer, keys: Callable[[Object], list[str] | str | None] = lambda o: o.key,
              *, on: tuple[str, ...] = ("ADDED", "MODIFIED", "DELETED")) -> "Controller":
        """Enqueue keys(obj) for every event of ``informer`` whose type is in ``on``."""

        def handler(type_: str, old: Object | None, new: Object) -> None:
            if type_ not in on:
                return
            for obj in (new, old) if type_ == "MODIFIED" else (new,):
                if obj is None:
                    continue
                found = keys(obj)
                for key in [found] if isinstance(found, str) else found or []:
                    self.queue.add(key)

        informer.add_handler(handler)
        return self

    def start(self) -> "Controller":
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self.queue.shutdown()
        for t in self._threads:
            t.join(timeout=5)

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                result = self.reconcile(key)
            except (Conflict, NotFound) as e:
                # Our cache was behind the store: the informer will catch up; try again soon.
                log.debug("%s: %s: %s", self.name, key, e)
                self.queue.add_rate_limited(key)
            except Exception:
                delay = self.queue.add_rate_limited(key)
                log.exception("%s: reconcile %s failed; retrying in %.3fs", self.name, key, delay)
            else:
                self.queue.forget(key)
                if result is not None:
                    self.queue.add_after(key, result.after)
            finally:
                self.queue.done(key)
