"""The DRA structured-parameters allocator: a first-fit depth-first search with backtracking.

Restates upstream ``k8s.io/dynamic-resource-allocation/structured/internal/experimental/
allocator_experimental.go`` (Allocate, validateDeviceRequest, allocateOne, isSelectable,
allocateDevice, checkAvailableCounters, createNodeSelector) over the plain records of
``model``. Search order is upstream's: claims, then requests (for a firstAvailable request
its subrequests in priority order), then the devices a request needs; candidates come from
pools, then slices, then devices in order, and within one request only ascending positions
are tried (combinations, not permutations; kubernetes PR #133678). The first complete
solution wins. The search is bounded by ``max_steps`` invocations of the search step.

A failed search leaves a diagnosis: per request, how many devices were checked and why
they were rejected, for messages such as "no device matched selector of request gpu (8
devices checked)".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Mapping

from .capacity import check_capacity, consumption, format_quantity
from .constraints import ConstraintState, UnsupportedAttribute
from .model import (ALLOCATION_RESULTS_MAX_SIZE, AllocatedState, Claim, Device, DeviceClassInfo,
                    DeviceID, Features, NodeInfo, NodeSelector, Request, Requirement, SelectorTerm,
                    Slice)
from .pools import Pool, PoolIndex, device_matches_node

DEFAULT_MAX_STEPS = 200_000

# evaluate(expression, driver, device) -> bool; raises SelectorError for runtime errors.
SelectorEvaluator = Callable[[str, str, Device], bool]


class AllocationError(Exception):
    """Invalid input that makes allocation impossible (upstream: Allocate returns an error)."""


class SearchBudgetExceeded(AllocationError):
    """The search used its step budget without finding a solution or proving there is none."""


class SelectorError(Exception):
    """A CEL selector failed to compile or to evaluate on a device."""

    def __init__(self, message: str, compile_error: bool = False):
        super().__init__(message)
        self.compile_error = compile_error


_SHARE_NAMESPACE = uuid.UUID("6f0d3a52-3c1e-4f7e-9f2b-0d6c2a1e5b11")

_MAX = "max-size-exceeded"  # upstream errAllocationResultMaxSizeExceeded


@dataclass
class DeviceResult:
    """One entry of status.allocation.devices.results."""
    request: str
    driver: str
    pool: str
    device: str
    admin_access: bool | None = None
    tolerations: list[dict] | None = None
    share_id: str | None = None
    consumed_capacity: dict[str, str] | None = None
    binding_conditions: list[str] | None = None
    binding_failure_conditions: list[str] | None = None

    def to_wire(self) -> dict:
        out: dict = {"request": self.request, "driver": self.driver, "pool": self.pool,
                     "device": self.device}
        if self.admin_access is not None:
            out["adminAccess"] = self.admin_access
        if self.tolerations:
            out["tolerations"] = self.tolerations
        if self.binding_conditions:
            out["bindingConditions"] = self.binding_conditions
        if self.binding_failure_conditions:
            out["bindingFailureConditions"] = self.binding_failure_conditions
        if self.share_id is not None:
            out["shareID"] = self.share_id
        if self.consumed_capacity:
            out["consumedCapacity"] = self.consumed_capacity
        return out


@dataclass
class ClaimAllocation:
    """A claim's status.allocation (upstream resourceapi.AllocationResult)."""
    results: list[DeviceResult]
    config: list[dict]
    node_selector: NodeSelector | None

    def to_wire(self) -> dict:
        devices: dict = {"results": [r.to_wire() for r in self.results]}
        if self.config:
            devices["config"] = self.config
        out: dict = {"devices": devices}
        if self.node_selector is not None:
            out["nodeSelector"] = self.node_selector.to_wire()
        return out


