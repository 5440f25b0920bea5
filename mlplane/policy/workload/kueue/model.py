"""The plain data the Kueue admission core decides on, independent of the API models.

``snapshot.py`` builds these from ``kueue.x-k8s.io`` objects; tests and benchmarks may build them
directly. Quantities are integers in milli-units (see ``quota.py``); times are seconds since the
epoch (floats), so orderings compare numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlplane.api.core import toleration_matches
from mlplane.policy.workload.kueue.quota import FlavorResource, Quota

PODS = "pods"

# ClusterQueue.spec.queueingStrategy
STRICT_FIFO, BEST_EFFORT_FIFO = "StrictFIFO", "BestEffortFIFO"
# PreemptionPolicy values
NEVER, LOWER_PRIORITY, LOWER_OR_NEWER_EQUAL_PRIORITY, ANY = "Never", "LowerPriority", "LowerOrNewerEqualPriority", "Any"
# FlavorFungibility values (v1beta2; v1beta1's Borrow / Preempt mean MayStopSearch)
MAY_STOP_SEARCH, TRY_NEXT_FLAVOR = "MayStopSearch", "TryNextFlavor"
BORROWING_OVER_PREEMPTION, PREEMPTION_OVER_BORROWING = "BorrowingOverPreemption", "PreemptionOverBorrowing"

# Workload.status.conditions[type=Preempted].reason
IN_CLUSTER_QUEUE = "InClusterQueue"
IN_COHORT_RECLAMATION = "InCohortReclamation"
IN_COHORT_FAIR_SHARING = "InCohortFairSharing"
IN_COHORT_RECLAIM_WHILE_BORROWING = "InCohortReclaimWhileBorrowing"

# Workload.status.conditions[type=QuotaReserved, status=False].reason
PENDING = "Pending"
NO_MATCHING_FLAVOR = "NoMatchingFlavor"
WAITING_FOR_QUOTA = "WaitingForQuota"
EXCEEDS_MAX_QUOTA = "ExceedsMaxQuota"
WAITING_FOR_PREEMPTED_WORKLOADS = "WaitingForPreemptedWorkloads"
MISCONFIGURED = "Misconfigured"
INADMISSIBLE = "Inadmissible"
SUSPENDED = "Suspended"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        return toleration_matches(self.key, self.operator, self.value, self.effect,
                                  taint.key, taint.value, taint.effect)


@dataclass(slots=True)
class Flavor:
    """A ResourceFlavor: the node labels it stands for, its taints and the tolerations it adds."""

    name: str
    node_labels: dict[str, str] = field(default_factory=dict)
    node_taints: tuple[Taint, ...] = ()
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceGroup:
    covered: tuple[str, ...]
    flavors: tuple[str, ...]


@dataclass(slots=True)
class Preemption:
    within_cluster_queue: str = NEVER
    reclaim_within_cohort: str = NEVER
    borrow_within_cohort: str = NEVER
    max_priority_threshold: int | None = None


@dataclass(slots=True)
class Fungibility:
    when_can_borrow: str = MAY_STOP_SEARCH
    when_can_preempt: str = TRY_NEXT_FLAVOR
    preference: str | None = None


@dataclass(slots=True)
class ClusterQueue:
    """What admission needs of a ClusterQueue. ``inactive`` says why it admits nothing, if so, and
    ``inactive_reason`` is the reason of its ``Active=False`` condition."""

    name: str
    cohort: str | None = None
    resource_groups: tuple[ResourceGroup, ...] = ()
    quotas: dict[FlavorResource, Quota] = field(default_factory=dict)
    queueing_strategy: str = BEST_EFFORT_FIFO
    preemption: Preemption = field(default_factory=Preemption)
    fungibility: Fungibility = field(default_factory=Fungibility)
    inactive: str | None = None
    inactive_reason: str | None = None

    def group_for(self, resource: str) -> ResourceGroup | None:
        for rg in self.resource_groups:
            if resource in rg.covered:
                return rg
        return None


@dataclass(slots=True)
class PodSet:
    name: str
    count: int
    requests: dict[str, int]  # per pod, milli-units
    min_count: int | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


@dataclass(slots=True)
class PodSetAdmission:
    """One podSetAssignment of an admission: flavors per resource and total usage."""

    name: str
    count: int
    flavors: dict[str, str]
    usage: dict[str, int]  # resource -> milli-units for all ``count`` pods


@dataclass(slots=True)
class Workload:
    """A pending or admitted Workload.

    ``timestamp`` orders the queue (creation time); ``reserved_at`` is the QuotaReserved
    condition's lastTransitionTime of an admitted workload (None: unknown, counts as now).
    ``admission`` is set for admitted workloads; ``blocked`` for pending ones that cannot even
    enter a queue (missing LocalQueue...), as (reason, message)."""

    key: str  # "namespace/name"
    uid: str
    cluster_queue: str | None
    priority: int
    timestamp: float
    pod_sets: tuple[PodSet, ...]
    local_queue: str = ""
    reserved_at: float | None = None
    evicted: bool = False
    admission: tuple[PodSetAdmission, ...] | None = None
    blocked: tuple[str, str] | None = None
    _usage: dict[FlavorResource, int] | None = field(default=None, repr=False)

    @property
    def usage(self) -> dict[FlavorResource, int]:
        """Quota used by an admitted workload, per (flavor, resource)."""
        if self._usage is None:
            usage: dict[FlavorResource, int] = {}
            for psa in self.admission or ():
                for res, flavor in psa.flavors.items():
                    amount = psa.usage.get(res, 0)
                    if amount:
                        fr = (flavor, res)
                        usage[fr] = usage.get(fr, 0) + amount
            self._usage = usage
        return self._usage

    def order_key(self) -> tuple:
        """Kueue's ClusterQueue heap order: higher priority, then older, then a fixed tie-break."""
        return (-self.priority, self.timestamp, self.uid, self.key)

    @property
    def partially_admissible(self) -> bool:
        return any(ps.min_count is not None and ps.min_count < ps.count for ps in self.pod_sets)
