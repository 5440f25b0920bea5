"""The DRA allocator over resource.k8s.io/v1 objects (upstream structured.NewAllocator/Allocate).

``Allocator(device_classes, slices, allocated)`` is built once per scheduling snapshot and
``allocate(node, claims)`` returns one AllocationResult per claim, or None when the claims
cannot all be satisfied on that node (all or nothing). Invalid input raises AllocationError
with upstream's message: an unknown DeviceClass, more than 32 devices in a claim, a CEL
runtime error (naming the expression and the device), allocationMode All on a pool that is
being updated or invalid. ``try_allocate`` also returns why nothing fits, for the
scheduler's Unschedulable message. The search itself lives in ``search``; this module
converts the API objects (``convert``) and evaluates CEL selectors, compiling each
expression once and building each device's CEL view and each (selector, device) result once
per Allocator. The scheduler keeps one Allocator per set of classes and slices, with an
allocated state that a ``convert.AllocationTracker`` updates claim by claim.
"""

from __future__ import annotations

from typing import Mapping

from mlplane.api.core import Node
from mlplane.api.resource import AllocationResult, DeviceClass, ResourceClaim, ResourceSlice
from mlplane.policy.device import convert
from mlplane.policy.device.cel import CELCompileError, CELRuntimeError, SelectorCache, device_view
from mlplane.policy.device.cel_semver import Semver
from mlplane.policy.device.model import AllocatedState, Device, Features, NodeInfo
from mlplane.policy.device.search import (DEFAULT_MAX_STEPS, AllocationError, ClaimAllocation,
                                          CoreAllocator, SearchBudgetExceeded, SelectorError)

__all__ = ["Allocator", "AllocationError", "AllocatedState", "AllocationOutcome", "Features",
           "PreparedClaims", "SearchBudgetExceeded", "DEFAULT_MAX_STEPS", "allocated_state"]


def allocated_state(claims: list[ResourceClaim]) -> AllocatedState:
    """The AllocatedState of the claims that carry status.allocation."""
    return convert.allocated_state(claims)


class AllocationOutcome:
    """What ``try_allocate`` found. ``feasible``: whether the claims fit; ``results``: one
    AllocationResult per claim (built on each access), or None; ``reasons``: why not;
    ``steps``: search steps used (upstream's numAllocateOneInvocations)."""

    def __init__(self, found: list[ClaimAllocation] | None, reasons: list[str], steps: int):
        self._found = found
        self.feasible = found is not None
        self.reasons = reasons
        self.steps = steps

    @property
    def results(self) -> list[AllocationResult] | None:
        """New AllocationResult objects on every access (an outcome may serve several pods)."""
        if self._found is None:
            return None
        return [AllocationResult.model_validate(r.to_wire()) for r in self._found]

    def message(self) -> str:
        """One line for an Unschedulable condition."""
        return "; ".join(self.reasons)


class PreparedClaims:
    """Claims converted once for many ``try_allocate`` calls (one per node in a cycle)."""

    def __init__(self, claims: list[ResourceClaim]):
        self.claims = [convert.claim(c) for c in claims]
        # What the search result depends on besides the claim names: the request and
        # constraint specs and the claim config (results name claims only in shareIDs).
        self.shape = repr([(c.requests, c.constraints, c.config) for c in self.claims])


