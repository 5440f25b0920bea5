"""Flavor assignment: which ResourceFlavor each resource of each podSet gets, and how it fits.

A port of Kueue's flavor assigner (pkg/scheduler/flavorassigner/flavorassigner.go, without TAS,
DRA, workload slices or concurrent admission). For each podSet, the resources of one resource
group get one flavor. Flavors are tried in the group's order; a flavor is skipped if the podSet
does not tolerate its taints or its nodeSelector contradicts the flavor's nodeLabels (only keys
the flavor labels count). Each requested resource is then classified against the quota tree:

- NoFit: more than the ClusterQueue could ever get (potentialAvailable), or more than available
  where preemption cannot help;
- Preempt: fits the quota but not what is unused now; a preemption oracle says whether there are
  targets (``preempt`` in the ClusterQueue, ``reclaim`` in the cohort, or ``no candidates``);
- Fit: fits what is unused now, possibly by borrowing (borrow level = height of the lowest
  cohort subtree that holds it).

``flavorFungibility`` decides whether to stop at the first flavor that needs borrowing or
preemption (MayStopSearch) or to try the next one (TryNextFlavor), and ``preference`` which of
two imperfect flavors wins. ``pods`` counts as a resource when a resource group covers it.
Reason strings are Kueue's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlplane.policy.workload.kueue.model import (EXCEEDS_MAX_QUOTA, NO_MATCHING_FLAVOR,
                                                 PODS, PREEMPTION_OVER_BORROWING, TRY_NEXT_FLAVOR, WAITING_FOR_QUOTA,
                                                 ClusterQueue, Flavor, Fungibility, PodSet, Workload)
from mlplane.policy.workload.kueue.quota import FlavorResource, QuotaNode, lowest_fitting_subtree
from mlplane.policy.workload.kueue.units import format_quantity

# FlavorAssignmentMode, lowest to highest preference.
NO_FIT, PREEMPT, FIT = 0, 1, 3
MODE_NAMES = {NO_FIT: "NoFit", PREEMPT: "Preempt", FIT: "Fit"}

# The assigner's finer preemption modes (granularMode.preemptionMode).
_NO_FIT, _NO_CANDIDATES, _PREEMPT, _RECLAIM, _FIT = 0, 1, 2, 3, 4
_TO_MODE = {_NO_FIT: NO_FIT, _NO_CANDIDATES: PREEMPT, _PREEMPT: PREEMPT, _RECLAIM: PREEMPT, _FIT: FIT}

# What a preemption oracle reports for one flavor-resource.
NO_CANDIDATES, PREEMPT_POSSIBLE, RECLAIM_POSSIBLE = "NoCandidates", "Preempt", "Reclaim"
_FROM_POSSIBILITY = {NO_CANDIDATES: _NO_CANDIDATES, PREEMPT_POSSIBLE: _PREEMPT, RECLAIM_POSSIBLE: _RECLAIM}

# How severe a no-fit reason is (flavorassigner.go reasonSeverity).
_SEVERITY = {"": 0, WAITING_FOR_QUOTA: 2, EXCEEDS_MAX_QUOTA: 3, NO_MATCHING_FLAVOR: 4}

Oracle = Callable[[FlavorResource, int], tuple[str, int]]
"""Simulates preemption for ``amount`` of one flavor-resource: (possibility, borrow level after)."""

_WORST = (_NO_FIT, 1 << 62)
_BEST = (_FIT, 0)


@dataclass(slots=True)
class FlavorChoice:
    flavor: str
    mode: int
    borrow: int


@dataclass(slots=True)
class Shortfall:
    """Numbers behind one "insufficient quota" reason, for explanations."""

    flavor: str
    resource: str
    requested: int
    available: int
    maximum: int
    nominal: int
    borrowing_limit: int | None

    def text(self) -> str:
        limit = "none" if self.borrowing_limit is None else format_quantity(self.resource, self.borrowing_limit)
        q = lambda v: format_quantity(self.resource, v)  # noqa: E731
        return (f"insufficient quota for {self.resource} in flavor {self.flavor}: requested {q(self.requested)}, "
                f"available {q(max(0, self.available))} (nominal {q(self.nominal)}, borrowing limit {limit})")


@dataclass(slots=True)
class PodSetAssignment:
    name: str
    count: int
    requests: dict[str, int]  # total for ``count`` pods, incl. ``pods``; milli-units
    flavors: dict[str, FlavorChoice] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    no_fit_reason: str = ""

    @property
    def fits(self) -> bool:
        return not self.reasons

    @property
    def mode(self) -> int:
        if not self.reasons:
            return FIT
        if not self.flavors:
            return NO_FIT
        return min(c.mode for c in self.flavors.values())

    def message(self) -> str:
        return ", ".join(sorted(self.reasons))


@dataclass(slots=True)
class Assignment:
    """Flavors for every podSet (until the first that fails), their usage and borrow level."""

    pod_sets: list[PodSetAssignment] = field(default_factory=list)
    borrowing: int = 0
    usage: dict[FlavorResource, int] = field(default_factory=dict)
    shortfalls: list[Shortfall] = field(default_factory=list)

    @property
    def mode(self) -> int:
        if not self.pod_sets:
            return NO_FIT
        return min(ps.mode for ps in self.pod_sets)

    def message(self) -> str:
        """Kueue's Assignment.Message: why the podSets that do not fit do not."""
        return "; ".join(f"couldn't assign flavors to pod set {ps.name}: {ps.message()}"
                         for ps in self.pod_sets if not ps.fits)

    def reason(self) -> str:
        """The QuotaReserved=False reason of a workload left with this assignment."""
        worst = ""
        for ps in self.pod_sets:
            if ps.mode == NO_FIT and _SEVERITY[ps.no_fit_reason] > _SEVERITY[worst]:
                worst = ps.no_fit_reason
        return worst or WAITING_FOR_QUOTA

    def frs_needing_preemption(self) -> set[FlavorResource]:
        return {(c.flavor, res) for ps in self.pod_sets for res, c in ps.flavors.items() if c.mode == PREEMPT}


