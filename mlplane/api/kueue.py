"""The workload plane's kinds in Kueue's wire shape: ``kueue.x-k8s.io/v1beta2`` (also read as v1beta1).

ResourceFlavor, ClusterQueue, LocalQueue, Cohort, WorkloadPriorityClass and Workload follow
``kubernetes-sigs/kueue:apis/kueue/v1beta2/*_types.go``; their defaults are the CRD defaults, and
``semantic_errors`` carries the CEL rules and webhook checks of ``pkg/webhooks/*_webhook.go``.
A ``kueue.x-k8s.io/v1beta1`` manifest is converted to v1beta2 before validation, with the renames of
``apis/kueue/v1beta1/*_conversion.go`` (see ``V1BETA1_CONVERSIONS``).

Kueue's own configuration file (``config.kueue.x-k8s.io/v1beta1`` Configuration) is here too, so a
user's config loads through the same loader; only fairSharing and waitForPodsReady are interpreted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, Field

from mlplane.api.batch import PodTemplateSpec
from mlplane.api.core import Quantity, ResourceList, Taint, Toleration, toleration_errors
from mlplane.api.meta import Condition, LabelSelector, Labels, Model, Name, NonNegative, Object, dns_label, is_true
from mlplane.api.quantity import parse_quantity
from mlplane.api.registry import REGISTRY, ConversionError, Kind

GROUP = "kueue.x-k8s.io"
V1BETA2 = f"{GROUP}/v1beta2"
V1BETA1 = f"{GROUP}/v1beta1"
CONFIG_V1BETA1 = "config.kueue.x-k8s.io/v1beta1"

# Limits from the CRD markers of clusterqueue_types.go.
MAX_RESOURCE_GROUPS = 16
MAX_FLAVORS = 256
MAX_COVERED_RESOURCES = 256

ResourceName = Annotated[str, Field(min_length=1)]
PodSetName = Annotated[str, AfterValidator(dns_label)]
StopPolicy = Literal["None", "Hold", "HoldAndDrain"]


# --- shared pieces ------------------------------------------------------------------------

class ResourceQuota(Model):
    name: ResourceName
    nominal_quota: Quantity
    borrowing_limit: Quantity | None = None
    lending_limit: Quantity | None = None


class FlavorQuotas(Model):
    name: Name
    resources: Annotated[list[ResourceQuota], Field(min_length=1, max_length=64)]


class ResourceGroup(Model):
    covered_resources: Annotated[list[ResourceName], Field(min_length=1, max_length=64)]
    flavors: Annotated[list[FlavorQuotas], Field(min_length=1, max_length=64)]


class FairSharing(Model):
    """Weight of a ClusterQueue, Cohort or LocalQueue when sharing unused quota (default 1)."""

    weight: Quantity = "1"


class AdmissionFairSharingStatus(Model):
    consumed_resources: ResourceList
    last_update: str


class FairSharingStatus(Model):
    weighted_share: int
    admission_fair_sharing_status: AdmissionFairSharingStatus | None = None


def _negative(value: Quantity) -> bool:
    return parse_quantity(value) < 0


def _resource_group_errors(groups: list[ResourceGroup] | None, path: str, *, has_parent: bool,
                          parent_word: str, lending_within_nominal: bool) -> list[tuple[str, str]]:
    """Checks on resourceGroups shared by ClusterQueue and Cohort.

    Port of validateResourceGroups/validateFlavorQuotas in kubernetes-sigs/kueue:
    pkg/webhooks/clusterqueue_webhook.go, plus the CRD's MaxItems and CEL rules.
    """
    errors: list[tuple[str, str]] = []
    groups = groups or []
    if len(groups) > MAX_RESOURCE_GROUPS:
        errors.append((path, f"Too many: {len(groups)}: must have at most {MAX_RESOURCE_GROUPS} items"))
    total_flavors = sum(len(g.flavors) for g in groups)
    if total_flavors > MAX_FLAVORS:
        errors.append((path, f"Too many: {total_flavors}: must have at most {MAX_FLAVORS} flavors in all groups"))
    total_resources = sum(len(g.covered_resources) for g in groups)
    if total_resources > MAX_COVERED_RESOURCES:
        errors.append((path, f"Too many: {total_resources}: must have at most {MAX_COVERED_RESOURCES} "
                             "covered resources in all groups"))
    seen_resources: set[str] = set()
    seen_flavors: set[str] = set()
    for i, group in enumerate(groups):
        gpath = f"{path}[{i}]"
        for j, name in enumerate(group.covered_resources):
            if name in seen_resources:
                errors.append((f"{gpath}.coveredResources[{j}]", f"Duplicate value: {name!r}"))
            seen_resources.add(name)
        for j, flavor in enumerate(group.flavors):
            fpath = f"{gpath}.flavors[{j}]"
            if flavor.name in seen_flavors:
                errors.append((f"{fpath}.name", f"Duplicate value: {flavor.name!r}"))
            seen_flavors.add(flavor.name)
            if len(flavor.resources) != len(group.covered_resources):
                errors.append((f"{fpath}.resources", "Invalid value: must have the same number of resources "
                                                     "as the coveredResources"))
            for k, quota in enumerate(flavor.resources):
                qpath = f"{fpath}.resources[{k}]"
                if k < len(group.covered_resources) and quota.name != group.covered_resources[k]:
                    errors.append((f"{qpath}.name", f"Invalid value: {quota.name!r}: must match the name in "
                                                    f"coveredResources ({group.covered_resources[k]!r})"))
                for field_, value in (("nominalQuota", quota.nominal_quota), ("borrowingLimit", quota.borrowing_limit),
                                      ("lendingLimit", quota.lending_limit)):
                    if value is not None and _negative(value):
                        errors.append((f"{qpath}.{field_}", f"Invalid value: {str(value)!r}: must be greater than "
                                                            "or equal to 0"))
                for field_, value in (("borrowingLimit", quota.borrowing_limit),
                                      ("lendingLimit", quota.lending_limit)):
                    if value is not None and not has_parent:
                        errors.append((f"{qpath}.{field_}", f"Invalid value: {str(value)!r}: must be nil when "
                                                            f"{parent_word} is empty"))
                if (lending_within_nominal and quota.lending_limit is not None
                        and parse_quantity(quota.lending_limit) > parse_quantity(quota.nominal_quota)):
                    errors.append((f"{qpath}.lendingLimit", f"Invalid value: {str(quota.lending_limit)!r}: must be "
                                                            "less than or equal to the nominalQuota"))
    return errors


def _fair_sharing_errors(fs: FairSharing | None, path: str) -> list[tuple[str, str]]:
    # validateFairSharing (pkg/webhooks): weight non-negative; when not 0 it must exceed 10^-9.
    if fs is None:
        return []
    weight = parse_quantity(fs.weight)
    if weight < 0:
        return [(f"{path}.weight", f"Invalid value: {str(fs.weight)!r}: must be greater than or equal to 0")]
    if 0 < weight <= Decimal("1e-9"):
        return [(f"{path}.weight", f"Invalid value: {str(fs.weight)!r}: must be 0 or greater than 10^-9")]
    return []


# --- ResourceFlavor -----------------------------------------------------------------------

class ResourceFlavorSpec(Model):
    node_labels: Labels | None = None
    node_taints: Annotated[list[Taint], Field(max_length=8)] | None = None
    tolerations: Annotated[list[Toleration], Field(max_length=8)] | None = None
    topology_name: Name | None = None
    resource_weights: dict[ResourceName, Quantity] | None = None


class ResourceFlavor(Object):
    API_VERSION, KIND = V1BETA2, "ResourceFlavor"
    spec: ResourceFlavorSpec = Field(default_factory=ResourceFlavorSpec)

    def semantic_errors(self) -> list[tuple[str, str]]:
        # CEL rules of resourceflavor_types.go.
        errors = []
        spec = self.spec
        if len(spec.node_labels or {}) > 8:
            errors.append(("spec.nodeLabels", f"Too many: {len(spec.node_labels or {})}: must have at most 8 items"))
        if spec.topology_name is not None and not spec.node_labels:
            errors.append(("spec.nodeLabels", "Required value: at least one nodeLabel is required when topology "
                                              "is set"))
        for i, t in enumerate(spec.tolerations or []):
            errors.extend(toleration_errors(t, f"spec.tolerations[{i}]"))
        for name, weight in (spec.resource_weights or {}).items():
            if parse_quantity(weight) <= 0:
                errors.append((f"spec.resourceWeights[{name}]", f"Invalid value: {str(weight)!r}: must be greater "
                                                                "than 0"))
        return errors


# --- ClusterQueue -------------------------------------------------------------------------

class FlavorFungibility(Model):
    when_can_borrow: Literal["MayStopSearch", "TryNextFlavor"] = "MayStopSearch"
    when_can_preempt: Literal["MayStopSearch", "TryNextFlavor"] = "TryNextFlavor"
    preference: Literal["BorrowingOverPreemption", "PreemptionOverBorrowing"] | None = None


class BorrowWithinCohort(Model):
    policy: Literal["Never", "LowerPriority"] = "Never"
    max_priority_threshold: int | None = None


class ClusterQueuePreemption(Model):
    reclaim_within_cohort: Literal["Never", "LowerPriority", "Any"] = "Never"
    borrow_within_cohort: BorrowWithinCohort = Field(default_factory=BorrowWithinCohort)
    within_cluster_queue: Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"] = "Never"


class AdmissionCheckStrategyRule(Model):
    name: Annotated[str, Field(min_length=1, max_length=316)]
    on_flavors: list[Name] | None = None


class AdmissionChecksStrategy(Model):
    admission_checks: Annotated[list[AdmissionCheckStrategyRule], Field(min_length=1, max_length=64)]


class AdmissionScope(Model):
    admission_mode: Literal["UsageBasedAdmissionFairSharing", "NoAdmissionFairSharing"]


class ClusterQueueSpec(Model):
    resource_groups: list[ResourceGroup] | None = None
    cohort_name: Name | None = None
    queueing_strategy: Literal["StrictFIFO", "BestEffortFIFO"] = "BestEffortFIFO"
    # None selects no namespace at all; an empty selector ({}) selects every namespace.
    namespace_selector: LabelSelector | None = None
    flavor_fungibility: FlavorFungibility = Field(default_factory=FlavorFungibility)
    preemption: ClusterQueuePreemption = Field(default_factory=ClusterQueuePreemption)
    admission_checks_strategy: AdmissionChecksStrategy | None = None
    stop_policy: StopPolicy = "None"
    fair_sharing: FairSharing | None = None
    admission_scope: AdmissionScope | None = None


class ResourceUsage(Model):
    name: ResourceName
    total: Quantity = "0"
    borrowed: Quantity = "0"


class FlavorUsage(Model):
    name: Name
    resources: list[ResourceUsage] = Field(default_factory=list)


class ClusterQueueStatus(Model):
    conditions: list[Condition] | None = None
    flavors_reservation: list[FlavorUsage] | None = None
    flavors_usage: list[FlavorUsage] | None = None
    pending_workloads: NonNegative = 0
    reserving_workloads: NonNegative = 0
    admitted_workloads: NonNegative = 0
    fair_sharing: FairSharingStatus | None = None


class ClusterQueue(Object):
    API_VERSION, KIND = V1BETA2, "ClusterQueue"
    spec: ClusterQueueSpec = Field(default_factory=ClusterQueueSpec)
    status: ClusterQueueStatus = Field(default_factory=ClusterQueueStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        spec = self.spec
        errors = _resource_group_errors(spec.resource_groups, "spec.resourceGroups", has_parent=bool(spec.cohort_name),
                                       parent_word="cohort", lending_within_nominal=True)
        # CEL rule on ClusterQueuePreemption (clusterqueue_types.go).
        p = spec.preemption
        if p.reclaim_within_cohort == "Never" and p.borrow_within_cohort.policy != "Never":
            errors.append(("spec.preemption", "Invalid value: reclaimWithinCohort=Never and "
                                              "borrowWithinCohort.Policy!=Never"))
        ff = spec.flavor_fungibility
        if ff.preference is not None and (ff.when_can_borrow, ff.when_can_preempt) != ("TryNextFlavor",) * 2:
            errors.append(("spec.flavorFungibility.preference", "Invalid value: preference can only be set when both "
                                                                "whenCanBorrow and whenCanPreempt are TryNextFlavor"))
        errors.extend(_fair_sharing_errors(spec.fair_sharing, "spec.fairSharing"))
        return errors


# --- LocalQueue ---------------------------------------------------------------------------

class LocalQueueSpec(Model):
    cluster_queue: Name
    stop_policy: StopPolicy = "None"
    fair_sharing: FairSharing | None = None


class LocalQueueResourceUsage(Model):
    name: ResourceName
    total: Quantity = "0"


class LocalQueueFlavorUsage(Model):
    name: Name
    resources: list[LocalQueueResourceUsage] = Field(default_factory=list)


class LocalQueueStatus(Model):
    conditions: list[Condition] | None = None
    pending_workloads: NonNegative = 0
    reserving_workloads: NonNegative = 0
    admitted_workloads: NonNegative = 0
    flavors_reservation: list[LocalQueueFlavorUsage] | None = None
    flavors_usage: list[LocalQueueFlavorUsage] | None = None
    fair_sharing: FairSharingStatus | None = None


class LocalQueue(Object):
    API_VERSION, KIND = V1BETA2, "LocalQueue"
    spec: LocalQueueSpec
    status: LocalQueueStatus = Field(default_factory=LocalQueueStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        return _fair_sharing_errors(self.spec.fair_sharing, "spec.fairSharing")


# --- Cohort -------------------------------------------------------------------------------

class CohortSpec(Model):
    parent_name: Name | None = None
    resource_groups: list[ResourceGroup] | None = None
    fair_sharing: FairSharing | None = None


class CohortStatus(Model):
    fair_sharing: FairSharingStatus | None = None


class Cohort(Object):
    API_VERSION, KIND = V1BETA2, "Cohort"
    spec: CohortSpec = Field(default_factory=CohortSpec)
    status: CohortStatus = Field(default_factory=CohortStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        spec = self.spec
        errors = _resource_group_errors(spec.resource_groups, "spec.resourceGroups", has_parent=bool(spec.parent_name),
                                       parent_word="parent", lending_within_nominal=False)
        if spec.parent_name and spec.parent_name == self.name:
            errors.append(("spec.parentName", f"Invalid value: {spec.parent_name!r}: a Cohort cannot be its own "
                                              "parent"))
        errors.extend(_fair_sharing_errors(spec.fair_sharing, "spec.fairSharing"))
        return errors


# --- WorkloadPriorityClass ----------------------------------------------------------------

class WorkloadPriorityClass(Object):
    API_VERSION, KIND = V1BETA2, "WorkloadPriorityClass"
    value: int
    description: Annotated[str, Field(max_length=2048)] | None = None


# --- Workload -----------------------------------------------------------------------------

class PodSetTopologyRequest(Model):
    required: Annotated[str, Field(max_length=63)] | None = None
    preferred: Annotated[str, Field(max_length=63)] | None = None
    unconstrained: bool | None = None
    pod_index_label: Annotated[str, Field(max_length=317)] | None = None
    sub_group_index_label: Annotated[str, Field(max_length=317)] | None = None
    sub_group_count: int | None = None
    pod_set_group_name: Annotated[str, Field(max_length=256)] | None = None
    pod_set_slice_required_topology: Annotated[str, Field(max_length=63)] | None = None
    pod_set_slice_size: int | None = None


class PodSet(Model):
    name: PodSetName = "main"
    template: PodTemplateSpec
    count: NonNegative = 1
    min_count: Annotated[int, Field(ge=1)] | None = None
    topology_request: PodSetTopologyRequest | None = None


class PriorityClassRef(Model):
    group: Literal["kueue.x-k8s.io", "scheduling.k8s.io"]
    kind: Literal["WorkloadPriorityClass", "PriorityClass"]
    name: Name


class WorkloadSpec(Model):
    pod_sets: Annotated[list[PodSet], Field(min_length=1, max_length=8)]
    queue_name: Name | None = None
    priority_class_ref: PriorityClassRef | None = None
    priority: int | None = None
    active: bool = True
    maximum_execution_time_seconds: Annotated[int, Field(ge=1)] | None = None


class TopologyAssignmentSliceLevelValues(Model):
    prefix: str | None = None
    suffix: str | None = None
    roots: list[str] | None = None
    universal_value: str | None = None


class TopologyAssignmentSlice(Model):
    domain_count: Annotated[int, Field(ge=1)]
    values_per_level: list[TopologyAssignmentSliceLevelValues]
    pod_counts: list[int] | None = None
    universal_pod_count: int | None = None


class TopologyAssignment(Model):
    levels: list[str]
    slices: list[TopologyAssignmentSlice]


class PodSetAssignment(Model):
    name: PodSetName = "main"
    flavors: dict[ResourceName, Name] | None = None
    resource_usage: ResourceList | None = None
    count: NonNegative | None = None
    topology_assignment: TopologyAssignment | None = None
    delayed_topology_request: Literal["Pending", "Ready"] | None = None


class Admission(Model):
    cluster_queue: Name
    pod_set_assignments: list[PodSetAssignment] = Field(default_factory=list)


class RequeueState(Model):
    count: NonNegative | None = None
    requeue_at: str | None = None


class ReclaimablePod(Model):
    name: PodSetName
    count: NonNegative


class PodSetUpdate(Model):
    name: PodSetName
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None


class AdmissionCheckState(Model):
    name: Annotated[str, Field(min_length=1, max_length=316)]
    state: Literal["Pending", "Ready", "Retry", "Rejected"]
    last_transition_time: str | None = None
    message: str = ""
    pod_set_updates: list[PodSetUpdate] | None = None


class PodSetRequest(Model):
    name: PodSetName
    resources: ResourceList | None = None


class WorkloadSchedulingStatsEviction(Model):
    reason: str
    underlying_cause: str
    count: NonNegative


class SchedulingStats(Model):
    evictions: list[WorkloadSchedulingStatsEviction] | None = None


class UnhealthyNode(Model):
    name: str


class WorkloadStatus(Model):
    conditions: list[Condition] | None = None
    admission: Admission | None = None
    requeue_state: RequeueState | None = None
    reclaimable_pods: list[ReclaimablePod] | None = None
    admission_checks: list[AdmissionCheckState] | None = None
    resource_requests: list[PodSetRequest] | None = None
    accumulated_past_execution_time_seconds: int | None = None
    scheduling_stats: SchedulingStats | None = None
    nominated_cluster_names: list[str] | None = None
    cluster_name: str | None = None
    unhealthy_nodes: list[UnhealthyNode] | None = None


class Workload(Object):
    API_VERSION, KIND = V1BETA2, "Workload"
    spec: WorkloadSpec
    status: WorkloadStatus = Field(default_factory=WorkloadStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        # CEL rules of workload_types.go and ValidateWorkload in pkg/webhooks/workload_webhook.go.
        errors: list[tuple[str, str]] = []
        spec = self.spec
        names: set[str] = set()
        for i, ps in enumerate(spec.pod_sets):
            path = f"spec.podSets[{i}]"
            if ps.name in names:
                errors.append((f"{path}.name", f"Duplicate value: {ps.name!r}"))
            names.add(ps.name)
            if ps.min_count is not None and ps.min_count > ps.count:
                errors.append((f"{path}.minCount", f"Invalid value: {ps.min_count}: minCount should be positive "
                                                   f"and less or equal to count ({ps.count})"))
            for j, c in enumerate(ps.template.spec.containers):
                if "pods" in ((c.resources.requests if c.resources else None) or {}):
                    errors.append((f"{path}.template.spec.containers[{j}].resources.requests[pods]",
                                   "Invalid value: 'pods': the key is reserved for internal kueue use"))
                # Kubernetes' ValidateResourceRequirements: quantities are non-negative.
                for field_ in ("requests", "limits"):
                    for res, q in (getattr(c.resources, field_, None) or {}).items():
                        if _negative(q):
                            errors.append((f"{path}.template.spec.containers[{j}].resources.{field_}[{res}]",
                                           f"Invalid value: {str(q)!r}: must be greater than or equal to 0"))
        variable = sum(1 for ps in spec.pod_sets if ps.min_count is not None)
        if variable > 1:
            errors.append(("spec.podSets", f"Invalid value: {variable}: at most one podSet can use minCount"))
        ref = spec.priority_class_ref
        if ref is not None:
            if spec.priority is None:
                errors.append(("spec.priority", "Required value: priority should not be nil when priorityClassRef "
                                                "is set"))
            expected = {"scheduling.k8s.io": "PriorityClass", "kueue.x-k8s.io": "WorkloadPriorityClass"}[ref.group]
            if ref.kind != expected:
                errors.append(("spec.priorityClassRef.kind", f"Invalid value: {ref.kind!r}: only the {expected} kind "
                                                             f"is allowed for the {ref.group} group"))
        admission = self.status.admission
        if admission is not None and is_true(self.status.conditions, "QuotaReserved"):
            if len(admission.pod_set_assignments) != len(spec.pod_sets):
                errors.append(("status.admission.podSetAssignments", "Invalid value: podSetAssignments must have the "
                                                                     "same number of podSets as the spec"))
            for i, psa in enumerate(admission.pod_set_assignments):
                if psa.name not in names:
                    errors.append((f"status.admission.podSetAssignments[{i}].name", f"Not found: {psa.name!r}"))
        return errors


def reserved(wl: Workload) -> bool:
    """The workload holds quota: ``status.admission`` set and ``QuotaReserved=True``
    (Kueue's workload.HasQuotaReservation)."""
    return wl.status.admission is not None and is_true(wl.status.conditions, "QuotaReserved")


def cluster_queue_of(wl: Workload, local_queues: Mapping[str, str]) -> str | None:
    """The ClusterQueue ``wl`` is in (its admission, when it holds quota) or queued for (through its
    LocalQueue); ``local_queues`` maps "namespace/name" of each LocalQueue to its ClusterQueue.
    None when its LocalQueue is missing."""
    if reserved(wl):
        return wl.status.admission.cluster_queue
    return local_queues.get(f"{wl.namespace or 'default'}/{wl.spec.queue_name or ''}")


# --- Kueue's Configuration file -----------------------------------------------------------

# Go durations as metav1.Duration writes them: "30s", "5m", "1h30m", "1.5h".
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str) -> str:
    if value != "0" and not _DURATION.match(value):
        raise ValueError(f"Invalid value: {value!r}: a duration must look like \"300ms\", \"30s\", \"5m\" or "
                         "\"1h30m\"")
    return value


