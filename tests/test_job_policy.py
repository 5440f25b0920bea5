"""The Job decision as pure table tests: pods to create and delete, counters, conditions, deadlines.

Cases named like upstream's are ported from kubernetes pkg/controller/job/job_controller_test.go
(TestControllerSyncJob, TestSyncJobPastDeadline, TestSyncJobWithJobPodFailurePolicy, TestJobBackoff...)
and pod_failure_policy_test.go (TestMatchPodFailurePolicy); the upstream name is in each comment.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from mlplane.api import Job, Pod
from mlplane.api.meta import find_condition
from mlplane.policy.workload.job import (COMPLETION_INDEX_KEY, TRACKING_FINALIZER, Intervals, JobDecision,
                                         JobEvent, backoff_remaining, decide, match_pod_failure_policy)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
LONG_AGO = NOW - timedelta(hours=1)  # failures this old are past any backoff
UID = "0f2b6a5e-job"


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_job(*, parallelism=2, completions: int | None = 5, backoff_limit=6, mode="NonIndexed",
             restart="Never", status=None, name="foobar", **spec) -> Job:
    return Job.model_validate({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "uid": UID},
        "spec": {"parallelism": parallelism, "completions": completions, "backoffLimit": backoff_limit,
                 "completionMode": mode, **spec,
                 "template": {"metadata": {"labels": {"app": "train"}},
                              "spec": {"restartPolicy": restart, "containers": [
                                  {"name": "main", "image": "python", "command": ["python3", "-c", "pass"]}]}}},
        "status": status or {}})


_serial = itertools.count()


def make_pod(job: Job, phase="Running", *, index: str | int | None = None, exit_code: int | None = None,
             finished: datetime = LONG_AGO, finalizer=True, deleting=False, ready=False, conditions=(),
             restarts=0, owned=True) -> Pod:
    n = next(_serial)
    container: dict = {"name": "main", "restartCount": restarts}
    if phase in ("Succeeded", "Failed"):
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        container["state"] = {"terminated": {"exitCode": code, "finishedAt": stamp(finished)}}
    else:
        container["state"] = {"running": {}}
    conds = [{"type": t, "status": s} for t, s in conditions]
    if ready:
        conds.append({"type": "Ready", "status": "True"})
    meta: dict = {"name": f"{job.name}-pod{n:03d}", "namespace": "default", "uid": f"pod-uid-{n}",
                  "creationTimestamp": stamp(LONG_AGO - timedelta(hours=1)),
                  "finalizers": [TRACKING_FINALIZER] if finalizer else None,
                  "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job.name,
                                       "uid": UID if owned else "someone-else", "controller": True}]}
    if index is not None:
        meta["annotations"] = {COMPLETION_INDEX_KEY: str(index)}
    if deleting:
        meta["deletionTimestamp"] = stamp(NOW - timedelta(seconds=1))
    return Pod.model_validate({"metadata": meta, "spec": {"containers": [{"name": "main"}]},
                               "status": {"phase": phase, "conditions": conds, "containerStatuses": [container]}})


def succeed(pod: Pod) -> Pod:
    """The pod after its container exited 0, as a kubelet reports it."""
    data = pod.to_dict()
    data["status"]["phase"] = "Succeeded"
    data["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0, "finishedAt": stamp(LONG_AGO)}}
    return Pod.model_validate(data)


def pods_of(job: Job, **counts) -> list[Pod]:
    """pending=, running=, ready=, succeeded=, failed=, terminating= (upstream setPodsStatuses)."""
    pods = [make_pod(job, "Pending") for _ in range(counts.get("pending", 0))]
    pods += [make_pod(job, "Running", ready=i < counts.get("ready", 0)) for i in range(counts.get("running", 0))]
    pods += [make_pod(job, "Succeeded") for _ in range(counts.get("succeeded", 0))]
    pods += [make_pod(job, "Failed") for _ in range(counts.get("failed", 0))]
    pods += [make_pod(job, "Running", deleting=True) for _ in range(counts.get("terminating", 0))]
    return pods


def indexed_pods(job: Job, *specs: tuple[str, str]) -> list[Pod]:
    return [make_pod(job, phase, index=ix) for ix, phase in specs]


def apply(job: Job, pods: list[Pod], d: JobDecision) -> tuple[Job, list[Pod]]:
    """What a controller does with a decision: status, finalizers, deletions, creations."""
    job = job.model_copy(update={"status": d.status})
    by_name = {p.name: p.model_copy(deep=True) for p in pods}
    for name in d.remove_finalizers:
        by_name[name].metadata.finalizers = [f for f in by_name[name].metadata.finalizers or []
                                             if f != TRACKING_FINALIZER] or None
    for name in d.delete:
        by_name[name].metadata.deletion_timestamp = stamp(NOW)
    for p in d.create:
        p = p.model_copy(deep=True)
        n = next(_serial)
        p.metadata.name, p.metadata.uid = f"{p.metadata.generate_name}x{n:04d}", f"pod-uid-{n}"
        by_name[p.name] = p
    # A pod being deleted leaves the store once no finalizer holds it.
    return job, [p for p in by_name.values() if not (p.metadata.deletion_timestamp and not p.metadata.finalizers)]


def settle(job: Job, pods: list[Pod], now=NOW, rounds=5) -> tuple[Job, list[Pod], list[JobEvent]]:
    """Apply decisions until nothing changes (the controller's reconcile loop)."""
    events: list[JobEvent] = []
    for _ in range(rounds):
        d = decide(job, pods, now)
        events += d.events
        if d.status == job.status and not (d.remove_finalizers or d.delete or d.create):
            return job, pods, events
        job, pods = apply(job, pods, d)
    raise AssertionError("decisions did not settle")


def cond(job_or_status, type_):
    status = job_or_status.status if isinstance(job_or_status, Job) else job_or_status
    return find_condition(status.conditions, type_)


# --- creating pods ---------------------------------------------------------------------------------

@pytest.mark.parametrize("completions", [5, None], ids=["job start", "WQ job start"])
def test_job_start_creates_parallelism_pods(completions):
    # upstream: "job start", "WQ job start"
    job = make_job(parallelism=2, completions=completions)
    d = decide(job, [], NOW)
    assert len(d.create) == 2 and not d.delete
    assert d.status.active == 2 and d.status.ready == 0 and d.status.start_time == stamp(NOW)
    pod = d.create[0]
    meta = pod.metadata
    assert meta.generate_name == "foobar-" and meta.namespace == "default"
    assert meta.labels == {"app": "train", "batch.kubernetes.io/controller-uid": UID,
                           "batch.kubernetes.io/job-name": "foobar", "controller-uid": UID, "job-name": "foobar"}
    assert meta.finalizers == [TRACKING_FINALIZER]
    (ref,) = meta.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == ("Job", "foobar", UID, True, True)
    assert pod.spec.hostname is None and not pod.spec.containers[0].env


def test_indexed_job_start_gives_each_pod_its_index():
    # upstream: "indexed job start"
    job = make_job(parallelism=2, completions=5, mode="Indexed")
    d = decide(job, [], NOW)
    assert [p.metadata.annotations[COMPLETION_INDEX_KEY] for p in d.create] == ["0", "1"]
    for ix, pod in enumerate(d.create):
        assert pod.metadata.labels[COMPLETION_INDEX_KEY] == str(ix)
        assert pod.metadata.generate_name == f"foobar-{ix}-"
        assert pod.spec.hostname == f"foobar-{ix}"
        (env,) = pod.spec.containers[0].env
        assert env.name == "JOB_COMPLETION_INDEX"
        assert env.value_from.field_ref.field_path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_generate_name_leaves_room_for_the_random_suffix():
    job = make_job(name="j" * 63, mode="Indexed", completions=20, parallelism=20)
    names = [p.metadata.generate_name for p in decide(job, [], NOW).create]
    assert names[12] == "j" * 54 + "-12-" and all(len(n) == 58 for n in names[10:])  # 58 + 5 random = 63


def test_pending_and_running_pods_are_enough():
    # upstream: "pending pods", "correct # of pods"
    job = make_job(parallelism=3)
    d = decide(job, pods_of(job, pending=1, running=2, ready=2), NOW)
    assert not d.create and not d.delete
    assert d.status.active == 3 and d.status.ready == 2


def test_too_few_active_pods():
    # upstream: "too few active pods": the succeeded pod is counted, one more pod is created
    job = make_job(parallelism=2, completions=5)
    pods = pods_of(job, running=1, succeeded=1)
    d = decide(job, pods, NOW)
    assert len(d.create) == 1 and d.status.active == 2
    assert d.status.uncounted_terminated_pods.succeeded == [pods[1].uid]
    assert d.remove_finalizers == [pods[1].name]


@pytest.mark.parametrize("parallelism, completions, running, succeeded, deleted", [
    (2, 5, 10, 0, 8),  # upstream: "more active pods than parallelism"
    (3, 4, 3, 2, 1),  # upstream: "more active pods than remaining completions"
])
def test_excess_pods_are_deleted_without_being_counted(parallelism, completions, running, succeeded, deleted):
    job = make_job(parallelism=parallelism, completions=completions)
    pods = pods_of(job, running=running, succeeded=succeeded)
    d = decide(job, pods, NOW)
    assert len(d.delete) == deleted and not d.create
    assert set(d.delete) <= set(d.remove_finalizers)  # released first: a deleted pod is no failure
    assert d.status.active == running - deleted and d.status.terminating == deleted
    job, pods = apply(job, pods, d)
    job, pods, _ = settle(job, pods)
    assert job.status.failed is None


def test_excess_pods_removed_least_valuable_first():
    job = make_job(parallelism=1, completions=5)
    running = make_pod(job, "Running", ready=True)
    running.spec.node_name = "n1"
    pending = make_pod(job, "Pending")
    d = decide(job, [running, pending], NOW)
    assert d.delete == [pending.name]


def test_indexed_job_some_running_and_completed_pods():
    # upstream: "indexed job some running and completed pods"
    job = make_job(parallelism=8, completions=20, mode="Indexed")
    pods = indexed_pods(job, ("0", "Running"), ("2", "Succeeded"), ("3", "Pending"), ("4", "Succeeded"),
                        ("5", "Succeeded"), ("7", "Succeeded"), ("8", "Succeeded"), ("9", "Succeeded"))
    d = decide(job, pods, NOW)
    assert sorted(int(p.metadata.annotations[COMPLETION_INDEX_KEY]) for p in d.create) == [1, 6, 10, 11, 12, 13]
    assert d.status.completed_indexes == "2,4,5,7-9" and d.status.succeeded == 6 and d.status.active == 8
    assert len(d.remove_finalizers) == 6


def test_indexed_job_repeated_and_out_of_range_indexes_are_deleted():
    # upstream: "indexed job repeated indexes", "indexed job with indexes outside of range"
    job = make_job(parallelism=5, completions=5, mode="Indexed")
    pods = indexed_pods(job, ("invalid", "Running"), ("0", "Succeeded"), ("1", "Running"), ("2", "Running"),
                        ("2", "Pending"), ("7", "Running"))
    d = decide(job, pods, NOW)
    assert sorted(d.delete) == sorted([pods[0].name, pods[4].name, pods[5].name]) and not d.create
    assert d.status.active == 2 and d.status.completed_indexes == "0"


def test_indexed_job_repeated_completed_index_counts_once():
    # upstream: "indexed job repeated completed index"
    job = make_job(parallelism=2, completions=3, mode="Indexed")
    pods = indexed_pods(job, ("0", "Succeeded"), ("1", "Succeeded"), ("1", "Succeeded"))
    d = decide(job, pods, NOW)
    assert [p.metadata.annotations[COMPLETION_INDEX_KEY] for p in d.create] == ["2"]
    assert d.status.succeeded == 2 and d.status.completed_indexes == "0,1"


# --- completion ----------------------------------------------------------------------------------

def test_job_finish_counts_then_completes():
    # upstream: "job finish": SuccessCriteriaMet first, Complete once every pod is counted
    job = make_job(parallelism=2, completions=5)
    pods = pods_of(job, succeeded=5)
    d = decide(job, pods, NOW)
    assert not d.create and sorted(d.remove_finalizers) == sorted(p.name for p in pods)
    assert len(d.status.uncounted_terminated_pods.succeeded) == 5
    met = cond(d.status, "SuccessCriteriaMet")
    assert (met.status, met.reason, met.message) == ("True", "CompletionsReached",
                                                     "Reached expected number of succeeded pods")
    assert cond(d.status, "Complete") is None
    job, pods = apply(job, pods, d)
    d = decide(job, pods, NOW)
    complete = cond(d.status, "Complete")
    assert (complete.status, complete.reason) == ("True", "CompletionsReached")
    assert d.status.succeeded == 5 and d.status.completion_time == stamp(NOW)
    assert d.status.uncounted_terminated_pods.succeeded is None
    assert d.events == [JobEvent("Normal", "Completed", "Job completed")]


def test_wq_job_waits_for_running_pods_then_completes_despite_a_failure():
    # upstream: "WQ job finishing", "WQ job all finished despite one failure"
    job = make_job(parallelism=2, completions=None)
    pods = pods_of(job, running=1, succeeded=1)
    d = decide(job, pods, NOW)
    assert not d.create and cond(d.status, "SuccessCriteriaMet") is None
    job, pods, events = settle(job, pods_of(job, succeeded=1, failed=1))
    assert cond(job, "Complete").status == "True"
    assert (job.status.succeeded, job.status.failed) == (1, 1)


def test_indexed_job_completed():
    # upstream: "indexed job completed"
    job = make_job(parallelism=2, completions=3, mode="Indexed")
    pods = indexed_pods(job, ("0", "Succeeded"), ("1", "Failed"), ("1", "Succeeded"), ("2", "Succeeded"))
    job, pods, events = settle(job, pods)
    assert job.status.completed_indexes == "0-2" and job.status.succeeded == 3 and job.status.failed == 1
    assert cond(job, "Complete").status == "True" and not pods[0].metadata.finalizers


def test_complete_waits_for_excess_pods_to_terminate():
    job = make_job(parallelism=3, completions=2)
    pods = pods_of(job, succeeded=2, running=1)
    d = decide(job, pods, NOW)
    assert len(d.delete) == 1 and cond(d.status, "SuccessCriteriaMet") is not None
    assert d.status.terminating == 1 and cond(d.status, "Complete") is None
    job, pods, _ = settle(*apply(job, pods, d))
    assert cond(job, "Complete").status == "True" and job.status.failed is None


# --- counting survives restarts --------------------------------------------------------------------

@pytest.mark.parametrize("phase, field", [("Succeeded", "succeeded"), ("Failed", "failed")])
def test_uncounted_pod_is_not_added_twice_and_is_counted_once_released(phase, field):
    job = make_job(parallelism=1, completions=2)
    running, done = make_pod(job, "Running"), make_pod(job, phase)
    d1 = decide(job, [running, done], NOW)
    job = job.model_copy(update={"status": d1.status})
    # The controller crashed before removing the finalizer: the same decision comes again.
    d2 = decide(job, [running, done], NOW)
    assert getattr(d2.status.uncounted_terminated_pods, field) == [done.uid] and getattr(d2.status, field) is None
    assert d2.remove_finalizers == [done.name] and not d2.create
    # Finalizer removed, then the pod was deleted by someone: it is counted exactly once.
    d3 = decide(job, [running], NOW)
    assert getattr(d3.status, field) == 1 and getattr(d3.status.uncounted_terminated_pods, field) is None
    job = job.model_copy(update={"status": d3.status})
    assert getattr(decide(job, [running], NOW).status, field) == 1


def test_pods_of_other_controllers_are_ignored_and_decisions_are_deterministic():
    job = make_job(parallelism=2, completions=5)
    pods = pods_of(job, running=1, failed=2, succeeded=1) + [make_pod(job, "Running", owned=False)]
    first, second = decide(job, pods, NOW), decide(job, list(reversed(pods)), NOW)
    assert first.status == second.status and first.remove_finalizers == second.remove_finalizers
    assert len(first.create) == 1 and first.status.active == 2


# --- failures and backoff ----------------------------------------------------------------------------

def test_failed_pod_is_replaced_after_backoff():
    # upstream: "too few active pods and active back-off" / "... and no back-offs"
    job = make_job(parallelism=1, completions=1)
    pods = [make_pod(job, "Failed", finished=NOW - timedelta(seconds=4))]
    d = decide(job, pods, NOW)
    assert not d.create and d.requeue_after == pytest.approx(6)
    assert d.status.uncounted_terminated_pods.failed == [pods[0].uid]
    assert len(decide(job, pods, NOW + timedelta(seconds=6)).create) == 1


def test_backoff_doubles_per_failure_since_last_success_and_is_capped():
    # upstream backoff_utils_test.go TestGetRemainingBackoffTime
    assert backoff_remaining(1, NOW, NOW, 10, 360) == 10
    assert backoff_remaining(3, NOW, NOW + timedelta(seconds=5), 10, 360) == 35
    assert backoff_remaining(10, NOW, NOW, 10, 360) == 360
    assert backoff_remaining(0, None, NOW, 10, 360) == 0
    job = make_job(parallelism=1, completions=3)
    old_failure = make_pod(job, "Failed", finished=NOW - timedelta(seconds=3))
    success = make_pod(job, "Succeeded", finished=NOW - timedelta(seconds=2))
    new_failures = [make_pod(job, "Failed", finished=NOW - timedelta(seconds=1)) for _ in range(2)]
    # upstream "failed + succeed pods: reset backoff delay": only failures after the success count
    d = decide(job, [old_failure, success, *new_failures], NOW)
    assert d.requeue_after == pytest.approx(19)


def test_too_many_job_failures_fails_the_job():
    # upstream: "too many job failures", "count ready pods when job fails"
    job = make_job(parallelism=2, completions=3, backoff_limit=0)
    pods = pods_of(job, running=2, ready=2, failed=1)
    d = decide(job, pods, NOW)
    target = cond(d.status, "FailureTarget")
    assert (target.reason, target.message) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert sorted(d.delete) == sorted(p.name for p in pods[:2]) and not d.create
    assert d.status.active is None and d.status.ready == 0 and d.status.terminating == 2
    assert cond(d.status, "Failed") is None  # not while pods are terminating
    job, pods, events = settle(*apply(job, pods, d))
    failed = cond(job, "Failed")
    assert (failed.status, failed.reason, failed.message) == (
        "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert job.status.failed == 3 and job.status.completion_time is None and pods[0].metadata.finalizers is None
    assert events == [JobEvent("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]


def test_restart_on_failure_counts_container_restarts():
    # upstream: TestJobBackoffOnRestartPolicyOnFailure
    job = make_job(parallelism=1, completions=1, backoff_limit=2, restart="OnFailure")
    assert cond(decide(job, [make_pod(job, "Running", restarts=1)], NOW).status, "FailureTarget") is None
    d = decide(job, [make_pod(job, "Running", restarts=2)], NOW)
    assert cond(d.status, "FailureTarget").reason == "BackoffLimitExceeded"


def test_deleted_pods_count_as_failed_and_are_replaced_without_a_failure_policy():
    # upstream: "WQ job: recreate pods when terminating or failed"
    job = make_job(parallelism=1, completions=1)
    pods = pods_of(job, terminating=1)
    d = decide(job, pods, NOW)
    assert d.status.uncounted_terminated_pods.failed == [pods[0].uid] and d.status.terminating == 1
    assert decide(job, pods, NOW + timedelta(seconds=11)).create


def test_terminating_pods_block_replacement_with_a_failure_policy():
    # upstream: "more terminating pods than parallelism; PodFailurePolicy used"
    job = make_job(parallelism=1, completions=1, podFailurePolicy={"rules": []})
    pods = pods_of(job, terminating=1)
    d = decide(job, pods, NOW)
    assert not d.create and not d.remove_finalizers and d.status.failed is None


# --- podFailurePolicy ----------------------------------------------------------------------------------

FAIL_JOB_42 = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                                "values": [42]}},
                         {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}


def test_fail_job_rule():
    # upstream TestSyncJobWithJobPodFailurePolicy: "fail job based on OnExitCodes"
    job = make_job(parallelism=2, completions=4, podFailurePolicy=FAIL_JOB_42)
    pods = [make_pod(job, "Running"), make_pod(job, "Failed", exit_code=42)]
    d = decide(job, pods, NOW)
    target = cond(d.status, "FailureTarget")
    message = f"Container main for pod default/{pods[1].name} failed with exit code 42 matching FailJob rule at index 0"
    assert (target.reason, target.message) == ("PodFailurePolicy", message)
    assert d.delete == [pods[0].name] and not d.create
    job, pods, events = settle(*apply(job, pods, d))
    failed = cond(job, "Failed")
    assert (failed.reason, failed.message) == ("PodFailurePolicy", message)
    assert events == [JobEvent("Warning", "PodFailurePolicy", message)]


def test_ignore_rule_does_not_count_toward_backoff_limit():
    # upstream: "ignore pod failure based on OnPodConditions"
    job = make_job(parallelism=1, completions=1, backoff_limit=0, podFailurePolicy=FAIL_JOB_42)
    pods = [make_pod(job, "Failed", exit_code=137, conditions=[("DisruptionTarget", "True")])]
    d = decide(job, pods, NOW)
    assert cond(d.status, "FailureTarget") is None and d.status.uncounted_terminated_pods.failed is None
    assert d.remove_finalizers == [pods[0].name] and len(d.create) == 1
    job, pods = apply(job, pods, d)
    assert decide(job, pods, NOW).status.failed is None


def test_ignored_failures_still_delay_recreation():
    # upstream: "ignore pod failure based on OnPodConditions, ignored failures delays pod recreation"
    job = make_job(parallelism=1, completions=1, podFailurePolicy=FAIL_JOB_42)
    pods = [make_pod(job, "Failed", exit_code=137, finished=NOW, conditions=[("DisruptionTarget", "True")])]
    d = decide(job, pods, NOW)
    assert not d.create and d.requeue_after == pytest.approx(10)


@pytest.mark.parametrize("rules, exit_code, action, counts", [
    # upstream pod_failure_policy_test.go TestMatchPodFailurePolicy cases
    ([{"action": "Count", "onExitCodes": {"operator": "In", "values": [1, 2]}},
      {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}}], 1, "Count", True),
    ([{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [5, 6, 7]}}], 42, "FailJob", True),
    ([{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [5, 6, 7]}}], 5, None, True),
    ([{"action": "FailJob", "onExitCodes": {"containerName": "other", "operator": "In", "values": [42]}}], 42,
     None, True),
    ([{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}], 3, "Ignore", False),
])
def test_match_pod_failure_policy(rules, exit_code, action, counts):
    job = make_job(podFailurePolicy={"rules": rules})
    match = match_pod_failure_policy(job.spec.pod_failure_policy, make_pod(job, "Failed", exit_code=exit_code))
    assert (match.action, match.counts) == (action, counts)
    assert (match.message is not None) == (action == "FailJob")


