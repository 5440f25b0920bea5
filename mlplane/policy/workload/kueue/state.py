"""The admission core's snapshot: quota tree, ClusterQueues, flavors and admitted workloads.

``State`` is what Kueue calls the cache snapshot (pkg/cache/scheduler/snapshot.go): the quota
tree with the usage of every admitted workload, which a scheduling cycle mutates as it admits
(so two ClusterQueues of one cohort never over-admit in the same cycle) and which preemption
simulates removals on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mlplane.policy.workload.kueue.model import ClusterQueue, Flavor, Workload
from mlplane.policy.workload.kueue.quota import QuotaNode, QuotaTree


class State:
    def __init__(self, queues: Iterable[ClusterQueue], flavors: Mapping[str, Flavor],
                 cohorts: Iterable[tuple[str, str | None, Mapping]] = ()):
        """``cohorts``: (name, parentName, quotas) of every declared Cohort."""
        self.tree = QuotaTree()
        for name, parent, quotas in cohorts:
            self.tree.add_cohort(name, parent, quotas)
        self.queues: dict[str, ClusterQueue] = {}
        for cq in queues:
            self.queues[cq.name] = cq
            self.tree.add_queue(cq.name, cq.cohort, cq.quotas)
        self.tree.build()
        for cq in self.queues.values():
            cyclic = self.tree.in_cycle(self.tree.queues[cq.name])
            if cyclic and not cq.inactive:
                cq.inactive = f"cohort {cyclic} is in a cycle of parentName references"
                cq.inactive_reason = "Unknown"  # Kueue has no dedicated Active reason for a cohort cycle
        self.flavors = dict(flavors)
        self.admitted: dict[str, dict[str, Workload]] = {name: {} for name in self.queues}

    def node(self, cq: str) -> QuotaNode:
        return self.tree.queues[cq]

    def add_workload(self, wl: Workload) -> None:
        """Count an admitted workload's usage and make it a preemption candidate."""
        self.admitted[wl.cluster_queue][wl.key] = wl
        self.tree.queues[wl.cluster_queue].add_usages(wl.usage)

    def remove_workload(self, wl: Workload) -> None:
        del self.admitted[wl.cluster_queue][wl.key]
        self.tree.queues[wl.cluster_queue].remove_usages(wl.usage)

    def simulate_removal(self, workloads: Iterable[Workload]) -> list[Workload]:
        """Release the usage of ``workloads`` (they stay candidates); undo with ``restore``."""
        removed = list(workloads)
        for wl in removed:
            self.tree.queues[wl.cluster_queue].remove_usages(wl.usage)
        return removed

    def restore(self, workloads: Iterable[Workload]) -> None:
        for wl in workloads:
            self.tree.queues[wl.cluster_queue].add_usages(wl.usage)
