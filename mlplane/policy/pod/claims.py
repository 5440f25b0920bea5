"""The scheduler's view of the device plane: DeviceClasses, ResourceSlices and ResourceClaims.

``DeviceSnapshot`` is kept current from watch events like the pod ``Snapshot`` it belongs to.
Claims the scheduler has allocated in a scheduling cycle but whose allocation the store has not
confirmed yet are *assumed* (upstream's assume cache, pkg/scheduler/util/assumecache): the
assumed copy, with ``status.allocation`` and the pod in ``status.reservedFor``, is what every
later cycle sees, so the devices it holds count as in use at once. An assumption ends when the
store's copy confirms it (allocated, and reserved for the pod it was made for), when the
claim is deleted or replaced, or when the scheduler drops it (Unreserve). Other changes to the
claim while it is in flight (PreBind adding its finalizer first, a label edit) keep it, as
upstream's in-flight allocations do: its devices never look free between two writes.

What the claims in use hold is kept claim by claim in an ``AllocationTracker``, and one
``Allocator`` serves every cycle until a DeviceClass, ResourceSlice or DeviceTaintRule changes, so
a cycle neither rebuilds the allocator nor re-reads every claim. DeviceTaintRules add their taint
to the devices they select before the allocator sees the slices (``taints.apply_rules``, as
upstream's slice tracker does), so an untolerated NoSchedule or NoExecute rule keeps new claims
off those devices with the same reason as a taint in the slice.
"""

from __future__ import annotations

from mlplane.api.resource import DeviceClass, DeviceTaintRule, ResourceClaim, ResourceSlice
from mlplane.policy.device.allocator import Allocator
from mlplane.policy.device.convert import AllocationTracker
from mlplane.policy.device.taints import apply_rules


class DeviceSnapshot:
    """DRA objects by name (claims by "namespace/name"), with assumed claims on top."""

    def __init__(self) -> None:
        self.classes: dict[str, DeviceClass] = {}
        self.slices: dict[str, ResourceSlice] = {}
        self.rules: dict[str, DeviceTaintRule] = {}
        self._claims: dict[str, ResourceClaim] = {}
        self._assumed: dict[str, tuple[ResourceClaim, str]] = {}  # key -> (claim as assumed, for pod uid)
        self._in_use = AllocationTracker()
        self._allocator: Allocator | None = None

    def allocator(self) -> Allocator:
        """The allocator over the current classes and slices and the claims in use (assumed
        ones included); it sees claim changes at once and is rebuilt after a class or slice
        changes (or a DeviceTaintRule). Raises what Allocator raises for invalid objects."""
        if self._allocator is None:
            slices = self.resource_slices()
            if self.rules:
                slices = apply_rules(slices, [self.rules[name] for name in sorted(self.rules)])
            self._allocator = Allocator(self.device_classes(), slices, self._in_use.state,
                                        pool_versions=self._in_use.pool_versions)
        return self._allocator

    def _claim_changed(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        self._in_use.set(key, self.claim(namespace, name))

    # -- reading ----------------------------------------------------------------------------------
    def device_classes(self) -> list[DeviceClass]:
        return [self.classes[name] for name in sorted(self.classes)]

    def resource_slices(self) -> list[ResourceSlice]:
        """Every slice, sorted by name (the allocator orders pools itself)."""
        return [self.slices[name] for name in sorted(self.slices)]

    def claim(self, namespace: str, name: str) -> ResourceClaim | None:
        """The claim as the scheduler sees it: the assumed copy while there is one."""
        key = f"{namespace}/{name}"
        assumed = self._assumed.get(key)
        return assumed[0] if assumed is not None else self._claims.get(key)

    def allocated_claims(self) -> list[ResourceClaim]:
        """Every claim with status.allocation (assumed ones included), sorted by key."""
        keys = sorted(set(self._claims) | set(self._assumed))
        out = []
        for key in keys:
            namespace, name = key.split("/", 1)
            claim = self.claim(namespace, name)
            if claim is not None and claim.status.allocation is not None:
                out.append(claim)
        return out

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    # -- events -----------------------------------------------------------------------------------
    def set_class(self, device_class: DeviceClass) -> None:
        self.classes[device_class.name] = device_class
        self._allocator = None

    def remove_class(self, name: str) -> None:
        self.classes.pop(name, None)
        self._allocator = None

    def set_slice(self, resource_slice: ResourceSlice) -> None:
        self.slices[resource_slice.name] = resource_slice
        self._allocator = None

    def remove_slice(self, name: str) -> None:
        self.slices.pop(name, None)
        self._allocator = None

    def set_rule(self, rule: DeviceTaintRule) -> None:
        old = self.rules.get(rule.name)
        self.rules[rule.name] = rule
        if old is None or old.spec != rule.spec or bool(old.metadata.deletion_timestamp) != bool(
                rule.metadata.deletion_timestamp):
            self._allocator = None  # a status-only change (the eviction controller's) keeps it

    def remove_rule(self, name: str) -> None:
        if self.rules.pop(name, None) is not None:
            self._allocator = None

    def set_claim(self, claim: ResourceClaim) -> None:
        """The store's current copy; it ends an assumption made on an older copy."""
        key = claim.key
        self._claims[key] = claim
        assumed = self._assumed.get(key)
        if assumed is not None and (claim.uid != assumed[0].uid or _confirms(claim, assumed[1])):
            del self._assumed[key]
        self._claim_changed(key)

    def remove_claim(self, key: str) -> None:
        self._claims.pop(key, None)
        self._assumed.pop(key, None)
        self._claim_changed(key)

    # -- the scheduler's own decisions -------------------------------------------------------------
    def assume_claim(self, claim: ResourceClaim, pod_uid: str) -> None:
        """Count ``claim`` (allocated or reserved for the pod ``pod_uid`` in a cycle) as it will be
        once written."""
        self._assumed[claim.key] = (claim, pod_uid)
        self._claim_changed(claim.key)

    def forget_claim(self, key: str) -> None:
        """Drop an assumption (Unreserve); the store's copy is what counts again."""
        self._assumed.pop(key, None)
        self._claim_changed(key)


def _confirms(stored: ResourceClaim, pod_uid: str) -> bool:
    """Whether the store's copy of a claim shows the scheduler's write for the pod: allocated and
    reserved for it (PreBind writes both at once; other consumers may have left meanwhile)."""
    return stored.status.allocation is not None and any(
        r.uid == pod_uid for r in stored.status.reserved_for or [])
