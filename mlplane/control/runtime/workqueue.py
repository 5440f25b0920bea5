"""A work queue of keys, as client-go's: de-duplicating, one worker per key at a time, delayed adds,
and per-key exponential backoff. Workers block on a condition variable; nothing ever polls.

Delayed adds follow client-go's delaying queue (util/workqueue/delaying_queue.go): a key waits at
most once; adding it again with an earlier time brings it forward, a later time changes nothing.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time


class WorkQueue:
    def __init__(self, name: str = "", *, base_delay: float = 0.005, max_delay: float = 60.0):
        self.name = name
        self.base_delay, self.max_delay = base_delay, max_delay
        self._cv = threading.Condition()
        self._queue: collections.deque[str] = collections.deque()  # FIFO of keys ready to process
        self._dirty: set[str] = set()  # keys queued (or to re-queue once processing ends)
        self._processing: set[str] = set()
        # Delayed keys: when each is due, and a heap of (ready_at, seq, key) in which an entry whose
        # time is no longer the key's due time is stale (the key was brought forward) and skipped.
        self._ready_at: dict[str, float] = {}
        self._waiting: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._shutdown = False

    def add(self, key: str) -> None:
        with self._cv:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cv.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cv:
            if self._shutdown:
                return
            ready_at = time.monotonic() + delay
            pending = self._ready_at.get(key)
            if pending is not None and pending <= ready_at:
                return  # already due no later than that
            self._ready_at[key] = ready_at
            heapq.heappush(self._waiting, (ready_at, next(self._seq), key))
            self._cv.notify()

    def add_rate_limited(self, key: str) -> float:
        """Re-queue after a failure: 5 ms, 10 ms, 20 ms, ... up to max_delay. Returns the delay."""
        with self._cv:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self.base_delay * (2 ** n), self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Reset the key's backoff after a success."""
        with self._cv:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._cv:
            return self._failures.get(key, 0)

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to process (the caller must call done(key)), or None on shutdown/timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                self._promote_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                if self._shutdown:
                    return None
                wait = None
                if self._waiting:
                    wait = max(0.0, self._waiting[0][0] - time.monotonic())
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cv.wait(wait)

    def _promote_locked(self) -> None:
        now = time.monotonic()
        while self._waiting and self._waiting[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._waiting)
            if self._ready_at.get(key) == ready_at:
                del self._ready_at[key]
                self._add_locked(key)

    def done(self, key: str) -> None:
        with self._cv:
            self._processing.discard(key)
            if key in self._dirty:  # re-added while being processed: run it again
                self._queue.append(key)
                self._cv.notify()

    def shutdown(self) -> None:
        with self._cv:
            self._shutdown = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._queue)
