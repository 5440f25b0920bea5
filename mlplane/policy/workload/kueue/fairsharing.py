"""Fair sharing: dominant resource share, the fair admission order, and fair-sharing preemption.

A port of Kueue's fair sharing (``Configuration.fairSharing.enable: true``):

- ``FairSharing.drs(node)``: the dominant resource share of a ClusterQueue or Cohort
  (pkg/cache/scheduler/fair_sharing.go ``dominantResourceShare``). Per resource name, the
  amount used above the node's subtree quota, summed over flavors, times 1000, over what the
  parent could lend of that resource (``potentialAvailable(parent)`` summed over every flavor
  the root knows); the largest ratio wins (ties: the alphabetically smaller resource), divided
  by ``fairSharing.weight``. A node without a parent, or not borrowing, has share 0; weight 0
  while borrowing is an infinite share. ``compare_drs`` is Kueue's ``CompareDRS``.
- ``tournament_order``: the order of a cycle's heads (pkg/scheduler/fair_sharing_iterator.go).
  Each pick runs a tournament through the cohort tree on the snapshot as it is *now* (earlier
  entries of the cycle may have been admitted): every head's usage is simulated, and at each
  cohort the children compete on (not borrowing on the head's flavor-resources first, gate
  FairSharingPrioritizeNonBorrowing; lower share after admission; higher priority; older).
- ``FairPreemptor``: fair-sharing preemption (pkg/scheduler/preemption/fair_strategy.go and
  fairsharing/{ordering,target,least_common_ancestor,strategy}.go). Candidates are the
  preemptor's own workloads allowed by ``withinClusterQueue`` and workloads of borrowing
  ClusterQueues anywhere in the cohort tree allowed by ``reclaimWithinCohort``, ordered as in
  classical preemption. Target ClusterQueues are picked from the root down, highest share first;
  with the incoming usage simulated, a candidate of another ClusterQueue is preempted
  (InCohortFairSharing) only if the configured strategies hold between the shares of the two
  "almost least common ancestors": LessThanOrEqualToFinalShare (preemptor's new share <= the
  target's share after the removal), then LessThanInitialShare over the candidates left (the
  preemptor's new share < the target's share before it). A preemptor that stays within its
  nominal quota reclaims without share checks (InCohortReclamation, gate
  FairSharingPreemptWithinNominal). Candidates are taken until the incoming workload fits, then
  the victim set is minimised as in classical preemption. Because a preemption needs the
  preemptor to end strictly below (S2-b) or not above (S2-a) the target, the target cannot
  preempt back: no flapping (site/content/en/docs/concepts/fair_sharing.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlplane.policy.workload.kueue.model import (ANY, IN_CLUSTER_QUEUE, IN_COHORT_FAIR_SHARING,
                                                 IN_COHORT_RECLAMATION, NEVER, ClusterQueue, Workload)
from mlplane.policy.workload.kueue.preemption import Preemptor, Target, allowed_by_policy, candidate_order_key, \
    workload_fits
from mlplane.policy.workload.kueue.quota import FlavorResource, QuotaNode
from mlplane.policy.workload.kueue.state import State

if TYPE_CHECKING:
    from mlplane.policy.workload.kueue.cycle import Entry, EntryOrder

# Configuration.fairSharing.preemptionStrategies values.
LESS_THAN_OR_EQUAL_TO_FINAL_SHARE = "LessThanOrEqualToFinalShare"
LESS_THAN_INITIAL_SHARE = "LessThanInitialShare"
DEFAULT_STRATEGIES = (LESS_THAN_OR_EQUAL_TO_FINAL_SHARE, LESS_THAN_INITIAL_SHARE)
MAX_INT64 = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class DRS:
    """A dominant resource share: the unweighted ratio (per mille), its resource, the weight."""

    weight: float = 1.0
    unweighted: float = 0.0
    resource: str = ""
    borrowing: bool = False
    borrowed: frozenset[FlavorResource] = frozenset()

    @property
    def zero_weight_borrows(self) -> bool:
        return self.weight == 0 and self.borrowing

    @property
    def is_zero(self) -> bool:
        return self.unweighted == 0

    @property
    def precise(self) -> float:
        if self.zero_weight_borrows:
            return math.inf
        if self.is_zero:
            return 0.0
        return self.unweighted / self.weight

    @property
    def weighted_share(self) -> int:
        """``status.fairSharing.weightedShare``: the share rounded up (MaxInt64 when infinite)."""
        return MAX_INT64 if self.zero_weight_borrows else math.ceil(self.precise)

    def borrowing_on(self, frs: Iterable[FlavorResource]) -> bool:
        return any(fr in self.borrowed for fr in frs)


_NEGATIVE = DRS(unweighted=-1.0)


def compare_drs(a: DRS, b: DRS) -> int:
    """Kueue's CompareDRS: -1, 0 or 1; infinite (zero-weight borrowing) shares compare unweighted."""
    if a.zero_weight_borrows and b.zero_weight_borrows:
        x, y = a.unweighted, b.unweighted
    elif a.zero_weight_borrows:
        return 1
    elif b.zero_weight_borrows:
        return -1
    else:
        x, y = a.precise, b.precise
    return (x > y) - (x < y)


