"""The pod-plane scheduling policy, without a store: framework, default plugins, snapshot and queue."""

from __future__ import annotations

import time

import pytest

from mlplane.api import Node, Pod
from mlplane.policy.pod import (
    Code, Framework, PodInfo, PostFilterResult, PreFilterResult, SchedulingQueue, Snapshot, Status, WaitingPods,
    default_framework, default_plugins,
)
from mlplane.policy.pod.waiting import go_duration
from mlplane.policy.pod.plugins import NodeResourcesFit, NodeResourcesLeastAllocated


def node(name, cpu="4", memory="8Gi", pods="110", *, labels=None, taints=None, unschedulable=None, gpus=None):
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = gpus
    return Node.model_validate({"metadata": {"name": name, "labels": labels},
                                "spec": {"taints": taints, "unschedulable": unschedulable},
                                "status": {"allocatable": allocatable}})


def pod(name, cpu=None, memory=None, *, limits=None, node_name=None, phase=None, gpu=None, **spec):
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory), ("nvidia.com/gpu", gpu)) if v is not None}
    resources = {"requests": requests} if requests else {}
    if limits:
        resources["limits"] = limits
    p = Pod.model_validate({"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
                            "spec": {"containers": [{"name": "main", "resources": resources}], "nodeName": node_name,
                                     **spec}})
    if phase:
        p.status.phase = phase
    return p


# --- NodeResourcesFit ---------------------------------------------------------------------------

def test_a_pod_that_fits_is_placed_and_counts_against_its_node():
    snap = Snapshot.build([node("a", cpu="2")])
    result = default_framework().schedule(pod("p", cpu="1500m", memory="1Gi"), snap)
    assert result.status.is_success and result.node == "a"
    assert snap.node_of("default/p") == "a" and snap.is_assumed("default/p")
    assert snap.get("a").requested.milli_cpu == 1500
    # The assumed pod is counted: a second one no longer fits.
    again = default_framework().schedule(pod("q", cpu="1"), snap)
    assert again.status.code is Code.UNSCHEDULABLE
    assert again.message == "0/1 nodes are available: 1 Insufficient cpu."


def test_unschedulable_message_counts_reasons_per_node_like_kube_scheduler():
    snap = Snapshot.build([node("a", cpu="1", labels={"zone": "x"}), node("b", labels={"zone": "y"}), node("c")])
    result = default_framework().schedule(pod("p", cpu="2", nodeSelector={"zone": "x"}), snap)
    assert result.status.is_rejected and result.node is None
    assert result.message == ("0/3 nodes are available: 1 Insufficient cpu, "
                              "2 node(s) didn't match Pod's node affinity/selector.")
    assert result.diagnosis.unschedulable_plugins == {"NodeResourcesFit", "NodeAffinity"}
    assert snap.node_of("default/p") is None


def test_every_insufficient_resource_of_a_node_is_reported():
    snap = Snapshot.build([node("a", cpu="1", memory="1Gi", pods="1")], [pod("old", node_name="a")])
    result = default_framework().schedule(pod("p", cpu="2", memory="2Gi"), snap)
    assert result.message == "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods."