@dataclass
class RequestDiagnosis:
    """Why devices were turned down for one request during a search."""
    claim: str
    request: str
    needed: int
    checked: set[DeviceID] = field(default_factory=set)
    selected: set[DeviceID] = field(default_factory=set)  # matched the selectors
    in_use: set[DeviceID] = field(default_factory=set)
    reasons: dict[str, None] = field(default_factory=dict)  # ordered set

    def summary(self) -> list[str]:
        if not self.checked:
            return [f"no devices available for request {self.request}"]
        if not self.selected:
            if self.in_use == self.checked:
                return [f"all {len(self.checked)} devices checked for request {self.request} "
                        f"are in use"]
            in_use = f", {len(self.in_use)} in use" if self.in_use else ""
            return [f"no device matched selector of request {self.request} "
                    f"({len(self.checked)} devices checked{in_use})"]
        out = list(self.reasons)
        if self.in_use:
            out.append(f"{len(self.in_use)} devices checked for request {self.request} in use")
        if len(self.selected) < self.needed:
            out.append(f"request {self.request} needs {self.needed} devices, "
                       f"{len(self.selected)} matched its selectors")
        return out


@dataclass
class Outcome:
    """What one allocate call found: results (None = no solution), diagnosis and effort."""
    results: list[ClaimAllocation] | None
    diagnosis: list[RequestDiagnosis]
    steps: int

    def reasons(self) -> list[str]:
        """Short, de-duplicated reasons why no solution exists (empty on success)."""
        if self.results is not None:
            return []
        seen: dict[str, None] = {}
        for d in self.diagnosis:
            for line in d.summary():
                seen.setdefault(line, None)
        return list(seen)


@dataclass
class _Candidate:
    pool: Pool
    slice: Slice
    device: Device
    id: DeviceID


@dataclass
class _ReqData:
    claim_index: int
    request: Request
    parent: Request | None
    cls: DeviceClassInfo
    num_devices: int = 0
    all_devices: list[_Candidate] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.parent.name if self.parent else self.request.name

    @property
    def sub(self) -> str:
        return self.request.name if self.parent else ""

    @property
    def full_name(self) -> str:
        return f"{self.parent.name}/{self.request.name}" if self.parent else self.request.name


@dataclass
class _Picked:
    cand: _Candidate
    rd: _ReqData
    share_id: str | None
    consumed: dict[str, Decimal] | None