class FairSharing:
    """Fair-sharing settings: weights of ClusterQueues and Cohorts (default 1) and the
    preemption strategies of ``Configuration.fairSharing``."""

    def __init__(self, queue_weights: Mapping[str, float] | None = None,
                 cohort_weights: Mapping[str, float] | None = None,
                 strategies: Iterable[str] = DEFAULT_STRATEGIES):
        self.queue_weights = dict(queue_weights or {})
        self.cohort_weights = dict(cohort_weights or {})
        self.strategies = tuple(strategies)
        allowed = ((LESS_THAN_OR_EQUAL_TO_FINAL_SHARE,), (LESS_THAN_INITIAL_SHARE,), DEFAULT_STRATEGIES)
        if self.strategies not in allowed:
            raise ValueError(f"fairSharing.preemptionStrategies: unsupported value {list(self.strategies)}")
        self._lendable: dict[int, dict[str, int]] = {}

    def weight(self, node: QuotaNode) -> float:
        weights = self.cohort_weights if node.is_cohort else self.queue_weights
        return weights.get(node.name, 1.0)

    def drs(self, node: QuotaNode) -> DRS:
        """The node's dominant resource share on the snapshot as it is now."""
        weight = self.weight(node)
        parent = node.parent
        if parent is None:
            return DRS(weight)
        borrowed: dict[str, int] = {}
        frs = []
        usage = node.usage
        for fr, quota in node.subtree.items():
            amount = usage.get(fr, 0) - quota
            if amount > 0:
                borrowed[fr[1]] = borrowed.get(fr[1], 0) + amount
                frs.append(fr)
        if not borrowed:
            return DRS(weight)
        lendable = self._lendable_of(parent)
        best, dominant = 0.0, ""
        for resource in sorted(borrowed):
            lr = lendable.get(resource, 0)
            if lr > 0:
                ratio = borrowed[resource] * 1000 / lr
                if ratio > best:
                    best, dominant = ratio, resource
        return DRS(weight, best, dominant, True, frozenset(frs))

    def _lendable_of(self, parent: QuotaNode) -> dict[str, int]:
        """Kueue's calculateLendable: per resource name, what ``parent`` could ever give (quota
        only, so it is computed once per parent)."""
        lendable = self._lendable.get(id(parent))
        if lendable is None:
            lendable = {}
            for fr in parent.root().subtree:
                lendable[fr[1]] = lendable.get(fr[1], 0) + parent.potential_available(fr)
            self._lendable[id(parent)] = lendable
        return lendable


# --- admission order ---------------------------------------------------------------------------------