def test_fail_job_on_pod_condition_message():
    job = make_job(podFailurePolicy={"rules": [{"action": "FailJob", "onPodConditions": [
        {"type": "ConfigIssue"}]}]})
    pod = make_pod(job, "Failed", conditions=[("ConfigIssue", "True")])
    match = match_pod_failure_policy(job.spec.pod_failure_policy, pod)
    assert match.message == f"Pod default/{pod.name} has condition ConfigIssue matching FailJob rule at index 0"


def test_count_rule_counts_toward_backoff_limit():
    job = make_job(parallelism=1, completions=1, backoff_limit=0, podFailurePolicy={"rules": [
        {"action": "Count", "onExitCodes": {"operator": "In", "values": [1]}}]})
    d = decide(job, [make_pod(job, "Failed", exit_code=1)], NOW)
    assert cond(d.status, "FailureTarget").reason == "BackoffLimitExceeded"


def test_fail_index_rule_marks_the_index_failed_and_never_retries_it():
    job = make_job(parallelism=3, completions=3, mode="Indexed", podFailurePolicy={"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]})
    pods = indexed_pods(job, ("0", "Running"), ("2", "Running")) + [make_pod(job, "Failed", index=1, exit_code=3)]
    d = decide(job, pods, NOW)
    assert d.status.failed_indexes == "1" and not d.create and d.status.active == 2
    job, pods = apply(job, pods, d)
    job, pods, events = settle(job, [succeed(p) if p.status.phase == "Running" else p for p in pods])
    failed = cond(job, "Failed")
    assert (failed.reason, failed.message) == ("FailedIndexes", "Job has failed indexes")
    assert job.status.completed_indexes == "0,2" and job.status.failed_indexes == "1"


# --- suspend, deadlines, TTL ---------------------------------------------------------------------

def test_suspend_deletes_active_pods_and_resume_restarts_the_clock():
    # upstream: "suspending a job with satisfied expectations", "resuming a suspended job"
    job = make_job(parallelism=2, completions=4, suspend=True,
                   status={"startTime": stamp(LONG_AGO)})
    pods = pods_of(job, running=2, ready=1)
    d = decide(job, pods, NOW)
    assert sorted(d.delete) == sorted(d.remove_finalizers) == sorted(p.name for p in pods)
    suspended = cond(d.status, "Suspended")
    assert (suspended.status, suspended.reason, suspended.message) == ("True", "JobSuspended", "Job suspended")
    assert d.status.active is None and d.status.ready == 0 and d.status.terminating == 2
    assert d.events == [JobEvent("Normal", "Suspended", "Job suspended")]
    job, pods = apply(job, pods, d)
    assert pods == [] and job.status.failed is None
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"suspend": False})})
    later = NOW + timedelta(minutes=5)
    d = decide(job, pods, later)
    resumed = cond(d.status, "Suspended")
    assert (resumed.status, resumed.reason, resumed.message) == ("False", "JobResumed", "Job resumed")
    assert d.status.start_time == stamp(later) and len(d.create) == 2
    assert d.events == [JobEvent("Normal", "Resumed", "Job resumed")]


