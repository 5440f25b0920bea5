"""Classical preemption: which admitted workloads to evict so that a pending one fits.

A port of Kueue's classical preemption (pkg/scheduler/preemption/preemption.go,
classical_strategy.go, classical/candidate_generator.go, classical/hierarchical_preemption.go,
common/ordering.go, common/preemption_policy.go):

1. Candidates are admitted workloads that use a flavor-resource needing preemption and that the
   policy allows: ``withinClusterQueue`` for the preemptor's own ClusterQueue (reason
   InClusterQueue); ``reclaimWithinCohort`` for ClusterQueues of the cohort tree that are above
   their nominal quota. Walking from the preemptor's ClusterQueue to the root, once the request
   fits a subtree's quota, the preemptor has a hierarchical advantage over the candidates in it
   (InCohortReclamation, whatever ``borrowWithinCohort`` says). Without that advantage a
   candidate may be preempted while the preemptor borrows only if ``borrowWithinCohort`` allows
   it and the candidate's priority is lower than the preemptor's and not above
   ``maxPriorityThreshold`` (InCohortReclaimWhileBorrowing); otherwise only if the preemptor
   ends up not borrowing (InCohortReclamation).
2. Candidates are ordered: already evicted first, other ClusterQueues before the preemptor's
   own, lower priority first, most recently admitted first, then UID.
3. Candidates are removed from the snapshot in that order (skipping ones whose ClusterQueue, or
   a cohort below the common ancestor, is back within nominal) until the preemptor fits; then
   removed ones are added back, last-but-one first, while it still fits: a minimal victim set.
   Depending on the policy this is tried with borrowing allowed, without, or both.

``Preemptor`` is the strategy interface the scheduling cycle calls; ``fairsharing.FairPreemptor``
(DRS-based) is the other implementation of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplane.policy.workload.kueue.flavors import NO_CANDIDATES, PREEMPT_POSSIBLE, RECLAIM_POSSIBLE
from mlplane.policy.workload.kueue.model import (ANY, IN_CLUSTER_QUEUE, IN_COHORT_FAIR_SHARING,
                                                 IN_COHORT_RECLAIM_WHILE_BORROWING,
                                                 IN_COHORT_RECLAMATION, LOWER_OR_NEWER_EQUAL_PRIORITY,
                                                 LOWER_PRIORITY, NEVER, ClusterQueue, Workload)
from mlplane.policy.workload.kueue.quota import FlavorResource, QuotaNode, lowest_fitting_subtree
from mlplane.policy.workload.kueue.state import State

# Candidate variants (classical/hierarchical_preemption.go preemptionVariant).
_NEVER, _WITHIN_CQ, _HIERARCHICAL, _WITHOUT_BORROWING, _WHILE_BORROWING = range(5)
_REASON = {_WITHIN_CQ: IN_CLUSTER_QUEUE, _HIERARCHICAL: IN_COHORT_RECLAMATION,
           _WITHOUT_BORROWING: IN_COHORT_RECLAMATION, _WHILE_BORROWING: IN_COHORT_RECLAIM_WHILE_BORROWING}

HUMAN_REASONS = {
    IN_CLUSTER_QUEUE: "prioritization in the ClusterQueue",
    IN_COHORT_RECLAMATION: "reclamation within the cohort",
    IN_COHORT_FAIR_SHARING: "fair sharing within the cohort",
    IN_COHORT_RECLAIM_WHILE_BORROWING: "reclamation within the cohort while borrowing",
}


@dataclass(slots=True)
class Target:
    workload: Workload
    reason: str


@dataclass(slots=True)
class _Candidate:
    wl: Workload
    lca: QuotaNode | None  # the subtree root it was found under (None: the preemptor's own CQ)
    variant: int


class Preemptor:
    """Classical preemption over a ``State``; ``now`` stands for unknown admission times."""

    def __init__(self, state: State, now: float):
        self.state = state
        self.now = now

    def can_preempt_while_borrowing(self, cq: ClusterQueue) -> bool:
        return cq.preemption.borrow_within_cohort != NEVER

    def targets(self, wl: Workload, cq: ClusterQueue, usage: dict[FlavorResource, int],
                frs: set[FlavorResource]) -> list[Target]:
        """The minimal set of workloads to evict so that ``usage`` fits ``cq`` (empty: none)."""
        if not frs:
            return []
        node = self.state.node(cq.name)
        same, hier, prio = self._candidates(wl, cq, node, usage, frs)
        ordered = _order(hier, cq.name, self.now) + _order(prio, cq.name, self.now) + _order(same, cq.name, self.now)
        evicted = [c for c in ordered if c.wl.evicted]
        ordered = evicted + [c for c in ordered if not c.wl.evicted]
        forbidden = cq.preemption.borrow_within_cohort == NEVER
        if (not hier and not prio) or (forbidden and not _under_nominal(node, cq, frs)):
            attempts = (True,)
        elif forbidden and not hier:
            attempts = (False, True)
        else:
            attempts = (True, False)
        for allow_borrowing in attempts:
            found = self._minimal(ordered, node, cq, usage, frs, allow_borrowing)
            if found:
                return found
        return []

    def simulate(self, wl: Workload, cq: ClusterQueue, fr: FlavorResource, amount: int) -> tuple[str, int]:
        """Kueue's PreemptionOracle.SimulatePreemption for one flavor-resource."""
        node = self.state.node(cq.name)
        targets = self.targets(wl, cq, {fr: amount}, {fr})
        if not targets:
            return NO_CANDIDATES, lowest_fitting_subtree(node, fr, amount)[0]
        removed = self.state.simulate_removal(t.workload for t in targets)
        borrow = lowest_fitting_subtree(node, fr, amount)[0]
        self.state.restore(removed)
        if any(t.workload.cluster_queue == cq.name for t in targets):
            return PREEMPT_POSSIBLE, borrow
        return RECLAIM_POSSIBLE, borrow

    # --- candidates -------------------------------------------------------------------------------

    def _candidates(self, wl: Workload, cq: ClusterQueue, node: QuotaNode, usage: dict[FlavorResource, int],
                    frs: set[FlavorResource]) -> tuple[list[_Candidate], list[_Candidate], list[_Candidate]]:
        same: list[_Candidate] = []
        if cq.preemption.within_cluster_queue != NEVER:
            same = self._from_queue(wl, cq, cq.name, None, frs, False)
        hier: list[_Candidate] = []
        prio: list[_Candidate] = []
        if node.parent is None or cq.preemption.reclaim_within_cohort == NEVER:
            return same, hier, prio
        advantage, remaining = node.quantities_fit(usage)
        previous: QuotaNode | None = None
        for root in node.ancestors():
            self._collect(wl, cq, node, root, root, previous, advantage, frs, hier if advantage else prio)
            fits, remaining = root.quantities_fit(remaining)
            advantage = advantage or fits
            previous = root
        return same, hier, prio

    def _collect(self, wl: Workload, cq: ClusterQueue, own: QuotaNode, cohort: QuotaNode, root: QuotaNode,
                 skip: QuotaNode | None, advantage: bool, frs: set[FlavorResource], out: list[_Candidate]) -> None:
        """Candidates in the over-nominal parts of ``cohort``'s subtree, except ``skip``."""
        # Only children above their quota can hold candidates (the tree keeps that set), so a
        # cohort of many ClusterQueues costs what its over-quota members cost, not its size.
        for child in cohort.children_over_quota():
            if child is skip or child is own or child.within_nominal(frs):
                continue
            if child.is_cohort:
                self._collect(wl, cq, own, child, root, skip, advantage, frs, out)
            else:
                out.extend(self._from_queue(wl, cq, child.name, root, frs, advantage))

    def _from_queue(self, wl: Workload, cq: ClusterQueue, queue: str, lca: QuotaNode | None,
                    frs: set[FlavorResource], advantage: bool) -> list[_Candidate]:
        found = []
        for cand in self.state.admitted[queue].values():
            variant = _classify(wl, cq, cand, advantage, frs)
            if variant != _NEVER:
                found.append(_Candidate(cand, lca, variant))
        return found

    # --- minimal victim set -------------------------------------------------------------------------

    def _minimal(self, ordered: list[_Candidate], node: QuotaNode, cq: ClusterQueue, usage: dict[FlavorResource, int],
                 frs: set[FlavorResource], allow_borrowing: bool) -> list[Target]:
        """Remove candidates until the preemptor fits, then add back (last-but-one first) every
        one it still fits without. The snapshot is left as it was found."""
        state = self.state
        released: list[Workload] = []
        targets: list[Target] = []
        try:
            for cand in ordered:
                if not self._valid(cand, cq, frs, allow_borrowing):
                    continue
                state.simulate_removal((cand.wl,))
                released.append(cand.wl)
                targets.append(Target(cand.wl, _REASON[cand.variant]))
                if workload_fits(node, usage, allow_borrowing):
                    for i in range(len(targets) - 2, -1, -1):
                        victim = targets[i].workload
                        state.restore((victim,))
                        released.remove(victim)
                        if workload_fits(node, usage, allow_borrowing):
                            del targets[i]
                        else:
                            state.simulate_removal((victim,))
                            released.append(victim)
                    return targets
            return []
        finally:
            state.restore(released)

    def _valid(self, cand: _Candidate, cq: ClusterQueue, frs: set[FlavorResource], allow_borrowing: bool) -> bool:
        """Kueue's candidateIsValid: removals so far may have brought its queue within nominal."""
        if cand.wl.cluster_queue == cq.name:
            return True
        if allow_borrowing and cand.variant == _WITHOUT_BORROWING:
            return False
        qnode = self.state.node(cand.wl.cluster_queue)
        if qnode.within_nominal(frs):
            return False
        for ancestor in qnode.ancestors():
            if ancestor is cand.lca:
                break
            if ancestor.within_nominal(frs):
                return False
        return True


