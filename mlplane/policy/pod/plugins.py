"""The default scheduler's first plugins, and the framework they make up.

Each ports the behaviour (and the exact reason strings) of the kube-scheduler plugin of the same
name under pkg/scheduler/framework/plugins/; the filter order and score weights are upstream's
defaults (pkg/scheduler/apis/config/v1/default_plugins.go).
"""

from __future__ import annotations

from typing import Mapping

from mlplane.api.core import Taint, Toleration
from mlplane.policy.pod.dynamicresources import DynamicResources
from mlplane.policy.pod.framework import Framework
from mlplane.policy.pod.interface import MAX_NODE_SCORE, CycleState, Status
from mlplane.policy.pod.snapshot import CPU, MEMORY, NodeInfo, PodInfo


def _untolerated(taints: list[Taint], tolerations: list[Toleration], effects: tuple[str, ...]) -> Taint | None:
    """The first taint with one of ``effects`` that no toleration tolerates
    (component-helpers/scheduling/corev1 FindMatchingUntoleratedTaint)."""
    for taint in taints:
        if taint.effect in effects and not any(t.tolerates(taint) for t in tolerations):
            return taint
    return None


class SchedulingGates:
    """PreEnqueue: a pod with spec.schedulingGates is not tried (schedulinggates/scheduling_gates.go)."""

    name = "SchedulingGates"

    def pre_enqueue(self, pod: PodInfo) -> Status | None:
        gates = pod.pod.spec.scheduling_gates
        if not gates:
            return None
        # Go prints the []string of gate names as "[a b]".
        return Status.unresolvable(f"waiting for scheduling gates: [{' '.join(g.name for g in gates)}]")


class NodeUnschedulable:
    """Filter: a cordoned node (spec.unschedulable) takes only pods tolerating its taint
    (nodeunschedulable/node_unschedulable.go)."""

    name = "NodeUnschedulable"
    REASON = "node(s) were unschedulable"
    TAINT = Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        assert node.node is not None
        if not node.node.spec.unschedulable:
            return None
        if any(t.tolerates(self.TAINT) for t in pod.tolerations):
            return None
        return Status.unresolvable(self.REASON)


class NodeName:
    """Filter: a pod naming spec.nodeName fits only that node (nodename/node_name.go)."""

    name = "NodeName"
    REASON = "node(s) didn't match the requested node name"

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot) -> Status | None:
        # Nothing to check on any node: skip Filter (the framework's Skip status).
        return None if pod.pod.spec.node_name else Status.skip()

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        wanted = pod.pod.spec.node_name
        if wanted and wanted != node.name:
            return Status.unresolvable(self.REASON)
        return None


class TaintToleration:
    """Filter: NoSchedule and NoExecute taints must be tolerated. Score: fewer untolerated
    PreferNoSchedule taints is better (tainttoleration/taint_toleration.go)."""

    name = "TaintToleration"

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        taints = node.taints
        if not taints:
            return None
        taint = _untolerated(taints, pod.tolerations, ("NoSchedule", "NoExecute"))
        if taint is None:
            return None
        return Status.unresolvable(f"node(s) had untolerated taint {{{taint.key}: {taint.value or ''}}}")

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        taints = node.taints
        if not taints:  # most nodes: nothing to count
            return 0
        # Only tolerations that can apply to PreferNoSchedule count: no effect, or that effect.
        tolerations = [t for t in pod.tolerations if t.effect in (None, "PreferNoSchedule")]
        return sum(1 for taint in taints
                   if taint.effect == "PreferNoSchedule" and not any(t.tolerates(taint) for t in tolerations))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: dict[str, int]) -> None:
        # helper.DefaultNormalizeScore(MaxNodeScore, reverse=true): most untolerated taints -> 0.
        highest = max(scores.values(), default=0)
        for name, score in scores.items():
            scores[name] = MAX_NODE_SCORE - (MAX_NODE_SCORE * score // highest if highest else 0)


class NodeAffinity:
    """Filter: the node's labels must match the pod's spec.nodeSelector (nodeaffinity/node_affinity.go;
    this API has no spec.affinity yet, so the selector is the whole of it)."""

    name = "NodeAffinity"
    REASON = "node(s) didn't match Pod's node affinity/selector"

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot) -> Status | None:
        # Upstream's PreFilter returns Skip for a pod without node affinity or nodeSelector.
        return None if pod.pod.spec.node_selector else Status.skip()

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        selector = pod.pod.spec.node_selector
        if not selector:
            return None
        labels = node.labels
        if all(labels.get(k) == v for k, v in selector.items()):
            return None
        return Status.unresolvable(self.REASON)