def tournament_order(state: State, fs: FairSharing) -> EntryOrder:
    """An entry order for ``cycle.Scheduler``: yields the cycle's entries one at a time, each
    picked by a tournament on the snapshot as the entries before it left it."""

    def order(entries: list[Entry]) -> Iterator[Entry]:
        by_queue = {e.cq.name: e for e in entries}
        while by_queue:
            first = by_queue[min(by_queue)]
            node = state.node(first.cq.name)
            if node.parent is None:
                yield by_queue.pop(first.cq.name)
                continue
            root = node.root()
            shares = _tournament_shares(state, fs, root, by_queue)
            winner = _tournament(root, by_queue, shares)
            yield by_queue.pop(winner.cq.name)

    return order


def _subtree_queues(cohort: QuotaNode) -> Iterator[QuotaNode]:
    for child in cohort.child_cohorts:
        yield from _subtree_queues(child)
    yield from cohort.child_queues


def _tournament_shares(state: State, fs: FairSharing, root: QuotaNode,
                       by_queue: Mapping[str, Entry]) -> dict[tuple[str, str], DRS]:
    """Kueue's computeDRS: for each head, with its usage added, the share of every node on its
    path below the root, keyed by (that node's parent cohort, workload key)."""
    shares: dict[tuple[str, str], DRS] = {}
    for qnode in _subtree_queues(root):
        e = by_queue.get(qnode.name)
        if e is None:
            continue
        usage = e.assignment.usage
        qnode.add_usages(usage)
        node = qnode
        for ancestor in qnode.ancestors():
            shares[(ancestor.name, e.wl.key)] = fs.drs(node)
            node = ancestor
        qnode.remove_usages(usage)
    return shares


def _tournament(cohort: QuotaNode, by_queue: Mapping[str, Entry], shares: Mapping[tuple[str, str], DRS]) -> Entry | None:
    """Kueue's runTournament: the winner of each child competes at this cohort."""
    contenders = [w for child in cohort.child_cohorts if (w := _tournament(child, by_queue, shares)) is not None]
    contenders += [by_queue[q.name] for q in cohort.child_queues if q.name in by_queue]
    if not contenders:
        return None
    best = contenders[0]
    for current in contenders[1:]:
        if _less(current, best, cohort.name, shares):
            best = current
    return best


def _less(a: Entry, b: Entry, cohort: str, shares: Mapping[tuple[str, str], DRS]) -> bool:
    """Kueue's entryComparer.less, with the workload UID and key as the final tie-break."""
    da, db = shares[(cohort, a.wl.key)], shares[(cohort, b.wl.key)]
    ba = da.borrowing_on(fr for fr, v in a.assignment.usage.items() if v > 0)
    bb = db.borrowing_on(fr for fr, v in b.assignment.usage.items() if v > 0)
    if ba != bb:
        return not ba
    c = compare_drs(da, db)
    if c:
        return c < 0
    return (-a.wl.priority, a.wl.timestamp, a.wl.uid, a.wl.key) < (-b.wl.priority, b.wl.timestamp, b.wl.uid, b.wl.key)


# --- preemption --------------------------------------------------------------------------------------


