"""Builds the allocator's plain records (``model``) from resource.k8s.io/v1 API objects.

Quantities become Decimals; attribute values become tagged tuples; DeviceClass, ResourceSlice
and ResourceClaim map one to one. Claims that already carry ``status.allocation`` feed the
AllocatedState (dedicated devices, shared device IDs, aggregated consumed capacity), as the
scheduler's plugin builds it upstream; results with adminAccess do not count as in use.
"""

from __future__ import annotations

from decimal import Decimal

from mlplane.api.core import Node
from mlplane.api.quantity import parse_quantity
from mlplane.api.resource import (DeviceClass, DeviceRequest, DeviceSubRequest, ExactDeviceRequest,
                                  ResourceClaim, ResourceSlice)
from mlplane.api.resource import Device as ApiDevice
from mlplane.api.resource import NodeSelector as ApiNodeSelector

from .model import (AllocatedState, AttrValue, Capacity, Claim, Constraint, Device,
                    DeviceClassInfo, DeviceID, NodeInfo, NodeSelector, Request, RequestPolicy,
                    Requirement, SelectorTerm, SharedDeviceID, Slice, Taint, Toleration)


def _wire(model) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def quantity(value) -> Decimal:
    return parse_quantity(value)


def _binary(value) -> bool:
    return isinstance(value, str) and value.strip().endswith("i")


def node_info(node: Node) -> NodeInfo:
    return NodeInfo(name=node.metadata.name or "", labels=dict(node.metadata.labels or {}))


def node_selector(sel: ApiNodeSelector | None) -> NodeSelector | None:
    if sel is None:
        return None

    def reqs(items) -> tuple[Requirement, ...]:
        return tuple(Requirement(r.key, r.operator, tuple(r.values or ())) for r in items or ())

    return NodeSelector(tuple(SelectorTerm(reqs(t.match_expressions), reqs(t.match_fields))
                              for t in sel.node_selector_terms))


def attribute_value(attr) -> AttrValue:
    """The tagged value; a list as ("ints", (...)) etc.; ("unknown", None) when no value (or an
    empty list) is set, which constraints refuse as upstream ("unsupported attribute value")."""
    for kind in ("int", "bool", "string", "version"):
        value = getattr(attr, f"{kind}_value")
        if value is not None:
            return (kind, value)
        values = getattr(attr, f"{kind}_values")
        if values:
            return (kind + "s", tuple(values))
    return ("unknown", None)


def _policy(policy) -> RequestPolicy | None:
    if policy is None:
        return None
    rng = policy.valid_range
    return RequestPolicy(
        default=quantity(policy.default) if policy.default is not None else None,
        valid_values=tuple(sorted(quantity(v) for v in policy.valid_values or ())),
        range_min=quantity(rng.min) if rng and rng.min is not None else None,
        range_max=quantity(rng.max) if rng and rng.max is not None else None,
        range_step=quantity(rng.step) if rng and rng.step is not None else None)


def device(d: ApiDevice) -> Device:
    attributes = {name: attribute_value(attr) for name, attr in (d.attributes or {}).items()}
    return Device(
        name=d.name,
        attributes=attributes,
        capacity={name: Capacity(quantity(c.value), _policy(c.request_policy), _binary(c.value))
                  for name, c in (d.capacity or {}).items()},
        consumes_counters=tuple(
            (cc.counter_set, {n: quantity(c.value) for n, c in cc.counters.items()})
            for cc in d.consumes_counters or ()),
        taints=tuple(Taint(t.key, t.value or "", t.effect) for t in d.taints or ()),
        allow_multiple_allocations=bool(d.allow_multiple_allocations),
        binds_to_node=bool(d.binds_to_node),
        binding_conditions=tuple(d.binding_conditions or ()),
        binding_failure_conditions=tuple(d.binding_failure_conditions or ()),
        node_name=d.node_name,
        all_nodes=bool(d.all_nodes),
        node_selector=node_selector(d.node_selector))


def resource_slice(s: ResourceSlice) -> Slice:
    spec = s.spec
    return Slice(
        name=s.metadata.name or "",
        driver=spec.driver,
        pool=spec.pool.name,
        generation=spec.pool.generation,
        resource_slice_count=spec.pool.resource_slice_count,
        node_name=spec.node_name,
        node_selector=node_selector(spec.node_selector),
        all_nodes=bool(spec.all_nodes),
        per_device_node_selection=bool(spec.per_device_node_selection),
        devices=tuple(device(d) for d in spec.devices or ()),
        shared_counters={cs.name: {n: quantity(c.value) for n, c in cs.counters.items()}
                         for cs in spec.shared_counters or ()})


def device_class(c: DeviceClass) -> DeviceClassInfo:
    return DeviceClassInfo(
        name=c.metadata.name or "",
        selectors=tuple(sel.cel.expression for sel in c.spec.selectors or () if sel.cel is not None),
        config=tuple(_wire(cfg) for cfg in c.spec.config or ()))


def _selectors(selectors) -> tuple[str, ...]:
    # A selector without CEL is an unknown future type; upstream refuses it (empty expression
    # never compiles, so the evaluator reports it naming the selector).
    return tuple(sel.cel.expression if sel.cel is not None else "" for sel in selectors or ())


