"""The default scheduler controller against a real embedded store, with Node objects made here."""

from __future__ import annotations

import time

import pytest

from conftest import events_about, get_pod, wait_for
from mlplane.api import Node, Pod
from mlplane.api.meta import find_condition
from mlplane.api.quantity import milli
from mlplane.control.controllers.scheduler import DefaultBinder, Scheduler
from mlplane.policy.pod import Framework, Status, WaitingPods, default_plugins


def make_node(store, name, cpu="4", memory="8Gi", pods="110", **spec):
    return store.create(Node.model_validate({
        "metadata": {"name": name}, "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}}))


def make_pod(store, name, cpu="100m", **spec):
    return store.create(Pod.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "command": ["true"], "resources": {"requests": {"cpu": cpu}}}],
                 **spec}}))


@pytest.fixture
def start(store):
    started = []

    def start_scheduler(**kwargs):
        s = Scheduler(store, **kwargs).start()
        started.append(s)
        return s

    yield start_scheduler
    for s in started:
        s.stop()


def test_pending_pods_are_bound_and_the_binding_is_reported(store, start):
    make_node(store, "n1")
    make_node(store, "n2")
    start()
    for i in range(3):
        make_pod(store, f"p{i}", cpu="1")
    wait_for(lambda: all(get_pod(store, f"p{i}").spec.node_name for i in range(3)), what="pods bound")
    placed = {get_pod(store, f"p{i}").spec.node_name for i in range(3)}
    assert placed == {"n1", "n2"}  # least-allocated spreads them
    p0 = get_pod(store, "p0")
    assert find_condition(p0.status.conditions, "PodScheduled").status == "True"
    scheduled = wait_for(lambda: [e for e in events_about(store, "p0") if e.reason == "Scheduled"], what="event")
    assert scheduled[0].type == "Normal"
    assert scheduled[0].message == f"Successfully assigned default/p0 to {p0.spec.node_name}"
    assert scheduled[0].source.component == "default-scheduler"


def test_an_impossible_pod_says_why_and_schedules_once_a_big_enough_node_arrives(store, start):
    make_node(store, "small-1", cpu="1")
    make_node(store, "small-2", cpu="1")
    start()
    make_pod(store, "big", cpu="4")
    message = "0/2 nodes are available: 2 Insufficient cpu."

    def unschedulable():
        c = find_condition(get_pod(store, "big").status.conditions, "PodScheduled")
        return c is not None and c.status == "False" and c.reason == "Unschedulable" and c
    condition = wait_for(unschedulable, what="PodScheduled=False")
    assert condition.message == message
    warning = wait_for(lambda: [e for e in events_about(store, "big") if e.reason == "FailedScheduling"], what="event")
    assert warning[0].type == "Warning" and warning[0].message == message
    assert get_pod(store, "big").spec.node_name is None

    make_node(store, "large", cpu="8")
    bound = wait_for(lambda: get_pod(store, "big").spec.node_name, timeout=5, what="bound after the node arrived")
    assert bound == "large"
    assert find_condition(get_pod(store, "big").status.conditions, "PodScheduled").status == "True"


def test_a_gated_pod_waits_for_its_gates(store, start):
    make_node(store, "n1")
    start()
    make_pod(store, "gated", schedulingGates=[{"name": "example.com/quota"}])

    def gated():
        c = find_condition(get_pod(store, "gated").status.conditions, "PodScheduled")
        return c is not None and c.reason == "SchedulingGated" and c
    condition = wait_for(gated, what="SchedulingGated")
    assert condition.status == "False"
    assert condition.message == "Scheduling is blocked due to non-empty scheduling gates"
    assert get_pod(store, "gated").spec.node_name is None
    assert not events_about(store, "gated")  # waiting on a gate is not a failure

    ungated = get_pod(store, "gated")
    ungated.spec.scheduling_gates = None
    store.update(ungated)
    assert wait_for(lambda: get_pod(store, "gated").spec.node_name, what="bound after ungating") == "n1"


def test_a_hundred_pods_are_bound_quickly_without_overcommitting_a_node(store, start):
    # 2 x 5 CPUs and 100 pods of 100m: they fit only if every decision counts the ones before it.
    make_node(store, "n1", cpu="5")
    make_node(store, "n2", cpu="5")
    start()
    began = time.monotonic()
    for i in range(100):
        make_pod(store, f"w{i:03}", cpu="100m")
    make_pod(store, "zz-one-too-many", cpu="100m")

    def all_placed():
        pods = [p for p in store.list(Pod, "default").items if p.name != "zz-one-too-many"]
        return len(pods) == 100 and all(p.spec.node_name for p in pods) and pods
    pods = wait_for(all_placed, timeout=10, what="100 pods bound")
    elapsed = time.monotonic() - began
    assert elapsed < 5, f"binding 100 pods took {elapsed:.1f}s"
    per_node = {"n1": 0, "n2": 0}
    for p in pods:
        per_node[p.spec.node_name] += milli(p.spec.containers[0].resources.requests["cpu"])
    assert per_node == {"n1": 5000, "n2": 5000}
    late = wait_for(lambda: find_condition(get_pod(store, "zz-one-too-many").status.conditions, "PodScheduled"),
                    what="the 101st pod reported")
    assert late.message == "0/2 nodes are available: 2 Insufficient cpu."