class _TargetOrdering:
    """Kueue's TargetClusterQueueOrdering: from the root down, the child with the highest share
    (a cohort wins a tie with a ClusterQueue; ClusterQueues tied on share are ordered by their
    next candidates), pruning nodes that are not borrowing or have no candidates left."""

    def __init__(self, fs: FairSharing, preemptor: QuotaNode, candidates: list[Workload], now: float):
        self.fs = fs
        self.preemptor = preemptor
        self.ancestors = {id(a) for a in preemptor.ancestors()}
        self.now = now
        self.by_queue: dict[str, list[Workload]] = {}
        for wl in candidates:
            self.by_queue.setdefault(wl.cluster_queue, []).append(wl)
        self.pruned: set[int] = set()

    def has(self, q: QuotaNode) -> bool:
        return bool(self.by_queue.get(q.name))

    def pop(self, q: QuotaNode) -> Workload:
        return self.by_queue[q.name].pop(0)

    def drop(self, q: QuotaNode) -> None:
        self.pruned.add(id(q))

    def __iter__(self) -> Iterator[QuotaNode]:
        if self.preemptor.parent is None:
            while self.has(self.preemptor):
                yield self.preemptor
            return
        root = self.preemptor.root()
        while id(root) not in self.pruned:
            target = self._next(root)
            if target is not None:
                yield target

    def _next(self, cohort: QuotaNode) -> QuotaNode | None:
        best_q, best_q_drs = None, _NEGATIVE
        key = self.preemptor.name
        for q in cohort.child_queues:
            if id(q) in self.pruned:
                continue
            drs = self.fs.drs(q)
            c = compare_drs(drs, best_q_drs)
            if (drs.is_zero and q is not self.preemptor) or not self.has(q):
                self.pruned.add(id(q))
            elif c == 0:
                mine, theirs = self.by_queue[q.name][0], self.by_queue[best_q.name][0]
                if candidate_order_key(mine, key, self.now) < candidate_order_key(theirs, key, self.now):
                    best_q = q
            elif c > 0:
                best_q, best_q_drs = q, drs
        best_c, best_c_drs = None, _NEGATIVE
        for child in cohort.child_cohorts:
            if id(child) in self.pruned:
                continue
            drs = self.fs.drs(child)
            if drs.is_zero and id(child) not in self.ancestors:
                self.pruned.add(id(child))
            elif compare_drs(drs, best_c_drs) >= 0:
                best_c, best_c_drs = child, drs
        if best_c is None and best_q is None:
            self.pruned.add(id(cohort))
            return None
        if best_c is not None and compare_drs(best_c_drs, best_q_drs) >= 0:
            return self._next(best_c)
        return best_q

    def _almost_lcas(self, target: QuotaNode) -> tuple[QuotaNode, QuotaNode]:
        """The children of the least common ancestor on the preemptor's and the target's paths."""
        lca = next(a for a in target.ancestors() if id(a) in self.ancestors)
        return _below(self.preemptor, lca), _below(target, lca)

    def shares(self, target: QuotaNode) -> tuple[DRS, DRS]:
        """(preemptor's new share, target's old share) at the almost-LCAs."""
        p, t = self._almost_lcas(target)
        return self.fs.drs(p), self.fs.drs(t)

    def share_after_removal(self, target: QuotaNode, wl: Workload) -> DRS:
        target.remove_usages(wl.usage)
        try:
            return self.fs.drs(self._almost_lcas(target)[1])
        finally:
            target.add_usages(wl.usage)


def _below(node: QuotaNode, lca: QuotaNode) -> QuotaNode:
    while node.parent is not lca:
        node = node.parent
    return node


def _passes(strategy: str, preemptor_new: DRS, target_old: DRS, target_new: DRS) -> bool:
    """fairsharing/strategy.go: rule S2-a (LessThanOrEqualToFinalShare) or S2-b (LessThanInitialShare)."""
    if strategy == LESS_THAN_OR_EQUAL_TO_FINAL_SHARE:
        return compare_drs(preemptor_new, target_new) <= 0
    return compare_drs(preemptor_new, target_old) < 0


