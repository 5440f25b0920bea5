"""The Kueue controller live on an embedded store, with the Job controller and no node agent: the
test plays kubelet by writing pod phases. Jobs labelled with a queue are held suspended, admitted
by quota, preempted by priority, and finish to make room, with Kueue's conditions and reasons."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conftest import wait_for
from mlplane.api import Conflict, Event, Job, Pod
from mlplane.api.kueue import ClusterQueue, Configuration, LocalQueue, ResourceFlavor, Workload, WorkloadPriorityClass
from mlplane.api.meta import find_condition, is_true
from mlplane.cli.main import main
from mlplane.control.controllers.job import JobController
from mlplane.control.controllers.kueue import KueueController, workload_name

V = "kueue.x-k8s.io/v1beta2"


@pytest.fixture
def plane(store):
    jobs = JobController(store, backoff_base=0.05).start()
    kueue = KueueController(store, backoff_base=30.0).start()
    yield store
    kueue.stop()
    jobs.stop()


def flavor(store, name="a100", labels=None, tolerations=None):
    store.create(ResourceFlavor.model_validate({"apiVersion": V, "kind": "ResourceFlavor", "metadata": {"name": name},
                                                "spec": {"nodeLabels": labels or {}, "tolerations": tolerations}}))


def cluster_queue(store, name="cq", cpu="2", flavor_name="a100", **spec):
    return store.create(ClusterQueue.model_validate({
        "apiVersion": V, "kind": "ClusterQueue", "metadata": {"name": name},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
            {"name": flavor_name, "resources": [{"name": "cpu", "nominalQuota": cpu}]}]}], **spec}}))


def local_queue(store, name="q", cq="cq", **spec):
    store.create(LocalQueue.model_validate({"apiVersion": V, "kind": "LocalQueue",
                                            "metadata": {"name": name, "namespace": "default"},
                                            "spec": {"clusterQueue": cq, **spec}}))


def priority_class(store, name, value):
    store.create(WorkloadPriorityClass.model_validate({"apiVersion": V, "kind": "WorkloadPriorityClass",
                                                       "metadata": {"name": name}, "value": value}))


def submit(store, name, *, cpu="1", parallelism=1, queue="q", priority=None, suspend=True) -> Job:
    """A Job created suspended, as Kueue users submit them (suspend=False exercises the window
    before the controller suspends it)."""
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    if priority:
        labels["kueue.x-k8s.io/priority-class"] = priority
    return store.create(Job.model_validate({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"suspend": suspend, "parallelism": parallelism, "completions": parallelism, "template": {"spec": {
            "restartPolicy": "Never", "nodeSelector": {"team": "ml"},
            "containers": [{"name": "main", "image": "python", "command": ["sleep", "60"],
                            "resources": {"requests": {"cpu": cpu}}}]}}}}))


def job(store, name) -> Job:
    return store.get(Job, "default", name)


def workload(store, name) -> Workload:
    j = job(store, name)
    return wait_for(lambda: next((w for w in store.list(Workload, "default").items
                                  if w.name == workload_name(j)), None), what=f"the Workload of {name}")


def condition(store, name, type_, status="True", reason=None, message=None):
    """Wait for the Job's Workload to have the condition (and message, if given), and return it."""
    def check():
        c = find_condition(workload(store, name).status.conditions, type_)
        return c if (c is not None and c.status == status and reason in (None, c.reason)
                     and message in (None, c.message)) else None
    return wait_for(check, what=f"{type_}={status} ({reason}) on the Workload of {name}", timeout=5)


def live_pods(store, name) -> list[Pod]:
    return [p for p in store.list(Pod, "default", label_selector=f"batch.kubernetes.io/job-name={name}").items
            if p.metadata.deletion_timestamp is None]


def wait_pods(store, name, count) -> list[Pod]:
    def check():
        found = live_pods(store, name)
        return (found or True) if len(found) == count else None
    return [] if count == 0 and wait_for(check, what=f"no pods of {name}", timeout=5) else wait_for(
        check, what=f"{count} pods of {name}", timeout=5)