def _preferred(a: tuple[int, int], b: tuple[int, int], preference: str | None) -> bool:
    """Kueue's isPreferred: whether granular mode ``a`` beats ``b``."""
    if a[0] == _NO_FIT:
        return False
    if b[0] == _NO_FIT:
        return True
    a_none, b_none = a[0] == _NO_CANDIDATES, b[0] == _NO_CANDIDATES
    if a_none != b_none:
        return not a_none
    if preference == PREEMPTION_OVER_BORROWING:
        if a[1] != b[1]:
            return a[1] < b[1]
        return a[0] > b[0]
    if a[0] != b[0]:  # BorrowingOverPreemption, the default
        return a[0] > b[0]
    return a[1] < b[1]


def _try_next(mode: tuple[int, int], fungibility: Fungibility) -> bool:
    """Kueue's shouldTryNextFlavor."""
    if mode[0] in (_NO_FIT, _NO_CANDIDATES):
        return True
    if mode[0] in (_PREEMPT, _RECLAIM) and fungibility.when_can_preempt == TRY_NEXT_FLAVOR:
        return True
    return mode[1] != 0 and fungibility.when_can_borrow == TRY_NEXT_FLAVOR


def _flavor_mismatch(flavor: Flavor | None, name: str, pod_set: PodSet) -> str | None:
    """Kueue's checkFlavorForPodSets: untolerated NoSchedule/NoExecute taints, node labels."""
    if flavor is None:
        return f"flavor {name} not found"
    tolerations = (*pod_set.tolerations, *flavor.tolerations)
    for taint in flavor.node_taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(t.tolerates(taint) for t in tolerations):
            return f"untolerated taint {{{taint.key} {taint.value} {taint.effect} <nil>}} in flavor {name}"
    for key, value in pod_set.node_selector.items():
        if key in flavor.node_labels and flavor.node_labels[key] != value:
            return f"flavor {name} doesn't match node affinity"
    return None


