"""The DRA allocator over resource.k8s.io/v1 objects (upstream structured.NewAllocator/Allocate).

``Allocator(device_classes, slices, allocated)`` is built once per scheduling snapshot and
``allocate(node, claims)`` returns one AllocationResult per claim, or None when the claims
cannot all be satisfied on that node (all or nothing). Invalid input raises AllocationError
with upstream's message: an unknown DeviceClass, more than 32 devices in a claim, a CEL
runtime error (naming the expression and the device), allocationMode All on a pool that is
being updated or invalid. ``try_allocate`` also returns why nothing fits, for the
scheduler's Unschedulable message. The search itself lives in ``search``; this module
converts the API objects (``convert``) and evaluates CEL selectors, compiling each
expression once and building each device's CEL view once per Allocator.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplane.api.core import Node
from mlplane.api.resource import AllocationResult, DeviceClass, ResourceClaim, ResourceSlice
from mlplane.policy.device import convert
from mlplane.policy.device.cel import CELCompileError, CELRuntimeError, SelectorCache, device_view
from mlplane.policy.device.cel_semver import Semver
from mlplane.policy.device.model import AllocatedState, Device, Features
from mlplane.policy.device.search import (DEFAULT_MAX_STEPS, AllocationError, CoreAllocator,
                                          SearchBudgetExceeded, SelectorError)

__all__ = ["Allocator", "AllocationError", "AllocatedState", "AllocationOutcome", "Features",
           "SearchBudgetExceeded", "DEFAULT_MAX_STEPS", "allocated_state"]


def allocated_state(claims: list[ResourceClaim]) -> AllocatedState:
    """The AllocatedState of the claims that carry status.allocation."""
    return convert.allocated_state(claims)


@dataclass
class AllocationOutcome:
    """``results``: one AllocationResult per claim, or None; ``reasons``: why not; ``steps``:
    search steps used (upstream's numAllocateOneInvocations)."""
    results: list[AllocationResult] | None
    reasons: list[str]
    steps: int

    def message(self) -> str:
        """One line for an Unschedulable condition."""
        return "; ".join(self.reasons)


class _CelEvaluator:
    """Evaluates selectors with compiled expressions and per-device views, both cached."""

    def __init__(self) -> None:
        self.cache = SelectorCache()
        self.views: dict[int, tuple[Device, object]] = {}

    def _view(self, driver: str, device: Device):
        entry = self.views.get(id(device))
        if entry is not None and entry[0] is device:
            return entry[1]
        attrs = {name: (Semver.parse(value) if kind == "version" else value)
                 for name, (kind, value) in device.attributes.items()}
        view = device_view(driver, attrs, {n: c.value for n, c in device.capacity.items()},
                           device.allow_multiple_allocations)
        self.views[id(device)] = (device, view)
        return view

    def __call__(self, expression: str, driver: str, device: Device) -> bool:
        try:
            compiled = self.cache.get(expression)
        except CELCompileError as err:
            raise SelectorError(str(err), compile_error=True) from None
        try:
            view = self._view(driver, device)
        except ValueError as err:
            raise SelectorError(str(err)) from None
        try:
            return compiled.matches(view)
        except CELRuntimeError as err:
            raise SelectorError(str(err)) from None


class Allocator:
    """Allocates claims on one node at a time from the given classes, slices and allocated state."""

    def __init__(self, device_classes: list[DeviceClass], slices: list[ResourceSlice],
                 allocated: AllocatedState, features: Features = Features()):
        classes = {}
        for c in device_classes:
            info = convert.device_class(c)
            classes[info.name] = info
        self._search = CoreAllocator(classes, [convert.resource_slice(s) for s in slices], allocated,
                               _CelEvaluator(), features)

    def try_allocate(self, node: Node, claims: list[ResourceClaim], *,
                     max_steps: int = DEFAULT_MAX_STEPS) -> AllocationOutcome:
        """Allocate ``claims`` together on ``node``; raise AllocationError for invalid input
        and SearchBudgetExceeded when ``max_steps`` search steps did not decide."""
        outcome = self._search.allocate(convert.node_info(node),
                                        [convert.claim(c) for c in claims], max_steps=max_steps)
        if outcome.results is None:
            return AllocationOutcome(None, outcome.reasons(), outcome.steps)
        results = [AllocationResult.model_validate(r.to_wire()) for r in outcome.results]
        return AllocationOutcome(results, [], outcome.steps)

    def allocate(self, node: Node, claims: list[ResourceClaim], *,
                 max_steps: int = DEFAULT_MAX_STEPS) -> list[AllocationResult] | None:
        """One AllocationResult per claim, in claim order, or None when there is no solution."""
        return self.try_allocate(node, claims, max_steps=max_steps).results