def test_requests_default_to_limits_and_sum_over_containers():
    p = Pod.model_validate({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
        {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
        {"name": "b", "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "2"}}}]}})
    info = PodInfo(p)
    assert (info.requests.milli_cpu, info.requests.memory) == (1500, 2**30)
    snap = Snapshot.build([node("a", cpu="1400m")])
    assert default_framework().schedule(p, snap).message == "0/1 nodes are available: 1 Insufficient cpu."


def test_extended_resources_are_counted_like_cpu():
    snap = Snapshot.build([node("cpu-only"), node("gpu", gpus="2")])
    fw = default_framework()
    placed = [fw.schedule(pod(f"p{i}", gpu="1"), snap).node for i in range(2)]
    assert placed == ["gpu", "gpu"]
    third = fw.schedule(pod("p2", gpu="1"), snap)
    assert third.message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    assert fw.schedule(pod("cpu", cpu="1"), snap).node is not None  # no GPU asked, none needed


def test_terminal_pods_do_not_count_and_bound_pods_do():
    snap = Snapshot.build([node("a", cpu="2")], [pod("done", cpu="2", node_name="a", phase="Succeeded"),
                                                 pod("running", cpu="1", node_name="a", phase="Running")])
    assert snap.get("a").requested.milli_cpu == 1000
    snap.set_pod(pod("running", cpu="1", node_name="a", phase="Failed"))
    assert snap.get("a").requested.milli_cpu == 0 and not snap.get("a").pods


# --- nodeSelector, nodeName, cordons, taints ----------------------------------------------------

def test_node_selector_picks_the_labelled_node():
    snap = Snapshot.build([node("a"), node("b", labels={"accelerator": "h100", "zone": "z"})])
    assert default_framework().schedule(pod("p", nodeSelector={"accelerator": "h100"}), snap).node == "b"


def test_node_name_and_cordoned_nodes():
    snap = Snapshot.build([node("a", unschedulable=True), node("b"), node("c")])
    result = default_framework().schedule(pod("p", nodeName="c", tolerations=None), snap)
    assert result.node == "c"
    cordoned = Snapshot.build([node("a", unschedulable=True)])
    assert default_framework().schedule(pod("p"), cordoned).message == \
        "0/1 nodes are available: 1 node(s) were unschedulable."
    tolerant = pod("q", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                      "effect": "NoSchedule"}])
    assert default_framework().schedule(tolerant, cordoned).node == "a"


def test_untolerated_taints_are_reported_with_key_and_value():
    taint = [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
    snap = Snapshot.build([node("a", taints=taint), node("b", taints=taint)])
    result = default_framework().schedule(pod("p"), snap)
    assert result.message == "0/2 nodes are available: 2 node(s) had untolerated taint {gpu: true}."


@pytest.mark.parametrize("toleration, fits", [
    ({"key": "gpu", "operator": "Exists"}, True),
    ({"key": "gpu", "operator": "Equal", "value": "true"}, True),
    ({"key": "gpu", "value": "true", "effect": "NoSchedule"}, True),  # operator defaults to Equal
    ({"key": "gpu", "operator": "Equal", "value": "false"}, False),
    ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),  # another effect
    ({"operator": "Exists"}, True),  # an empty key with Exists tolerates everything
    ({"key": "other", "operator": "Exists"}, False),
])
def test_tolerations_match_taints_by_key_operator_value_and_effect(toleration, fits):
    snap = Snapshot.build([node("a", taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}])])
    result = default_framework().schedule(pod("p", tolerations=[toleration]), snap)
    assert (result.node == "a") is fits


def test_no_execute_taints_filter_and_prefer_no_schedule_taints_only_score():
    snap = Snapshot.build([node("a", taints=[{"key": "k", "effect": "NoExecute"}]),
                           node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}]), node("c")])
    fw = default_framework()
    # "a" is filtered; "b" and "c" are equally empty, but "b" has a taint the pod does not tolerate.
    assert fw.schedule(pod("p"), snap).node == "c"
    tolerant = pod("q", tolerations=[{"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"}])
    only_b = Snapshot.build([node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}]), node("c")])
    assert fw.schedule(tolerant, only_b).node == "b"  # tolerated: a tie, broken by name
    alone = Snapshot.build([node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}])])
    assert fw.schedule(pod("r"), alone).node == "b"  # a preference, not a filter


# --- scoring ------------------------------------------------------------------------------------

def test_least_allocated_prefers_the_emptier_node():
    snap = Snapshot.build([node("a"), node("b")], [pod("busy", cpu="3", memory="6Gi", node_name="a")])
    assert default_framework().schedule(pod("p", cpu="500m"), snap).node == "b"
    bigger = Snapshot.build([node("a", cpu="4", memory="8Gi"), node("b", cpu="16", memory="32Gi")])
    assert default_framework().schedule(pod("p", cpu="1", memory="1Gi"), bigger).node == "b"