class NodeResourcesFit:
    """Filter: the node has room for the pod's requests and one more pod (noderesources/fit.go).

    Every insufficient resource is reported, in upstream's order: pods, cpu, memory,
    ephemeral-storage, then other resources by name.
    """

    name = "NodeResourcesFit"

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        reasons = []
        if len(node.pods) + 1 > node.allowed_pods:
            reasons.append("Too many pods")
        want, free, used = pod.requests, node.allocatable, node.requested
        if want.milli_cpu > 0 and want.milli_cpu > free.milli_cpu - used.milli_cpu:
            reasons.append("Insufficient cpu")
        if want.memory > 0 and want.memory > free.memory - used.memory:
            reasons.append("Insufficient memory")
        if want.ephemeral_storage > 0 and want.ephemeral_storage > free.ephemeral_storage - used.ephemeral_storage:
            reasons.append("Insufficient ephemeral-storage")
        for name in sorted(want.scalars):
            quantity = want.scalars[name]
            if quantity > 0 and quantity > free.scalars.get(name, 0) - used.scalars.get(name, 0):
                reasons.append(f"Insufficient {name}")
        return Status.unschedulable(*reasons) if reasons else None


class NodeResourcesLeastAllocated:
    """Score: favour nodes with more of their allocatable left after placing the pod
    (noderesources/least_allocated.go; upstream since folded it into NodeResourcesFit's
    scoringStrategy LeastAllocated, same arithmetic).

    Per resource: (allocatable - requested) * 100 / allocatable, where requested counts CPU and
    memory as non-zero requests; the weighted average over ``resources`` (default cpu and
    memory, weight 1 each), skipping resources the node does not have.
    """

    name = "NodeResourcesLeastAllocated"

    def __init__(self, resources: Mapping[str, int] | None = None):
        self.resources = dict(resources) if resources is not None else {CPU: 1, MEMORY: 1}
        for resource, weight in self.resources.items():
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
                raise ValueError(f"{self.name}: weight of resource {resource!r} must be a positive integer, "
                                 f"got {weight!r}")

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = weights = 0
        for resource, weight in self.resources.items():
            capacity = node.allocatable.get(resource)
            if capacity == 0:
                continue
            if resource == CPU:
                requested = node.non_zero_cpu + pod.non_zero_cpu
            elif resource == MEMORY:
                requested = node.non_zero_memory + pod.non_zero_memory
            else:
                requested = node.requested.get(resource) + pod.requests.get(resource)
            score = 0 if requested > capacity else (capacity - requested) * MAX_NODE_SCORE // capacity
            total += score * weight
            weights += weight
        return total // weights if weights else 0


# The default weights of kube-scheduler's profile (default_plugins.go): TaintToleration 3, the
# resources score 1.
DEFAULT_WEIGHTS = {TaintToleration.name: 3, NodeResourcesLeastAllocated.name: 1}


def default_plugins() -> list:
    """The default plugins, in upstream's order at each extension point (DynamicResources after
    the node and resource filters, as in default_plugins.go)."""
    return [SchedulingGates(), NodeUnschedulable(), NodeName(), TaintToleration(), NodeAffinity(),
            NodeResourcesFit(), DynamicResources(), NodeResourcesLeastAllocated()]


def default_framework(*extra: object) -> Framework:
    """The default scheduler's framework, with ``extra`` plugins appended (a binder, DRA, gangs...)."""
    return Framework([*default_plugins(), *extra], weights=DEFAULT_WEIGHTS)


__all__ = ["SchedulingGates", "NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity",
           "NodeResourcesFit", "NodeResourcesLeastAllocated", "DEFAULT_WEIGHTS", "default_plugins",
           "default_framework"]
