"""The Job controller on a real embedded store, with no node agent: the test plays kubelet by
writing pod phases and container statuses through the status subresource."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conftest import events, wait_for
from mlplane.api import Conflict, Job, NotFound, Pod
from mlplane.api.meta import find_condition
from mlplane.control.controllers.job import JobController
from mlplane.policy.workload.job import COMPLETION_INDEX_KEY, TRACKING_FINALIZER


@pytest.fixture
def controller(store):
    c = JobController(store, backoff_base=0.05).start()
    yield c
    c.stop()


def submit(store, name="train", *, completions=3, parallelism=2, mode="NonIndexed", backoff_limit=6, **spec) -> Job:
    return store.create(Job.model_validate({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"completions": completions, "parallelism": parallelism, "completionMode": mode,
                 "backoffLimit": backoff_limit, **spec,
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"restartPolicy": "Never", "containers": [
                     {"name": "main", "image": "python", "command": ["python3", "-c", "pass"]}]}}}}))


def pods(store, job: Job, *, phase: str | None = None) -> list[Pod]:
    items = store.list(Pod, "default", label_selector=f"batch.kubernetes.io/job-name={job.name}").items
    return [p for p in items if phase is None or p.status.phase == phase]


def running(store, job: Job, count: int) -> list[Pod]:
    """Wait until the Job has exactly ``count`` pods that have not finished and are not being deleted."""
    def check():
        found = [p for p in pods(store, job) if p.status.phase == "Pending" and not p.metadata.deletion_timestamp]
        return found if len(found) == count else None
    return wait_for(check, what=f"{count} pending pods of {job.name}")


def kubelet(store, pod: Pod, phase: str, exit_code: int = 0, conditions=()) -> None:
    """Report the pod's phase as a kubelet would, retrying when the controller wrote in between."""
    for _ in range(20):
        current = store.get(Pod, "default", pod.name)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        state = {"running": {"startedAt": stamp}} if phase == "Running" else {
            "terminated": {"exitCode": exit_code, "finishedAt": stamp}}
        current.status = type(current.status).model_validate({
            "phase": phase, "conditions": [{"type": t, "status": "True"} for t in conditions],
            "containerStatuses": [{"name": "main", "state": state}]})
        try:
            store.update_status(current)
            return
        except Conflict:
            continue
    raise AssertionError(f"could not update pod {pod.name}")


def job_condition(store, job: Job, type_: str):
    def check():
        c = find_condition(store.get(Job, "default", job.name).status.conditions, type_)
        return c if c is not None and c.status == "True" else None
    return wait_for(check, what=f"condition {type_} on {job.name}")


def test_indexed_job_runs_to_completion(store, controller):
    job = submit(store, completions=3, parallelism=2, mode="Indexed")
    first = running(store, job, 2)
    assert sorted(p.metadata.annotations[COMPLETION_INDEX_KEY] for p in first) == ["0", "1"]
    for pod in first:
        ix = pod.metadata.annotations[COMPLETION_INDEX_KEY]
        assert pod.name.startswith(f"train-{ix}-") and len(pod.name) == len(f"train-{ix}-") + 5
        assert pod.metadata.labels == {"app": "train", "batch.kubernetes.io/controller-uid": job.uid,
                                       "batch.kubernetes.io/job-name": "train", "controller-uid": job.uid,
                                       "job-name": "train", COMPLETION_INDEX_KEY: ix}
        assert pod.spec.hostname == f"train-{ix}" and pod.metadata.finalizers == [TRACKING_FINALIZER]
        (env,) = pod.spec.containers[0].env
        assert env.name == "JOB_COMPLETION_INDEX"
        assert env.value_from.field_ref.field_path == f"metadata.annotations['{COMPLETION_INDEX_KEY}']"
        (ref,) = pod.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == ("Job", "train", job.uid,
                                                                                           True, True)
        kubelet(store, pod, "Running")
    wait_for(lambda: store.get(Job, "default", "train").status.active == 2, what="active=2")
    for pod in first:
        kubelet(store, pod, "Succeeded")
    (last,) = running(store, job, 1)
    assert last.metadata.annotations[COMPLETION_INDEX_KEY] == "2"
    kubelet(store, last, "Succeeded")
    job_condition(store, job, "Complete")
    status = store.get(Job, "default", "train").status
    assert (status.succeeded, status.failed, status.active) == (3, None, None)
    assert status.completed_indexes == "0-2" and status.completion_time and status.start_time
    assert find_condition(status.conditions, "SuccessCriteriaMet").reason == "CompletionsReached"
    assert not any(p.metadata.finalizers for p in pods(store, job))
    seen = wait_for(lambda: (e := events(store, job.name)) and ("Normal", "Completed", "Job completed") in e and e,
                    what="the Completed event")
    assert {f"Created pod: {p.name}" for p in [*first, last]} == {m for _, r, m in seen if r == "SuccessfulCreate"}