def test_ties_go_to_the_first_node_by_name_and_assumed_pods_spread_the_next():
    snap = Snapshot.build([node("b"), node("c"), node("a")])
    fw = default_framework()
    assert [fw.schedule(pod(f"p{i}", cpu="1"), snap).node for i in range(4)] == ["a", "b", "c", "a"]


def test_pods_without_requests_still_spread_by_their_non_zero_defaults():
    snap = Snapshot.build([node("a"), node("b")])
    fw = default_framework()
    assert [fw.schedule(pod(f"p{i}"), snap).node for i in range(2)] == ["a", "b"]


def test_least_allocated_can_weigh_extended_resources():
    plugin = NodeResourcesLeastAllocated({"nvidia.com/gpu": 1})
    snap = Snapshot.build([node("a", gpus="8"), node("b", gpus="8")],
                          [pod("x", gpu="4", node_name="a")])
    fw = Framework([NodeResourcesFit(), plugin])
    assert fw.schedule(pod("p", gpu="1"), snap).node == "b"
    with pytest.raises(ValueError, match="weight of resource 'cpu' must be a positive integer"):
        NodeResourcesLeastAllocated({"cpu": 0})


# --- gates and empty clusters -------------------------------------------------------------------

def test_a_gated_pod_is_not_scheduled():
    snap = Snapshot.build([node("a")])
    result = default_framework().schedule(
        pod("p", schedulingGates=[{"name": "example.com/a"}, {"name": "example.com/b"}]), snap)
    assert result.gated and result.node is None
    assert result.status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE and result.status.plugin == "SchedulingGates"
    assert result.message == "waiting for scheduling gates: [example.com/a example.com/b]"
    assert snap.node_of("default/p") is None


def test_no_nodes_at_all():
    result = default_framework().schedule(pod("p"), Snapshot())
    assert result.status.is_rejected and result.message == "no nodes available to schedule pods"


# --- custom plugins at every extension point ----------------------------------------------------

class Recorder:
    """A plugin at every extension point that logs its calls; behaviour set per test."""

    name = "Recorder"

    def __init__(self, log, *, only=None, pre_filter=None, filter_out=(), post_filter=None, prefer=None,
                 reserve=None, permit=None):
        self.log, self.only, self.pre_filter_status, self.filter_out = log, only, pre_filter, set(filter_out)
        self.post_filter_result, self.prefer, self.reserve_status = post_filter, prefer, reserve
        self.permit_status = permit

    def pre_enqueue(self, pod):
        self.log.append(("PreEnqueue", pod.key))

    def pre_filter(self, state, pod, snapshot):
        self.log.append(("PreFilter", pod.key))
        state.write("Recorder", "seen")
        if self.only is not None:
            return PreFilterResult(frozenset(self.only))
        return self.pre_filter_status

    def filter(self, state, pod, node):
        self.log.append(("Filter", node.name, state.read("Recorder")))
        if node.name in self.filter_out:
            return Status.unschedulable("node(s) were not to the recorder's taste")
        return None

    def post_filter(self, state, pod, snapshot, diagnosis):
        self.log.append(("PostFilter", sorted(diagnosis.node_to_status)))
        return self.post_filter_result or PostFilterResult(Status.unschedulable("preemption: nothing to preempt"))

    def score(self, state, pod, node):
        self.log.append(("Score", node.name))
        return 100 if node.name == self.prefer else 0

    def reserve(self, state, pod, node):
        self.log.append(("Reserve", node))
        return self.reserve_status

    def unreserve(self, state, pod, node):
        self.log.append(("Unreserve", node))

    def permit(self, state, pod, node):
        self.log.append(("Permit", node))
        return self.permit_status

    def pre_bind(self, state, pod, node):
        self.log.append(("PreBind", node))

    def bind(self, state, pod, node):
        self.log.append(("Bind", node))
        return None


