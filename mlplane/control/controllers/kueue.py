"""The Kueue controller: batch/v1 Jobs queued through Workloads, admitted by the Kueue admission core.

Job integration (Kueue's pkg/controller/jobframework/reconciler.go and pkg/controller/jobs/job):
a Job with the label ``kueue.x-k8s.io/queue-name`` gets a Workload that the Job owns, named as
Kueue names it (``job-<name>-<hash5>``, jobframework/workload_names.go), with one podSet "main"
(count = min(parallelism, completions), template = the Job's pod template). Upstream a mutating webhook sets
``spec.suspend: true`` when such a Job is created; here the controller suspends it on its first
reconcile, so a Job created unsuspended has a short window in which the Job controller may create
pods; they are deleted as soon as the suspension lands. Submit queued Jobs with ``suspend: true``
to close the window. Jobs without the label are left alone (manageJobsWithoutQueueName false).

Admission: every change to a Kueue object or a Workload queues one admission pass (the work queue
de-duplicates, so a burst of changes is one pass): one scheduling cycle of
``mlplane.policy.workload.kueue`` over what the store holds now, its results written back:

- admitted: ``status.admission``, ``QuotaReserved=True`` (reason QuotaReserved) and
  ``Admitted=True`` (reason Admitted); a former ``Evicted``/``Preempted`` turns False with reason
  QuotaReserved and "Previously: ..." (workload.SetQuotaReservation). The Job is then unsuspended
  with the flavors' nodeLabels merged into its pod template's nodeSelector and the flavors'
  tolerations appended (RunWithPodSetsInfo), and, under partial admission (a podSet minCount),
  parallelism set to the admitted count;
- pending: ``QuotaReserved=False``, reason Pending (or Inadmissible / Misconfigured for a
  workload that cannot enter a queue: missing or stopped LocalQueue, missing or stopped
  ClusterQueue, namespace not selected) with the core's message, written only when it changes;
- preempted: ``Evicted=True`` (reason Preempted) and ``Preempted=True`` (InClusterQueue, ...), both
  with the core's message. The Job is suspended and its pod template restored, the Job controller
  deletes its pods, and once the Job has no active pod the quota is released: admission cleared,
  ``QuotaReserved=False`` (Pending), ``Admitted=False`` (NoReservation), ``Requeued=False`` and
  ``requeueState`` {count, requeueAt} with exponential backoff (base·2^(count-1), capped). When
  requeueAt has passed, ``Requeued=True`` (BackoffFinished) and the workload queues again. (Kueue
  applies requeueState backoff to waitForPodsReady evictions and requeues preempted workloads at
  once; issue #4 asks for backoff on every eviction. ``backoff_base=0`` gives Kueue's behaviour.)
- a finished Job (Complete/Failed) marks its Workload ``Finished=True`` (Succeeded / Failed),
  which releases its quota.

A BestEffortFIFO ClusterQueue sets aside a head that cannot be admitted, so the next workload is
tried in the next pass; the set-aside workloads return once quota is released (a workload finishes,
is evicted or deleted) or a queue, cohort or flavor changes (Kueue's inadmissible workloads). As in
Kueue's queue manager they are kept in memory, not in the store: ``inadmissible()`` lists them and
``/metrics`` reads them from there (``kueue_pending_workloads{status="inadmissible"}``).

ClusterQueue and LocalQueue status (pendingWorkloads, reservingWorkloads, admittedWorkloads,
flavorsReservation, flavorsUsage; with fair sharing on, ``fairSharing.weightedShare``: the
ClusterQueue's dominant resource share over its weight, rounded up, as Kueue's
clusterqueue_controller.go writes it) is written after every pass, only when it changed, and each
ClusterQueue gets the condition ``Active``: True (Ready, "Can admit new workloads") or False with
the first of the reasons Stopped, FlavorNotFound and the message listing them all
(pkg/cache/scheduler/clusterqueue.go inactiveReason). A ClusterQueue or LocalQueue with
``stopPolicy: HoldAndDrain`` evicts its admitted workloads (``Evicted=True``, reason
ClusterQueueStopped / LocalQueueStopped, pkg/controller/core/workload_controller.go); they are
released and requeued like preempted ones.

ClusterQueues and ResourceFlavors carry the finalizer ``kueue.x-k8s.io/resource-in-use``: a deleted
ClusterQueue is Terminating (Active=False, admits nothing new) until no workload holds quota in it;
a deleted ResourceFlavor stays until no ClusterQueue references it. ``spec.active: false`` on an
admitted workload evicts it (Evicted=True, reason Deactivated) without a requeue. An object the
admission core rejects gets a Warning event (AdmissionSkipped) and is left out of the pass.

The Configuration (config.kueue.x-k8s.io/v1beta1), when given, is handed to the admission core, so
``fairSharing`` applies, and drives ``waitForPodsReady`` (pkg/controller/core/workload_controller.go,
pkg/controller/jobframework/reconciler.go, site "Setup All-or-nothing with ready Pods"):

- every Workload carries ``PodsReady``: False (WaitForStart, "Not all pods are ready or succeeded")
  until it is admitted and ready+succeeded pods reach min(parallelism, completions) (the Job
  integration's PodsReady); then True (Started, or Recovered after a WaitForRecovery), "All pods
  reached readiness and the workload is running"; a ready workload that loses a pod turns False
  (WaitForRecovery, "At least one pod has failed, waiting for recovery"). The condition is kept
  whether or not waitForPodsReady is enabled, as upstream;
- with ``enable: true``, an admitted workload not PodsReady within ``timeout`` of its admission
  (or within ``recoveryTimeout`` of losing readiness, when set) is evicted: ``Evicted=True``,
  reason PodsReadyTimeout, "Exceeded the PodsReady timeout <ns>/<name>"; its Job is stopped, its
  quota released and it is requeued after backoffBaseSeconds·2^(n-1) s (capped at
  backoffMaxSeconds; requeuingStrategy's base and cap then apply to every eviction). Past
  ``backoffLimitCount`` requeues it is deactivated instead (``spec.active: false``, ``Evicted=True``
  reason DeactivatedDueToRequeuingLimitExceeded) and not queued again. The timers are work-queue
  requeues at the deadline, not polling. ``requeuingStrategy.timestamp`` is not interpreted (the
  queue order always uses the creation time);
- with ``blockAdmission`` (default: as ``enable``), no workload is admitted while any admitted
  workload is not yet PodsReady (the scheduler waits, as upstream's PodsReadyForAllAdmittedWorkloads).

Reconciles read from the store, not the informer caches, so an admission pass always sees the
previous pass's writes and never admits twice into the same quota. One worker runs every key, so
admission passes and Job syncs never interleave.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from datetime import datetime, timezone

from mlplane.api.batch import Job
from mlplane.api.core import Namespace
from mlplane.api.errors import NotFound
from mlplane.api.kueue import (Admission, ClusterQueue, ClusterQueueStatus, Cohort, Configuration, FairSharingStatus,
                               FlavorUsage, LocalQueue, LocalQueueFlavorUsage, LocalQueueResourceUsage,
                               LocalQueueStatus, PodSet, PriorityClassRef, RequeueState, ResourceFlavor, ResourceUsage,
                               Workload, WorkloadPriorityClass, WorkloadSpec, cluster_queue_of, duration_seconds,
                               reserved)
from mlplane.api.meta import Object, ObjectMeta, controller_of, find_condition, is_true, owner_reference, parse_time, \
    set_condition
from mlplane.api.quantity import milli
from mlplane.control import metrics
from mlplane.control.runtime import Controller, EventRecorder, Informer, Requeue
from mlplane.control.store.base import Store
from mlplane.policy.workload.job import is_finished
from mlplane.policy.workload.kueue import model, snapshot
from mlplane.policy.workload.kueue.units import format_quantity

log = logging.getLogger(__name__)

COMPONENT = "kueue-controller"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
POD_SET = "main"  # the podSet name of a batch/v1 Job (pkg/controller/jobs/job)
ADMISSION_KEY = "admission"
FINALIZER = "kueue.x-k8s.io/resource-in-use"
_JOB_PREFIX = "job:"
_HASH_LENGTH = 5
_MAX_PREFIX = 253 - 1 - _HASH_LENGTH
# Reasons of QuotaReserved=False that Kueue's workload controller writes for a workload that cannot
# enter a queue; every other pending workload gets the scheduler's reason "Pending".
_BLOCKED_REASONS = (model.INADMISSIBLE, model.MISCONFIGURED)
# PodsReady (pkg/controller/jobframework/reconciler.go generatePodsReadyCondition).
_NOT_READY = "Not all pods are ready or succeeded"
_RECOVERING = "At least one pod has failed, waiting for recovery"
_READY = "All pods reached readiness and the workload is running"
_DEACTIVATED = "DeactivatedDueToRequeuingLimitExceeded"
_DEACTIVATED_MESSAGE = "The workload is deactivated due to exceeding the maximum number of re-queuing retries"


def workload_name(job: Job) -> str:
    """Kueue's GetWorkloadNameForOwnerWithGVK: ``job-<name>-`` and 5 hex digits of a SHA-1 of the
    owner's kind, group, name and UID."""
    digest = hashlib.sha1("\n".join((Job.KIND, "batch", job.name, job.uid)).encode()).hexdigest()
    return f"job-{job.name}"[:_MAX_PREFIX] + "-" + digest[:_HASH_LENGTH]


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finished(wl: Workload) -> bool:
    return is_true(wl.status.conditions, "Finished")