def test_job_created_suspended_has_no_start_time():
    job = make_job(suspend=True)
    d = decide(job, [], NOW)
    assert d.status.start_time is None and not d.create and cond(d.status, "Suspended").status == "True"


def test_active_deadline():
    # upstream TestSyncJobPastDeadline: "activeDeadlineSeconds less than single pod execution"
    job = make_job(parallelism=1, completions=1, activeDeadlineSeconds=10,
                   status={"startTime": stamp(NOW - timedelta(seconds=4))})
    pods = pods_of(job, running=1)
    d = decide(job, pods, NOW)
    assert d.requeue_after == pytest.approx(6) and not d.delete
    d = decide(job, pods, NOW + timedelta(seconds=6))
    target = cond(d.status, "FailureTarget")
    assert (target.reason, target.message) == ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert d.delete == [pods[0].name]


def test_ttl_after_finished():
    finished_at = NOW - timedelta(seconds=30)
    job = make_job(ttlSecondsAfterFinished=100, status={"conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": stamp(finished_at)}]})
    pods = pods_of(job, succeeded=1)
    d = decide(job, pods, NOW)
    assert d.requeue_after == pytest.approx(70) and not d.delete_job
    assert d.remove_finalizers == [pods[0].name] and d.status == job.status
    assert decide(job, pods, NOW + timedelta(seconds=70)).delete_job