def test_a_custom_plugin_runs_at_every_extension_point_in_order():
    log = []
    fw = default_framework(Recorder(log, prefer="c"))
    snap = Snapshot.build([node("a"), node("b"), node("c")])
    result = fw.schedule(pod("p", cpu="1"), snap)
    # Its Score (weight 1) of 100 for "c" outweighs least-allocated's tie between equal nodes.
    assert result.status.is_success and result.node == "c"
    assert [e[0] for e in log] == ["PreEnqueue", "PreFilter", "Filter", "Filter", "Filter", "Score", "Score", "Score",
                                   "Reserve", "Permit"]
    assert log[2] == ("Filter", "a", "seen")  # PreFilter's cycle state reaches Filter
    assert fw.pre_bind(result.state, result.pod, "c").is_success
    assert fw.bind(result.state, result.pod, "c").is_success
    assert log[-2:] == [("PreBind", "c"), ("Bind", "c")]


class Prefer:
    """A Score plugin that gives one node 100 and the others 0."""

    def __init__(self, name, node):
        self.name, self.node = name, node

    def score(self, state, pod, node):
        return 100 if node.name == self.node else 0


def test_score_weights_scale_a_plugins_say():
    plugins = [NodeResourcesFit(), Prefer("LikesA", "a"), Prefer("LikesB", "b")]
    snap = Snapshot.build([node("a"), node("b")])
    assert Framework(plugins).schedule(pod("p"), snap).node == "a"  # 100 each: the tie goes to "a"
    snap = Snapshot.build([node("a"), node("b")])
    assert Framework(plugins, weights={"LikesB": 2}).schedule(pod("p"), snap).node == "b"


def test_pre_filter_can_narrow_reject_or_skip_its_filter():
    snap = Snapshot.build([node("a"), node("b"), node("c")])
    narrowed = default_framework(Recorder([], only={"b", "c"}, filter_out={"b"}))
    assert narrowed.schedule(pod("p"), snap).node == "c"
    none_left = default_framework(Recorder([], only={"b"}, filter_out={"b"}))
    assert none_left.schedule(pod("q"), snap).message == (
        "0/3 nodes are available: 1 node(s) were not to the recorder's taste, "
        "2 node(s) didn't satisfy plugin(s) [Recorder]. preemption: nothing to preempt")
    empty = default_framework(Recorder([], only=set()))
    assert empty.schedule(pod("r"), snap).message == (
        "0/3 nodes are available: node(s) didn't satisfy plugin Recorder. preemption: nothing to preempt")
    rejecting = default_framework(Recorder([], pre_filter=Status.unresolvable("claim not allocatable")))
    assert rejecting.schedule(pod("s"), snap).message == \
        "0/3 nodes are available: claim not allocatable. preemption: nothing to preempt"
    log = []
    skipping = default_framework(Recorder(log, pre_filter=Status.skip(), filter_out={"a", "b", "c"}))
    assert skipping.schedule(pod("t"), snap).node == "a"
    assert not [e for e in log if e[0] == "Filter"]


def test_post_filter_runs_when_nothing_fits_and_may_nominate_a_node():
    log = []
    fw = default_framework(Recorder(log, post_filter=PostFilterResult(Status(), nominated_node="b")))
    snap = Snapshot.build([node("a", cpu="1"), node("b", cpu="1")])
    result = fw.schedule(pod("p", cpu="2"), snap)
    assert result.status.is_rejected and result.nominated_node == "b"
    assert ("PostFilter", ["a", "b"]) in log
    assert result.message == "0/2 nodes are available: 2 Insufficient cpu."


def test_reserve_rejection_unreserves_and_drops_the_assumption():
    log = []
    fw = default_framework(Recorder(log, reserve=Status.unschedulable("volume already taken")))
    snap = Snapshot.build([node("a"), node("b")])
    result = fw.schedule(pod("p", cpu="1"), snap)
    assert result.status.is_rejected and result.node is None
    assert result.message == "0/1 nodes are available: 1 volume already taken."
    assert ("Unreserve", "a") in log and "Permit" not in [e[0] for e in log]
    assert snap.node_of("default/p") is None and snap.get("a").requested.milli_cpu == 0