def test_backoff_limit_fails_the_job(store, controller):
    job = submit(store, completions=1, parallelism=1, backoff_limit=1)
    (pod,) = running(store, job, 1)
    kubelet(store, pod, "Failed", exit_code=1)
    (replacement,) = running(store, job, 1)  # after the (shortened) pod-failure backoff
    assert replacement.name != pod.name
    kubelet(store, replacement, "Failed", exit_code=1)
    failed = job_condition(store, job, "Failed")
    assert (failed.reason, failed.message) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    status = store.get(Job, "default", job.name).status
    assert status.failed == 2 and status.succeeded is None and status.completion_time is None
    wait_for(lambda: ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
             in events(store, job.name), what="the BackoffLimitExceeded event")


def test_fail_job_policy_stops_the_other_pods(store, controller):
    job = submit(store, completions=2, parallelism=2, podFailurePolicy={"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]})
    bad, good = running(store, job, 2)
    kubelet(store, good, "Running")
    kubelet(store, bad, "Failed", exit_code=42)
    failed = job_condition(store, job, "Failed")
    assert failed.reason == "PodFailurePolicy"
    assert failed.message == (f"Container main for pod default/{bad.name} failed with exit code 42 "
                              "matching FailJob rule at index 0")
    with pytest.raises(NotFound):
        store.get(Pod, "default", good.name)  # deleted, and its finalizer released
    assert store.get(Job, "default", job.name).status.failed == 2


def test_ignored_failure_is_replaced_without_counting(store, controller):
    job = submit(store, completions=1, parallelism=1, backoff_limit=0, podFailurePolicy={"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]})
    (pod,) = running(store, job, 1)
    kubelet(store, pod, "Failed", exit_code=137, conditions=["DisruptionTarget"])
    (replacement,) = running(store, job, 1)
    kubelet(store, replacement, "Succeeded")
    job_condition(store, job, "Complete")
    status = store.get(Job, "default", job.name).status
    assert (status.succeeded, status.failed) == (1, None)


def test_suspend_deletes_pods_and_resume_recreates_them(store, controller):
    job = submit(store, completions=4, parallelism=2)
    before = running(store, job, 2)
    job = store.get(Job, "default", job.name)
    job.spec.suspend = True
    store.update(job)
    wait_for(lambda: not pods(store, job), what="pods deleted on suspend")
    suspended = job_condition(store, job, "Suspended")
    assert (suspended.reason, suspended.message) == ("JobSuspended", "Job suspended")
    assert store.get(Job, "default", job.name).status.failed is None
    job = store.get(Job, "default", job.name)
    job.spec.suspend = False
    store.update(job)
    after = running(store, job, 2)
    assert not {p.name for p in before} & {p.name for p in after}
    resumed = find_condition(store.get(Job, "default", job.name).status.conditions, "Suspended")
    assert (resumed.status, resumed.reason) == ("False", "JobResumed")
    seen = events(store, job.name)
    assert ("Normal", "Suspended", "Job suspended") in seen and ("Normal", "Resumed", "Job resumed") in seen
    assert {f"Deleted pod: {p.name}" for p in before} <= {m for _, r, m in seen if r == "SuccessfulDelete"}


def test_deleting_the_job_cascades_to_its_pods(store, controller):
    job = submit(store, completions=2, parallelism=2)
    for pod in running(store, job, 2):
        kubelet(store, pod, "Running")
    store.delete(Job, "default", job.name)
    # The cascade marks the pods deleted; the controller releases the finalizers that hold them.
    wait_for(lambda: not pods(store, job), what="pods of the deleted job gone")


def test_counts_survive_a_controller_restart_and_pod_deletion(store):
    first = JobController(store, backoff_base=0.05).start()
    job = submit(store, completions=2, parallelism=2)
    a, b = running(store, job, 2)
    first.stop()
    # While no controller runs: one pod succeeds, the other succeeds and is deleted by a user.
    kubelet(store, a, "Succeeded")
    kubelet(store, b, "Succeeded")
    store.delete(Pod, "default", b.name)
    assert store.get(Pod, "default", b.name).metadata.deletion_timestamp  # held by the tracking finalizer
    second = JobController(store, backoff_base=0.05).start()
    try:
        job_condition(store, job, "Complete")
    finally:
        second.stop()
    status = store.get(Job, "default", job.name).status
    assert (status.succeeded, status.failed) == (2, None)
    assert [p.name for p in pods(store, job)] == [a.name]


def test_ttl_after_finished_deletes_the_job_and_its_pods(store, controller):
    job = submit(store, completions=1, parallelism=1, ttlSecondsAfterFinished=0)
    (pod,) = running(store, job, 1)
    kubelet(store, pod, "Succeeded")

    def gone():
        try:
            store.get(Job, "default", job.name)
        except NotFound:
            return True
        return False
    wait_for(gone, what="the finished job deleted")
    wait_for(lambda: not pods(store, job), what="its pods deleted")


def test_active_deadline_fails_the_job(store, controller):
    job = submit(store, completions=1, parallelism=1, activeDeadlineSeconds=1)
    (pod,) = running(store, job, 1)
    kubelet(store, pod, "Running")
    failed = job_condition(store, job, "Failed")
    assert (failed.reason, failed.message) == ("DeadlineExceeded", "Job was active longer than specified deadline")
    wait_for(lambda: not pods(store, job), what="the running pod deleted")
