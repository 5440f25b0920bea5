"""Kueue's scheduling cycle: which pending workloads get quota, and which admitted ones are preempted.

A port of pkg/scheduler/scheduler.go ``schedule()`` (classical mode) over a ``State``:

1. heads: one workload per ClusterQueue, the first of its queue (higher priority, then older,
   then UID). A BestEffortFIFO queue sets aside heads that cannot be admitted (inadmissible)
   and offers the next one in a later cycle; the set-aside ones come back when quota is freed in
   their cohort tree. A StrictFIFO head stays at the front and blocks its queue.
2. nominate: flavor assignment for each head (``flavors.py``); if it needs preemption, the
   victims now (``preemption.py``); if it fits neither way and a podSet has ``minCount``, the
   largest count that fits (Kueue's binary search, podset_reducer.go).
3. entries are ordered (``classical_order``: not borrowing before borrowing, then higher
   priority, then older). With fair sharing (``fairsharing.FairSharing``) the entries come one
   at a time from Kueue's tournament over the snapshot as the entries before left it, and
   preemption is fair-sharing preemption.
4. each entry is checked again against the snapshot as mutated by the entries before it, so two
   ClusterQueues of one cohort never over-admit in one cycle; an entry whose victims overlap
   another's is skipped; usage of an admitted entry or of a preemptor is added to the snapshot.
   Victims keep their quota until the cycle ends and the check leaves out only the entry's own
   victims, so quota freed by a preemption is not reused by another workload in the same cycle.
   (Kueue's ``fits()`` also leaves out the victims of earlier entries, which lets a later entry
   that fitted at nomination use quota a preemption frees; mlplane follows the stated contract
   of issue #4 instead.)
5. at the end of the cycle victims are evicted (their quota released, they are queued again)
   and admitted workloads join the snapshot.

``schedule_workloads`` runs N cycles and returns a ``Result``: admitted (with the
podSetAssignments), preempted (with the reason) and pending (with why). For incremental use (a
live controller, the benchmark) a ``Scheduler`` is driven with ``add`` (a new pending workload),
``finish`` (an admitted one is done: its quota is released), ``advance`` (the clock) and
``cycle`` (one scheduling cycle, returning a ``CycleResult``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from mlplane.policy.workload.kueue.fairsharing import FairPreemptor, FairSharing, tournament_order
from mlplane.policy.workload.kueue.flavors import FIT, NO_FIT, PREEMPT, Assignment, FlavorAssigner
from mlplane.policy.workload.kueue.model import (ANY, BEST_EFFORT_FIFO, INADMISSIBLE, PENDING,
                                                 WAITING_FOR_PREEMPTED_WORKLOADS, WAITING_FOR_QUOTA, ClusterQueue,
                                                 PodSetAdmission, Workload)
from mlplane.policy.workload.kueue.preemption import HUMAN_REASONS, Preemptor, Target
from mlplane.policy.workload.kueue.quota import FlavorResource, QuotaNode
from mlplane.policy.workload.kueue.state import State
from mlplane.policy.workload.kueue.units import format_quantity


@dataclass(slots=True)
class Admission:
    cluster_queue: str
    pod_sets: tuple[PodSetAdmission, ...]

    def to_dict(self) -> dict:
        """The ``status.admission`` wire shape."""
        return {"clusterQueue": self.cluster_queue, "podSetAssignments": [
            {"name": ps.name, "count": ps.count, "flavors": dict(sorted(ps.flavors.items())),
             "resourceUsage": {r: format_quantity(r, v) for r, v in sorted(ps.usage.items())}}
            for ps in self.pod_sets]}


@dataclass(slots=True)
class Pending:
    """Why a workload has no quota: the QuotaReserved=False reason and message, and the
    numbers behind each shortfall (requested, available, nominal, borrowing limit)."""

    reason: str
    message: str
    details: tuple[str, ...] = ()
    ahead: int = 0  # workloads ahead of it in its queue; kept out of ``message`` so it stays stable

    @property
    def text(self) -> str:
        """The message with the queue position, as ``queue schedule`` prints it."""
        return f"{self.message}: {self.ahead} workload(s) ahead in the queue" if self.ahead else self.message


@dataclass(slots=True)
class Preempted:
    reason: str  # InClusterQueue, InCohortReclamation, InCohortReclaimWhileBorrowing, InCohortFairSharing
    message: str
    preemptor: str


@dataclass
class Result:
    admitted: dict[str, Admission] = field(default_factory=dict)
    preempted: dict[str, Preempted] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    set_aside: set[str] = field(default_factory=set)  # pending keys a BestEffortFIFO queue set aside

    def to_dict(self) -> dict:
        """The ``mlplane queue schedule -o json`` shape."""
        return {"admitted": {k: a.to_dict() for k, a in sorted(self.admitted.items())},
                "preempted": {k: p.reason for k, p in sorted(self.preempted.items())},
                "pending": {k: p.text for k, p in sorted(self.pending.items())}}


@dataclass
class CycleResult:
    """What one scheduling cycle did. ``heads``: workloads offered (0: no ClusterQueue had one,
    and nothing was done); ``admitted``: key -> the workload as admitted (``admission``,
    ``usage``, ``reserved_at`` set), now part of the snapshot; ``preempted``: key -> why, for
    workloads evicted at the end of the cycle (their quota released, queued again)."""

    heads: int = 0
    admitted: dict[str, Workload] = field(default_factory=dict)
    preempted: dict[str, Preempted] = field(default_factory=dict)


@dataclass(slots=True)
class Entry:
    """A head being scheduled in one cycle (Kueue's scheduler entry)."""

    wl: Workload
    cq: ClusterQueue
    assignment: Assignment
    targets: list[Target]


EntryOrder = Callable[[list[Entry]], Iterable[Entry]]
"""Orders a cycle's entries; the result is consumed while the entries are processed."""


def classical_order(entries: list[Entry]) -> list[Entry]:
    """Kueue's entryOrdering.Less: lower borrow level, higher priority, older; then UID."""
    return sorted(entries, key=lambda e: (e.assignment.borrowing, -e.wl.priority, e.wl.timestamp, e.wl.uid, e.wl.key))


class _Queue:
    """A ClusterQueue's pending workloads: a heap of active ones and the inadmissible set."""

    __slots__ = ("strategy", "heap", "inadmissible")

    def __init__(self, strategy: str):
        self.strategy = strategy
        self.heap: list[tuple[tuple, Workload]] = []
        self.inadmissible: dict[str, Workload] = {}

    def push(self, wl: Workload) -> None:
        heapq.heappush(self.heap, (wl.order_key(), wl))

    def pop(self) -> Workload | None:
        return heapq.heappop(self.heap)[1] if self.heap else None

    def reactivate(self) -> None:
        for wl in self.inadmissible.values():
            self.push(wl)
        self.inadmissible.clear()


class Scheduler:
    """Runs Kueue scheduling cycles over ``state`` for the ``pending`` workloads.

    ``now`` (seconds since the epoch) stands in for admission times that are unknown;
    ``order`` sorts each cycle's entries (classical by default); ``fair_sharing`` switches to
    Kueue's fair sharing (tournament order and fair-sharing preemption)."""

    def __init__(self, state: State, pending: Iterable[Workload], now: float, order: EntryOrder = classical_order,
                 fair_sharing: FairSharing | None = None):
        self.state = state
        self.now = now
        self.fair_sharing = fair_sharing
        self.order = tournament_order(state, fair_sharing) if fair_sharing is not None else order
        self.result = Result()
        self.queues: dict[str, _Queue] = {name: _Queue(cq.queueing_strategy) for name, cq in state.queues.items()}
        self._parked: dict[str, set[str]] = {}  # cohort tree -> its ClusterQueues with set-aside workloads
        self._last: dict[str, Pending] = {}
        for wl in pending:
            self._enqueue(wl)

    # --- incremental use ----------------------------------------------------------------------------

    def add(self, wl: Workload) -> Pending | None:
        """Queue a pending workload in its ClusterQueue; returns why it cannot be queued (a
        missing or inactive ClusterQueue, a blocked workload), or None once it is queued."""
        if wl.blocked is not None:
            return Pending(*wl.blocked)
        cq = self.state.queues.get(wl.cluster_queue or "")
        if cq is None:
            return Pending(INADMISSIBLE, f"ClusterQueue {wl.cluster_queue} doesn't exist")
        if cq.inactive:
            return Pending(INADMISSIBLE, f"ClusterQueue {cq.name} is inactive: {cq.inactive}")
        self.queues[cq.name].push(wl)
        return None

    def finish(self, wl: Workload) -> None:
        """An admitted workload is done (finished or deleted): release its quota and offer the
        set-aside workloads of its cohort tree again, as Kueue's queue manager does when usage
        in a cohort drops (pkg/queue/manager.go QueueInadmissibleWorkloads)."""
        admitted = self.state.admitted.get(wl.cluster_queue or "", {}).get(wl.key)
        if admitted is None:
            raise KeyError(f"Workload {wl.key} is not admitted in ClusterQueue {wl.cluster_queue}")
        self.state.remove_workload(admitted)
        self._reactivate({admitted.cluster_queue})

    def advance(self, now: float) -> None:
        """Move the clock (seconds since the epoch) that stamps admissions; never backwards."""
        if now < self.now:
            raise ValueError(f"Scheduler.advance: time {now} is before the current time {self.now}")
        self.now = now

    def _enqueue(self, wl: Workload) -> None:
        why = self.add(wl)
        if why is not None:
            self.result.pending[wl.key] = why

    def _reactivate(self, queues: set[str]) -> None:
        """Re-offer the set-aside workloads of every ClusterQueue sharing a cohort tree with ``queues``."""
        for group in {self._group_of(name) for name in queues}:
            for name in self._parked.pop(group, ()):
                self.queues[name].reactivate()

    # --- the cycle ----------------------------------------------------------------------------------

    def run(self, cycles: int = 1) -> Result:
        """Up to ``cycles`` cycles (fewer once no queue has work); the run's ``Result``."""
        result = self.result
        for _ in range(cycles):
            done = self.cycle()
            if not done.heads:
                break
            for key, wl in done.admitted.items():
                result.admitted[key] = Admission(wl.cluster_queue, wl.admission)
                result.pending.pop(key, None)
                result.preempted.pop(key, None)
            for key, why in done.preempted.items():
                result.admitted.pop(key, None)
                result.preempted[key] = why
        self._describe_waiting()
        return result

    def cycle(self) -> CycleResult:
        """One scheduling cycle (``heads`` 0 when no ClusterQueue had a workload to offer)."""
        heads = [wl for name in sorted(self.queues) if (wl := self.queues[name].pop()) is not None]
        done = CycleResult(len(heads))
        if not heads:
            return done
        entries = [self._nominate(wl) for wl in heads]
        preempted: dict[str, Target] = {}
        charges: list[tuple[QuotaNode, dict[FlavorResource, int]]] = []  # usage of non-admitted entries
        for e in self.order(entries):
            self._process(e, preempted, charges, done)
        for node, usage in charges:
            node.remove_usages(usage)
        for key, wl in done.admitted.items():
            self.state.admitted[wl.cluster_queue][key] = wl  # usage already counted
        for key, target in sorted(preempted.items()):
            victim = target.workload
            self.state.remove_workload(victim)
            self._enqueue(replace(victim, admission=None, reserved_at=None, evicted=False, _usage=None))
        self._reactivate({t.workload.cluster_queue for t in preempted.values()})
        return done

    def _group_of(self, cq: str) -> str:
        root = self.state.node(cq).root()
        return root.name if root.is_cohort else cq

    def _nominate(self, wl: Workload) -> Entry:
        cq = self.state.queues[wl.cluster_queue]
        node = self.state.node(cq.name)
        preemptor = (Preemptor(self.state, self.now) if self.fair_sharing is None
                     else FairPreemptor(self.state, self.now, self.fair_sharing))
        assigner = FlavorAssigner(wl, cq, node, self.state.flavors,
                                  lambda fr, amount: preemptor.simulate(wl, cq, fr, amount),
                                  preemptor.can_preempt_while_borrowing(cq))
        full = assigner.assign()
        mode = full.mode
        if mode == FIT:
            return Entry(wl, cq, full, [])
        if mode == PREEMPT:
            targets = preemptor.targets(wl, cq, full.usage, full.frs_needing_preemption())
            if targets:
                return Entry(wl, cq, full, targets)
        if wl.partially_admissible:
            reduced = _reduce(wl, assigner, preemptor, cq)
            if reduced is not None:
                return reduced
        return Entry(wl, cq, full, [])

    def _process(self, e: Entry, preempted: dict[str, Target], charges: list, done: CycleResult) -> None:
        """Kueue's processEntry."""
        wl, cq, assignment = e.wl, e.cq, e.assignment
        node = self.state.node(cq.name)
        queue = self.queues[cq.name]
        mode = assignment.mode
        details = tuple(dict.fromkeys(s.text() for s in assignment.shortfalls))
        if mode == NO_FIT:
            self._set_aside(queue, wl, Pending(assignment.reason(), assignment.message(), details))
            return
        if mode == PREEMPT and not e.targets:
            if cq.preemption.reclaim_within_cohort != ANY:
                # reserveCapacityForUnreclaimablePreempt: hold what it could get, so lower
                # priority workloads elsewhere in the cohort cannot take it first.
                reserve = _to_reserve(assignment, cq, node)
                node.add_usages(reserve)
                charges.append((node, reserve))
            self._set_aside(queue, wl, Pending(WAITING_FOR_QUOTA, assignment.message(), details))
            return
        if any(t.workload.key in preempted for t in e.targets):
            overlap = "Workload has overlapping preemption targets with another workload"
            self._retry(queue, wl, Pending(WAITING_FOR_QUOTA, overlap, details))
            return
        # Only this entry's own victims are left out of the check: quota that other entries'
        # victims will free is not reused in this cycle (Kueue's fits() also leaves those out).
        released = self.state.simulate_removal(t.workload for t in e.targets)
        fits = node.fits(assignment.usage)
        self.state.restore(released)
        if not fits:
            no_longer = "Workload no longer fits after processing another workload"
            self._retry(queue, wl, Pending(WAITING_FOR_QUOTA, no_longer, details))
            return
        usage = dict(assignment.usage)
        node.add_usages(usage)
        if mode == PREEMPT:
            charges.append((node, usage))
            for t in e.targets:
                preempted[t.workload.key] = t
                done.preempted[t.workload.key] = Preempted(
                    t.reason, f"Preempted to accommodate a workload (UID: {wl.uid}) due to {HUMAN_REASONS[t.reason]}",
                    wl.key)
            message = f"{assignment.message()}. Pending the preemption of {len(e.targets)} workload(s)"
            self._retry(queue, wl, Pending(WAITING_FOR_PREEMPTED_WORKLOADS, message, details))
            return
        pod_sets = tuple(PodSetAdmission(ps.name, ps.count, {r: c.flavor for r, c in ps.flavors.items()},
                                         {r: ps.requests[r] for r in ps.flavors})
                         for ps in assignment.pod_sets)
        done.admitted[wl.key] = replace(wl, admission=pod_sets, reserved_at=self.now, _usage=usage)
        self._last.pop(wl.key, None)

    def _set_aside(self, queue: _Queue, wl: Workload, why: Pending) -> None:
        """Not admissible now: BestEffortFIFO parks it, StrictFIFO keeps it at the front."""
        self._last[wl.key] = why
        if queue.strategy == BEST_EFFORT_FIFO:
            queue.inadmissible[wl.key] = wl
            self._parked.setdefault(self._group_of(wl.cluster_queue), set()).add(wl.cluster_queue)
        else:
            queue.push(wl)

    def _retry(self, queue: _Queue, wl: Workload, why: Pending) -> None:
        """Failed after nomination or waiting for its victims: back to the front of the queue."""
        self._last[wl.key] = why
        queue.push(wl)

    def _describe_waiting(self) -> None:
        """Pending entries for every workload still queued, with the last reason it got."""
        for name in sorted(self.queues):
            queue = self.queues[name]
            waiting = sorted(queue.heap, key=lambda item: item[0])
            for position, (_, wl) in enumerate(waiting):
                why = self._last.get(wl.key) or (
                    Pending(PENDING, f"waiting in ClusterQueue {name}", ahead=position) if position else
                    Pending(PENDING, f"next in ClusterQueue {name}: it is tried in the next scheduling cycle"))
                if wl.key not in self.result.preempted:
                    self.result.pending[wl.key] = why
            for key, wl in sorted(queue.inadmissible.items()):
                if key not in self.result.preempted:
                    self.result.pending[key] = self._last[key]
                    self.result.set_aside.add(key)


def _reduce(wl: Workload, assigner: FlavorAssigner, preemptor: Preemptor, cq: ClusterQueue) -> Entry | None:
    """Partial admission: the largest counts between minCount and count that fit or can
    preempt (Kueue's PodSetReducer: shrink the last podSet first; Go's sort.Search)."""
    full = [ps.count for ps in wl.pod_sets]
    deltas = [ps.count - (ps.min_count if ps.min_count is not None else ps.count) for ps in wl.pod_sets]
    total = sum(deltas)
    found: dict[int, Entry] = {}

    def fits(amount: int) -> bool:
        counts = list(full)
        remaining = amount
        for i in range(len(deltas) - 1, -1, -1):
            cut = min(deltas[i], remaining)
            counts[i] = full[i] - cut
            remaining -= cut
        assignment = assigner.assign(counts)
        if assignment.mode == FIT:
            found[amount] = Entry(wl, cq, assignment, [])
            return True
        if assignment.mode == PREEMPT:
            targets = preemptor.targets(wl, cq, assignment.usage, assignment.frs_needing_preemption())
            if targets:
                found[amount] = Entry(wl, cq, assignment, targets)
                return True
        return False

    if total == 0:
        return None
    lo, hi = 0, total + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return found.get(lo)


def _to_reserve(assignment: Assignment, cq: ClusterQueue, node: QuotaNode) -> dict[FlavorResource, int]:
    """Kueue's quotaResourcesToReserve for a preempting workload without targets."""
    reserve = {}
    for fr, amount in assignment.usage.items():
        q = cq.quotas.get(fr)
        nominal = q.nominal if q else 0
        used = node.usage.get(fr, 0)
        if assignment.borrowing > 0:
            if q is None or q.borrowing_limit is None:
                reserve[fr] = amount
            else:
                reserve[fr] = max(0, min(amount, nominal + q.borrowing_limit - used))
        else:
            reserve[fr] = max(0, min(amount, nominal - used))
    return reserve


def schedule_workloads(state: State, pending: Iterable[Workload], now: float, cycles: int = 1,
                       order: EntryOrder = classical_order, fair_sharing: FairSharing | None = None) -> Result:
    """Run ``cycles`` Kueue scheduling cycles (stopping early once no queue has work)."""
    return Scheduler(state, pending, now, order, fair_sharing).run(cycles)