def test_permit_rejection_is_honoured():
    log = []
    fw = default_framework(Recorder(log, permit=Status.unschedulable("not now")))
    snap = Snapshot.build([node("a")])
    result = fw.schedule(pod("p", cpu="1"), snap)
    assert result.status.is_rejected and result.status.plugin == "Recorder"
    assert result.message == "0/1 nodes are available: 1 not now."
    assert log[-1] == ("Unreserve", "a") and snap.node_of("default/p") is None


def test_permit_wait_holds_the_pod_until_allowed_or_timed_out():
    fw = default_framework(Recorder([], permit=Status.wait(90)))
    snap = Snapshot.build([node("a", cpu="2")])
    held = fw.schedule(pod("p", cpu="1"), snap)
    assert held.status.code is Code.WAIT and held.node == "a"
    assert snap.is_assumed("default/p")  # the room stays reserved while it waits
    waiting = fw.waiting_pods.get("default/p")
    assert waiting is held.waiting and waiting.pending_plugins == ["Recorder"] and waiting.timeouts == {"Recorder": 90}
    assert fw.take_decided(snap) == []
    waiting.allow("Recorder")
    [done] = fw.take_decided(snap)
    assert done is held and done.status.is_success and done.node == "a" and len(fw.waiting_pods) == 0

    timed = fw.schedule(pod("q", cpu="1"), snap)
    timed.waiting.expire("Recorder")
    [failed] = fw.take_decided(snap)
    assert failed.status.is_rejected and failed.node is None
    assert failed.message == ("0/1 nodes are available: 1 rejected due to timeout after waiting 1m30s "
                              "at plugin Recorder.")
    assert snap.node_of("default/q") is None


class Gang:
    """A toy coscheduling Permit: hold pods until ``size`` of them are reserved, then let all go."""

    name = "Gang"

    def __init__(self, waiting: WaitingPods, size: int):
        self.waiting, self.size = waiting, size

    def permit(self, state, pod, node):
        if len(self.waiting) + 1 < self.size:
            return Status.wait(30)
        for w in self.waiting:
            w.allow(self.name)
        return None


def test_a_permit_plugin_can_release_pods_held_earlier():
    waiting = WaitingPods()
    fw = Framework([*default_plugins(), Gang(waiting, 3)], waiting_pods=waiting)
    snap = Snapshot.build([node("a"), node("b")])
    first = [fw.schedule(pod(f"w{i}", cpu="1"), snap) for i in range(2)]
    assert [r.status.code for r in first] == [Code.WAIT, Code.WAIT]
    last = fw.schedule(pod("w2", cpu="1"), snap)
    assert last.status.is_success
    released = fw.take_decided(snap)
    assert [(r.pod.key, r.status.is_success) for r in released] == [("default/w0", True), ("default/w1", True)]


class Binder:
    def __init__(self, name, log, skip):
        self.name, self.log, self.skip = name, log, skip

    def bind(self, state, pod, node):
        self.log.append(self.name)
        return Status.skip() if self.skip else None


def test_bind_goes_to_the_first_binder_that_does_not_skip():
    log = []
    fw = Framework([*default_plugins(), Binder("Other", log, True), Binder("Mine", log, False),
                    Binder("Late", log, False)])
    result = fw.schedule(pod("p"), Snapshot.build([node("a")]))
    assert fw.bind(result.state, result.pod, result.node).is_success and log == ["Other", "Mine"]
    only_skips = Framework([*default_plugins(), Binder("Other", log, True)])
    result = only_skips.schedule(pod("q"), Snapshot.build([node("a")]))
    status = only_skips.bind(result.state, result.pod, result.node)
    assert status.code is Code.ERROR and status.message == "no Bind plugin bound pod 'default/q'"


def test_a_score_out_of_range_is_an_error_not_a_choice():
    class Wild:
        name = "Wild"

        def score(self, state, pod, node):
            return 101

    snap = Snapshot.build([node("a"), node("b")])
    result = Framework([*default_plugins(), Wild()]).schedule(pod("p"), snap)
    assert result.status.code is Code.ERROR and "invalid score 101" in result.message
    assert snap.node_of("default/p") is None