def _request(name: str, r: ExactDeviceRequest | DeviceSubRequest, admin: bool) -> Request:
    return Request(
        name=name,
        class_name=r.device_class_name,
        selectors=_selectors(r.selectors),
        mode=r.allocation_mode,
        count=r.count if r.count is not None else 1,
        admin_access=admin,
        tolerations=tuple(Toleration(t.key or "", t.operator, t.value or "", t.effect or "",
                                     _wire(t)) for t in r.tolerations or ()),
        capacity=({n: quantity(v) for n, v in (r.capacity.requests or {}).items()}
                  if r.capacity is not None else None))


def request(r: DeviceRequest) -> Request:
    if r.first_available:
        return Request(name=r.name, subrequests=tuple(_request(s.name, s, False)
                                                     for s in r.first_available))
    if r.exactly is None:
        return Request(name=r.name)  # neither exactly nor firstAvailable: no class to look up
    return _request(r.name, r.exactly, bool(r.exactly.admin_access))


def claim(c: ResourceClaim) -> Claim:
    devices = c.spec.devices
    return Claim(
        key=(f"{c.metadata.namespace}/{c.metadata.name}" if c.metadata.namespace
             else c.metadata.name or ""),
        requests=tuple(request(r) for r in devices.requests or ()),
        constraints=tuple(Constraint(tuple(k.requests or ()), k.match_attribute, k.distinct_attribute)
                          for k in devices.constraints or ()),
        config=tuple(_wire(cfg) for cfg in devices.config or ()))


def allocated_state(claims: list[ResourceClaim]) -> AllocatedState:
    """What the allocations of ``claims`` (those with status.allocation) use."""
    tracker = AllocationTracker()
    for c in claims:
        tracker.set(c.key, c)
    return tracker.state


# One device a claim's allocation uses: the device, its shareID (None: dedicated) and the
# capacity it consumes.
_Use = tuple[DeviceID, "str | None", dict[str, Decimal]]


def _uses(c: ResourceClaim | None) -> list[_Use]:
    allocation = c.status.allocation if c is not None else None
    if allocation is None:
        return []
    out: list[_Use] = []
    for r in allocation.devices.results or ():
        if r.admin_access:
            continue  # admin access does not count as in use
        out.append((DeviceID(r.driver, r.pool, r.device), r.share_id,
                    {name: quantity(value) for name, value in (r.consumed_capacity or {}).items()}))
    return out


class AllocationTracker:
    """An AllocatedState kept current claim by claim, as claims are allocated, assumed, freed.

    ``set(key, claim)`` records what the claim's allocation uses now (None or no allocation:
    nothing) and changes ``state`` in place, so an allocator holding ``state`` sees it at
    once. ``pool_versions["driver/pool"]`` grows whenever what is in use in that pool changes,
    which is what lets the allocator keep per-pool results between calls.
    """

    def __init__(self) -> None:
        self.state = AllocatedState()
        self._uses: dict[str, list[_Use]] = {}
        self._dedicated: dict[DeviceID, int] = {}
        self._shared: dict[SharedDeviceID, int] = {}
        self._consumed: dict[DeviceID, dict[str, list[dict[str, Decimal]]]] = {}  # device -> claim -> uses
        self.pool_versions: dict[str, int] = {}  # pool ID "driver/pool" -> version

    def set(self, key: str, claim: ResourceClaim | None) -> None:
        new = _uses(claim)
        old = self._uses.get(key, [])
        if new == old:
            return
        for use in old:
            self._change(key, use, -1)
        for use in new:
            self._change(key, use, +1)
        if new:
            self._uses[key] = new
        else:
            self._uses.pop(key, None)
        for dev_id in {u[0] for u in old + new}:
            pool_id = f"{dev_id.driver}/{dev_id.pool}"
            self.pool_versions[pool_id] = self.pool_versions.get(pool_id, 0) + 1
            if dev_id in self._consumed:
                self._aggregate(dev_id)

    def _change(self, key: str, use: _Use, delta: int) -> None:
        dev_id, share_id, consumed = use
        if share_id is None:
            n = self._dedicated.get(dev_id, 0) + delta
            _count(self._dedicated, self.state.allocated_devices, dev_id, n)
            return
        shared = SharedDeviceID(*dev_id, share_id)
        _count(self._shared, self.state.allocated_shared_device_ids, shared,
               self._shared.get(shared, 0) + delta)
        per_claim = self._consumed.setdefault(dev_id, {})
        if delta > 0:
            per_claim.setdefault(key, []).append(consumed)
        else:
            per_claim.pop(key, None)  # every use of the claim goes at once

    def _aggregate(self, dev_id: DeviceID) -> None:
        """Sum the capacity every claim consumes of a shared device, in claim-key order."""
        per_claim = self._consumed[dev_id]
        if not per_claim:
            del self._consumed[dev_id]
            self.state.aggregated_capacity.pop(dev_id, None)
            return
        total: dict[str, Decimal] = {}
        for key in sorted(per_claim):
            for consumed in per_claim[key]:
                for name, value in consumed.items():
                    total[name] = total.get(name, Decimal(0)) + value
        self.state.aggregated_capacity[dev_id] = total


def _count(counts: dict, members: set, item, n: int) -> None:
    if n > 0:
        counts[item] = n
        members.add(item)
    else:
        counts.pop(item, None)
        members.discard(item)