def _classify(wl: Workload, cq: ClusterQueue, cand: Workload, advantage: bool, frs: set[FlavorResource]) -> int:
    """Kueue's classifyPreemptionVariant."""
    if not any(fr in frs for fr in cand.usage):
        return _NEVER
    same_queue = cand.cluster_queue == cq.name
    policy = cq.preemption.within_cluster_queue if same_queue else cq.preemption.reclaim_within_cohort
    if not allowed_by_policy(policy, wl, cand):
        return _NEVER
    if same_queue:
        return _WITHIN_CQ
    if advantage:
        return _HIERARCHICAL
    if cq.preemption.borrow_within_cohort == NEVER:
        return _WITHOUT_BORROWING
    threshold = cq.preemption.max_priority_threshold
    if cand.priority >= wl.priority or (threshold is not None and cand.priority > threshold):
        return _WITHOUT_BORROWING
    return _WHILE_BORROWING


def allowed_by_policy(policy: str, wl: Workload, cand: Workload) -> bool:
    """Kueue's SatisfiesPreemptionPolicy (common/preemption_policy.go): may ``wl`` preempt ``cand``."""
    lower = wl.priority > cand.priority
    if policy == LOWER_PRIORITY:
        return lower
    if policy == LOWER_OR_NEWER_EQUAL_PRIORITY:
        return lower or (wl.priority == cand.priority and wl.timestamp < cand.timestamp)
    return policy == ANY


def candidate_order_key(w: Workload, cq: str, now: float) -> tuple:
    """Kueue's CandidatesOrdering (common/ordering.go) as a sort key, UID as the final tie-break."""
    reserved = w.reserved_at if w.reserved_at is not None else now
    return (not w.evicted, w.cluster_queue == cq, w.priority, -reserved, w.uid, w.key)


def _order(cands: list[_Candidate], cq: str, now: float) -> list[_Candidate]:
    return sorted(cands, key=lambda c: candidate_order_key(c.wl, cq, now))


def workload_fits(node: QuotaNode, usage: dict[FlavorResource, int], allow_borrowing: bool) -> bool:
    """Kueue's workloadFits."""
    for fr, v in usage.items():
        if not allow_borrowing and node.borrowing_with(fr, v):
            return False
        if v > node.available(fr):
            return False
    return True


def _under_nominal(node: QuotaNode, cq: ClusterQueue, frs: set[FlavorResource]) -> bool:
    """Kueue's queueUnderNominalInResourcesNeedingPreemption: usage < nominal on every fr."""
    for fr in frs:
        q = cq.quotas.get(fr)
        if node.usage.get(fr, 0) >= (q.nominal if q else 0):
            return False
    return True