def test_framework_rejects_bad_configuration():
    with pytest.raises(ValueError, match="named more than once: NodeName"):
        Framework([*default_plugins(), default_plugins()[2]])
    with pytest.raises(ValueError, match="'NodeName', which is not a Score plugin"):
        Framework(default_plugins(), weights={"NodeName": 2})
    with pytest.raises(ValueError, match="must be a positive integer, got 0"):
        Framework(default_plugins(), weights={"TaintToleration": 0})


def test_go_durations_read_like_upstream():
    assert [go_duration(s) for s in (0.5, 10, 90, 1.5, 3600)] == ["500ms", "10s", "1m30s", "1.5s", "1h0m0s"]


# --- the snapshot -------------------------------------------------------------------------------

def test_snapshot_confirms_assumptions_and_survives_node_churn():
    snap = Snapshot.build([node("a")])
    info = PodInfo(pod("p", cpu="1"))
    snap.assume(info, "a")
    snap.set_pod(pod("p", cpu="1"))  # an unbound update (our own status write) keeps the assumption
    assert snap.is_assumed("default/p")
    snap.set_pod(pod("p", cpu="1", node_name="a", phase="Running"))
    assert not snap.is_assumed("default/p") and snap.get("a").requested.milli_cpu == 1000
    snap.forget("default/p")  # a confirmed pod is not forgotten
    assert snap.node_of("default/p") == "a"
    snap.remove_node("a")
    assert len(snap) == 0 and snap.node_of("default/p") == "a"
    snap.set_node(node("a"))
    assert snap.get("a").requested.milli_cpu == 1000
    assert snap.remove_pod("default/p") and snap.get("a").requested.milli_cpu == 0


# --- the queue ----------------------------------------------------------------------------------

def queue_pod(name, priority=None, created="2026-01-01T00:00:00Z", **spec):
    p = pod(name, priority=priority, **spec)
    p.metadata.creation_timestamp = created
    return PodInfo(p)


def test_queue_orders_by_priority_then_creation_then_name():
    q = SchedulingQueue(default_framework().pre_enqueue)
    for info in (queue_pod("b"), queue_pod("a"), queue_pod("old", created="2025-01-01T00:00:00Z"),
                 queue_pod("urgent", priority=10, created="2027-01-01T00:00:00Z")):
        q.add(info, 0)
    assert [q.pop(0).info.pod.name for _ in range(4)] == ["urgent", "old", "a", "b"]
    assert q.pop(0) is None


def test_queue_holds_unschedulable_pods_until_an_event_and_their_backoff():
    q = SchedulingQueue(default_framework().pre_enqueue)
    q.add(queue_pod("p"), 0)
    q.requeue(q.pop(0).key, 0, unschedulable=True)
    assert q.where("default/p") == "unschedulable" and q.pop(100) is None  # no event: it waits
    q.move_all(0.5)
    assert q.where("default/p") == "backoff" and q.next_ready() == 1.0 and q.pop(0.9) is None
    second = q.pop(1.0)
    assert second is not None and second.attempts == 2
    q.requeue(second.key, 1.0, unschedulable=True)
    q.move_all(1.5)
    assert q.next_ready() == 3.0  # the backoff doubles per attempt
    q.done(q.pop(3.0).key)
    assert "default/p" not in q


def test_queue_retries_a_pod_whose_cycle_overlapped_an_event():
    q = SchedulingQueue(default_framework().pre_enqueue)
    q.add(queue_pod("p"), 0)
    popped = q.pop(0)
    q.move_all(0)  # a node was added while p was being scheduled against the old snapshot
    q.requeue(popped.key, 0, unschedulable=True)
    assert q.where("default/p") == "backoff"