class _CelEvaluator:
    """Evaluates selectors with compiled expressions and per-device views, and remembers each
    result per (expression, device) for the allocator's life, as upstream's CEL cache does
    within a scheduling snapshot; runtime errors are not remembered, they recur."""

    def __init__(self, list_types: bool = True) -> None:
        self.list_types = list_types  # without DRAListTypeAttributes lists are not visible
        self.cache = SelectorCache()
        self.views: dict[int, tuple[Device, object]] = {}
        self.results: dict[tuple[str, int], bool] = {}

    def _view(self, driver: str, device: Device):
        entry = self.views.get(id(device))
        if entry is not None and entry[0] is device:
            return entry[1]
        attrs = {}
        for name, (kind, value) in device.attributes.items():
            if kind == "version":
                attrs[name] = Semver.parse(value)
            elif kind == "versions":
                if self.list_types:
                    attrs[name] = [Semver.parse(v) for v in value]
            elif kind in ("ints", "bools", "strings"):
                if self.list_types:
                    attrs[name] = list(value)
            elif kind != "unknown":
                attrs[name] = value
        view = device_view(driver, attrs, {n: c.value for n, c in device.capacity.items()},
                           device.allow_multiple_allocations)
        self.views[id(device)] = (device, view)  # holds the device, so its id stays its own
        return view

    def __call__(self, expression: str, driver: str, device: Device) -> bool:
        key = (expression, id(device))
        hit = self.results.get(key)
        if hit is not None:  # the device is held in ``views``: its id cannot be reused
            return hit
        try:
            compiled = self.cache.get(expression)
        except CELCompileError as err:
            raise SelectorError(str(err), compile_error=True) from None
        try:
            view = self._view(driver, device)
        except ValueError as err:
            raise SelectorError(str(err)) from None
        try:
            matched = compiled.matches(view)
        except CELRuntimeError as err:
            raise SelectorError(str(err)) from None
        self.results[key] = matched
        return matched


class Allocator:
    """Allocates claims on one node at a time from the given classes, slices and allocated state.

    Built once per set of classes and slices, it keeps what depends only on them (each node's
    pools and devices in search order, device CEL views, selector results). By default
    ``allocated`` is fixed; an allocator that lives while claims come and go gets an
    ``allocated`` that changes in place and ``pool_versions`` (``convert.AllocationTracker``),
    and then also keeps each node's last outcome for a claim shape until something in use on
    that node's pools changes.
    """

    def __init__(self, device_classes: list[DeviceClass], slices: list[ResourceSlice],
                 allocated: AllocatedState, features: Features = Features(), *,
                 pool_versions: Mapping[str, int] | None = None):
        classes = {}
        for c in device_classes:
            info = convert.device_class(c)
            classes[info.name] = info
        self._search = CoreAllocator(classes, [convert.resource_slice(s) for s in slices], allocated,
                                     _CelEvaluator(features.list_type_attributes), features,
                                     pool_versions)
        # node name -> (the Node given, it as the search sees it, its pool IDs, its last outcome
        # per (claim shape, max_steps) with the pool versions it was found at)
        self._nodes: dict[str, tuple[Node, NodeInfo, list[str], dict]] = {}

    def _node(self, node: Node) -> tuple[Node, NodeInfo, list[str], dict]:
        """What is kept about ``node``, while the caller passes the same Node object."""
        target = convert.node_info(node)
        pools = self._search.node_pools(target)[0]
        entry = self._nodes[target.name] = (node, target, [p.pool_id for p in pools], {})
        return entry

    def try_allocate(self, node: Node, claims: list[ResourceClaim] | PreparedClaims, *,
                     max_steps: int = DEFAULT_MAX_STEPS) -> AllocationOutcome:
        """Allocate ``claims`` together on ``node``; raise AllocationError for invalid input
        and SearchBudgetExceeded when ``max_steps`` search steps did not decide."""
        prepared = claims if isinstance(claims, PreparedClaims) else PreparedClaims(claims)
        entry = self._nodes.get(node.metadata.name or "")
        if entry is None or entry[0] is not node:
            entry = self._node(node)
        _, target, pools, outcomes = entry
        versions = self._search.pool_versions
        version = None
        if versions is not None:
            version = tuple(map(versions.get, pools))  # a pool not changed yet reads None
            hit = outcomes.get((prepared.shape, max_steps))
            if hit is not None and hit[0] == version:
                return hit[1]
        found = self._search.allocate(target, prepared.claims, max_steps=max_steps)
        outcome = AllocationOutcome(found.results, found.reasons(), found.steps)
        if version is not None and not any(r.share_id for c in found.results or () for r in c.results):
            outcomes[(prepared.shape, max_steps)] = (version, outcome)  # shareIDs name the claim
        return outcome

    def allocate(self, node: Node, claims: list[ResourceClaim], *,
                 max_steps: int = DEFAULT_MAX_STEPS) -> list[AllocationResult] | None:
        """One AllocationResult per claim, in claim order, or None when there is no solution."""
        return self.try_allocate(node, claims, max_steps=max_steps).results