class FlavorAssigner:
    """Assigns flavors to one workload's podSets in one ClusterQueue of a quota tree."""

    def __init__(self, wl: Workload, cq: ClusterQueue, node: QuotaNode, flavors: Mapping[str, Flavor],
                 oracle: Oracle, can_preempt_while_borrowing: bool):
        self.wl, self.cq, self.node, self.flavors, self.oracle = wl, cq, node, flavors, oracle
        self.can_preempt_while_borrowing = can_preempt_while_borrowing
        self.counts_pods = cq.group_for(PODS) is not None

    def assign(self, counts: list[int] | None = None) -> Assignment:
        """Flavors for every podSet at ``counts`` pods each (default: the full counts)."""
        assignment = Assignment()
        for i, ps in enumerate(self.wl.pod_sets):
            count = ps.count if counts is None else counts[i]
            requests = {res: per_pod * count for res, per_pod in ps.requests.items()}
            if self.counts_pods:
                requests[PODS] = count * 1000
            psa = PodSetAssignment(ps.name, count, requests)
            failed = False
            for res in sorted(requests):
                if res in psa.flavors:
                    continue  # assigned with its resource group
                if self.cq.group_for(res) is None and requests[res] == 0:
                    continue
                chosen, reasons, no_fit_reason = self._find_flavor(ps, requests, res, assignment)
                psa.reasons.extend(reasons)
                if not chosen:
                    psa.flavors = {}
                    psa.no_fit_reason = no_fit_reason
                    failed = True
                    break
                psa.flavors.update(chosen)
            assignment.pod_sets.append(psa)
            for res, choice in psa.flavors.items():
                assignment.borrowing = max(assignment.borrowing, choice.borrow)
                fr = (choice.flavor, res)
                assignment.usage[fr] = assignment.usage.get(fr, 0) + requests[res]
            if failed:
                break
        return assignment

    def _find_flavor(self, ps: PodSet, requests: dict[str, int], res: str,
                     assignment: Assignment) -> tuple[dict[str, FlavorChoice] | None, list[str], str]:
        """Kueue's findFlavorForPodSets for the resource group of ``res``."""
        rg = self.cq.group_for(res)
        if rg is None:
            return None, [f"resource {res} unavailable in ClusterQueue"], NO_MATCHING_FLAVOR
        wanted = sorted(r for r in requests if r in rg.covered)
        reasons: list[str] = []
        best: dict[str, FlavorChoice] | None = None
        best_mode = _WORST
        best_no_fit = ""  # the least severe blocker over the flavors tried
        fungibility = self.cq.fungibility
        for name in rg.flavors:
            mismatch = _flavor_mismatch(self.flavors.get(name), name, ps)
            if mismatch:
                reasons.append(mismatch)
                best_no_fit = _least_severe(best_no_fit, NO_MATCHING_FLAVOR)
                continue
            choices: dict[str, FlavorChoice] = {}
            mode = _BEST
            flavor_no_fit = ""
            for r in wanted:
                fr = (name, r)
                pmode, borrow, why, no_fit = self._fits_quota(fr, assignment.usage.get(fr, 0), requests[r], assignment)
                reasons.extend(why)
                if no_fit and _SEVERITY[no_fit] > _SEVERITY[flavor_no_fit]:
                    flavor_no_fit = no_fit
                granular = (pmode, borrow)
                if _preferred(mode, granular, fungibility.preference):
                    mode = granular
                if mode[0] == _NO_FIT:
                    break
                choices[r] = FlavorChoice(name, _TO_MODE[pmode], borrow)
            if mode[0] == _NO_FIT:
                best_no_fit = _least_severe(best_no_fit, flavor_no_fit or WAITING_FOR_QUOTA)
            if not _try_next(mode, fungibility):
                best, best_mode = choices, mode
                break
            if _preferred(mode, best_mode, fungibility.preference):
                best, best_mode = choices, mode
        if best_mode[0] == _FIT:
            return best, [], ""
        return best, reasons, best_no_fit or WAITING_FOR_QUOTA

    def _fits_quota(self, fr: FlavorResource, assumed: int, request: int,
                    assignment: Assignment) -> tuple[int, int, list[str], str]:
        """Kueue's fitsResourceQuota: (granular mode, borrow level, reasons, no-fit reason)."""
        node = self.node
        available = node.available(fr)
        maximum = node.potential_available(fr)
        value = assumed + request
        flavor, res = fr
        quota = self.cq.quotas.get(fr)
        nominal = quota.nominal if quota else 0
        if value > maximum:
            assignment.shortfalls.append(Shortfall(flavor, res, value, available, maximum, nominal,
                                                   quota.borrowing_limit if quota else None))
            q = lambda v: format_quantity(res, v)  # noqa: E731
            return _NO_FIT, 0, [
                f"insufficient quota for {res} in flavor {flavor}, previously considered podsets requests "
                f"({q(assumed)}) + current podset request ({q(request)}) > maximum capacity ({q(maximum)})"
            ], EXCEEDS_MAX_QUOTA
        borrow, may_reclaim = lowest_fitting_subtree(node, fr, value)
        if value <= available:
            return _FIT, borrow, [], ""
        assignment.shortfalls.append(Shortfall(flavor, res, value, available, maximum, nominal,
                                               quota.borrowing_limit if quota else None))
        why = [f"insufficient unused quota for {res} in flavor {flavor}, "
               f"{format_quantity(res, value - available)} more needed"]
        if nominal >= value or may_reclaim or self.can_preempt_while_borrowing:
            possibility, borrow_after = self.oracle(fr, value)
            return _FROM_POSSIBILITY[possibility], borrow_after, why, ""
        return _NO_FIT, borrow, why, WAITING_FOR_QUOTA


def _least_severe(a: str, b: str) -> str:
    if not a:
        return b
    return a if _SEVERITY[a] <= _SEVERITY[b] else b
