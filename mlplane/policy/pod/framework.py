"""The scheduling framework: runs plugins at each extension point through one scheduling cycle.

Modelled on kube-scheduler's framework
(https://kubernetes.io/docs/concepts/scheduling-eviction/scheduling-framework/; interfaces in
staging/src/k8s.io/kube-scheduler/framework/interface.go, the runner in
pkg/scheduler/framework/runtime/framework.go, the cycle in pkg/scheduler/schedule_one.go).
A plugin is any object with a ``name`` and one method per extension point it implements:

=============  ===============================================  ===========================================
point          method                                           contract
=============  ===============================================  ===========================================
PreEnqueue     ``pre_enqueue(pod) -> Status``                   not Success: the pod is gated, not tried
PreFilter      ``pre_filter(state, pod, snapshot)``             Status, or PreFilterResult to narrow nodes;
                                                                Skip drops the plugin's own Filter
Filter         ``filter(state, pod, node_info) -> Status``      the first rejection ends a node's checks
PostFilter     ``post_filter(state, pod, snapshot, diagnosis)``  runs when nothing fits (preemption)
Score          ``score(state, pod, node_info) -> int``          0..100 after the optional
                                                                ``normalize_score(state, pod, scores)``;
                                                                summed with per-plugin weights
Reserve        ``reserve(state, pod, node)`` / ``unreserve``    unreserve runs in reverse, idempotently
Permit         ``permit(state, pod, node) -> Status``           Success, Wait (``Status.wait(timeout)``) or
                                                                a rejection
PreBind        ``pre_bind(state, pod, node) -> Status``         binding cycle (the caller's thread, may I/O)
Bind           ``bind(state, pod, node) -> Status``             the first one not returning Skip binds
=============  ===============================================  ===========================================

Plugin methods may return ``None`` for Success. ``Framework.schedule`` runs one scheduling
cycle (PreEnqueue through Permit) against a ``Snapshot`` and, once a node is chosen, *assumes*
the pod on it in that snapshot. Everything here is pure: no I/O, no clock, no threads; PreBind
and Bind plugins are the controller's, and only they talk to the store. Statuses, results and
the extension-point protocols are in ``interface.py``; pods held at Permit in ``waiting.py``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlplane.api.core import Pod
from mlplane.policy.pod.interface import (
    MAX_NODE_SCORE, MAX_PERMIT_TIMEOUT, MIN_NODE_SCORE, NO_NODES_AVAILABLE, SUCCESS, BindPlugin, Code, CycleState,
    Diagnosis, FilterPlugin, PermitPlugin, PostFilterPlugin, PreBindPlugin, PreEnqueuePlugin, PreFilterPlugin,
    PreFilterResult, ReservePlugin, ScheduleResult, ScorePlugin, Status, status_of,
)
from mlplane.policy.pod.snapshot import NodeInfo, PodInfo, Snapshot
from mlplane.policy.pod.waiting import WaitingPod, WaitingPods

# kube-scheduler's defaults (pkg/scheduler/schedule_one.go numFeasibleNodesToFind): below 100 nodes
# every node is filtered; above, an adaptive share (50% - nodes/125, at least 5%, at least 100 nodes).
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
BASE_PERCENTAGE_OF_NODES_TO_SCORE = 50


def num_feasible_nodes_to_find(num_all_nodes: int, percentage_of_nodes_to_score: int = 0) -> int:
    """How many feasible nodes a cycle looks for before it stops filtering (0 = adaptive)."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage_of_nodes_to_score >= 100:
        return num_all_nodes
    percentage = percentage_of_nodes_to_score or max(
        BASE_PERCENTAGE_OF_NODES_TO_SCORE - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


class Framework:
    """An ordered set of plugins, run at each extension point in the order given.

    ``weights`` maps Score plugin names to their weight (default 1). ``waiting_pods`` lets the
    caller share the registry of pods held at Permit with plugins that need it.
    """

    def __init__(self, plugins: Sequence[Any], *, weights: Mapping[str, int] | None = None,
                 waiting_pods: WaitingPods | None = None, percentage_of_nodes_to_score: int = 0):
        names = [getattr(p, "name", None) for p in plugins]
        for p, n in zip(plugins, names):
            if not isinstance(n, str) or not n:
                raise ValueError(f"plugin {p!r} has no name")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"plugins named more than once: {', '.join(duplicates)}")
        self.plugins: tuple[Any, ...] = tuple(plugins)
        self.pre_enqueue_plugins = [p for p in plugins if isinstance(p, PreEnqueuePlugin)]
        self.pre_filter_plugins = [p for p in plugins if isinstance(p, PreFilterPlugin)]
        self.filter_plugins = [p for p in plugins if isinstance(p, FilterPlugin)]
        self.post_filter_plugins = [p for p in plugins if isinstance(p, PostFilterPlugin)]
        self.score_plugins = [p for p in plugins if isinstance(p, ScorePlugin)]
        self.reserve_plugins = [p for p in plugins if isinstance(p, ReservePlugin)]
        self.permit_plugins = [p for p in plugins if isinstance(p, PermitPlugin)]
        self.pre_bind_plugins = [p for p in plugins if isinstance(p, PreBindPlugin)]
        self.bind_plugins = [p for p in plugins if isinstance(p, BindPlugin)]
        weights = dict(weights or {})
        scored = {p.name for p in self.score_plugins}
        for name, weight in weights.items():
            if name not in scored:
                raise ValueError(f"weight given for {name!r}, which is not a Score plugin of this framework")
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
                raise ValueError(f"weight of Score plugin {name!r} must be a positive integer, got {weight!r}")
        self.weights = {name: weights.get(name, 1) for name in sorted(scored)}
        self.waiting_pods = waiting_pods if waiting_pods is not None else WaitingPods()
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self._next_start_node = 0  # where the next cycle's Filter starts, so load spreads over nodes

    def with_plugins(self, *plugins: Any) -> "Framework":
        """A framework with ``plugins`` appended, sharing this one's weights and waiting pods."""
        return Framework(self.plugins + plugins, weights=self.weights, waiting_pods=self.waiting_pods,
                         percentage_of_nodes_to_score=self.percentage_of_nodes_to_score)

    # -- PreEnqueue -------------------------------------------------------------------------------
    def pre_enqueue(self, pod: PodInfo) -> Status:
        for p in self.pre_enqueue_plugins:
            status = status_of(p.pre_enqueue(pod), p.name)
            if not status.is_success:
                return status
        return SUCCESS

    # -- the scheduling cycle ---------------------------------------------------------------------
    def schedule(self, pod: Pod | PodInfo, snapshot: Snapshot) -> ScheduleResult:
        """Find a node for ``pod``, then run Reserve and Permit on it, assuming the pod there.

        On Success or Wait the pod counts against ``result.node`` in ``snapshot`` until the
        caller calls ``unreserve`` (binding failed) or the snapshot sees the pod bound.
        """
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        gate = self.pre_enqueue(info)
        if not gate.is_success:
            return ScheduleResult(info, gate, gated=True)
        state = CycleState()
        nodes = snapshot.node_infos()
        if not nodes:
            return ScheduleResult(info, Status.unresolvable(NO_NODES_AVAILABLE), state=state)
        diagnosis = Diagnosis(len(nodes))
        candidates, failed = self._pre_filter(state, info, snapshot, nodes, diagnosis)
        if failed is not None:
            if failed.code is Code.ERROR:
                return ScheduleResult(info, failed, state=state)
            return self._unfit(state, info, snapshot, diagnosis)
        feasible, failed = self._filter(state, info, candidates, diagnosis)
        if failed is not None:
            return ScheduleResult(info, failed, state=state)
        if not feasible:
            return self._unfit(state, info, snapshot, diagnosis)
        if len(feasible) == 1:
            node = feasible[0].name
        else:
            node, failed = self._select(state, info, feasible)
            if failed is not None:
                return ScheduleResult(info, failed, state=state)
        result = ScheduleResult(info, SUCCESS, node=node, state=state)
        snapshot.assume(info, node)
        return self._reserve_and_permit(result, snapshot)

    def _pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: list[NodeInfo],
                    diagnosis: Diagnosis) -> tuple[list[NodeInfo], Status | None]:
        allowed: frozenset[str] | None = None
        narrowed_by: list[str] = []
        for p in self.pre_filter_plugins:
            returned = p.pre_filter(state, pod, snapshot)
            if isinstance(returned, PreFilterResult):
                if returned.node_names is None:
                    continue
                narrowed_by.append(p.name)
                allowed = returned.node_names if allowed is None else allowed & returned.node_names
                if not allowed:
                    # runtime/framework.go RunPreFilterPlugins: an empty intersection is a rejection.
                    msg = (f"node(s) didn't satisfy plugin {narrowed_by[0]}" if len(narrowed_by) == 1 else
                           f"node(s) didn't satisfy plugin(s) [{' '.join(sorted(narrowed_by))}] simultaneously")
                    returned = Status(Code.UNSCHEDULABLE, (msg,))
                else:
                    continue
            status = status_of(returned, p.name)
            if status.code is Code.SKIP:
                state.skip_filter.add(p.name)
            elif status.is_rejected:
                diagnosis.pre_filter_msg = status.message
                diagnosis.absent_status = status
                diagnosis.unschedulable_plugins.add(status.plugin or p.name)
                diagnosis.unschedulable_plugins.update(narrowed_by)
                return [], status
            elif not status.is_success:
                return [], Status.error(f"running PreFilter plugin {p.name!r}: {status.message}")
        if allowed is None:
            return nodes, None
        diagnosis.unschedulable_plugins.update(narrowed_by)
        diagnosis.absent_status = Status.unresolvable(
            f"node(s) didn't satisfy plugin(s) [{' '.join(sorted(diagnosis.unschedulable_plugins))}]")
        return [ni for ni in nodes if ni.name in allowed], None

    def _filter(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo],
                diagnosis: Diagnosis) -> tuple[list[NodeInfo], Status | None]:
        """Filter nodes until enough feasible ones are found (kube-scheduler's
        findNodesThatPassFilters: numFeasibleNodesToFind, starting where the last cycle stopped)."""
        plugins = [p for p in self.filter_plugins if p.name not in state.skip_filter]
        feasible: list[NodeInfo] = []
        wanted = num_feasible_nodes_to_find(len(nodes), self.percentage_of_nodes_to_score)
        start = self._next_start_node % len(nodes) if nodes else 0
        processed = 0
        for i in range(len(nodes)):
            if len(feasible) >= wanted:
                break
            ni = nodes[(start + i) % len(nodes)]
            processed += 1
            for p in plugins:
                returned = p.filter(state, pod, ni)
                if returned is None or returned.is_success:
                    continue
                status = status_of(returned, p.name)
                if not status.is_rejected:
                    return [], Status.error(f"running Filter plugin {p.name!r} on node {ni.name!r}: "
                                            f"{status.message}")
                diagnosis.node_to_status[ni.name] = status
                diagnosis.unschedulable_plugins.add(status.plugin)
                break
            else:
                feasible.append(ni)
        if nodes:
            self._next_start_node = (start + processed) % len(nodes)
        return feasible, None

    def _unfit(self, state: CycleState, pod: PodInfo, snapshot: Snapshot, diagnosis: Diagnosis) -> ScheduleResult:
        """Nothing fits: run PostFilter (preemption) until one plugin does more than say Unschedulable
        (RunPostFilterPlugins), and report the pod Unschedulable with the diagnosis."""
        nominated = None
        reasons: list[str] = []
        for p in self.post_filter_plugins:
            returned = p.post_filter(state, pod, snapshot, diagnosis)
            status = status_of(returned.status, p.name)
            reasons.extend(status.reasons)
            if status.code is not Code.UNSCHEDULABLE:
                nominated = returned.nominated_node if status.is_success else None
                break
        diagnosis.post_filter_msg = ", ".join(reasons)
        status = Status(Code.UNSCHEDULABLE, (diagnosis.message(),))
        return ScheduleResult(pod, status, diagnosis=diagnosis, state=state, nominated_node=nominated)

    def _select(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> tuple[str, Status | None]:
        totals = [0] * len(nodes)
        for p in self.score_plugins:
            if p.name in state.skip_score:
                continue
            scores = {ni.name: p.score(state, pod, ni) for ni in nodes}
            normalize = getattr(p, "normalize_score", None)
            if normalize is not None:
                normalize(state, pod, scores)
            weight = self.weights[p.name]
            for i, ni in enumerate(nodes):
                score = scores[ni.name]
                if not MIN_NODE_SCORE <= score <= MAX_NODE_SCORE:
                    return "", Status.error(f"plugin {p.name!r} returns an invalid score {score}, it should in "
                                            f"the range of [{MIN_NODE_SCORE}, {MAX_NODE_SCORE}] after normalizing")
                totals[i] += score * weight
        # Highest total wins; ties go to the first node by name (upstream picks among ties at random).
        best = max(range(len(nodes)), key=lambda i: (totals[i], -i))
        return nodes[best].name, None

    def _reserve_and_permit(self, result: ScheduleResult, snapshot: Snapshot) -> ScheduleResult:
        state, pod, node = result.state, result.pod, result.node
        assert state is not None and node is not None
        for p in self.reserve_plugins:
            status = status_of(p.reserve(state, pod, node), p.name)
            if not status.is_success:
                return self._abandon(result, snapshot, status, "Reserve")
        waits: dict[str, float] = {}
        for p in self.permit_plugins:
            status = status_of(p.permit(state, pod, node), p.name)
            if status.code is Code.WAIT:
                waits[p.name] = min(status.timeout or 0.0, MAX_PERMIT_TIMEOUT)
            elif not status.is_success:
                return self._abandon(result, snapshot, status, "Permit")
        if waits:
            result.status = Status(Code.WAIT, (f'one or more plugins asked to wait and no plugin rejected pod '
                                               f'"{pod.pod.name}"',))
            result.waiting = WaitingPod(result, waits)
            self.waiting_pods.add(result.waiting)
        return result

    def _abandon(self, result: ScheduleResult, snapshot: Snapshot, status: Status, point: str) -> ScheduleResult:
        """Undo Reserve and the assumption after a rejection at ``point``; a rejection on the
        chosen node reads as "0/1 nodes are available: 1 <reason>." (schedule_one.go)."""
        assert result.state is not None and result.node is not None
        self.unreserve(result.state, result.pod, result.node, snapshot)
        node = result.node
        result.node = None
        if status.is_rejected:
            result.diagnosis = Diagnosis(1, {node: status}, unschedulable_plugins={status.plugin} - {""})
            result.status = Status(status.code, (result.diagnosis.message(),), status.plugin)
        else:
            result.status = Status.error(f"running {point} plugin {status.plugin!r}: {status.message}")
        return result

    def unreserve(self, state: CycleState, pod: PodInfo, node: str, snapshot: Snapshot) -> None:
        """Run Unreserve in reverse order and drop the pod's assumption from ``snapshot``."""
        for p in reversed(self.reserve_plugins):
            p.unreserve(state, pod, node)
        snapshot.forget(pod.key)

    def take_decided(self, snapshot: Snapshot) -> list[ScheduleResult]:
        """Hand back every waiting pod that has been allowed or rejected, by pod key.

        An allowed pod's result has status Success (bind it); a rejected one has been unreserved
        and reads like a Permit rejection on its node.
        """
        results = []
        for waiting in self.waiting_pods.pop_decided():
            result = waiting.result
            result.waiting = None
            assert waiting.status is not None
            if waiting.status.is_success:
                result.status = SUCCESS
            else:
                self._abandon(result, snapshot, waiting.status, "Permit")
            results.append(result)
        return results

    # -- the binding cycle (called by the controller, whose plugins may do I/O) --------------------
    def pre_bind(self, state: CycleState, pod: PodInfo, node: str) -> Status:
        for p in self.pre_bind_plugins:
            status = status_of(p.pre_bind(state, pod, node), p.name)
            if not status.is_success and status.code is not Code.SKIP:  # Skip: nothing to do for this pod
                return status
        return SUCCESS

    def bind(self, state: CycleState, pod: PodInfo, node: str) -> Status:
        for p in self.bind_plugins:
            status = status_of(p.bind(state, pod, node), p.name)
            if status.code is not Code.SKIP:
                return status
        return Status.error(f"no Bind plugin bound pod {pod.key!r}")