def _job_key_of_workload(wl: Object) -> str | None:
    ref = controller_of(wl)
    if ref is None or ref.kind != Job.KIND or ref.api_version != Job.API_VERSION:
        return None
    return f"{_JOB_PREFIX}{wl.namespace}/{ref.name}"


class KueueController:
    """Queues labelled Jobs through Workloads and admits them with Kueue's semantics.

    ``config``: the Kueue Configuration (fairSharing, waitForPodsReady); None is Kueue's defaults.
    ``backoff_base``/``backoff_max`` (seconds) shape the requeue delay after an eviction
    (Kueue's waitForPodsReady.requeuingStrategy defaults: 60 s doubling, capped at 3600 s); a
    Configuration with waitForPodsReady replaces them with its requeuingStrategy."""

    def __init__(self, store: Store, *, config: Configuration | None = None, recorder: EventRecorder | None = None,
                 backoff_base: float = 60.0, backoff_max: float = 3600.0):
        self.store = store
        self.config = config
        self.recorder = recorder or EventRecorder(store, COMPONENT)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.backoff_limit: int | None = None
        wait = config.wait_for_pods_ready if config is not None and config.wait_for_pods_ready_enabled else None
        self.pods_ready_timeout = self.recovery_timeout = None
        self.block_admission = False
        if wait is not None:
            strategy = wait.requeuing_strategy
            self.backoff_base, self.backoff_max = float(strategy.backoff_base_seconds), float(
                strategy.backoff_max_seconds)
            self.backoff_limit = strategy.backoff_limit_count
            self.pods_ready_timeout = duration_seconds(wait.timeout)
            self.recovery_timeout = None if wait.recovery_timeout is None else duration_seconds(wait.recovery_timeout)
            self.block_admission = bool(wait.block_admission)
        self._lock = threading.Lock()
        self._set_aside: set[str] = set()  # keys of BestEffortFIFO heads that could not be admitted
        # Bumped whenever the set-aside workloads are offered again: a pass merges what it set
        # aside only if no release happened meanwhile (Kueue's queueInadmissibleCycle).
        self._generation = 0
        self.controller = Controller(COMPONENT, self.reconcile, workers=1)
        self.jobs = Informer(store, Job)
        self.workloads = Informer(store, Workload)
        self.controller.watch(self.jobs, lambda j: f"{_JOB_PREFIX}{j.key}" if QUEUE_LABEL in j.labels else None)
        self.workloads.add_handler(self._on_workload)
        self._config = [Informer(store, kind) for kind in (ClusterQueue, LocalQueue, Cohort, ResourceFlavor,
                                                          WorkloadPriorityClass)]
        for informer in self._config:
            informer.add_handler(self._on_config)
        self._informers = [self.jobs, self.workloads, *self._config]

    def start(self) -> "KueueController":
        for informer in self._informers:
            informer.start()
        self.controller.start()
        metrics.register_inadmissible(self.store, self.inadmissible)
        return self

    def stop(self) -> None:
        metrics.register_inadmissible(self.store, None)
        self.controller.stop()
        for informer in reversed(self._informers):
            informer.stop()

    # -- triggers ---------------------------------------------------------------------------------
    def _on_workload(self, type_: str, old: Object | None, new: Object) -> None:
        assert isinstance(new, Workload)
        released = type_ == "DELETED" or (isinstance(old, Workload) and reserved(old) and not reserved(new)) or (
            _finished(new) and not (isinstance(old, Workload) and _finished(old)))
        if released:
            self._requeue_set_aside()
        key = _job_key_of_workload(new)
        if key is not None:
            self.controller.queue.add(key)
        self.controller.queue.add(ADMISSION_KEY)

    def _on_config(self, type_: str, old: Object | None, new: Object) -> None:
        """A queue, cohort, flavor or priority class changed: its spec, not the status we write."""
        if type_ == "MODIFIED" and old is not None and old.model_dump(exclude={"status", "metadata"}) == \
                new.model_dump(exclude={"status", "metadata"}) and \
                old.metadata.deletion_timestamp == new.metadata.deletion_timestamp:
            return
        self._requeue_set_aside()
        self.controller.queue.add(ADMISSION_KEY)

    def inadmissible(self) -> frozenset[str]:
        """Keys of the pending workloads set aside now: BestEffortFIFO heads that could not be
        admitted and wait for a release or a queue, cohort or flavor change."""
        with self._lock:
            return frozenset(self._set_aside)

    def _requeue_set_aside(self) -> None:
        with self._lock:
            self._set_aside.clear()
            self._generation += 1

    def reconcile(self, key: str) -> Requeue | None:
        if key == ADMISSION_KEY:
            return self._admit()
        return self._sync_job(key.removeprefix(_JOB_PREFIX))

    # -- the Job side (jobframework reconciler) ---------------------------------------------------
    def _sync_job(self, key: str) -> Requeue | None:
        namespace, _, name = key.partition("/")
        try:
            job = self.store.get(Job, namespace, name)
        except NotFound:
            return None  # its Workload goes with it (ownerReference cascade)
        queue = job.labels.get(QUEUE_LABEL)
        if not queue:
            return None
        try:
            wl: Workload | None = self.store.get(Workload, namespace, workload_name(job))
        except NotFound:
            wl = None
        if wl is None:
            if is_finished(job):
                return None
            if not job.spec.suspend:
                job = self._stop_job(job, None, None)
            wl = self._create_workload(job, queue)
            if wl is None:
                return Requeue(10.0)
        if _finished(wl):
            return None
        if is_finished(job):
            self._finish(wl, job)
            return None
        wl = self._sync_pods_ready(wl, job)
        wake = self._pods_ready_timeout(wl)
        if isinstance(wake, Workload):
            wl, wake = wake, None
        evicted = find_condition(wl.status.conditions, "Evicted")
        evicting = evicted is not None and evicted.status == "True"
        running = _admitted(wl) and not evicting
        if running and job.spec.suspend:
            job = self._start_job(job, wl)
        elif not running:
            job = self._stop_job(job, wl, evicted.message if evicting else None)
        if evicting and reserved(wl) and job.spec.suspend and not job.status.active:
            wl = self._release(wl, evicted.reason or "Preempted", evicted.message or "")
            self._sync_pods_ready(wl, job)
        return wake

    def _sync_pods_ready(self, wl: Workload, job: Job) -> Workload:
        """Write the PodsReady condition when it changes (generatePodsReadyCondition)."""
        current = find_condition(wl.status.conditions, "PodsReady")
        if not _admitted(wl):
            wanted = ("False", "WaitForStart", _NOT_READY)
        elif _job_pods_ready(job):
            recovered = current is not None and current.reason in ("WaitForRecovery", "Recovered")
            wanted = ("True", "Recovered" if recovered else "Started", _READY)
        elif current is not None and (current.status == "True" or current.reason == "WaitForRecovery"):
            wanted = ("False", "WaitForRecovery", _RECOVERING)
        else:
            wanted = ("False", "WaitForStart", _NOT_READY)
        if current is not None and (current.status, current.reason, current.message) == wanted:
            return wl
        wl.status.conditions = set_condition(wl.status.conditions, "PodsReady", *wanted)
        return self.store.update_status(wl)

    def _pods_ready_timeout(self, wl: Workload) -> Workload | Requeue | None:
        """Evict an admitted workload that is not PodsReady in time (reconcileNotReadyTimeout):
        the evicted Workload, a Requeue at the deadline, or None when there is nothing to wait for."""
        if self.pods_ready_timeout is None or not wl.spec.active or not _admitted(wl) or \
                is_true(wl.status.conditions, "Evicted"):
            return None
        ready = find_condition(wl.status.conditions, "PodsReady")
        if ready is not None and ready.status == "True":
            return None
        if ready is not None and ready.reason == "WaitForRecovery":
            if self.recovery_timeout is None:
                return None
            since, timeout = ready.last_transition_time, self.recovery_timeout
        else:
            since, timeout = find_condition(wl.status.conditions, "Admitted").last_transition_time, \
                self.pods_ready_timeout
        started = parse_time(since)
        remaining = timeout - (time.time() - started.timestamp()) if started is not None else 0.0
        if remaining > 0:
            return Requeue(remaining)
        count = (wl.status.requeue_state.count or 0) if wl.status.requeue_state else 0
        if self.backoff_limit is not None and count + 1 > self.backoff_limit:
            # triggerDeactivationOrBackoffRequeue: past the limit the workload is deactivated.
            wl.spec.active = False
            wl = self.store.update(wl)
            return self._evict(wl, _DEACTIVATED, _DEACTIVATED_MESSAGE)
        return self._evict(wl, "PodsReadyTimeout", f"Exceeded the PodsReady timeout {wl.key}")

    def _evict(self, wl: Workload, reason: str, message: str) -> Workload:
        """workload.Evict: Evicted=True; the Job side then stops the Job and releases the quota."""
        wl.status.conditions = set_condition(wl.status.conditions, "Evicted", "True", reason, message)
        wl = self.store.update_status(wl)
        self.recorder.normal(wl, f"EvictedDueTo{reason}", message)
        return wl

    def _create_workload(self, job: Job, queue: str) -> Workload | None:
        spec = job.spec
        priority, ref = None, None
        class_name = job.labels.get(PRIORITY_CLASS_LABEL)
        if class_name:
            try:
                wpc = self.store.get(WorkloadPriorityClass, None, class_name)
            except NotFound:
                self.recorder.warning(job, "ErrWorkloadCompose", f"workloadPriorityClass.kueue.x-k8s.io "
                                                                 f"\"{class_name}\" not found")
                return None
            priority = wpc.value
            ref = PriorityClassRef(group="kueue.x-k8s.io", kind="WorkloadPriorityClass", name=class_name)
        wl = Workload(
            metadata=ObjectMeta(name=workload_name(job), namespace=job.namespace,
                                labels={JOB_UID_LABEL: job.uid}, owner_references=[owner_reference(job)]),
            spec=WorkloadSpec(pod_sets=[PodSet(name=POD_SET, count=_pods_count(job),
                                               template=spec.template.model_copy(deep=True))],
                              queue_name=queue, priority=priority, priority_class_ref=ref))
        created = self.store.create(wl)
        self.recorder.normal(job, "CreatedWorkload", f"Created Workload: {created.key}")
        return created

    def _flavors(self, wl: Workload) -> list[ResourceFlavor]:
        assignment = next((a for a in wl.status.admission.pod_set_assignments if a.name == POD_SET), None)
        names = sorted(set((assignment.flavors or {}).values())) if assignment else []
        out = []
        for name in names:
            try:
                out.append(self.store.get(ResourceFlavor, None, name))
            except NotFound:
                pass  # deleted since admission: nothing to inject for it
        return out

    def _start_job(self, job: Job, wl: Workload) -> Job:
        """Unsuspend with the admitted flavors' nodeLabels and tolerations (RunWithPodSetsInfo)."""
        pod = job.spec.template.spec
        selector = dict(pod.node_selector or {})
        tolerations = list(pod.tolerations or [])
        for flavor in self._flavors(wl):
            selector.update(flavor.spec.node_labels or {})
            tolerations.extend(t for t in flavor.spec.tolerations or [] if t not in tolerations)
        pod.node_selector = selector or None
        pod.tolerations = tolerations or None
        assignment = next(a for a in wl.status.admission.pod_set_assignments if a.name == POD_SET)
        if wl.spec.pod_sets[0].min_count is not None and assignment.count is not None:
            job.spec.parallelism = assignment.count  # partial admission (job RunWithPodSetsInfo)
        job.spec.suspend = False
        job = self.store.update(job)
        self.recorder.normal(job, "Started", f"Admitted by clusterQueue {wl.status.admission.cluster_queue}")
        return job

    def _stop_job(self, job: Job, wl: Workload | None, message: str | None) -> Job:
        """Suspend the Job, clear its startTime and restore the pod template's nodeSelector,
        tolerations and parallelism from the Workload's podSet (Kueue's job Stop and
        RestorePodSetsInfo); the Job controller then deletes the pods. Each step runs only when
        needed, in this order: Kubernetes lets the scheduling directives of a Job's pod template
        change only while it is suspended and has no startTime."""
        if not job.spec.suspend:
            job.spec.suspend = True
            job = self.store.update(job)
            if message is not None:
                self.recorder.normal(job, "Stopped", message)
        if job.status.start_time is not None:
            job.status.start_time = None
            job = self.store.update_status(job)
        if wl is not None:
            original = wl.spec.pod_sets[0]
            pod = job.spec.template.spec
            # parallelism only changed under partial admission (job RestorePodSetsInfo)
            parallelism = original.count if original.min_count is not None else job.spec.parallelism
            restored = (original.template.spec.node_selector, original.template.spec.tolerations, parallelism)
            if (pod.node_selector, pod.tolerations, job.spec.parallelism) != restored:
                pod.node_selector, pod.tolerations, job.spec.parallelism = restored
                job = self.store.update(job)
        return job

    def _finish(self, wl: Workload, job: Job) -> None:
        failed = find_condition(job.status.conditions, "Failed")
        if failed is not None and failed.status == "True":
            reason, message = "Failed", failed.message or "Job failed"
        else:
            reason, message = "Succeeded", "Job finished successfully"
        wl.status.conditions = set_condition(wl.status.conditions, "Finished", "True", reason, message)
        self.store.update_status(wl)
        self.recorder.normal(wl, "Finished", message)

    def _release(self, wl: Workload, reason: str, message: str) -> Workload:
        """The evicted Job has stopped: give the quota back and requeue with backoff
        (UnsetQuotaReservationWithCondition, then the requeueState of KEP-1282). A deactivated
        workload is not requeued."""
        conditions = set_condition(wl.status.conditions, "QuotaReserved", "False", "Pending", message)
        conditions = set_condition(conditions, "Admitted", "False", "NoReservation", "The workload has no reservation")
        wl.status.conditions = set_condition(conditions, "Requeued", "False", reason, message)
        wl.status.admission = None
        if wl.spec.active:
            previous = wl.status.requeue_state
            count = ((previous.count or 0) if previous else 0) + 1
            delay = min(self.backoff_base * 2 ** (count - 1), self.backoff_max)
            wl.status.requeue_state = RequeueState(count=count, requeue_at=_stamp(math.ceil(time.time() + delay)))
        return self.store.update_status(wl)

    # -- admission (the scheduler) --------------------------------------------------------------
    def _admit(self) -> Requeue | None:
        now = time.time()
        config: list[Object] = []
        for kind in (ResourceFlavor, Cohort, ClusterQueue, LocalQueue, WorkloadPriorityClass, Namespace):
            config.extend(self.store.list(kind).items)
        workloads = {wl.key: wl for wl in self.store.list(Workload).items}
        config = self._sync_finalizers(config, workloads)
        with self._lock:
            set_aside, generation = set(self._set_aside), self._generation
        wake: float | None = None
        candidates: list[Workload] = []
        queues = {o.name: o for o in config if isinstance(o, ClusterQueue)}
        local_queues = {o.key: o for o in config if isinstance(o, LocalQueue)}
        cq_of = {key: lq.spec.cluster_queue for key, lq in local_queues.items()}
        for key, wl in workloads.items():
            if _finished(wl) or not (wl.spec.active or reserved(wl)):
                continue  # an inactive workload is in no queue
            if reserved(wl):
                wl = workloads[key] = self._drain(wl, queues, local_queues)
            else:
                at = parse_time(wl.status.requeue_state.requeue_at if wl.status.requeue_state else None)
                if at is not None:
                    if at.timestamp() > now:
                        wake = at.timestamp() if wake is None else min(wake, at.timestamp())
                        continue
                    wl = workloads[key] = self._backoff_finished(wl)
                if key in set_aside:
                    continue
            candidates.append(wl)
        if self.block_admission and any(reserved(wl) and not is_true(wl.status.conditions, "PodsReady")
                                        for wl in candidates):
            # blockAdmission: the scheduler waits until every admitted workload is PodsReady.
            self._write_queue_status(config, [wl for wl in workloads.values() if not _finished(wl)], cq_of)
            return None if wake is None else Requeue(max(0.0, wake - time.time()))
        result = self._schedule(config, candidates, now)
        if result is None:
            return None

        for key, admission in result.admitted.items():
            workloads[key] = self._write_admission(workloads[key], admission.to_dict())
        for key, preempted in result.preempted.items():
            workloads[key] = self._write_preemption(workloads[key], preempted.reason, preempted.message)
        for key, pending in result.pending.items():
            # The core's message, then the numbers behind it ("requested 8, available 2 (nominal 4, ...)").
            message = "\n".join((pending.message, *pending.details))
            workloads[key] = self._write_pending(workloads[key], pending.reason, message)
        with self._lock:
            if self._generation == generation:
                self._set_aside |= result.set_aside
        self._write_queue_status(config, [wl for wl in workloads.values() if not _finished(wl)], cq_of)
        return None if wake is None else Requeue(max(0.0, wake - time.time()))

    def _schedule(self, config: list[Object], candidates: list[Workload], now: float) -> snapshot.Result | None:
        """One scheduling cycle. An object the core rejects (say, a Workload admitted to a
        ClusterQueue that no longer exists) gets a Warning event and is left out of the pass, so
        one bad object never stalls every queue; None when the pass cannot run at all."""
        extra = [self.config] if self.config is not None else []
        objects = [*config, *extra, *candidates]
        while True:
            try:
                return snapshot.schedule(objects, now, 1)
            except snapshot.SnapshotError as e:
                bad = e.obj
                if not isinstance(bad, Object) or not any(o is bad for o in objects):
                    log.error("Kueue admission pass skipped: %s", e)
                    return None
                self.recorder.warning(bad, "AdmissionSkipped", f"Left out of Kueue admission: {e}")
                objects = [o for o in objects if o is not bad]

    def _sync_finalizers(self, config: list[Object], workloads: dict[str, Workload]) -> list[Object]:
        """Kueue's ``kueue.x-k8s.io/resource-in-use`` finalizer on ClusterQueues and ResourceFlavors
        (pkg/controller/core/clusterqueue_controller.go, resourceflavor_controller.go): added to
        every live one; removed from one being deleted once no workload holds quota in the
        ClusterQueue, or no ClusterQueue references the ResourceFlavor. Returns ``config`` without
        the objects whose deletion completed."""
        reserving = {wl.status.admission.cluster_queue for wl in workloads.values() if reserved(wl)
                     and not _finished(wl)}
        referenced = {f.name for cq in config if isinstance(cq, ClusterQueue)
                      for g in cq.spec.resource_groups or [] for f in g.flavors}
        out: list[Object] = []
        for obj in config:
            if isinstance(obj, (ClusterQueue, ResourceFlavor)):
                finalizers = list(obj.metadata.finalizers or [])
                in_use = obj.name in (reserving if isinstance(obj, ClusterQueue) else referenced)
                if obj.metadata.deletion_timestamp:
                    if FINALIZER in finalizers and not in_use:
                        obj.metadata.finalizers = [f for f in finalizers if f != FINALIZER] or None
                        self.store.update(obj)
                        if not obj.metadata.finalizers:
                            continue  # deleted now
                elif FINALIZER not in finalizers:
                    obj.metadata.finalizers = [*finalizers, FINALIZER]
                    obj = self.store.update(obj)
            out.append(obj)
        return out

    def _drain(self, wl: Workload, queues: dict[str, ClusterQueue], local_queues: dict[str, LocalQueue]) -> Workload:
        """``spec.active: false`` evicts the workload (reason Deactivated, not requeued), and so does
        HoldAndDrain on its ClusterQueue or LocalQueue (workload_controller.go Reconcile,
        reconcileOnClusterQueueActiveState / reconcileOnLocalQueueActiveState)."""
        if is_true(wl.status.conditions, "Evicted"):
            return wl
        if not wl.spec.active:
            return self._evict(wl, "Deactivated", "The workload is deactivated")
        cq = queues.get(wl.status.admission.cluster_queue)
        if cq is not None and cq.spec.stop_policy == "HoldAndDrain":
            return self._evict(wl, "ClusterQueueStopped", "The ClusterQueue is stopped")
        lq = local_queues.get(f"{wl.namespace}/{wl.spec.queue_name}")
        if lq is not None and lq.spec.stop_policy == "HoldAndDrain":
            return self._evict(wl, "LocalQueueStopped", "The LocalQueue is stopped")
        return wl

    def _backoff_finished(self, wl: Workload) -> Workload:
        wl.status.conditions = set_condition(wl.status.conditions, "Requeued", "True", "BackoffFinished",
                                             "The workload backoff was finished")
        wl.status.requeue_state = RequeueState(count=wl.status.requeue_state.count)
        return self.store.update_status(wl)

    def _write_admission(self, wl: Workload, admission: dict) -> Workload:
        cq = admission["clusterQueue"]
        wl.status.admission = Admission.model_validate(admission)
        conditions = set_condition(wl.status.conditions, "QuotaReserved", "True", "QuotaReserved",
                                   f"Quota reserved in ClusterQueue {cq}")
        conditions = set_condition(conditions, "Admitted", "True", "Admitted", "The workload is admitted")
        for type_ in ("Evicted", "Preempted"):
            previous = find_condition(conditions, type_)
            if previous is not None and previous.status == "True":
                conditions = set_condition(conditions, type_, "False", "QuotaReserved",
                                           f"Previously: {previous.message}")
        wl.status.conditions = conditions
        wl = self.store.update_status(wl)
        self.recorder.normal(wl, "QuotaReserved", f"Quota reserved in ClusterQueue {cq}")
        self.recorder.normal(wl, "Admitted", f"Admitted by ClusterQueue {cq}")
        return wl

    def _write_preemption(self, wl: Workload, reason: str, message: str) -> Workload:
        if is_true(wl.status.conditions, "Evicted"):
            return wl  # already on its way out
        conditions = set_condition(wl.status.conditions, "Evicted", "True", "Preempted", message)
        wl.status.conditions = set_condition(conditions, "Preempted", "True", reason, message)
        wl = self.store.update_status(wl)
        self.recorder.normal(wl, "Preempted", message)
        return wl

    def _write_pending(self, wl: Workload, reason: str, message: str) -> Workload:
        reason = reason if reason in _BLOCKED_REASONS else "Pending"
        current = find_condition(wl.status.conditions, "QuotaReserved")
        if current is not None and (current.status, current.reason, current.message) == ("False", reason, message):
            return wl
        wl.status.conditions = set_condition(wl.status.conditions, "QuotaReserved", "False", reason, message)
        return self.store.update_status(wl)

    # -- queue status ------------------------------------------------------------------------------
    def _write_queue_status(self, config: list[Object], workloads: list[Workload], cq_of: dict[str, str]) -> None:
        """Queue status; with fair sharing on, each ClusterQueue's ``fairSharing.weightedShare`` too."""
        queues = {cq.name: cq for cq in config if isinstance(cq, ClusterQueue)}
        activity = snapshot.queue_activity(config)
        shares = self._weighted_shares(config, workloads)
        for obj in config:
            if isinstance(obj, ClusterQueue):
                mine = [wl for wl in workloads if cluster_queue_of(wl, cq_of) == obj.name]
                status = obj.status.model_copy(deep=True)
                _count(status, mine)
                status.conditions = set_condition(status.conditions, "Active", *activity[obj.name])
                if obj.name in shares:
                    status.fair_sharing = FairSharingStatus(weighted_share=shares[obj.name])
                status.flavors_reservation = _cq_usage(obj, [wl for wl in mine if reserved(wl)])
                status.flavors_usage = _cq_usage(obj, [wl for wl in mine if _admitted(wl)])
            elif isinstance(obj, LocalQueue):
                mine = [wl for wl in workloads if wl.namespace == obj.namespace and wl.spec.queue_name == obj.name]
                status = obj.status.model_copy(deep=True)
                _count(status, mine)
                cq = queues.get(obj.spec.cluster_queue)
                status.flavors_reservation = _lq_usage(cq, [wl for wl in mine if reserved(wl)])
                status.flavors_usage = _lq_usage(cq, [wl for wl in mine if _admitted(wl)])
            else:
                continue
            if status != obj.status:
                obj.status = status
                self.store.update_status(obj)

    def _weighted_shares(self, config: list[Object], workloads: list[Workload]) -> dict[str, int]:
        """The weighted share of every ClusterQueue on the quota held now; empty without fair sharing."""
        if self.config is None or not self.config.fair_sharing_enabled:
            return {}
        objects = [*config, self.config, *(wl for wl in workloads if reserved(wl))]
        try:
            return snapshot.weighted_shares(objects, time.time())
        except snapshot.SnapshotError as e:
            log.error("Kueue weighted shares not computed: %s", e)
            return {}


