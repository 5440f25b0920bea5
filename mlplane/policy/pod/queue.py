"""The scheduling queue: which pending pod is tried next, and when a pod that did not fit is retried.

Modelled on kube-scheduler's PriorityQueue (pkg/scheduler/backend/queue/scheduling_queue.go):

- *active*: pods ready to try, higher ``spec.priority`` first, then older ``creationTimestamp``,
  then by namespace/name (the final tie-break);
- *backoff*: pods that failed recently wait 1 s, 2 s, 4 s ... up to 10 s after each attempt;
- *unschedulable*: pods that did not fit wait for an event that may help (``move_all``: a node
  added or changed, a pod deleted or finished) or until they have waited ``max_age``
  (``flush``), so nothing waits forever on a missed event;
- *gated*: pods a PreEnqueue plugin holds back (scheduling gates) until the pod changes.

A pod popped for a cycle stays *in flight* until the caller reports ``done`` (bound) or
``requeue`` (failed). If a move request arrived while it was in flight, a failed pod goes to
backoff rather than unschedulable, so an event during its cycle is not lost (moveRequestCycle).

Pure: callers pass ``now`` (seconds on any monotonic clock, real or simulated) and serialise calls.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable

from mlplane.policy.pod.interface import Status
from mlplane.policy.pod.snapshot import PodInfo

INITIAL_BACKOFF = 1.0  # seconds (podInitialBackoffSeconds)
MAX_BACKOFF = 10.0  # seconds (podMaxBackoffSeconds)

ACTIVE, BACKOFF, UNSCHEDULABLE, GATED, IN_FLIGHT = "active", "backoff", "unschedulable", "gated", "in-flight"


@dataclass(eq=False)
class QueuedPod:
    info: PodInfo
    where: str = ""
    attempts: int = 0
    backoff_until: float = 0.0
    since: float = 0.0  # when it became unschedulable
    cycle: int = 0  # the scheduling cycle it was last popped in
    seq: int = 0  # matches its one live heap entry

    @property
    def key(self) -> str:
        return self.info.key


def _order(info: PodInfo) -> tuple:
    return (-info.priority, info.pod.metadata.creation_timestamp or "", info.key)


def _relevant_change(old: PodInfo, new: PodInfo) -> bool:
    """Whether an update to a pending pod may change a scheduling decision (its spec, labels, or
    the claims made for it: status.resourceClaimStatuses); other status updates, like our own
    PodScheduled condition, do not."""
    return (old.pod.spec != new.pod.spec or old.pod.metadata.labels != new.pod.metadata.labels
            or old.pod.metadata.annotations != new.pod.metadata.annotations
            or old.pod.status.resource_claim_statuses != new.pod.status.resource_claim_statuses)


class SchedulingQueue:
    def __init__(self, pre_enqueue: Callable[[PodInfo], Status], *, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF):
        self.pre_enqueue = pre_enqueue
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self._pods: dict[str, QueuedPod] = {}
        self._active: list[tuple[tuple, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, QueuedPod] = {}  # insertion order is age order
        self._seq = 0
        self._cycle = 0
        self._move_request_cycle = -1

    # -- adding and removing pods -------------------------------------------------------------------
    def add(self, info: PodInfo, now: float) -> Status:
        """Add a pending pod, or take an update to one; returns its PreEnqueue status (not Success:
        the pod is gated)."""
        qp = self._pods.get(info.key)
        if qp is None:
            qp = self._pods[info.key] = QueuedPod(info)
            return self._enqueue(qp, now)
        old, qp.info = qp.info, info
        if qp.where == GATED or (qp.where == UNSCHEDULABLE and _relevant_change(old, info)):
            self._unschedulable.pop(qp.key, None)
            return self._enqueue(qp, now)
        if qp.where == ACTIVE and _order(old) != _order(info):
            self._push_active(qp)
        return self.pre_enqueue(info)

    def delete(self, key: str) -> None:
        """Forget the pod wherever it is (deleted, bound, or no longer ours)."""
        if self._pods.pop(key, None) is not None:
            self._unschedulable.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._pods

    def __len__(self) -> int:
        return len(self._pods)

    def where(self, key: str) -> str | None:
        qp = self._pods.get(key)
        return qp.where if qp is not None else None

    # -- one scheduling attempt ---------------------------------------------------------------------
    def pop(self, now: float) -> QueuedPod | None:
        """The next pod to try, now in flight; None when no pod is ready."""
        self._promote(now)
        while self._active:
            _, seq, key = heapq.heappop(self._active)
            qp = self._pods.get(key)
            if qp is not None and qp.where == ACTIVE and qp.seq == seq:
                self._cycle += 1
                qp.where, qp.cycle = IN_FLIGHT, self._cycle
                qp.attempts += 1
                return qp
        return None

    def done(self, key: str) -> None:
        """The pod's attempt ended with it bound: it leaves the queue."""
        qp = self._pods.get(key)
        if qp is not None and qp.where == IN_FLIGHT:
            del self._pods[key]

    def requeue(self, key: str, now: float, *, unschedulable: bool) -> None:
        """The pod's attempt failed: it did not fit (``unschedulable``) or hit an error. It backs off
        before its next attempt; a pod that did not fit waits for a helpful event, unless one came
        while it was in flight."""
        qp = self._pods.get(key)
        if qp is None or qp.where != IN_FLIGHT:
            return
        qp.backoff_until = now + min(self.initial_backoff * 2 ** (qp.attempts - 1), self.max_backoff)
        if unschedulable and self._move_request_cycle < qp.cycle:
            qp.where, qp.since = UNSCHEDULABLE, now
            self._unschedulable[key] = qp
        else:
            self._enqueue(qp, now)

    # -- retrying pods that did not fit -------------------------------------------------------------
    def move_all(self, now: float) -> None:
        """Something changed that may let unschedulable pods fit: retry them (after their backoff)."""
        self._move_request_cycle = self._cycle
        pods, self._unschedulable = list(self._unschedulable.values()), {}
        for qp in pods:
            self._enqueue(qp, now)

    def activate(self, key: str, now: float) -> None:
        """Retry one unschedulable pod (after its backoff): something changed for it alone."""
        qp = self._unschedulable.pop(key, None)
        if qp is not None:
            self._enqueue(qp, now)

    def flush(self, now: float, max_age: float) -> None:
        """Retry pods that have been unschedulable for ``max_age`` seconds or more."""
        while self._unschedulable:
            key, qp = next(iter(self._unschedulable.items()))
            if qp.since + max_age > now:
                return
            del self._unschedulable[key]
            self._enqueue(qp, now)

    # -- when to look again -------------------------------------------------------------------------
    def next_ready(self) -> float | None:
        """When the first backing-off pod becomes ready (None: none is backing off)."""
        while self._backoff:
            ready_at, seq, key = self._backoff[0]
            qp = self._pods.get(key)
            if qp is not None and qp.where == BACKOFF and qp.seq == seq:
                return ready_at
            heapq.heappop(self._backoff)
        return None

    def next_flush(self, max_age: float) -> float | None:
        """When ``flush(…, max_age)`` will next have a pod to retry (None: no pod is unschedulable)."""
        for qp in self._unschedulable.values():
            return qp.since + max_age
        return None

    # -- internals ----------------------------------------------------------------------------------
    def _enqueue(self, qp: QueuedPod, now: float) -> Status:
        status = self.pre_enqueue(qp.info)
        if not status.is_success:
            qp.where = GATED
        elif now < qp.backoff_until:
            qp.where = BACKOFF
            self._seq += 1
            qp.seq = self._seq
            heapq.heappush(self._backoff, (qp.backoff_until, qp.seq, qp.key))
        else:
            qp.where = ACTIVE
            self._push_active(qp)
        return status

    def _push_active(self, qp: QueuedPod) -> None:
        self._seq += 1
        qp.seq = self._seq
        heapq.heappush(self._active, (_order(qp.info), qp.seq, qp.key))

    def _promote(self, now: float) -> None:
        while self._backoff and self._backoff[0][0] <= now:
            _, seq, key = heapq.heappop(self._backoff)
            qp = self._pods.get(key)
            if qp is not None and qp.where == BACKOFF and qp.seq == seq:
                qp.where = ACTIVE
                self._push_active(qp)