Duration = Annotated[str, AfterValidator(_duration)]


def duration_seconds(value: str) -> float:
    """Seconds in a Go duration string ("1h30m" -> 5400.0)."""
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(_duration(value)))


PreemptionStrategy = Literal["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
# The only lists pkg/config/validation.go accepts.
_STRATEGY_LISTS = (["LessThanOrEqualToFinalShare"], ["LessThanInitialShare"],
                   ["LessThanOrEqualToFinalShare", "LessThanInitialShare"])


class FairSharingConfig(Model):
    enable: bool = False
    preemption_strategies: list[PreemptionStrategy] | None = None


class RequeuingStrategy(Model):
    timestamp: Literal["Eviction", "Creation"] | None = None
    backoff_limit_count: NonNegative | None = None
    backoff_base_seconds: NonNegative | None = None
    backoff_max_seconds: NonNegative | None = None


class WaitForPodsReady(Model):
    enable: bool = False
    timeout: Duration | None = None
    recovery_timeout: Duration | None = None
    block_admission: bool | None = None
    requeuing_strategy: RequeuingStrategy | None = None


class Configuration(Object):
    """config.kueue.x-k8s.io/v1beta1 Configuration, defaulted as apis/config/v1beta1/defaults.go does.

    Only ``fairSharing`` and ``waitForPodsReady`` change what mlplane does; the other sections of a
    real Kueue config file are accepted so that the file loads unchanged, and are not interpreted.
    """

    API_VERSION, KIND = CONFIG_V1BETA1, "Configuration"
    kueue_namespace: str | None = Field(None, alias="namespace")
    manage_jobs_without_queue_name: bool = False
    managed_jobs_namespace_selector: LabelSelector | None = None
    wait_for_pods_ready: WaitForPodsReady | None = None
    fair_sharing: FairSharingConfig | None = None
    feature_gates: dict[str, bool] | None = None
    # Accepted, not interpreted.
    admission_fair_sharing: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    webhook: dict[str, Any] | None = None
    leader_election: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    pprof_bind_address: str | None = None
    controller: dict[str, Any] | None = None
    internal_cert_management: dict[str, Any] | None = None
    client_connection: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    queue_visibility: dict[str, Any] | None = None
    multi_kueue: dict[str, Any] | None = None
    object_retention_policies: dict[str, Any] | None = None

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        # SetDefaults_Configuration (apis/config/v1beta1/defaults.go), for the sections we interpret.
        w = self.wait_for_pods_ready
        if w is not None:
            if w.timeout is None:
                w.timeout = "5m"
            if w.block_admission is None:
                w.block_admission = w.enable
            r = w.requeuing_strategy = w.requeuing_strategy or RequeuingStrategy()
            r.timestamp = r.timestamp or "Eviction"
            r.backoff_base_seconds = 60 if r.backoff_base_seconds is None else r.backoff_base_seconds
            r.backoff_max_seconds = 3600 if r.backoff_max_seconds is None else r.backoff_max_seconds
        fs = self.fair_sharing
        if fs is not None and fs.enable and not fs.preemption_strategies:
            fs.preemption_strategies = ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]

    @property
    def fair_sharing_enabled(self) -> bool:
        return self.fair_sharing is not None and self.fair_sharing.enable

    @property
    def wait_for_pods_ready_enabled(self) -> bool:
        return self.wait_for_pods_ready is not None and self.wait_for_pods_ready.enable

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors = []
        fs = self.fair_sharing
        if fs is not None and fs.preemption_strategies and list(fs.preemption_strategies) not in _STRATEGY_LISTS:
            allowed = " or ".join(str(s) for s in _STRATEGY_LISTS)
            errors.append(("fairSharing.preemptionStrategies", f"Unsupported value: {fs.preemption_strategies}: "
                                                               f"supported values: {allowed}"))
        w = self.wait_for_pods_ready
        if w is not None and w.requeuing_strategy is not None:
            r = w.requeuing_strategy
            if (r.backoff_base_seconds or 0) > (r.backoff_max_seconds or 0):
                errors.append(("waitForPodsReady.requeuingStrategy.backoffBaseSeconds",
                               "Invalid value: must not be greater than backoffMaxSeconds"))
        return errors


