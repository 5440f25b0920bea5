"""The DynamicResources scheduler plugin: places pods whose ``spec.resourceClaims`` ask for devices.

Ports the behaviour of kube-scheduler's plugin
(kubernetes/kubernetes pkg/scheduler/framework/plugins/dynamicresources/dynamicresources.go):

- PreFilter: every claim of the pod must exist (a claim from a template is named in
  ``pod.status.resourceClaimStatuses`` once the claim controller made it, and must be owned
  by the pod); claims not allocated yet must name DeviceClasses that exist. Anything missing
  leaves the pod UnschedulableAndUnresolvable with a message that says what it waits for. A
  pod without claims Skips the plugin.
- Filter: claims already allocated must be usable from the node (``allocation.nodeSelector``);
  the others are allocated together on the node by the device plane's ``Allocator`` over the
  snapshot's classes, slices and allocated claims (those assumed in earlier cycles count as
  in use). The snapshot keeps that allocator across cycles and updates what is in use claim
  by claim (upstream likewise keeps the allocated devices up to date from claim events
  instead of listing every claim per pod: dynamicresources.go, allocatedDevices); PreFilter
  converts the pod's claims once for all nodes. When nothing fits, the node's reasons are the
  allocator's ("no device matched selector of request gpu (8 devices checked)").
- Score: with claims that use a prioritized list (``firstAvailable``), nodes where earlier
  subrequests could be allocated score higher; otherwise the plugin has nothing to score.
- PostFilter (only when no node fits): of the claims Filter found allocated where the pod cannot
  run, the first one that no other pod uses (``reservedFor`` empty or only this pod) and that our
  scheduler allocated (it carries ``resource.kubernetes.io/delete-protection``) is to be
  deallocated, so the next attempt can allocate it anew on a node where the pod fits. The plugin
  only decides: it puts the claim, status cleared, in ``claims_to_deallocate`` and says
  Unschedulable "deallocation of ResourceClaim completed" (upstream PostFilter); the scheduler
  controller writes it when the cycle ends. The finalizer stays, as upstream's PostFilter leaves
  it (the next allocation keeps it; the claim controller removes it if the claim is deleted).
- Reserve: the allocation chosen for the node is assumed in the snapshot, so the next cycle
  already counts its devices; Unreserve forgets it.
- PreBind is I/O and lives with the scheduler controller (``ClaimWriter`` in
  mlplane/control/controllers/scheduler.py); it reads ``claims_to_write`` from the cycle state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlplane.api.resource import (DELETE_PROTECTION_FINALIZER, FIRST_AVAILABLE_DEVICE_REQUEST_MAX_SIZE,
                                  ResourceClaim, ResourceClaimConsumerReference)
from mlplane.policy.device import convert
from mlplane.policy.device.allocator import (DEFAULT_MAX_STEPS, AllocationError, AllocationOutcome, Allocator,
                                             PreparedClaims, SearchBudgetExceeded)
from mlplane.policy.device.model import NodeSelector
from mlplane.policy.device.pools import node_selector_matches
from mlplane.policy.pod.claims import DeviceSnapshot
from mlplane.policy.pod.interface import MAX_NODE_SCORE, CycleState, Diagnosis, PostFilterResult, Status
from mlplane.policy.pod.snapshot import NodeInfo, PodInfo, Snapshot

STATE_KEY = "DynamicResources"
# resource.k8s.io/v1 ResourceClaimReservedForMaxSize.
RESERVED_FOR_MAX_SIZE = 256
# The annotation on a claim made from a template naming the pod's claim entry (upstream
# resourceclaim.PodClaimNameAnnotation).
POD_CLAIM_NAME_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
NOT_AVAILABLE = "resourceclaim not available on the node"
CANNOT_ALLOCATE = "cannot allocate all claims"
# PostFilter's verdicts (upstream PostFilter).
DEALLOCATED = "deallocation of ResourceClaim completed"
STILL_NOT_SCHEDULABLE = "still not schedulable"


def pod_reference(pod: PodInfo) -> ResourceClaimConsumerReference:
    """The status.reservedFor entry of a pod."""
    return ResourceClaimConsumerReference(resource="pods", name=pod.pod.name, uid=pod.uid)


def reserved_for(claim: ResourceClaim, uid: str) -> bool:
    return any(r.resource == "pods" and r.uid == uid for r in claim.status.reserved_for or [])


def claim_name(pod: PodInfo, index: int) -> tuple[str | None, str]:
    """The ResourceClaim name of the pod's ``spec.resourceClaims[index]`` (None: not created
    yet) and a description of what the pod waits for while it is missing."""
    entry = (pod.pod.spec.resource_claims or [])[index]
    if entry.resource_claim_name is not None:
        return entry.resource_claim_name, f'waiting for resource claim "{entry.resource_claim_name}" to be created'
    for status in pod.pod.status.resource_claim_statuses or []:
        if status.name == entry.name:
            return status.resource_claim_name, ""
    return None, (f'waiting for resource claim "{entry.name}" to be created from template '
                  f'"{entry.resource_claim_template_name}"')


@dataclass
class ClaimsState:
    """What PreFilter learned about the pod's claims, shared with Filter, Reserve and PreBind."""

    devices: DeviceSnapshot
    claims: list[ResourceClaim]  # each claim once, in spec order
    to_allocate: list[ResourceClaim]  # the claims without an allocation
    allocator: Allocator | None
    prepared: PreparedClaims | None  # to_allocate, converted for the allocator
    node_selectors: list[NodeSelector]  # where the claims allocated already can be used
    allocations: dict[str, AllocationOutcome] = field(default_factory=dict)  # node -> feasible outcome
    claims_to_write: list[ResourceClaim] = field(default_factory=list)  # Reserve: as PreBind must write them
    base_versions: dict[str, str | None] = field(default_factory=dict)  # claim key -> resourceVersion read
    selector_claims: list[str] = field(default_factory=list)  # the claim key of each node_selectors entry
    unavailable_claims: set[str] = field(default_factory=set)  # Filter: allocated where some node can't use
    # PostFilter: claims to write back unallocated (status cleared, resourceVersion as read) once the
    # cycle ends Unschedulable; the scheduler controller writes them.
    claims_to_deallocate: list[ResourceClaim] = field(default_factory=list)


