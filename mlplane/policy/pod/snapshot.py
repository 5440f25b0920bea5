"""The scheduler's view of the cluster: each Node, the pods that count against it, and their sums.

A ``Snapshot`` is kept up to date incrementally (``set_node``, ``set_pod``, ``remove_pod``...) from
watch events, so a scheduling cycle never rebuilds it. Pods that are not terminal and are bound
to a node count against that node; so do *assumed* pods, which the scheduler has placed but whose
binding the store has not confirmed yet, so back-to-back decisions never overcommit a node.

Resource accounting follows kube-scheduler's NodeInfo and Resource
(pkg/scheduler/framework/types.go): CPU in millicores, memory, ephemeral storage and every other
("scalar", e.g. ``nvidia.com/gpu``) resource in whole units, ``pods`` from allocatable as the
number of pods a node accepts. A pod's requests are the sum of its containers' requests, where a
container that sets a limit but no request for a resource requests its limit (the API server's
defaulting, pkg/apis/core/v1/defaults.go). Scoring uses "non-zero" CPU and memory requests: a
container that requests no CPU counts as 100m and one that requests no memory as 200 MiB
(pkg/scheduler/util/pod_resources.go), so empty pods still spread.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from mlplane.api.core import Node, Pod, Taint, Toleration
from mlplane.api.quantity import milli, whole
from mlplane.policy.pod.claims import DeviceSnapshot

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024


class Resources:
    """An amount of each resource: CPU in millicores, everything else in whole units."""

    __slots__ = ("milli_cpu", "memory", "ephemeral_storage", "scalars")

    def __init__(self, milli_cpu: int = 0, memory: int = 0, ephemeral_storage: int = 0,
                 scalars: dict[str, int] | None = None):
        self.milli_cpu, self.memory, self.ephemeral_storage = milli_cpu, memory, ephemeral_storage
        self.scalars: dict[str, int] = scalars if scalars is not None else {}

    @classmethod
    def of(cls, resources: Mapping[str, str | int | float] | None) -> "Resources":
        """Parse a ResourceList; ``pods`` is not a resource a pod requests and is left out."""
        r = cls()
        for name, quantity in (resources or {}).items():
            if name == CPU:
                r.milli_cpu += milli(quantity)
            elif name == MEMORY:
                r.memory += whole(quantity)
            elif name == EPHEMERAL_STORAGE:
                r.ephemeral_storage += whole(quantity)
            elif name != PODS:
                r.scalars[name] = r.scalars.get(name, 0) + whole(quantity)
        return r

    def add(self, other: "Resources", sign: int = 1) -> None:
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        for name, value in other.scalars.items():
            left = self.scalars.get(name, 0) + sign * value
            if left:
                self.scalars[name] = left
            else:
                self.scalars.pop(name, None)

    def get(self, name: str) -> int:
        """The amount of one resource by its API name."""
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        return self.scalars.get(name, 0)

    def is_zero(self) -> bool:
        return not (self.milli_cpu or self.memory or self.ephemeral_storage or self.scalars)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Resources) and self.milli_cpu == other.milli_cpu
                and self.memory == other.memory and self.ephemeral_storage == other.ephemeral_storage
                and self.scalars == other.scalars)

    def __repr__(self) -> str:
        return (f"Resources(milli_cpu={self.milli_cpu}, memory={self.memory}, "
                f"ephemeral_storage={self.ephemeral_storage}, scalars={self.scalars})")


class PodInfo:
    """A pod with what scheduling needs from it computed once: requests, tolerations, priority."""

    __slots__ = ("pod", "key", "uid", "requests", "non_zero_cpu", "non_zero_memory", "priority")

    def __init__(self, pod: Pod):
        self.pod = pod
        self.key = pod.key
        self.uid = pod.uid
        self.requests = Resources()
        self.non_zero_cpu = self.non_zero_memory = 0
        for c in pod.spec.containers:
            r = c.resources
            effective = {**(r.limits or {}), **(r.requests or {})} if r is not None else {}
            self.requests.add(Resources.of(effective))
            self.non_zero_cpu += milli(effective[CPU]) if CPU in effective else DEFAULT_MILLI_CPU_REQUEST
            self.non_zero_memory += whole(effective[MEMORY]) if MEMORY in effective else DEFAULT_MEMORY_REQUEST
        self.priority = pod.spec.priority or 0

    @property
    def tolerations(self) -> list[Toleration]:
        return self.pod.spec.tolerations or []

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


class NodeInfo:
    """One node and what is placed on it: pods (bound or assumed) and the sums of their requests."""

    __slots__ = ("name", "node", "allocatable", "allowed_pods", "requested", "non_zero_cpu",
                 "non_zero_memory", "pods", "_allocatable_source")

    def __init__(self, name: str):
        self.name = name
        self.node: Node | None = None  # None while pods name a node the snapshot has not seen
        self.allocatable = Resources()
        self.allowed_pods = 0
        self.requested = Resources()
        self.non_zero_cpu = self.non_zero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self._allocatable_source: dict | None = None

    def set_node(self, node: Node) -> None:
        self.node = node
        allocatable = node.status.allocatable or {}
        if allocatable != self._allocatable_source:
            self._allocatable_source = dict(allocatable)
            self.allocatable = Resources.of(allocatable)
            self.allowed_pods = whole(allocatable[PODS]) if PODS in allocatable else 0

    @property
    def labels(self) -> dict[str, str]:
        return self.node.labels if self.node is not None else {}

    @property
    def taints(self) -> list[Taint]:
        return (self.node.spec.taints or []) if self.node is not None else []

    def add_pod(self, info: PodInfo) -> None:
        self.pods[info.key] = info
        self.requested.add(info.requests)
        self.non_zero_cpu += info.non_zero_cpu
        self.non_zero_memory += info.non_zero_memory

    def remove_pod(self, key: str) -> PodInfo | None:
        info = self.pods.pop(key, None)
        if info is not None:
            self.requested.add(info.requests, -1)
            self.non_zero_cpu -= info.non_zero_cpu
            self.non_zero_memory -= info.non_zero_memory
        return info

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)}, requested={self.requested})"


class Snapshot:
    """Nodes and the pods that count against them, kept current by the caller's events, and
    ``devices``: the DRA objects the DynamicResources plugin decides over."""

    def __init__(self) -> None:
        self.devices = DeviceSnapshot()
        self._nodes: dict[str, NodeInfo] = {}
        self._where: dict[str, str] = {}  # pod key -> node name it counts against
        self._assumed: set[str] = set()
        self._sorted: list[NodeInfo] | None = None

    @classmethod
    def build(cls, nodes: Iterable[Node], pods: Iterable[Pod] = ()) -> "Snapshot":
        snapshot = cls()
        for node in nodes:
            snapshot.set_node(node)
        for pod in pods:
            snapshot.set_pod(pod)
        return snapshot

    # -- reading ----------------------------------------------------------------------------------
    def node_infos(self) -> list[NodeInfo]:
        """Every known node, sorted by name (the order every decision walks them in)."""
        if self._sorted is None:
            self._sorted = sorted((ni for ni in self._nodes.values() if ni.node is not None),
                                  key=lambda ni: ni.name)
        return self._sorted

    def get(self, name: str) -> NodeInfo | None:
        ni = self._nodes.get(name)
        return ni if ni is not None and ni.node is not None else None

    def __len__(self) -> int:
        return len(self.node_infos())

    def node_of(self, key: str) -> str | None:
        """The node a pod counts against (bound or assumed), if any."""
        return self._where.get(key)

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    # -- nodes ------------------------------------------------------------------------------------
    def set_node(self, node: Node) -> None:
        ni = self._nodes.get(node.name)
        if ni is None:
            ni = self._nodes[node.name] = NodeInfo(node.name)
        if ni.node is None:
            self._sorted = None
        ni.set_node(node)

    def remove_node(self, name: str) -> None:
        ni = self._nodes.get(name)
        if ni is None:
            return
        self._sorted = None
        if ni.pods:
            ni.node = None  # keep counting its pods in case the node comes back before they go
        else:
            del self._nodes[name]

    # -- pods -------------------------------------------------------------------------------------
    def set_pod(self, pod: Pod) -> None:
        """Record the pod's current state: bound and not terminal counts; terminal does not.

        An unbound pod changes nothing, so an assumed pod keeps counting while its binding is in
        flight; once the pod shows up bound, the assumption is confirmed.
        """
        key = pod.key
        node = pod.spec.node_name
        if pod.terminal:
            self.remove_pod(key)
            return
        if not node:
            return
        current = self._where.get(key)
        if current == node:
            ni = self._nodes[current]
            info = ni.pods[key]
            if info.uid == pod.uid:
                info.pod = pod  # requests cannot change on a bound pod: keep the sums
                self._assumed.discard(key)
                return
        self.remove_pod(key)
        self._add(PodInfo(pod), node)

    def remove_pod(self, key: str) -> bool:
        """Stop counting the pod anywhere; returns whether it was counted."""
        node = self._where.pop(key, None)
        self._assumed.discard(key)
        if node is None:
            return False
        ni = self._nodes[node]
        ni.remove_pod(key)
        if ni.node is None and not ni.pods:
            del self._nodes[node]
        return True

    def assume(self, info: PodInfo, node: str) -> None:
        """Count a pod the scheduler has placed on ``node`` before the store confirms the binding."""
        self.remove_pod(info.key)
        self._add(info, node)
        self._assumed.add(info.key)

    def forget(self, key: str) -> None:
        """Drop an assumption (the binding failed or was abandoned); a confirmed pod stays."""
        if key in self._assumed:
            self.remove_pod(key)

    def _add(self, info: PodInfo, node: str) -> None:
        ni = self._nodes.get(node)
        if ni is None:
            ni = self._nodes[node] = NodeInfo(node)
        ni.add_pod(info)
        self._where[info.key] = node