# --- kueue.x-k8s.io/v1beta1 -> v1beta2 ----------------------------------------------------
# Renames from kubernetes-sigs/kueue:apis/kueue/v1beta1/*_conversion.go; everything else is identical.

def _spec_status(data: dict) -> tuple[dict, dict, dict]:
    out = copy.deepcopy(data)
    out["apiVersion"] = V1BETA2
    spec = out.get("spec") if isinstance(out.get("spec"), dict) else {}
    status = out.get("status") if isinstance(out.get("status"), dict) else {}
    return out, spec, status


def _rename(d: dict, old: str, new: str, path: str) -> None:
    if old not in d:
        return
    if new in d:
        raise ConversionError([(f"{path}.{new}", f"Invalid value: {old} (v1beta1) and {new} (v1beta2) may not "
                                                 "both be set")])
    d[new] = d.pop(old)


def _cluster_queue_from_v1beta1(data: dict) -> dict:
    out, spec, status = _spec_status(data)
    _rename(spec, "cohort", "cohortName", "spec")
    checks = spec.pop("admissionChecks", None)
    if checks:
        if spec.get("admissionChecksStrategy") is not None:
            raise ConversionError([("spec", "Invalid value: Either AdmissionChecks or AdmissionCheckStrategy can be "
                                            "set, but not both")])
        if not isinstance(checks, list):
            raise ConversionError([("spec.admissionChecks", f"Invalid value: {checks!r}: must be a list of names")])
        spec["admissionChecksStrategy"] = {"admissionChecks": [{"name": c} for c in checks]}
    ff = spec.get("flavorFungibility")
    if isinstance(ff, dict):  # v1beta1's Borrow / Preempt are v1beta2's MayStopSearch
        if ff.get("whenCanBorrow") == "Borrow":
            ff["whenCanBorrow"] = "MayStopSearch"
        if ff.get("whenCanPreempt") == "Preempt":
            ff["whenCanPreempt"] = "MayStopSearch"
    status.pop("pendingWorkloadsStatus", None)  # deprecated in v1beta1, gone in v1beta2
    return out