def test_pods_of_other_schedulers_and_bound_pods_are_left_alone(store, start):
    make_node(store, "n1")
    make_node(store, "n2")
    start()
    make_pod(store, "mine", cpu="1")
    make_pod(store, "theirs", schedulerName="other-scheduler")
    make_pod(store, "pinned", nodeName="n2")
    wait_for(lambda: get_pod(store, "mine").spec.node_name, what="mine bound")
    time.sleep(0.2)
    assert get_pod(store, "theirs").spec.node_name is None
    assert get_pod(store, "theirs").status.conditions is None
    assert not events_about(store, "theirs") and not events_about(store, "pinned")
    assert get_pod(store, "pinned").spec.node_name == "n2"


def test_room_freed_by_a_finished_or_deleted_pod_is_used(store, start):
    make_node(store, "n1", cpu="1")
    start()
    make_pod(store, "first", cpu="1")
    wait_for(lambda: get_pod(store, "first").spec.node_name, what="first bound")
    make_pod(store, "second", cpu="1")
    make_pod(store, "third", cpu="1")
    wait_for(lambda: all(find_condition(get_pod(store, n).status.conditions, "PodScheduled")
                         for n in ("second", "third")), what="both reported unschedulable")
    finished = get_pod(store, "first")
    finished.status.phase = "Succeeded"
    store.update_status(finished)
    winner = wait_for(lambda: next((n for n in ("second", "third") if get_pod(store, n).spec.node_name), None),
                      what="a waiting pod bound into the freed room")
    other = "third" if winner == "second" else "second"
    store.delete(Pod, "default", winner, grace_period_seconds=0)  # no node agent here to confirm a graceful stop
    wait_for(lambda: get_pod(store, other).spec.node_name, what="the last pod bound after a delete")


class Gang:
    """Permit: hold pods until ``size`` have a node, then release them together."""

    name = "Gang"

    def __init__(self, waiting: WaitingPods, size: int, timeout: float):
        self.waiting, self.size, self.timeout = waiting, size, timeout

    def permit(self, state, pod, node):
        if len(self.waiting) + 1 < self.size:
            return Status.wait(self.timeout)
        for w in self.waiting:
            w.allow(self.name)
        return None


def test_pods_held_at_permit_are_bound_when_released(store, start):
    make_node(store, "n1")
    waiting = WaitingPods()
    scheduler = start(framework=Framework([*default_plugins(), Gang(waiting, 2, 30)], waiting_pods=waiting))
    make_pod(store, "a")
    wait_for(lambda: len(scheduler.framework.waiting_pods) == 1, what="a held at Permit")
    assert get_pod(store, "a").spec.node_name is None
    make_pod(store, "b")
    wait_for(lambda: get_pod(store, "a").spec.node_name and get_pod(store, "b").spec.node_name,
             what="both bound")


def test_a_permit_timeout_releases_the_reservation_and_is_reported(store, start):
    make_node(store, "n1", cpu="1")
    waiting = WaitingPods()
    start(framework=Framework([*default_plugins(), Gang(waiting, 2, 0.2)], waiting_pods=waiting))
    make_pod(store, "lonely", cpu="1")

    def reported():
        c = find_condition(get_pod(store, "lonely").status.conditions, "PodScheduled")
        return c is not None and c.reason == "Unschedulable" and c
    condition = wait_for(reported, what="timeout reported")
    assert condition.message == ("0/1 nodes are available: 1 rejected due to timeout after waiting 200ms "
                                 "at plugin Gang.")
    assert get_pod(store, "lonely").spec.node_name is None


class Exploding:
    """PreEnqueue: a buggy plugin that raises for pod "bad" on every call after the first."""

    name = "Exploding"

    def __init__(self):
        self.calls = 0

    def pre_enqueue(self, pod):
        if pod.pod.name == "bad":
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("plugin bug")
        return None


def test_an_error_outside_the_scheduling_cycle_does_not_stop_scheduling(store, start, caplog):
    make_node(store, "n1")
    plugin = Exploding()
    start(framework=Framework([*default_plugins(), plugin]))
    make_pod(store, "bad")  # its cycle raises, and so does putting it back in the queue
    wait_for(lambda: plugin.calls >= 3, what="the plugin to raise while the pod is requeued")
    make_pod(store, "good")
    assert wait_for(lambda: get_pod(store, "good").spec.node_name, what="good bound") == "n1"
    assert "scheduling loop failed" in caplog.text and "plugin bug" in caplog.text


class FailingFramework(Framework):
    """A framework whose bookkeeping of Permit-held pods fails until ``healed`` is set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures = 0
        self.healed = False

    def take_decided(self, snapshot):
        if not self.healed:
            self.failures += 1
            raise RuntimeError("broken")
        return super().take_decided(snapshot)


def test_a_persistent_loop_error_backs_off_and_scheduling_resumes_once_it_clears(store, start):
    make_node(store, "n1")
    framework = FailingFramework([*default_plugins(), DefaultBinder(store)])
    start(framework=framework)
    make_pod(store, "p")
    time.sleep(0.5)
    # 0.05 s doubling: tries at about 0, 0.05, 0.15, 0.35 s; a busy loop would make thousands.
    assert 1 <= framework.failures <= 6
    assert get_pod(store, "p").spec.node_name is None
    framework.healed = True
    assert wait_for(lambda: get_pod(store, "p").spec.node_name, timeout=5, what="p bound") == "n1"
