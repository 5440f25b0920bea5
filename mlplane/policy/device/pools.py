"""Resource pools for one node (upstream structured GatherPools and NodeMatches), from an index
built once per set of slices (``PoolIndex``).

A slice is usable on a node when it names the node, selects it, serves all nodes, or (with
perDeviceNodeSelection) has a device that does; slices with sharedCounters belong to every
node's view of their pool. Which generation counts, when a pool is complete, obsolete or
invalid follows upstream's experimental allocator (1.36), see ``PoolIndex``. Pools and slices
are ordered by name, as upstream does since 1.36, so that first-fit is deterministic. Counter
sets come from every slice of the pool, also slices that do not target the node (upstream
1.35+, "Update allocator for Partitionable Devices").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .model import Device, NodeInfo, NodeSelector, Requirement, SelectorTerm, Slice


def _requirement_matches(req: Requirement, value: str | None) -> bool:
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        if value is None or len(req.values) != 1:
            return False
        try:
            left, right = int(value), int(req.values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def _term_matches(term: SelectorTerm, node: NodeInfo) -> bool:
    if not term.match_expressions and not term.match_fields:
        return False  # an empty term matches no node (k8s NodeSelectorTerm semantics)
    for req in term.match_expressions:
        if not _requirement_matches(req, node.labels.get(req.key)):
            return False
    for req in term.match_fields:
        value = node.name if req.key == "metadata.name" else None
        if not _requirement_matches(req, value):
            return False
    return True


def node_selector_matches(selector: NodeSelector, node: NodeInfo) -> bool:
    return any(_term_matches(t, node) for t in selector.terms)


def node_matches(node: NodeInfo, node_name: str | None, all_nodes: bool,
                 selector: NodeSelector | None) -> bool:
    """Whether a slice or device with these node fields is usable on ``node``."""
    if node_name is not None:
        return node_name == node.name
    if all_nodes:
        return True
    if selector is not None:
        return node_selector_matches(selector, node)
    return False


def device_matches_node(slice_: Slice, device: Device, node: NodeInfo) -> bool:
    if not slice_.per_device_node_selection:
        return True
    return node_matches(node, device.node_name, device.all_nodes, device.node_selector)


@dataclass
class Pool:
    driver: str
    name: str
    slices: list[Slice] = field(default_factory=list)  # slices that target the node
    all_slices: list[Slice] = field(default_factory=list)  # every slice at the generation
    incomplete: bool = False
    invalid: bool = False
    invalid_reason: str = ""
    counter_sets: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    @property
    def pool_id(self) -> str:
        return f"{self.driver}/{self.name}"


def _targets_node(slice_: Slice, node: NodeInfo) -> bool:
    if slice_.per_device_node_selection:
        return any(device_matches_node(slice_, d, node) for d in slice_.devices)
    return node_matches(node, slice_.node_name, slice_.all_nodes, slice_.node_selector)


class PoolIndex:
    """The slices of a set of slices, indexed once, from which ``pools_for(node)`` gathers a
    node's pools as upstream GatherPools (experimental allocator, 1.36) does:

    * relevant to a node are the slices that target it, and the slices with sharedCounters of
      the same pools (needed wherever the pool's devices are); without ``partitionable`` slices
      with sharedCounters or perDeviceNodeSelection are ignored;
    * per pool the highest generation among the relevant slices counts; the pool is complete
      when that generation has resourceSliceCount relevant slices; if not, all slices of the
      pool are looked at: a newer generation elsewhere makes the pool obsolete (ignored), and
      otherwise the pool is complete when all its slices at the generation add up;
    * a complete pool is invalid when a device name repeats among its device slices that target
      the node, a counter set name repeats, or a device (also on another node) consumes a
      counter set or counter that the pool does not have;
    * pools are ordered by (driver, pool), those with devices that have binding conditions last;
      slices within a pool by name.

    One difference: upstream also lists, for every node, the pools of which only a slice with
    sharedCounters is relevant (no slice targets the node). Such a pool has no devices for the
    node; leaving it out keeps gathering proportional to the node's own slices, and keeps
    another node's pool that is being updated from failing allocationMode All here.
    """

    def __init__(self, slices: list[Slice], partitionable: bool = True):
        # (driver, pool) -> generation -> slices (all of them, whichever nodes they target)
        self._by_pool: dict[tuple[str, str], dict[int, list[Slice]]] = {}
        self._by_node: dict[str, list[Slice]] = {}  # slices that name one node
        self._other: list[Slice] = []  # slices that select nodes (nodeSelector, allNodes, per device)
        self._counters: dict[tuple[str, str], list[Slice]] = {}  # slices with sharedCounters
        for s in slices:
            key = (s.driver, s.pool)
            self._by_pool.setdefault(key, {}).setdefault(s.generation, []).append(s)
            if not partitionable and (s.per_device_node_selection or s.shared_counters):
                continue
            if s.shared_counters:
                self._counters.setdefault(key, []).append(s)
            if s.node_name is not None and not s.per_device_node_selection:
                self._by_node.setdefault(s.node_name, []).append(s)
            else:
                self._other.append(s)
        self.partitionable = partitionable

    def pools_for(self, node: NodeInfo) -> list[Pool]:
        """The pools usable on ``node``; each lists the slices that target the node."""
        found: dict[tuple[str, str], list[Slice]] = {}
        for s in self._by_node.get(node.name, ()):
            found.setdefault((s.driver, s.pool), []).append(s)
        for s in self._other:
            if _targets_node(s, node):
                found.setdefault((s.driver, s.pool), []).append(s)
        plain, with_conditions = [], []
        for key in sorted(found):
            targeting = {id(s) for s in found[key]}
            rel: list[Slice] = []
            for s in (*found[key], *(c for c in self._counters.get(key, ()) if id(c) not in targeting)):
                if not rel or s.generation > rel[0].generation:
                    rel = [s]
                elif s.generation == rel[0].generation:
                    rel.append(s)
            generation, count = rel[0].generation, rel[0].resource_slice_count
            generations = self._by_pool[key]
            every = generations[generation]
            pool = Pool(driver=key[0], name=key[1], all_slices=sorted(every, key=lambda s: s.name))
            if len(rel) != count:
                if any(g > generation for g in generations):
                    continue  # obsolete: the driver is replacing this generation
                if len(every) != count:
                    pool.incomplete = True
                    plain.append(pool)
                    continue
            _build(pool, sorted(rel, key=lambda s: s.name), targeting, self.partitionable)
            if any(d.binding_conditions for s in pool.slices for d in s.devices):
                with_conditions.append(pool)
            else:
                plain.append(pool)
        return plain + with_conditions


def _build(pool: Pool, relevant: list[Slice], targeting: set[int], partitionable: bool) -> None:
    """Fill in the pool's device slices (those of the relevant slices that target the node; a
    slice with sharedCounters is relevant wherever its pool is, and since 1.35 holds no
    devices) and counter sets, and check them."""
    pool.slices = [s for s in relevant if id(s) in targeting and s.devices]
    seen: set[str] = set()
    for s in pool.slices:
        for d in s.devices:
            if d.name in seen:
                pool.invalid, pool.invalid_reason = True, f"duplicate device name {d.name}"
                return
            seen.add(d.name)
    if not partitionable:
        return
    for s in relevant:
        for set_name, counters in s.shared_counters.items():
            if set_name in pool.counter_sets:
                pool.invalid, pool.invalid_reason = True, f"duplicate counter set name {set_name}"
                return
            pool.counter_sets[set_name] = dict(counters)
    for s in pool.all_slices:
        for d in s.devices:
            for set_name, counters in d.consumes_counters:
                known = pool.counter_sets.get(set_name)
                if known is None:
                    pool.invalid, pool.invalid_reason = True, f"counter set {set_name} not found"
                    return
                for name in counters:
                    if name not in known:
                        pool.invalid = True
                        pool.invalid_reason = f"counter {name} not found in counter set {set_name}"
                        return