class FairPreemptor(Preemptor):
    """Fair-sharing preemption over a ``State``; the interface is ``Preemptor``'s."""

    def __init__(self, state: State, now: float, fs: FairSharing):
        super().__init__(state, now)
        self.fs = fs

    def can_preempt_while_borrowing(self, cq: ClusterQueue) -> bool:
        # flavorassigner.go canPreemptWhileBorrowing: with fair sharing, reclaimWithinCohort suffices.
        return cq.preemption.borrow_within_cohort != NEVER or cq.preemption.reclaim_within_cohort != NEVER

    def targets(self, wl: Workload, cq: ClusterQueue, usage: dict[FlavorResource, int],
                frs: set[FlavorResource]) -> list[Target]:
        if not frs:
            return []
        node = self.state.node(cq.name)
        candidates = self._candidates(wl, cq, node, frs)
        if not candidates:
            return []
        candidates.sort(key=lambda w: candidate_order_key(w, cq.name, self.now))
        state = self.state
        released: list[Workload] = []
        node.add_usages(usage)  # the shares are computed with the incoming workload admitted
        try:
            targets: list[Target] = []
            for target in self._ordered_targets(node, candidates, frs):
                released.append(target.workload)
                targets.append(target)
                node.remove_usages(usage)
                try:
                    if workload_fits(node, usage, True):
                        return self._fill_back(node, usage, targets, released)
                finally:
                    node.add_usages(usage)
            return []
        finally:
            node.remove_usages(usage)
            state.restore(released)

    def _fill_back(self, node: QuotaNode, usage: dict[FlavorResource, int], targets: list[Target],
                   released: list[Workload]) -> list[Target]:
        """Add victims back, last-but-one first, while the workload still fits (fillBackWorkloads)."""
        for i in range(len(targets) - 2, -1, -1):
            victim = targets[i].workload
            self.state.restore((victim,))
            released.remove(victim)
            if workload_fits(node, usage, True):
                del targets[i]
            else:
                self.state.simulate_removal((victim,))
                released.append(victim)
        return targets

    def _candidates(self, wl: Workload, cq: ClusterQueue, node: QuotaNode, frs: set[FlavorResource]) -> list[Workload]:
        """Kueue's findCandidates."""
        found = []
        if cq.preemption.within_cluster_queue != NEVER:
            found += [c for c in self.state.admitted[cq.name].values()
                      if _uses(c, frs) and allowed_by_policy(cq.preemption.within_cluster_queue, wl, c)]
        if node.parent is not None and cq.preemption.reclaim_within_cohort != NEVER:
            policy = cq.preemption.reclaim_within_cohort
            for other in sorted(_subtree_queues(node.root()), key=lambda q: q.name):
                if other is node or not any(other.borrowing(fr) for fr in frs):
                    continue
                found += [c for c in self.state.admitted[other.name].values()
                          if _uses(c, frs) and (policy == ANY or c.priority < wl.priority)]
        return found

    def _ordered_targets(self, node: QuotaNode, candidates: list[Workload],
                         frs: set[FlavorResource]) -> Iterator[Target]:
        """Victims one at a time, each already removed from the snapshot (fair_strategy.go)."""
        strategies = self.fs.strategies
        retry: list[Workload] = []
        within_nominal = node.within_nominal(frs)
        ordering = _TargetOrdering(self.fs, node, candidates, self.now)
        for target in ordering:
            if target is node:
                yield self._take(ordering.pop(target), IN_CLUSTER_QUEUE)
                continue
            if within_nominal:
                yield self._take(ordering.pop(target), IN_COHORT_RECLAMATION)
                continue
            preemptor_new, target_old = ordering.shares(target)
            while ordering.has(target):
                cand = ordering.pop(target)
                target_new = ordering.share_after_removal(target, cand)
                if _passes(strategies[0], preemptor_new, target_old, target_new):
                    yield self._take(cand, IN_COHORT_FAIR_SHARING)
                    break  # shares changed: pick the target ClusterQueue again
                retry.append(cand)
        if len(strategies) < 2:
            return
        ordering = _TargetOrdering(self.fs, node, retry, self.now)
        for target in ordering:
            preemptor_new, target_old = ordering.shares(target)
            cand = ordering.pop(target)
            if _passes(strategies[1], preemptor_new, target_old, target_old):
                yield self._take(cand, IN_COHORT_FAIR_SHARING)
            ordering.drop(target)  # rule S2-b applies at most once per ClusterQueue

    def _take(self, wl: Workload, reason: str) -> Target:
        self.state.simulate_removal((wl,))
        return Target(wl, reason)


def _uses(wl: Workload, frs: set[FlavorResource]) -> bool:
    return any(fr in frs for fr in wl.usage)
