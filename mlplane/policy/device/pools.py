"""Resource pools for one node (upstream structured GatherPools and NodeMatches), from an index
built once per set of slices (``PoolIndex``).

A slice is usable on a node when it names the node, selects it, serves all nodes, or (with
perDeviceNodeSelection) has a device that does. Slices are grouped by (driver, pool); only
the highest generation counts. A pool is incomplete when fewer slices than
resourceSliceCount are present at that generation, and invalid when a device name repeats.
Pools and slices are ordered by name, as upstream does since 1.36, so that first-fit is
deterministic. Counter sets come from every slice of the pool, also slices that do not
target the node (upstream 1.35+, "Update allocator for Partitionable Devices").
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
    """The pools of a set of slices, gathered once: each pool's newest generation, its slices,
    completeness, validity and counter sets are computed when the index is built, and the
    slices that name a node are indexed by that node, so ``pools_for(node)`` looks at the
    node's own slices plus those that select nodes (nodeSelector, allNodes, per device)."""

    def __init__(self, slices: list[Slice]):
        newest: dict[tuple[str, str], int] = {}
        for s in slices:
            key = (s.driver, s.pool)
            newest[key] = max(newest.get(key, s.generation), s.generation)
        self._pools: dict[tuple[str, str], Pool] = {}
        self._by_node: dict[str, list[Slice]] = {}
        self._selecting: list[Slice] = []  # slices that do not name a single node
        for s in slices:
            key = (s.driver, s.pool)
            if s.generation != newest[key]:
                continue  # stale generation: ignored, as upstream
            self._pools.setdefault(key, Pool(driver=s.driver, name=s.pool)).all_slices.append(s)
            if s.node_name is not None and not s.per_device_node_selection:
                self._by_node.setdefault(s.node_name, []).append(s)
            else:
                self._selecting.append(s)
        for pool in self._pools.values():
            _summarize(pool)

    def pools_for(self, node: NodeInfo) -> list[Pool]:
        """The pools usable on ``node``, ordered by (driver, pool name); each lists the slices
        that target the node, ordered by name."""
        targeting: dict[tuple[str, str], list[Slice]] = {}
        for s in self._by_node.get(node.name, ()):
            targeting.setdefault((s.driver, s.pool), []).append(s)
        for s in self._selecting:
            if _targets_node(s, node):
                targeting.setdefault((s.driver, s.pool), []).append(s)
        result = []
        for key in sorted(targeting):
            shared = self._pools[key]
            result.append(Pool(driver=shared.driver, name=shared.name,
                               slices=sorted(targeting[key], key=lambda s: s.name),
                               all_slices=shared.all_slices, incomplete=shared.incomplete,
                               invalid=shared.invalid, invalid_reason=shared.invalid_reason,
                               counter_sets=shared.counter_sets))
        return result


def _summarize(pool: Pool) -> None:
    """Order a pool's slices and derive completeness, validity and counter sets from them."""
    pool.all_slices.sort(key=lambda s: s.name)
    pool.incomplete = len(pool.all_slices) != pool.all_slices[0].resource_slice_count
    seen: set[str] = set()
    for s in pool.all_slices:
        for d in s.devices:
            if d.name in seen:
                pool.invalid = True
                pool.invalid_reason = f"duplicate device name {d.name}"
            seen.add(d.name)
        for set_name, counters in s.shared_counters.items():
            if set_name in pool.counter_sets:
                pool.invalid = True
                pool.invalid_reason = f"duplicate counter set {set_name}"
            pool.counter_sets[set_name] = dict(counters)
