"""The Job controller: runs the pods of batch/v1 Jobs, counts how they end, and reports it.

Informers on Jobs and Pods feed a work queue of Job keys ("namespace/name"): a Job event enqueues
that Job; a pod event enqueues the Job that controls the pod (its controller ownerReference) or,
for a pod that lost its owner but still holds the tracking finalizer, the Job named by its
``batch.kubernetes.io/job-name`` label.

A reconcile reads the Job and its pods from the store rather than from the informer caches, so it
always sees its own earlier writes and never creates a pod twice (upstream needs "expectations"
to get the same from a cache that lags). It asks ``mlplane.policy.workload.job.decide`` what to do
and applies the decision in the order that keeps counting exact across crashes (see that module):
the status (``update_status``; a Conflict re-queues the key), then tracking-finalizer removals,
then pod deletions, then pod creations. Work that falls due later (a failed pod's replacement
after its backoff, activeDeadlineSeconds, ttlSecondsAfterFinished) is re-queued for that moment;
nothing polls.

Pods whose Job is gone (deleted, or replaced by a new Job of the same name) have their tracking
finalizer removed, so that the store's ownerReference cascade can finish deleting them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from mlplane.api.batch import Job
from mlplane.api.core import Pod
from mlplane.api.errors import ApiError, Conflict, NotFound
from mlplane.api.meta import Object, controller_of
from mlplane.control.runtime import Controller, EventRecorder, Informer, Requeue
from mlplane.control.store.base import Store
from mlplane.policy.workload.job import (JOB_NAME_LABEL, TRACKING_FINALIZER, decide, has_tracking_finalizer,
                                         is_controlled_by)

COMPONENT = "job-controller"
_FINALIZER_RETRIES = 5


def _job_key_of_pod(pod: Object) -> str | None:
    """The key of the Job that must look at this pod, if any."""
    ref = controller_of(pod)
    if ref is not None:
        return f"{pod.namespace}/{ref.name}" if _is_job_ref(ref.api_version, ref.kind) else None
    name = pod.labels.get(JOB_NAME_LABEL)
    if name and isinstance(pod, Pod) and has_tracking_finalizer(pod):
        return f"{pod.namespace}/{name}"  # an orphan that still holds our finalizer
    return None


def _is_job_ref(api_version: str, kind: str) -> bool:
    return kind == Job.KIND and api_version == Job.API_VERSION


def _orphaned(pod: Pod, job_name: str) -> bool:
    """Whether a pod that the current Job named ``job_name`` does not control (it is gone, or was
    replaced by a new Job of the same name) is ours to release: it has no controller left, or its
    controller is a Job of that name (upstream syncOrphanPod)."""
    ref = controller_of(pod)
    return ref is None or (_is_job_ref(ref.api_version, ref.kind) and ref.name == job_name)


class JobController:
    """Reconciles every Job in the store. ``backoff_base``/``backoff_max`` (seconds) shape the
    delay before a failed pod is replaced (upstream: 10 s doubling, capped at 6 minutes)."""

    def __init__(self, store: Store, *, backoff_base: float = 10.0, backoff_max: float = 360.0,
                 recorder: EventRecorder | None = None, workers: int = 2):
        self.store = store
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.recorder = recorder or EventRecorder(store, COMPONENT)
        self.jobs = Informer(store, Job)
        self.pods = Informer(store, Pod)
        self.controller = Controller(COMPONENT, self.reconcile, workers=workers)
        self.controller.watch(self.jobs).watch(self.pods, _job_key_of_pod)

    def start(self) -> "JobController":
        self.jobs.start()
        self.pods.start()
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        self.pods.stop()
        self.jobs.stop()

    # -- reconcile ------------------------------------------------------------------------------
    def reconcile(self, key: str) -> Requeue | None:
        namespace, _, name = key.partition("/")
        try:
            job: Job | None = self.store.get(Job, namespace, name)
        except NotFound:
            job = None
        pods = self.store.list(Pod, namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
        owned = [p for p in pods if job is not None and is_controlled_by(p, job)]
        owned_uids = {p.uid for p in owned}
        for pod in pods:
            if pod.uid not in owned_uids and has_tracking_finalizer(pod) and _orphaned(pod, name):
                self._release(pod)
        if job is None:
            return None

        decision = decide(job, owned, datetime.now(timezone.utc), backoff_base=self.backoff_base,
                          backoff_max=self.backoff_max)
        if decision.delete_job:
            # ttlSecondsAfterFinished; upstream's TTL-after-finished controller deletes in the foreground.
            self.store.delete(Job, namespace, name, propagation="Foreground")
            return None
        if decision.status != job.status:
            job.status = decision.status
            job = self.store.update_status(job)
        for event in decision.events:
            self.recorder.record(job, event.type, event.reason, event.message)
        by_name = {p.name: p for p in owned}
        for pod_name in decision.remove_finalizers:
            self._release(by_name[pod_name])
        for pod_name in decision.delete:
            self._delete(job, by_name[pod_name])
        if decision.create:
            try:  # one durable commit for the whole batch on the embedded store
                created = self.store.create_many(decision.create)
            except ApiError as e:
                self.recorder.warning(job, "FailedCreate", f"Error creating: {e.message}")
                raise  # retried with the work queue's backoff, as upstream does
            for pod in created:
                self.recorder.normal(job, "SuccessfulCreate", f"Created pod: {pod.name}")
        return None if decision.requeue_after is None else Requeue(decision.requeue_after)

    def _release(self, pod: Pod) -> None:
        """Remove the tracking finalizer, guarded by resourceVersion so no other change is lost."""
        current = pod
        for _ in range(_FINALIZER_RETRIES):
            finalizers = current.metadata.finalizers or []
            if TRACKING_FINALIZER not in finalizers:
                return
            rest = [f for f in finalizers if f != TRACKING_FINALIZER]
            try:
                self.store.patch(Pod, current.namespace, current.name, {"metadata": {
                    "resourceVersion": current.metadata.resource_version, "finalizers": rest or None}})
                return
            except NotFound:
                return
            except Conflict:
                try:
                    current = self.store.get(Pod, pod.namespace, pod.name)
                except NotFound:
                    return
                if current.uid != pod.uid:
                    return  # a different pod now has this name
        raise Conflict(f'pod "{pod.name}": could not remove finalizer {TRACKING_FINALIZER} after '
                       f"{_FINALIZER_RETRIES} conflicting updates", kind="pods", name=pod.name)

    def _delete(self, job: Job, pod: Pod) -> None:
        try:
            self.store.delete(Pod, pod.namespace, pod.name)
        except NotFound:
            return
        except ApiError as e:
            self.recorder.warning(job, "FailedDelete", f"Error deleting: {e.message}")
            raise
        self.recorder.normal(job, "SuccessfulDelete", f"Deleted pod: {pod.name}")