def _admitted(wl: Workload) -> bool:
    return reserved(wl) and is_true(wl.status.conditions, "Admitted")


def _pods_count(job: Job) -> int:
    """min(parallelism, completions): the pods a Job runs at once (pkg/controller/jobs/job podsCount)."""
    spec = job.spec
    wanted = 1 if spec.parallelism is None else spec.parallelism
    return wanted if spec.completions is None else min(wanted, spec.completions)


def _job_pods_ready(job: Job) -> bool:
    """The batch/v1 Job integration's PodsReady: ready + succeeded pods reach podsCount
    (pkg/controller/jobs/job/job_controller.go)."""
    return (job.status.ready or 0) + (job.status.succeeded or 0) >= _pods_count(job)


def _count(status: ClusterQueueStatus | LocalQueueStatus, workloads: list[Workload]) -> None:
    status.pending_workloads = sum(1 for wl in workloads if not reserved(wl))
    status.reserving_workloads = sum(1 for wl in workloads if reserved(wl))
    status.admitted_workloads = sum(1 for wl in workloads if _admitted(wl))


def _usage(workloads: list[Workload]) -> dict[tuple[str, str], int]:
    """Milli-units used per (flavor, resource) by the workloads' admissions."""
    usage: dict[tuple[str, str], int] = {}
    for wl in workloads:
        for psa in wl.status.admission.pod_set_assignments:
            for res, q in (psa.resource_usage or {}).items():
                flavor = (psa.flavors or {}).get(res)
                if flavor is not None:
                    usage[(flavor, res)] = usage.get((flavor, res), 0) + milli(q)
    return usage