def _local_queue_from_v1beta1(data: dict) -> dict:
    out, _spec, status = _spec_status(data)
    _rename(status, "flavorUsage", "flavorsUsage", "status")
    return out


_PRIORITY_SOURCES = {"kueue.x-k8s.io/workloadpriorityclass": ("kueue.x-k8s.io", "WorkloadPriorityClass"),
                     "scheduling.k8s.io/priorityclass": ("scheduling.k8s.io", "PriorityClass")}


def _workload_from_v1beta1(data: dict) -> dict:
    out, spec, status = _spec_status(data)
    name = spec.pop("priorityClassName", None)
    source = spec.pop("priorityClassSource", None) or ""
    if source and source not in _PRIORITY_SOURCES:
        supported = ", ".join(f'"{s}"' for s in _PRIORITY_SOURCES)
        raise ConversionError([("spec.priorityClassSource", f'Unsupported value: "{source}": supported values: '
                                                            f'{supported}, ""')])
    if name and source:
        if spec.get("priorityClassRef") is not None:
            raise ConversionError([("spec.priorityClassRef", "Invalid value: priorityClassName (v1beta1) and "
                                                             "priorityClassRef (v1beta2) may not both be set")])
        group, kind = _PRIORITY_SOURCES[source]
        spec["priorityClassRef"] = {"group": group, "kind": kind, "name": name}
    _rename(status, "accumulatedPastExexcutionTimeSeconds", "accumulatedPastExecutionTimeSeconds", "status")
    return out