class DynamicResources:
    """PreFilter, Filter, PostFilter, Score, Reserve and Unreserve of kube-scheduler's
    DynamicResources plugin."""

    name = "DynamicResources"

    def __init__(self, max_steps: int | None = None):
        self.max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps

    # -- PreFilter ----------------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        state.skip_score.add(self.name)  # until claims with a prioritized list turn up below
        if not pod.pod.spec.resource_claims:
            return Status.skip()
        devices = snapshot.devices
        claims: list[ResourceClaim] = []
        seen: set[str] = set()
        for i, entry in enumerate(pod.pod.spec.resource_claims):
            name, waiting = claim_name(pod, i)
            if name is None:
                return Status.unresolvable(waiting)
            claim = devices.claim(pod.pod.namespace, name)
            if claim is None:
                return Status.unresolvable(f'waiting for resource claim "{name}" to be created')
            if claim.metadata.deletion_timestamp:
                return Status.unresolvable(f'resourceclaim "{name}" is being deleted')
            if entry.resource_claim_template_name is not None and not _owned_by(claim, pod):
                return Status.unresolvable(f"ResourceClaim {name} was not created for pod "
                                           f"{pod.key} (pod is not owner)")
            if claim.key not in seen:
                seen.add(claim.key)
                claims.append(claim)
        to_allocate = [c for c in claims if c.status.allocation is None]
        for claim in claims:
            if claim.status.allocation is not None:
                if (not reserved_for(claim, pod.uid)
                        and len(claim.status.reserved_for or []) >= RESERVED_FOR_MAX_SIZE):
                    return Status.unresolvable("resourceclaim in use")
                continue
            for request in claim.spec.devices.requests or []:
                classes = ([request.exactly.device_class_name] if request.exactly is not None else
                           [s.device_class_name for s in request.first_available or []])
                for class_name in classes:
                    if class_name not in devices.classes:
                        # Unschedulable until a DeviceClass event (dynamicresources.go PreFilter).
                        return Status.unresolvable(f"request {request.name}: device class {class_name} "
                                                   f"does not exist")
        if any(r.first_available for c in to_allocate for r in c.spec.devices.requests or []):
            state.skip_score.discard(self.name)
        allocator = prepared = None
        if to_allocate:
            try:
                allocator = devices.allocator()
                prepared = PreparedClaims(to_allocate)
            except (AllocationError, ValueError) as e:
                return Status.error(f"preparing the device allocator: {e}")
        selectors, selector_claims = [], []
        for c in claims:
            if c.status.allocation is not None and c.status.allocation.node_selector is not None:
                selector = convert.node_selector(c.status.allocation.node_selector)
                if selector is not None:
                    selectors.append(selector)
                    selector_claims.append(c.key)
        state.write(STATE_KEY, ClaimsState(devices, claims, to_allocate, allocator, prepared, selectors,
                                           base_versions={c.key: c.metadata.resource_version for c in claims},
                                           selector_claims=selector_claims))
        return None

    # -- Filter -------------------------------------------------------------------------------------
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        data: ClaimsState = state.read(STATE_KEY)
        assert node.node is not None
        if data.node_selectors:
            info = convert.node_info(node.node)
            unavailable = [key for key, selector in zip(data.selector_claims, data.node_selectors)
                           if not node_selector_matches(selector, info)]
            if unavailable:
                # Remembered for PostFilter, which may deallocate one of them (upstream unavailableClaims).
                data.unavailable_claims.update(unavailable)
                return Status.unresolvable(NOT_AVAILABLE)
        if not data.to_allocate:
            return None
        assert data.allocator is not None and data.prepared is not None
        try:
            outcome = data.allocator.try_allocate(node.node, data.prepared, max_steps=self.max_steps)
        except SearchBudgetExceeded as e:
            return Status.unschedulable(f"timed out trying to allocate devices: {e}")
        except AllocationError as e:
            # Something is wrong with a claim or class: an error aborts the attempt (upstream statusError).
            return Status.error(str(e))
        if not outcome.feasible:
            return Status.unschedulable(*(outcome.reasons or [CANNOT_ALLOCATE]))
        data.allocations[node.name] = outcome
        return None

    # -- PostFilter ---------------------------------------------------------------------------------
    def post_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                    diagnosis: Diagnosis) -> PostFilterResult:
        """No node fits: pick a claim whose deallocation may help (upstream PostFilter).

        A claim qualifies when Filter found it allocated where the pod cannot run, no other pod
        uses it (``reservedFor`` empty or only this pod) and our scheduler allocated it (it has the
        delete-protection finalizer; an allocation made by anyone else is not ours to undo, as
        the claim controller also leaves it). The first such claim in spec order (upstream takes
        one at random) goes into ``claims_to_deallocate`` with allocation, reservedFor and device
        status cleared; writing it is the caller's.

        Messages: "deallocation of ResourceClaim completed" when a claim was picked, "still not
        schedulable" when claims were unavailable but none qualified. Upstream also answers
        "still not schedulable" for every other pod with claims and "no new claims to
        deallocate" for pods without, which reads as a tail on every FailedScheduling message
        in front of DefaultPreemption's; there is no preemption here, so those stay silent and
        the message is the diagnosis alone.
        """
        if STATE_KEY not in state:  # PreFilter skipped (no claims) or rejected before looking at claims
            return PostFilterResult(Status.unschedulable())
        data: ClaimsState = state.read(STATE_KEY)
        data.claims_to_deallocate = []
        if not data.unavailable_claims:
            return PostFilterResult(Status.unschedulable())
        for claim in data.claims:
            if claim.key not in data.unavailable_claims or claim.status.allocation is None:
                continue
            if DELETE_PROTECTION_FINALIZER not in (claim.metadata.finalizers or []):
                continue
            consumers = claim.status.reserved_for or []
            if consumers and not (len(consumers) == 1 and consumers[0].uid == pod.uid):
                continue
            status = claim.status.model_copy(update={"allocation": None, "reserved_for": None, "devices": None})
            data.claims_to_deallocate.append(claim.model_copy(update={"status": status}))
            return PostFilterResult(Status.unschedulable(DEALLOCATED))
        return PostFilterResult(Status.unschedulable(STILL_NOT_SCHEDULABLE))

    # -- Score --------------------------------------------------------------------------------------
    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """Prefer nodes where a prioritized list (``firstAvailable``) gets an earlier choice: each
        allocated subrequest scores 8 minus its index (upstream computeScore; KEP-4816)."""
        data: ClaimsState = state.read(STATE_KEY)
        outcome = data.allocations.get(node.name)
        if outcome is None or not outcome.feasible:
            return 0
        score = 0
        for claim, result in zip(data.to_allocate, outcome.results or []):
            chosen = {r.request for r in result.devices.results or [] if "/" in r.request}
            for request in claim.spec.devices.requests or []:
                for i, sub in enumerate(request.first_available or []):
                    if f"{request.name}/{sub.name}" in chosen:
                        score += FIRST_AVAILABLE_DEVICE_REQUEST_MAX_SIZE - i
        return score

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: dict[str, int]) -> None:
        # helper.DefaultNormalizeScore(MaxNodeScore, reverse=false): the best node gets 100.
        highest = max(scores.values(), default=0)
        for name, score in scores.items():
            scores[name] = MAX_NODE_SCORE * score // highest if highest else 0

    # -- Reserve / Unreserve ------------------------------------------------------------------------
    def reserve(self, state: CycleState, pod: PodInfo, node: str) -> Status | None:
        if STATE_KEY not in state:
            return None  # PreFilter skipped: the pod has no claims
        data: ClaimsState = state.read(STATE_KEY)
        outcome = data.allocations.get(node)
        new = dict(zip((c.key for c in data.to_allocate), (outcome.results or []) if outcome else []))
        if len(new) != len(data.to_allocate):
            return Status.error(f"no allocation was found for node {node} in Filter")
        data.claims_to_write = []
        for claim in data.claims:
            status = claim.status
            allocation = new.get(claim.key, status.allocation)
            consumers = list(status.reserved_for or [])
            if not reserved_for(claim, pod.uid):
                consumers.append(pod_reference(pod))
            updated = claim.model_copy(update={"status": status.model_copy(
                update={"allocation": allocation, "reserved_for": consumers})})
            data.devices.assume_claim(updated, pod.uid)
            data.claims_to_write.append(updated)
        return None

    def unreserve(self, state: CycleState, pod: PodInfo, node: str) -> None:
        if STATE_KEY not in state:
            return
        data: ClaimsState = state.read(STATE_KEY)
        for claim in data.claims_to_write:
            data.devices.forget_claim(claim.key)
        data.claims_to_write = []


def _owned_by(claim: ResourceClaim, pod: PodInfo) -> bool:
    """Whether the pod is the claim's controller (upstream resourceclaim.IsForPod)."""
    return any(ref.uid == pod.uid and ref.controller for ref in claim.metadata.owner_references or [])