def test_queue_flushes_pods_unschedulable_for_too_long():
    q = SchedulingQueue(default_framework().pre_enqueue)
    q.add(queue_pod("p"), 0)
    q.requeue(q.pop(0).key, 0, unschedulable=True)
    assert q.next_flush(30) == 30
    q.flush(29, 30)
    assert q.where("default/p") == "unschedulable"
    q.flush(30, 30)
    assert q.pop(30).info.pod.name == "p"


def test_queue_gates_pods_until_their_gates_are_removed_and_ignores_status_updates():
    q = SchedulingQueue(default_framework().pre_enqueue)
    status = q.add(queue_pod("p", schedulingGates=[{"name": "wait"}]), 0)
    assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE and q.where("default/p") == "gated"
    assert q.pop(0) is None
    assert q.add(queue_pod("p"), 0).is_success and q.pop(0).info.pod.name == "p"
    q.requeue("default/p", 0, unschedulable=True)
    with_status = queue_pod("p")
    with_status.pod.status.phase = "Pending"
    with_status.pod.status.message = "still waiting"
    q.add(with_status, 0)
    assert q.where("default/p") == "unschedulable"  # a status change cannot make it fit
    q.add(queue_pod("p", nodeSelector={"zone": "b"}), 0)
    assert q.where("default/p") == "backoff"  # a spec change can
    q.delete("default/p")
    assert q.pop(100) is None and len(q) == 0


# --- cost ---------------------------------------------------------------------------------------

def test_one_scheduling_decision_costs_well_under_a_millisecond():
    snap = Snapshot.build([node(f"n{i}", cpu="64", memory="256Gi", labels={"zone": f"z{i % 2}"},
                                taints=[{"key": "gpu", "effect": "PreferNoSchedule"}] if i % 3 == 0 else None)
                           for i in range(8)])
    fw = default_framework()
    pods = [PodInfo(pod(f"p{i}", cpu="100m", memory="128Mi")) for i in range(500)]
    start = time.perf_counter()
    for info in pods:
        assert fw.schedule(info, snap).status.is_success
    per_pod = (time.perf_counter() - start) / len(pods)
    assert per_pod < 1e-3, f"{per_pod * 1e6:.0f} µs per pod"


def test_num_feasible_nodes_to_find_follows_kube_scheduler():
    # pkg/scheduler/schedule_one_test.go TestNumFeasibleNodesToFind
    from mlplane.policy.pod.framework import num_feasible_nodes_to_find
    assert num_feasible_nodes_to_find(10) == 10
    assert num_feasible_nodes_to_find(99) == 99
    assert num_feasible_nodes_to_find(1000) == 420  # 50 - 1000/125 = 42%
    assert num_feasible_nodes_to_find(6000) == 300  # 50 - 48 = 2% -> at least 5%
    assert num_feasible_nodes_to_find(1000, 40) == 400
    assert num_feasible_nodes_to_find(1000, 100) == 1000
    assert num_feasible_nodes_to_find(150, 10) == 100  # never fewer than 100


def test_node_affinity_and_node_name_skip_filter_when_the_pod_asks_nothing():
    # nodeaffinity PreFilter returns Skip for a pod without affinity or nodeSelector; NodeName does the
    # same without spec.nodeName. Filter is then not run for them, and decisions are unchanged.
    from mlplane.api import Pod as _Pod
    from mlplane.policy.pod.interface import Code
    from mlplane.policy.pod.plugins import NodeAffinity, NodeName
    from mlplane.policy.pod.snapshot import PodInfo

    plain = PodInfo(_Pod.model_validate({"metadata": {"name": "p", "namespace": "default"},
                                         "spec": {"containers": [{"name": "c"}]}}))
    picky = PodInfo(_Pod.model_validate({"metadata": {"name": "q", "namespace": "default"},
                                         "spec": {"containers": [{"name": "c"}], "nodeSelector": {"gpu": "h200"},
                                                  "nodeName": "n1"}}))
    for plugin in (NodeAffinity(), NodeName()):
        assert plugin.pre_filter(None, plain, None).code is Code.SKIP
        assert plugin.pre_filter(None, picky, None) is None