def _cq_usage(cq: ClusterQueue, workloads: list[Workload]) -> list[FlavorUsage]:
    """Every flavor and covered resource of the ClusterQueue, in spec order: total and borrowed."""
    usage = _usage(workloads)
    out = []
    for group in cq.spec.resource_groups or []:
        for flavor in group.flavors:
            resources = []
            for quota in flavor.resources:
                total = usage.get((flavor.name, quota.name), 0)
                borrowed = max(0, total - milli(quota.nominal_quota))
                resources.append(ResourceUsage(name=quota.name, total=format_quantity(quota.name, total),
                                               borrowed=format_quantity(quota.name, borrowed)))
            out.append(FlavorUsage(name=flavor.name, resources=resources))
    return out


def _lq_usage(cq: ClusterQueue | None, workloads: list[Workload]) -> list[LocalQueueFlavorUsage]:
    usage = _usage(workloads)
    out = []
    for group in (cq.spec.resource_groups or []) if cq is not None else []:
        for flavor in group.flavors:
            out.append(LocalQueueFlavorUsage(name=flavor.name, resources=[
                LocalQueueResourceUsage(name=r, total=format_quantity(r, usage.get((flavor.name, r), 0)))
                for r in group.covered_resources]))
    return out


__all__ = ["KueueController", "workload_name", "QUEUE_LABEL", "PRIORITY_CLASS_LABEL"]