def test_a_job_name_too_long_for_a_label_is_reported_not_crashed():
    job = make_job(name="a" * 64)
    d = decide(job, [], NOW)
    assert not d.create
    (event,) = d.events
    assert (event.type, event.reason) == ("Warning", "FailedCreate")
    assert "must be no more than 63 characters" in event.message and "batch.kubernetes.io/job-name" in event.message


def test_now_must_be_timezone_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(make_job(), [], datetime(2024, 1, 1))


# --- completion index sets --------------------------------------------------------------------------

@pytest.mark.parametrize("text, completions, parsed", [
    ("0-2,4", 10, "0-2,4"),
    ("3,4", 10, "3,4"),
    ("1,2,3,7", 10, "1-3,7"),
    ("0-5,9", 4, "0-3"),
    ("x,1,-3,2-1,5", 10, "1,5"),
    ("", 10, ""),
])
def test_intervals_parse_and_format(text, completions, parsed):
    # upstream indexed_job_utils_test.go TestParseIndexesFromString / TestIntervalsString
    assert str(Intervals.parse(text, completions)) == parsed


def test_intervals_membership_and_gaps():
    s = Intervals.of([0, 1, 2, 5, 9])
    assert [i in s for i in range(10)] == [True, True, True, False, False, True, False, False, False, True]
    assert s.total() == 5 and s.first_missing(3, 10) == [3, 4, 6] and s.first_missing(10, 7) == [3, 4, 6]
    assert s.union(Intervals.of([3, 4])) == Intervals([(0, 5), (9, 9)])