def _same_from_v1beta1(data: dict) -> dict:
    out = dict(data)
    out["apiVersion"] = V1BETA2
    return out


V1BETA1_CONVERSIONS = {
    "ResourceFlavor": _same_from_v1beta1,
    "ClusterQueue": _cluster_queue_from_v1beta1,
    "LocalQueue": _local_queue_from_v1beta1,
    "Cohort": _same_from_v1beta1,
    "WorkloadPriorityClass": _same_from_v1beta1,
    "Workload": _workload_from_v1beta1,
}


# --- registration -------------------------------------------------------------------------

def _v1beta1(kind: str) -> tuple[tuple[str, Callable[[dict], dict]], ...]:
    return ((V1BETA1, V1BETA1_CONVERSIONS[kind]),)


def _local_queue_update_errors(old: Object, new: Object) -> list[tuple[str, str]]:
    assert isinstance(old, LocalQueue) and isinstance(new, LocalQueue)
    if old.spec.cluster_queue != new.spec.cluster_queue:  # CEL "self == oldSelf" in localqueue_types.go
        return [("spec.clusterQueue", "Invalid value: field is immutable")]
    return []


def _workload_fields(wl: Object) -> dict[str, str]:
    assert isinstance(wl, Workload)
    admission = wl.status.admission
    return {"spec.queueName": wl.spec.queue_name or "",
            "status.admission.clusterQueue": admission.cluster_queue if admission else ""}