class CoreAllocator:
    """Allocates devices to claims on one node at a time; reusable for many calls.

    ``classes``: DeviceClassInfo by name; ``slices``: every ResourceSlice; ``allocated``: what
    existing allocations use; ``evaluate``: the CEL selector evaluator.
    """

    def __init__(self, classes: dict[str, DeviceClassInfo], slices: list[Slice],
                 allocated: AllocatedState, evaluate: SelectorEvaluator,
                 features: Features = Features(),
                 pool_versions: Mapping[str, int] | None = None):
        self.classes = classes
        self.slices = slices
        self.allocated = allocated
        self.evaluate = evaluate
        self.features = features
        # ``allocated`` may change between calls when ``pool_versions`` ("driver/pool" -> a
        # number that grows) says which pools it changed in; without it, ``allocated`` is fixed
        # for this allocator's life.
        self.pool_versions = pool_versions
        self._index = PoolIndex(slices, features.partitionable_devices)
        self._nodes: dict[tuple, tuple[list[Pool], list[_Candidate]]] = {}
        self._available_counters: dict[str, tuple[int | None, dict[str, dict[str, Decimal]]]] = {}

    def allocate(self, node: NodeInfo, claims: list[Claim], *,
                 max_steps: int = DEFAULT_MAX_STEPS) -> Outcome:
        return _Run(self, node, claims, max_steps).run()

    def node_pools(self, node: NodeInfo) -> tuple[list[Pool], list[_Candidate]]:
        """The pools usable on ``node`` and their devices in search order (cached per node)."""
        key = (node.name, tuple(sorted(node.labels.items())))
        hit = self._nodes.get(key)
        if hit is None:
            pools = self._index.pools_for(node)
            candidates = [_Candidate(p, s, d, DeviceID(p.driver, p.name, d.name))
                          for p in pools if not (p.incomplete or p.invalid)
                          for s in p.slices for d in s.devices]
            hit = self._nodes[key] = (pools, candidates)
        return hit

    def available_counters(self, pool: Pool) -> dict[str, dict[str, Decimal]]:
        """Counter sets of a pool minus what allocated devices consume (cached per pool and
        allocated-state version)."""
        version = self.pool_versions.get(pool.pool_id) if self.pool_versions is not None else None
        cached = self._available_counters.get(pool.pool_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        shared_in_use = {DeviceID(*s[:3]) for s in self.allocated.allocated_shared_device_ids
                         if s.driver == pool.driver and s.pool == pool.name}
        available = {name: dict(c) for name, c in pool.counter_sets.items()}
        for s in pool.all_slices:
            for d in s.devices:
                dev_id = DeviceID(s.driver, s.pool, d.name)
                if not (dev_id in self.allocated.allocated_devices
                        or dev_id in self.allocated.aggregated_capacity or dev_id in shared_in_use):
                    continue
                for set_name, counters in d.consumes_counters:
                    target = available.get(set_name)
                    if target is None:
                        continue
                    for name, value in counters.items():
                        if name in target:
                            target[name] -= value
        self._available_counters[pool.pool_id] = (version, available)
        return available


class _Run:
    """State of one Allocate call (upstream's private ``allocator``)."""

    def __init__(self, owner: CoreAllocator, node: NodeInfo, claims: list[Claim], max_steps: int):
        self.a = owner
        self.f = owner.features
        self.node = node
        self.claims = claims
        self.max_steps = max_steps
        self.steps = 0
        self.pools, self.candidates = owner.node_pools(node)
        self.req_data: list[list[list[_ReqData]]] = []
        self.constraints: list[list[ConstraintState]] = []
        self.match_cache: dict[tuple, bool] = {}
        self.allocating: dict[DeviceID, set[int]] = {}
        self.allocating_capacity: dict[DeviceID, list[dict[str, Decimal]]] = {}
        self.consumed_counters: dict[str, dict[str, dict[str, Decimal]]] = {}
        self.results: list[list[_Picked]] = [[] for _ in claims]
        self.chosen_sub: dict[tuple[int, int], int] = {}
        self.diag: dict[tuple[int, str], RequestDiagnosis] = {}

    # --- setup ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        for ci, claim in enumerate(self.claims):
            self._prepare_claim(ci, claim)
        try:
            done = self._allocate_one(0, 0, 0, 0, False, 0)
        except RecursionError:
            raise AllocationError(
                f"too many devices to allocate together for {len(self.claims)} claims") from None
        if done is not True:
            for pool in self.pools:
                if pool.invalid:
                    raise AllocationError(f"invalid resource pools were encountered: "
                                          f"{pool.pool_id}: {pool.invalid_reason}")
            return Outcome(None, list(self.diag.values()), self.steps)
        return Outcome([self._claim_result(ci) for ci in range(len(self.claims))],
                       [], self.steps)

    def _prepare_claim(self, ci: int, claim: Claim) -> None:
        per_request: list[list[_ReqData]] = []
        min_devices = 0
        for ri, request in enumerate(claim.requests):
            if request.subrequests:
                if not self.f.prioritized_list:
                    raise AllocationError(f"claim {claim.key}, request {request.name}: has "
                                          f"subrequests, but the DRAPrioritizedList feature is disabled")
                variants = [self._validate(ci, ri, si, claim, sub, request)
                            for si, sub in enumerate(request.subrequests)]
                min_devices += min(v.num_devices for v in variants)
            else:
                variants = [self._validate(ci, ri, 0, claim, request, None)]
                min_devices += variants[0].num_devices
            per_request.append(variants)
        if min_devices > ALLOCATION_RESULTS_MAX_SIZE:
            raise AllocationError(f"claim {claim.key}: number of requested devices {min_devices} "
                                  f"exceeds the claim limit of {ALLOCATION_RESULTS_MAX_SIZE}")
        self.req_data.append(per_request)
        states = []
        for i, c in enumerate(claim.constraints):
            if not (c.match_attribute or c.distinct_attribute):
                raise AllocationError(f"claim {claim.key}, constraint #{i}: empty constraint "
                                      f"(unsupported constraint type?)")
            states.append(ConstraintState(c, self.f.list_type_attributes))
        self.constraints.append(states)

    def _validate(self, ci: int, ri: int, si: int, claim: Claim, request: Request,
                  parent: Request | None) -> _ReqData:
        name = f"{parent.name}/{request.name}" if parent else request.name
        for i, expr in enumerate(request.selectors):
            if not expr:
                raise AllocationError(f"claim {claim.key}, request {name}, selector #{i}: CEL "
                                      f"expression empty (unsupported selector type?)")
        if request.capacity is not None and not self.f.consumable_capacity:
            what = f"subrequest {request.name}" if parent else f"request {name}"
            raise AllocationError(f"claim {claim.key}, {what}: has capacity requests, but "
                                  f"the DRAConsumableCapacity feature is disabled")
        if request.admin_access and not self.f.admin_access:
            raise AllocationError(f"claim {claim.key}, request {name}: admin access is requested, "
                                  f"but the feature is disabled")
        if not request.class_name:
            raise AllocationError(f"claim {claim.key}, request {name}: missing device class name "
                                  f"(unsupported request type?)")
        cls = self.a.classes.get(request.class_name)
        if cls is None:
            raise AllocationError(f"claim {claim.key}, request {name}: could not retrieve device "
                                  f"class {request.class_name}: deviceclass.resource.k8s.io "
                                  f"\"{request.class_name}\" not found")
        rd = _ReqData(ci, request, parent, cls)
        if request.mode == "ExactCount":
            rd.num_devices = request.count
        elif request.mode == "All":
            for pool in self.pools:
                if pool.incomplete:
                    raise AllocationError(f"claim {claim.key}, request {name}: asks for all devices, "
                                          f"but resource pool {pool.pool_id} is currently being updated")
                if pool.invalid:
                    raise AllocationError(f"claim {claim.key}, request {name}: asks for all devices, "
                                          f"but resource pool {pool.pool_id} is currently invalid")
                for s in pool.slices:
                    for d in s.devices:
                        cand = _Candidate(pool, s, d, DeviceID(pool.driver, pool.name, d.name))
                        if not self._selectable(ci, ri, si, rd, cand):
                            continue
                        if self.f.consumable_capacity and self._capacity_problem(rd, cand):
                            continue
                        rd.all_devices.append(cand)
            rd.num_devices = len(rd.all_devices)
        else:
            raise AllocationError(f"claim {claim.key}, request {name}: unsupported count mode "
                                  f"{request.mode}")
        return rd

    # --- search -----------------------------------------------------------------------------

    def _allocate_one(self, ci: int, ri: int, si: int, di: int, in_sub: bool, start: int):
        self.steps += 1
        if self.steps > self.max_steps:
            raise SearchBudgetExceeded(
                f"allocation search gave up after {self.max_steps} steps (max_steps) without "
                f"finding a solution or proving there is none")
        if ci >= len(self.claims):
            return True
        if ri >= len(self.claims[ci].requests):
            res = self._allocate_one(ci + 1, 0, 0, 0, False, 0)
            return False if res == _MAX else res
        variants = self.req_data[ci][ri]
        rd = variants[si]
        if not in_sub and rd.parent is not None:
            all_exceeded = True
            for sub_index in range(len(variants)):
                res = self._allocate_one(ci, ri, sub_index, di, True, 0)
                if res == _MAX:
                    continue
                all_exceeded = False
                if res is True:
                    self.chosen_sub[(ci, ri)] = sub_index
                    return True
            return _MAX if all_exceeded else False
        do_all = rd.request.mode == "All"
        if do_all and not rd.all_devices:
            self._diagnosis(rd)
            return False
        if di >= rd.num_devices:
            return self._allocate_one(ci, ri + 1, 0, 0, False, 0)
        if len(self.results[ci]) + rd.num_devices - di > ALLOCATION_RESULTS_MAX_SIZE:
            return _MAX
        if do_all:
            cand = rd.all_devices[di]
            diag = self._diagnosis(rd)
            diag.checked.add(cand.id)
            diag.selected.add(cand.id)
            undo = self._allocate_device(rd, cand, must=True)
            if undo is None:
                return False
            res = self._allocate_one(ci, ri, si, di + 1, in_sub, 0)
            if res is not True:
                undo()
            return res
        admin = rd.request.admin_access
        diag = self._diagnosis(rd)
        for pos in range(start, len(self.candidates)):
            cand = self.candidates[pos]
            dev_id = cand.id
            diag.checked.add(dev_id)
            if admin:
                if ci in self.allocating.get(dev_id, ()):
                    continue
            elif self._in_use(dev_id):
                diag.in_use.add(dev_id)
                continue
            if not self._selectable(ci, ri, si, rd, cand):
                continue
            diag.selected.add(dev_id)
            if self.f.consumable_capacity:
                problem = self._capacity_problem(rd, cand)
                if problem:
                    diag.reasons.setdefault(f"{problem} on device {cand.device.name}", None)
                    continue
            undo = self._allocate_device(rd, cand, must=False)
            if undo is None:
                continue
            res = self._allocate_one(ci, ri, si, di + 1, in_sub, pos + 1)
            if res is True:
                return True
            undo()
            if res == _MAX:
                return _MAX
        return False

    def _diagnosis(self, rd: _ReqData) -> RequestDiagnosis:
        key = (rd.claim_index, rd.full_name)
        d = self.diag.get(key)
        if d is None:
            d = self.diag[key] = RequestDiagnosis(self.claims[rd.claim_index].key, rd.full_name,
                                                  rd.num_devices)
        return d

    def _in_use(self, dev_id: DeviceID) -> bool:
        return dev_id in self.a.allocated.allocated_devices or bool(self.allocating.get(dev_id))

    def _selectable(self, ci: int, ri: int, si: int, rd: _ReqData, cand: _Candidate) -> bool:
        key = (cand.id, ci, ri, si)
        hit = self.match_cache.get(key)
        if hit is not None:
            return hit
        ok = ((self.f.device_binding_and_status or not cand.device.binding_conditions)
              and self._selectors_match(rd, cand, class_selectors=True)
              and self._selectors_match(rd, cand, class_selectors=False)
              and device_matches_node(cand.slice, cand.device, self.node))
        self.match_cache[key] = ok
        return ok

    def _selectors_match(self, rd: _ReqData, cand: _Candidate, class_selectors: bool) -> bool:
        selectors = rd.cls.selectors if class_selectors else rd.request.selectors
        owner = (f"class {rd.cls.name}" if class_selectors
                 else f"claim {self.claims[rd.claim_index].key}")
        for i, expr in enumerate(selectors):
            try:
                if not self.a.evaluate(expr, cand.id.driver, cand.device):
                    return False
            except SelectorError as err:
                kind = "compile" if err.compile_error else "runtime"
                raise AllocationError(f"{owner}: selector #{i} {expr!r} on device {cand.id}: "
                                      f"CEL {kind} error: {err}") from None
        return True

    def _shared_usage(self, dev_id: DeviceID) -> list[dict[str, Decimal]]:
        usage = list(self.allocating_capacity.get(dev_id, ()))
        existing = self.a.allocated.aggregated_capacity.get(dev_id)
        if existing is not None:
            usage.append(existing)
        return usage

    def _capacity_problem(self, rd: _ReqData, cand: _Candidate) -> str | None:
        shared = cand.device.allow_multiple_allocations
        return check_capacity(rd.request.capacity, cand.device.capacity, shared,
                              self._shared_usage(cand.id) if shared else [])

    def _allocate_device(self, rd: _ReqData, cand: _Candidate, must: bool):
        """Tentatively allocate; return an undo callable, or None when the device is unusable."""
        ci = rd.claim_index
        request = rd.request
        dev, dev_id = cand.device, cand.id
        shared = self.f.consumable_capacity and dev.allow_multiple_allocations
        diag = self._diagnosis(rd)
        if not shared and request.admin_access and ci in self.allocating.get(dev_id, ()):
            return None
        if not request.admin_access and self._in_use(dev_id):
            diag.in_use.add(dev_id)
            return None
        if dev.consumes_counters and not self.f.partitionable_devices:
            return None
        skip_counters = shared and (dev_id in self.a.allocated.aggregated_capacity
                                    or dev_id in self.allocating_capacity)
        undo_steps: list[Callable[[], None]] = []

        def rollback() -> None:
            for step in reversed(undo_steps):
                step()

        if dev.consumes_counters and not skip_counters:
            problem = self._reserve_counters(cand)
            if problem:
                diag.reasons.setdefault(problem, None)
                return None
            undo_steps.append(lambda: self._release_counters(cand))
        if self.f.device_taints:
            for taint in dev.taints:
                if taint.effect in ("NoSchedule", "NoExecute") and not any(
                        t.tolerates(taint) for t in request.tolerations):
                    diag.reasons.setdefault(
                        f"device {dev.name} has a taint not tolerated: {taint}", None)
                    rollback()
                    return None
        for state in self.constraints[ci]:
            try:
                added = state.add(rd.base, rd.sub, dev, dev_id)
            except UnsupportedAttribute as err:
                rollback()
                raise AllocationError(f"claim {self.claims[ci].key}, request {rd.full_name}: "
                                      f"{state.describe()}: device {dev_id}: {err}") from None
            if not added:
                rollback()
                if must:
                    raise AllocationError(
                        f"claim {self.claims[ci].key}, request {rd.full_name}: cannot add device "
                        f"{dev_id} because a claim constraint would not be satisfied")
                diag.reasons.setdefault(
                    f"constraint {state.describe()} not satisfied for request {rd.full_name}", None)
                return None
            undo_steps.append(lambda s=state: s.remove(rd.base, rd.sub))
        if not shared:
            self.allocating.setdefault(dev_id, set()).add(ci)
            undo_steps.append(lambda: self.allocating[dev_id].discard(ci))
        share_id = consumed = None
        if self.f.consumable_capacity:
            problem = self._capacity_problem(rd, cand)
            if problem:
                rollback()
                return None
            if shared:
                consumed = consumption(request.capacity, dev.capacity)
                share_id = self._share_id(ci, rd, dev_id)
                usage = self.allocating_capacity.setdefault(dev_id, [])
                usage.append(consumed)
                undo_steps.append(lambda: self._pop_capacity(dev_id))
        self.results[ci].append(_Picked(cand, rd, share_id, consumed))
        undo_steps.append(self.results[ci].pop)
        return rollback

    def _pop_capacity(self, dev_id: DeviceID) -> None:
        usage = self.allocating_capacity[dev_id]
        usage.pop()
        if not usage:
            del self.allocating_capacity[dev_id]

    def _share_id(self, ci: int, rd: _ReqData, dev_id: DeviceID) -> str:
        """A share ID that is stable for the same input, unique per claim, request and device."""
        n = sum(1 for p in self.results[ci] if p.cand.id == dev_id)
        name = f"{self.claims[ci].key}/{rd.full_name}/{dev_id}/{n}"
        return str(uuid.uuid5(_SHARE_NAMESPACE, name))

    def _reserve_counters(self, cand: _Candidate) -> str | None:
        pool = cand.pool
        available = self.a.available_counters(pool)
        consumed = self.consumed_counters.setdefault(pool.pool_id, {})
        for set_name, counters in cand.device.consumes_counters:
            if set_name not in available:
                return f"counter set {set_name} of device {cand.device.name} not found in pool {pool.pool_id}"
            for name in counters:
                if name not in available[set_name]:
                    return f"counter {name} of device {cand.device.name} not found in {set_name}"
        for set_name, counters in cand.device.consumes_counters:
            used = consumed.get(set_name, {})
            for name, value in sorted(counters.items()):
                if used.get(name, Decimal(0)) + value > available[set_name][name]:
                    return f"insufficient counter {name} in {set_name}"
        for set_name, counters in cand.device.consumes_counters:
            used = consumed.setdefault(set_name, {})
            for name, value in counters.items():
                used[name] = used.get(name, Decimal(0)) + value
        return None

    def _release_counters(self, cand: _Candidate) -> None:
        consumed = self.consumed_counters[cand.pool.pool_id]
        for set_name, counters in cand.device.consumes_counters:
            for name, value in counters.items():
                consumed[set_name][name] -= value

    # --- results ----------------------------------------------------------------------------

    def _claim_result(self, ci: int) -> ClaimAllocation:
        claim = self.claims[ci]
        results = []
        for p in self.results[ci]:
            r = DeviceResult(request=p.rd.full_name, driver=p.cand.id.driver,
                             pool=p.cand.id.pool, device=p.cand.id.device)
            if p.rd.request.admin_access:
                r.admin_access = True
            tolerations = [t.wire for t in p.rd.request.tolerations if t.wire is not None]
            r.tolerations = tolerations or None
            if self.f.device_binding_and_status:
                r.binding_conditions = list(p.cand.device.binding_conditions) or None
                r.binding_failure_conditions = list(p.cand.device.binding_failure_conditions) or None
            r.share_id = p.share_id
            if p.consumed:
                r.consumed_capacity = {
                    name: format_quantity(value, p.cand.device.capacity[name].binary)
                    for name, value in p.consumed.items()}
            results.append(r)
        return ClaimAllocation(results, self._config(ci, claim), self._node_selector(ci))

    def _chosen(self, ci: int, ri: int) -> _ReqData:
        return self.req_data[ci][ri][self.chosen_sub.get((ci, ri), 0)]

    def _config(self, ci: int, claim: Claim) -> list[dict]:
        """Class configs (FromClass, once per class) then claim configs (FromClaim)."""
        out: list[dict] = []
        class_ranges: dict[str, tuple[int, int]] = {}
        for ri in range(len(claim.requests)):
            rd = self._chosen(ci, ri)
            if rd.cls.name in class_ranges:
                lo, hi = class_ranges[rd.cls.name]
                for entry in out[lo:hi]:
                    entry["requests"].append(rd.full_name)
                continue
            lo = len(out)
            for cfg in rd.cls.config:
                out.append({"source": "FromClass", "requests": [rd.full_name], **cfg})
            class_ranges[rd.cls.name] = (lo, len(out))
        chosen_names = [(req.name, self._chosen(ci, ri).full_name)
                        for ri, req in enumerate(claim.requests)]
        for cfg in claim.config:
            names = list(cfg.get("requests") or [])
            body = {k: v for k, v in cfg.items() if k != "requests"}
            if not names or any(base in names or full in names for base, full in chosen_names):
                out.append({"source": "FromClaim", "requests": names, **body})
        for entry in out:
            if not entry["requests"]:  # a claim config for all requests names none
                del entry["requests"]
        return out

    def _node_selector(self, ci: int) -> NodeSelector | None:
        """Upstream createNodeSelector: node-local devices pin the node, else merge selectors."""
        fields: list[Requirement] = []
        exprs: list[Requirement] = []
        for p in self.results[ci]:
            s, d = p.cand.slice, p.cand.device
            node_name, selector = ((d.node_name, d.node_selector) if s.per_device_node_selection
                                   else (s.node_name, s.node_selector))
            if node_name is not None or d.binds_to_node:
                return NodeSelector((SelectorTerm(match_fields=(
                    Requirement("metadata.name", "In", (self.node.name,)),)),))
            if selector is not None:
                if len(selector.terms) > 1:
                    raise AllocationError(f"create NodeSelector for claim {self.claims[ci].key}: "
                                          f"unsupported ResourceSlice.NodeSelector with "
                                          f"{len(selector.terms)} terms")
                for term in selector.terms:
                    fields.extend(r for r in term.match_fields if r not in fields)
                    exprs.extend(r for r in term.match_expressions if r not in exprs)
        if fields or exprs:
            return NodeSelector((SelectorTerm(tuple(exprs), tuple(fields)),))
        return None