def suspended(store, name, value=True) -> Job:
    def check():
        j = job(store, name)
        return j if j.spec.suspend is value else None
    return wait_for(check, what=f"{name} suspend={value}", timeout=5)


def succeed(store, pod: Pod) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for _ in range(20):
        current = store.get(Pod, "default", pod.name)
        current.status = type(current.status).model_validate({"phase": "Succeeded", "containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": 0, "finishedAt": stamp}}}]})
        try:
            store.update_status(current)
            return
        except Conflict:
            continue
    raise AssertionError(f"could not update pod {pod.name}")


def test_job_is_held_until_quota_exists_then_admitted_with_the_flavor_injected(plane):
    store = plane
    flavor(store, labels={"gpu": "a100"}, tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}])
    local_queue(store)
    submit(store, "plain", queue=None, suspend=False)
    submit(store, "train", parallelism=2, suspend=False)

    suspended(store, "train")
    wl = workload(store, "train")
    assert wl.name.startswith("job-train-") and len(wl.name) == len("job-train-") + 5
    assert wl.metadata.owner_references[0].name == "train" and wl.metadata.owner_references[0].controller
    assert wl.spec.queue_name == "q" and wl.spec.pod_sets[0].name == "main" and wl.spec.pod_sets[0].count == 2
    assert wl.spec.pod_sets[0].template.spec.node_selector == {"team": "ml"}
    pending = condition(store, "train", "QuotaReserved", "False", "Inadmissible")
    assert pending.message == "ClusterQueue cq doesn't exist"
    assert wait_pods(store, "train", 0) == []
    # A Job without the queue label is not Kueue's: it runs at once and gets no Workload.
    assert not job(store, "plain").spec.suspend and len(wait_pods(store, "plain", 1)) == 1

    cluster_queue(store, cpu="2")
    condition(store, "train", "QuotaReserved", reason="QuotaReserved")
    admitted = condition(store, "train", "Admitted", reason="Admitted")
    assert admitted.message == "The workload is admitted"
    wl = workload(store, "train")
    assert wl.to_dict()["status"]["admission"] == {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "main", "count": 2, "flavors": {"cpu": "a100"}, "resourceUsage": {"cpu": "2"}}]}
    started = suspended(store, "train", False)
    assert started.spec.template.spec.node_selector == {"team": "ml", "gpu": "a100"}
    assert started.to_dict()["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert all(p.spec.node_selector == {"team": "ml", "gpu": "a100"} for p in wait_pods(store, "train", 2))

    def cq_status():
        s = store.get(ClusterQueue, None, "cq").status
        return s if s.admitted_workloads == 1 else None
    status = wait_for(cq_status, what="ClusterQueue status", timeout=5)
    assert (status.pending_workloads, status.reserving_workloads) == (0, 1)
    assert [(u.name, [(r.name, r.total, r.borrowed) for r in u.resources]) for u in status.flavors_usage] == [
        ("a100", [("cpu", "2", "0")])]
    def lq_status():
        s = store.get(LocalQueue, "default", "q").status
        return s if s.admitted_workloads == 1 else None
    lq = wait_for(lq_status, what="LocalQueue status", timeout=5)
    assert [(u.name, [(r.name, r.total) for r in u.resources]) for u in lq.flavors_usage] == [("a100", [("cpu", "2")])]


def test_a_job_that_does_not_fit_waits_and_is_admitted_when_the_first_finishes(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    submit(store, "first", parallelism=2)
    condition(store, "first", "Admitted")
    suspended(store, "first", False)
    first_pods = wait_pods(store, "first", 2)
    submit(store, "second", cpu="1")

    pending = condition(store, "second", "QuotaReserved", "False", "Pending")
    assert "insufficient unused quota for cpu in flavor a100" in pending.message
    assert suspended(store, "second").spec.suspend and workload(store, "second").status.admission is None
    assert wait_for(lambda: store.get(ClusterQueue, None, "cq").status.pending_workloads == 1,
                    what="one pending workload in the ClusterQueue", timeout=5)

    for pod in first_pods:
        succeed(store, pod)
    finished = condition(store, "first", "Finished", reason="Succeeded")
    assert finished.message == "Job finished successfully"
    condition(store, "second", "Admitted", reason="Admitted")
    suspended(store, "second", False)
    assert len(wait_pods(store, "second", 1)) == 1


def test_higher_priority_job_preempts_a_lower_one_within_the_cluster_queue(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="1", preemption={"withinClusterQueue": "LowerPriority"})
    local_queue(store)
    priority_class(store, "low", 100)
    priority_class(store, "high", 1000)
    submit(store, "low", priority="low")
    condition(store, "low", "Admitted")
    wait_pods(store, "low", 1)
    assert workload(store, "low").spec.priority == 100

    submit(store, "high", priority="high")
    high_wl = workload(store, "high")
    evicted = condition(store, "low", "Evicted", reason="Preempted")
    preempted = condition(store, "low", "Preempted", reason="InClusterQueue")
    assert evicted.message == preempted.message
    assert preempted.message.startswith(f"Preempted to accommodate a workload (UID: {high_wl.uid}) due to "
                                        "prioritization in the ClusterQueue")
    victim = suspended(store, "low")
    assert victim.spec.template.spec.node_selector == {"team": "ml"}
    wait_pods(store, "low", 0)
    # Its quota is released once its pods are gone, and it waits out a backoff before queueing again.
    condition(store, "low", "QuotaReserved", "False", "Pending")
    condition(store, "low", "Admitted", "False", "NoReservation")
    requeued = condition(store, "low", "Requeued", "False", "Preempted")
    assert requeued.message == preempted.message
    low_wl = workload(store, "low")
    assert low_wl.status.admission is None and low_wl.status.requeue_state.count == 1
    assert low_wl.status.requeue_state.requeue_at is not None

    condition(store, "high", "Admitted", reason="Admitted")
    suspended(store, "high", False)
    assert len(wait_pods(store, "high", 1)) == 1


def test_a_job_for_a_missing_or_stopped_queue_stays_suspended_with_the_reason(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="4")
    local_queue(store, "held", stopPolicy="Hold")
    submit(store, "nowhere", queue="missing")
    submit(store, "paused", queue="held")

    assert condition(store, "nowhere", "QuotaReserved", "False", "Inadmissible").message == \
        "LocalQueue missing doesn't exist"
    assert condition(store, "paused", "QuotaReserved", "False", "Inadmissible").message == \
        "LocalQueue held is inactive (stopPolicy is Hold)"
    assert suspended(store, "nowhere").spec.suspend and suspended(store, "paused").spec.suspend
    assert wait_pods(store, "nowhere", 0) == [] and wait_pods(store, "paused", 0) == []


# --- the Kueue Configuration: waitForPodsReady, and ClusterQueue stopPolicy -----------------------

def kueue_config(**wait) -> Configuration:
    return Configuration.model_validate({"apiVersion": "config.kueue.x-k8s.io/v1beta1", "kind": "Configuration",
                                         "waitForPodsReady": {"enable": True, **wait}})


@pytest.fixture
def configured(store):
    """Start the Job and Kueue controllers with a Configuration; yields a function taking the
    waitForPodsReady fields."""
    started = []

    def start(**wait):
        started.append(JobController(store, backoff_base=0.05).start())
        started.append(KueueController(store, config=kueue_config(**wait)).start())
        return store
    yield start
    for part in reversed(started):
        part.stop()


def make_ready(store, pod: Pod) -> None:
    """Play kubelet: the pod runs and its Ready condition turns True."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for _ in range(20):
        current = store.get(Pod, "default", pod.name)
        current.status = type(current.status).model_validate({
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
            "containerStatuses": [{"name": "main", "ready": True, "state": {"running": {"startedAt": stamp}}}]})
        try:
            store.update_status(current)
            return
        except Conflict:
            continue
    raise AssertionError(f"could not update pod {pod.name}")


def test_pods_ready_turns_true_when_every_pod_of_the_admitted_job_is_ready(configured):
    store = configured(timeout="30s")
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    submit(store, "train", parallelism=2)
    condition(store, "train", "Admitted")
    waiting = condition(store, "train", "PodsReady", "False", "WaitForStart")
    assert waiting.message == "Not all pods are ready or succeeded"
    first, second = wait_pods(store, "train", 2)

    make_ready(store, first)
    assert wait_for(lambda: job(store, "train").status.ready == 1, what="one ready pod", timeout=5)
    assert condition(store, "train", "PodsReady", "False", "WaitForStart")
    make_ready(store, second)
    ready = condition(store, "train", "PodsReady", "True", "Started")
    assert ready.message == "All pods reached readiness and the workload is running"
    assert not is_true(workload(store, "train").status.conditions, "Evicted")


def test_a_job_whose_pods_never_get_ready_is_evicted_requeued_with_backoff_then_deactivated(configured):
    store = configured(timeout="1s", requeuingStrategy={"backoffBaseSeconds": 1, "backoffLimitCount": 1})
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    submit(store, "stuck")
    condition(store, "stuck", "Admitted")
    wait_pods(store, "stuck", 1)

    evicted = condition(store, "stuck", "Evicted", reason="PodsReadyTimeout")
    name = workload(store, "stuck").name
    assert evicted.message == f"Exceeded the PodsReady timeout default/{name}"
    suspended(store, "stuck")
    wait_pods(store, "stuck", 0)
    condition(store, "stuck", "Requeued", "False", "PodsReadyTimeout")
    wl = workload(store, "stuck")
    assert wl.status.requeue_state.count == 1 and wl.status.requeue_state.requeue_at is not None
    assert find_condition(wl.status.conditions, "PodsReady").reason == "WaitForStart"

    # After backoffBaseSeconds·2^0 = 1 s it is admitted again, and times out again: past
    # backoffLimitCount it is deactivated instead of requeued.
    condition(store, "stuck", "Requeued", reason="BackoffFinished")
    condition(store, "stuck", "Evicted", reason="DeactivatedDueToRequeuingLimitExceeded")
    wait_pods(store, "stuck", 0)
    released = condition(store, "stuck", "QuotaReserved", "False", "Pending")
    assert released.message == "The workload is deactivated due to exceeding the maximum number of re-queuing retries"
    wl = workload(store, "stuck")
    assert wl.spec.active is False and wl.status.admission is None and wl.status.requeue_state.count == 1
    assert suspended(store, "stuck").spec.suspend


def test_block_admission_holds_the_next_job_until_the_admitted_one_is_ready(configured):
    store = configured(timeout="30s")
    flavor(store)
    cluster_queue(store, cpu="4")
    local_queue(store)
    submit(store, "first")
    condition(store, "first", "Admitted")
    (pod,) = wait_pods(store, "first", 1)
    submit(store, "second")
    workload(store, "second")
    assert wait_for(lambda: store.get(ClusterQueue, None, "cq").status.pending_workloads == 1,
                    what="the second workload pending in the ClusterQueue", timeout=5)
    assert workload(store, "second").status.admission is None and suspended(store, "second").spec.suspend

    make_ready(store, pod)
    condition(store, "first", "PodsReady", reason="Started")
    condition(store, "second", "Admitted", reason="Admitted")
    suspended(store, "second", False)


def test_hold_and_drain_evicts_the_admitted_jobs_of_a_cluster_queue(plane):
    store = plane
    cluster_queue(store, cpu="2")
    local_queue(store)

    def active():
        c = find_condition(store.get(ClusterQueue, None, "cq").status.conditions, "Active")
        return c if c is not None else None
    missing = wait_for(lambda: (c := active()) and c.reason == "FlavorNotFound" and c, what="FlavorNotFound",
                       timeout=5)
    assert (missing.status, missing.message) == (
        "False", "Can't admit new workloads: references missing ResourceFlavor(s): [a100].")
    flavor(store)
    ready = wait_for(lambda: (c := active()) and c.status == "True" and c, what="Active=True", timeout=5)
    assert (ready.reason, ready.message) == ("Ready", "Can admit new workloads")
    submit(store, "train")
    condition(store, "train", "Admitted")
    wait_pods(store, "train", 1)

    cq = store.get(ClusterQueue, None, "cq")
    cq.spec.stop_policy = "HoldAndDrain"
    store.update(cq)
    evicted = condition(store, "train", "Evicted", reason="ClusterQueueStopped")
    assert evicted.message == "The ClusterQueue is stopped"
    suspended(store, "train")
    wait_pods(store, "train", 0)
    condition(store, "train", "QuotaReserved", "False")
    stopped = wait_for(lambda: (c := active()) and c.reason == "Stopped" and c, what="Active=False Stopped",
                       timeout=5)
    assert (stopped.status, stopped.message) == ("False", "Can't admit new workloads: is stopped.")


@pytest.mark.parametrize("text, expected", [
    ("apiVersion: config.kueue.x-k8s.io/v1beta1\nkind: Configuration\nwaitForPodsReady:\n  enable: true\n"
     "  timeout: soon\n", "waitForPodsReady.timeout: Invalid value: 'soon'"),
    ("apiVersion: config.kueue.x-k8s.io/v1beta1\nkind: Configuration\n---\n"
     "apiVersion: config.kueue.x-k8s.io/v1beta1\nkind: Configuration\n",
     "expected exactly one Configuration (apiVersion: config.kueue.x-k8s.io/v1beta1) document, found 2"),
])
def test_up_rejects_a_bad_kueue_config_before_starting_anything(tmp_path, capsys, text, expected):
    bad = tmp_path / "kueue.yaml"
    bad.write_text(text)
    data_dir = tmp_path / "data"
    assert main(["up", "--kueue-config", str(bad), "--data-dir", str(data_dir), "--port", "0", "--no-node"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and expected in err
    assert not data_dir.exists()


def test_a_deleted_cluster_queue_terminates_keeps_its_admitted_job_and_goes_once_it_finishes(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    wait_for(lambda: "kueue.x-k8s.io/resource-in-use" in (store.get(ClusterQueue, None, "cq").metadata.finalizers
                                                          or []), what="the ClusterQueue finalizer", timeout=5)
    wait_for(lambda: store.get(ResourceFlavor, None, "a100").metadata.finalizers == ["kueue.x-k8s.io/resource-in-use"],
             what="the ResourceFlavor finalizer", timeout=5)
    submit(store, "first")
    condition(store, "first", "Admitted")
    first_pods = wait_pods(store, "first", 1)

    store.delete(ClusterQueue, None, "cq")

    def active():
        c = find_condition(store.get(ClusterQueue, None, "cq").status.conditions, "Active")
        return c if c is not None and c.reason == "Terminating" else None
    terminating = wait_for(active, what="Active=False Terminating", timeout=5)
    assert (terminating.status, terminating.message) == ("False", "Can't admit new workloads; clusterQueue is "
                                                                  "terminating")
    submit(store, "second")
    condition(store, "second", "QuotaReserved", "False", "Inadmissible",
              "ClusterQueue cq is inactive: clusterQueue is terminating")
    # The admitted Job keeps its quota and runs on.
    assert is_true(workload(store, "first").status.conditions, "Admitted") and not job(store, "first").spec.suspend

    for pod in first_pods:
        succeed(store, pod)
    condition(store, "first", "Finished")
    wait_for(lambda: not store.list(ClusterQueue).items, what="the ClusterQueue to go", timeout=5)
    condition(store, "second", "QuotaReserved", "False", "Inadmissible", "ClusterQueue cq doesn't exist")
    # No ClusterQueue references the flavor any more: deleting it completes at once.
    store.delete(ResourceFlavor, None, "a100")
    wait_for(lambda: not store.list(ResourceFlavor).items, what="the ResourceFlavor to go", timeout=5)


def test_a_workload_admitted_to_a_missing_cluster_queue_is_left_out_with_a_warning_and_others_are_admitted(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    store.create(Workload.model_validate({
        "apiVersion": V, "kind": "Workload", "metadata": {"name": "ghost", "namespace": "default"},
        "spec": {"queueName": "nowhere", "podSets": [{"name": "main", "count": 1, "template": {"spec": {
            "containers": [{"name": "main", "image": "python"}]}}}]}}))
    for _ in range(20):  # the controller writes the ghost's pending condition meanwhile
        ghost = store.get(Workload, "default", "ghost")
        ghost.status = type(ghost.status).model_validate({
            "admission": {"clusterQueue": "gone", "podSetAssignments": [{"name": "main", "count": 1}]},
            "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "x",
                            "lastTransitionTime": "2024-01-01T00:00:00Z"}]})
        try:
            store.update_status(ghost)
            break
        except Conflict:
            continue

    submit(store, "train")
    condition(store, "train", "Admitted")
    events = wait_for(lambda: [e for e in store.list(Event, "default").items
                               if e.involved_object.name == "ghost" and e.type == "Warning"] or None,
                      what="a Warning event on the bad Workload", timeout=5)
    assert events[0].reason == "AdmissionSkipped"
    assert "Workload default/ghost: status.admission.clusterQueue: ClusterQueue gone not found" in events[0].message


def test_deactivating_an_admitted_workload_evicts_it_stops_its_job_and_does_not_requeue_it(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    submit(store, "train")
    condition(store, "train", "Admitted")
    wait_pods(store, "train", 1)

    wl = workload(store, "train")
    wl.spec.active = False
    store.update(wl)
    evicted = condition(store, "train", "Evicted", reason="Deactivated")
    assert evicted.message == "The workload is deactivated"
    suspended(store, "train")
    wait_pods(store, "train", 0)
    condition(store, "train", "QuotaReserved", "False")
    released = workload(store, "train")
    assert released.status.admission is None and released.status.requeue_state is None
    assert wait_for(lambda: store.get(ClusterQueue, None, "cq").status.reserving_workloads == 0,
                    what="no reserving workload", timeout=5)


def test_a_job_with_fewer_completions_than_parallelism_queues_min_of_both_pods_and_keeps_its_parallelism(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="2")
    local_queue(store)
    store.create(Job.model_validate({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "wide", "namespace": "default", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
        "spec": {"suspend": True, "parallelism": 4, "completions": 2, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "image": "python",
                                                      "resources": {"requests": {"cpu": "1"}}}]}}}}))
    assert workload(store, "wide").spec.pod_sets[0].count == 2
    condition(store, "wide", "Admitted")
    started = suspended(store, "wide", False)
    assert started.spec.parallelism == 4
    assert workload(store, "wide").to_dict()["status"]["admission"]["podSetAssignments"][0]["resourceUsage"] == {
        "cpu": "2"}


def test_pending_conditions_do_not_carry_the_queue_position(plane):
    store = plane
    flavor(store)
    cluster_queue(store, cpu="1", queueingStrategy="StrictFIFO")
    local_queue(store)
    priority_class(store, "high", 10)
    submit(store, "head", cpu="2", priority="high")
    condition(store, "head", "QuotaReserved", "False", "Pending")
    for name in ("second", "third"):
        submit(store, name)
    messages = [condition(store, name, "QuotaReserved", "False", "Pending").message for name in ("second", "third")]
    assert messages == ["waiting in ClusterQueue cq", "waiting in ClusterQueue cq"]


def test_a_release_during_an_admission_pass_keeps_the_heads_that_pass_set_aside_in_the_queue(store):
    flavor(store)
    cluster_queue(store, cpu="1")
    local_queue(store)
    kueue = KueueController(store)
    kueue._create_workload(submit(store, "big", cpu="2"), "q")
    real = kueue._schedule

    def schedule_while_a_workload_is_released(*args):
        result = real(*args)
        kueue._requeue_set_aside()  # a quota release arrives while the pass is running
        return result
    kueue._schedule = schedule_while_a_workload_is_released
    kueue._admit()
    assert kueue._set_aside == set()
    kueue._schedule = real
    kueue._admit()
    assert kueue._set_aside == {f"default/{workload_name(job(store, 'big'))}"}