REGISTRY.register(Kind(ResourceFlavor, "resourceflavors", namespaced=False, short_names=("rf", "flavor", "flavors"),
                       conversions=_v1beta1("ResourceFlavor")))
REGISTRY.register(Kind(ClusterQueue, "clusterqueues", namespaced=False, short_names=("cq",),
                       fields=lambda o: {"spec.cohortName": o.spec.cohort_name or ""},
                       field_names=frozenset({"spec.cohortName"}), conversions=_v1beta1("ClusterQueue")))
REGISTRY.register(Kind(LocalQueue, "localqueues", namespaced=True, short_names=("lq", "queue", "queues"),
                       fields=lambda o: {"spec.clusterQueue": o.spec.cluster_queue},
                       field_names=frozenset({"spec.clusterQueue"}), update_errors=_local_queue_update_errors,
                       conversions=_v1beta1("LocalQueue")))
REGISTRY.register(Kind(Cohort, "cohorts", namespaced=False,
                       fields=lambda o: {"spec.parentName": o.spec.parent_name or ""},
                       field_names=frozenset({"spec.parentName"}), conversions=_v1beta1("Cohort")))
REGISTRY.register(Kind(WorkloadPriorityClass, "workloadpriorityclasses", namespaced=False,
                       conversions=_v1beta1("WorkloadPriorityClass")))
REGISTRY.register(Kind(Workload, "workloads", namespaced=True, short_names=("wl",), fields=_workload_fields,
                       field_names=frozenset({"spec.queueName", "status.admission.clusterQueue"}),
                       conversions=_v1beta1("Workload")))
REGISTRY.register(Kind(Configuration, "configurations", namespaced=False))

__all__ = ["ResourceFlavor", "ClusterQueue", "LocalQueue", "Cohort", "WorkloadPriorityClass", "Workload",
           "Configuration", "duration_seconds", "V1BETA1_CONVERSIONS", "reserved", "cluster_queue_of"]
