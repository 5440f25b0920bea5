"""The batch/v1 Job decision: given a Job, its pods and the time, what to create, delete and report.

``decide(job, pods, now)`` is pure and deterministic. It follows upstream's Job controller as of
v1.31+ (kubernetes pkg/controller/job/job_controller.go with indexed_job_utils.go,
pod_failure_policy.go and backoff_utils.go; https://kubernetes.io/docs/concepts/workloads/controllers/job/):
parallelism and completions (NonIndexed, work-queue mode, Indexed), backoffLimit (with container
restarts for restartPolicy OnFailure), the pod-failure backoff, podFailurePolicy (FailJob, Ignore,
Count, FailIndex), activeDeadlineSeconds, suspend/resume, the interim FailureTarget and
SuccessCriteriaMet conditions before the terminal Failed and Complete ones, and
ttlSecondsAfterFinished.

Counting that survives pod deletion and restarts
------------------------------------------------
Every pod is created with the finalizer ``batch.kubernetes.io/job-tracking``, so it cannot leave
the store before the Job has counted it. A terminated pod is counted in two durable steps, as
upstream does:

1. its UID is added to ``status.uncountedTerminatedPods.succeeded`` or ``.failed`` (a succeeded
   pod of an Indexed Job goes straight into ``status.completedIndexes`` instead), and that status
   is written;
2. only then is the pod's finalizer removed.

A later decision moves each UID in ``uncountedTerminatedPods`` whose pod no longer holds the
finalizer (or is gone) into ``status.succeeded`` / ``status.failed``. Whatever crashes in
between, a pod is counted once: before step 1 it still holds its finalizer and is found again;
between steps 1 and 2 its UID is already recorded and is not added twice; after step 2 only the
recorded UID counts. The terminal condition is written only once nothing is left uncounted, no
pod holds the finalizer and none is terminating. The caller must therefore apply a
``JobDecision`` in order: the status, then the finalizer removals, then the deletions, then the
creations.

Two inputs that upstream keeps in memory are derived from the pods here, so that a restart
loses nothing: the pod-failure backoff (failures since the last success and the last failure
time come from the pods' finish times) and the pods to count (the finalizer says which).

Not supported from upstream's JobSpec: backoffLimitPerIndex, maxFailedIndexes, successPolicy,
podReplacementPolicy (pods are replaced as upstream's default does: once terminating, or once
Failed when a podFailurePolicy is set) and managedBy. Without backoffLimitPerIndex a FailIndex
rule marks the index failed (``status.failedIndexes``), never retries it, and counts toward
backoffLimit; once every index has succeeded or failed with at least one failed, the Job fails
with reason FailedIndexes, as upstream does.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from mlplane.api.batch import (Job, JobStatus, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
                               PodFailurePolicyOnPodConditionsPattern, UncountedTerminatedPods)
from mlplane.api.core import ContainerStatus, EnvVar, EnvVarSource, ObjectFieldSelector, Pod
from mlplane.api.meta import Condition, ObjectMeta, OwnerReference, controller_of, find_condition

# Well-known keys (k8s.io/api/batch/v1 types.go).
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"  # an annotation and a label
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"

# Limits from job_controller.go.
MAX_UNCOUNTED_PODS = 500
MAX_POD_CREATE_DELETE_PER_SYNC = 500
_MAX_GENERATED_NAME_LENGTH = 58  # apiserver names.MaxGeneratedNameLength: 63 less 5 random characters
_MAX_LABEL_VALUE_LENGTH = 63

_DEFAULT_PARALLELISM = 1
_DEFAULT_BACKOFF_LIMIT = 6
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- the decision ------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobEvent:
    """An Event to record on the Job once its status is written."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass
class JobDecision:
    """What to do for one Job, to apply in field order (see the module docstring)."""

    status: JobStatus  # the Job's new status; write it when it differs from the current one
    remove_finalizers: list[str] = field(default_factory=list)  # pod names: drop the tracking finalizer
    delete: list[str] = field(default_factory=list)  # pod names to delete
    create: list[Pod] = field(default_factory=list)  # pods to create (named by generateName)
    events: list[JobEvent] = field(default_factory=list)
    requeue_after: float | None = None  # seconds to the next deadline: backoff expiry, activeDeadline, TTL
    delete_job: bool = False  # ttlSecondsAfterFinished has expired: delete the Job

    def requeue(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def decide(job: Job, pods: Iterable[Pod], now: datetime, *, backoff_base: float = 10.0,
           backoff_max: float = 360.0) -> JobDecision:
    """Decide for ``job`` at time ``now`` (timezone-aware). Pods not controlled by the Job are ignored.

    ``backoff_base`` and ``backoff_max`` (seconds) shape the delay before failed pods are
    replaced: base, doubling with each failure since the last success, capped at max.
    """
    if now.tzinfo is None:
        raise ValueError("decide: now must be a timezone-aware datetime")
    owned = sorted((p for p in pods if is_controlled_by(p, job)), key=lambda p: p.name)
    decision = JobDecision(status=job.status.model_copy(deep=True))
    if is_finished(job):
        # Finished Jobs are never revisited (upstream syncJob returns early); pods that still hold
        # the tracking finalizer are released (upstream's orphan-pod cleanup), and the TTL runs.
        decision.remove_finalizers = [p.name for p in owned if has_tracking_finalizer(p)]
        _ttl(job, now, decision)
        return decision
    return _Sync(job, owned, now, backoff_base, backoff_max, decision).run()


def is_finished(job: Job) -> bool:
    """Whether the Job has a terminal condition (Complete or Failed) that is True."""
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])


def is_controlled_by(pod: Pod, job: Job) -> bool:
    ref = controller_of(pod)
    return ref is not None and bool(job.uid) and ref.uid == job.uid


def has_tracking_finalizer(pod: Pod) -> bool:
    return TRACKING_FINALIZER in (pod.metadata.finalizers or [])


def completion_index(pod: Pod) -> int | None:
    """The pod's completion index annotation, or None when it is missing or not a whole number."""
    value = (pod.metadata.annotations or {}).get(COMPLETION_INDEX_KEY)
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


# --- completion index sets ---------------------------------------------------------------------

class Intervals:
    """A set of completion indexes as sorted, disjoint, non-adjacent [first, last] spans.

    ``str()`` writes upstream's compressed form ("1,3-5,7,8"); ``parse`` reads it back, skipping
    malformed pieces and dropping indexes at or beyond ``completions`` (indexed_job_utils.go).
    """

    __slots__ = ("spans",)

    def __init__(self, spans: Iterable[tuple[int, int]] = ()):
        merged: list[tuple[int, int]] = []
        for first, last in sorted(spans):
            if merged and first <= merged[-1][1] + 1:
                if last > merged[-1][1]:
                    merged[-1] = (merged[-1][0], last)
            else:
                merged.append((first, last))
        self.spans: tuple[tuple[int, int], ...] = tuple(merged)

    @classmethod
    def of(cls, indexes: Iterable[int]) -> "Intervals":
        return cls((i, i) for i in indexes)

    @classmethod
    def parse(cls, text: str | None, completions: int) -> "Intervals":
        spans = []
        for piece in (text or "").split(","):
            first_text, dash, last_text = piece.strip().partition("-")
            try:
                first = int(first_text)
                last = int(last_text) if dash else first
            except ValueError:
                continue
            if 0 <= first <= last and first < completions:
                spans.append((first, min(last, completions - 1)))
        return cls(spans)

    def union(self, other: "Intervals") -> "Intervals":
        return Intervals(self.spans + other.spans)

    def total(self) -> int:
        return sum(last - first + 1 for first, last in self.spans)

    def __contains__(self, index: int) -> bool:
        i = bisect_right(self.spans, (index, float("inf"))) - 1
        return i >= 0 and self.spans[i][0] <= index <= self.spans[i][1]

    def first_missing(self, count: int, limit: int) -> list[int]:
        """Up to ``count`` indexes below ``limit`` that are not in the set, smallest first."""
        found: list[int] = []
        candidate = 0
        for first, last in self.spans + ((limit, limit),):
            while candidate < min(first, limit) and len(found) < count:
                found.append(candidate)
                candidate += 1
            candidate = max(candidate, last + 1)
            if len(found) >= count or candidate >= limit:
                break
        return found

    def __str__(self) -> str:
        parts = []
        for first, last in self.spans:
            if last == first:
                parts.append(str(first))
            else:
                parts.append(f"{first}{',' if last == first + 1 else '-'}{last}")
        return ",".join(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Intervals) and self.spans == other.spans

    def __repr__(self) -> str:
        return f"Intervals({str(self)!r})"


# --- pod failure policy (pod_failure_policy.go) --------------------------------------------------

@dataclass(frozen=True)
class FailureMatch:
    """How a podFailurePolicy treats one failed pod: the first matching rule wins."""

    action: str | None  # the matched rule's action; None when no rule matched (default: Count)
    counts: bool  # whether the failure counts toward backoffLimit (False only for Ignore)
    message: str | None = None  # the Job failure message, for FailJob


def match_pod_failure_policy(policy: PodFailurePolicy | None, pod: Pod) -> FailureMatch:
    if policy is None:
        return FailureMatch(None, True)
    where = f"{pod.namespace}/{pod.name}"
    for i, rule in enumerate(policy.rules):
        if rule.on_exit_codes is not None:
            container = _matching_container(pod.status.container_statuses or [], rule.on_exit_codes)
            if container is None:
                continue
            assert container.state.terminated is not None
            message = (f"Container {container.name} for pod {where} failed with exit code "
                       f"{container.state.terminated.exit_code} matching FailJob rule at index {i}")
        elif rule.on_pod_conditions is not None:
            condition = _matching_condition(pod.status.conditions or [], rule.on_pod_conditions)
            if condition is None:
                continue
            message = f"Pod {where} has condition {condition.type} matching FailJob rule at index {i}"
        else:
            continue
        if rule.action == "FailJob":
            return FailureMatch("FailJob", True, message)
        return FailureMatch(rule.action, rule.action != "Ignore")
    return FailureMatch(None, True)


def _matching_container(statuses: list[ContainerStatus],
                        requirement: PodFailurePolicyOnExitCodesRequirement) -> ContainerStatus | None:
    for status in statuses:
        terminated = status.state.terminated
        if terminated is None or terminated.exit_code == 0:
            continue  # still running, or succeeded: exit code 0 never matches
        if requirement.container_name not in (None, status.name):
            continue
        listed = terminated.exit_code in requirement.values
        if listed == (requirement.operator == "In"):
            return status
    return None


def _matching_condition(conditions: list[Condition],
                        patterns: list[PodFailurePolicyOnPodConditionsPattern]) -> Condition | None:
    for condition in conditions:
        for pattern in patterns:
            if condition.type == pattern.type and condition.status == pattern.status:
                return condition
    return None


# --- time ----------------------------------------------------------------------------------------

def _stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def finished_time(pod: Pod) -> datetime:
    """When the pod finished, by upstream's lookups (backoff_utils.go getFinishedTime): the last
    container finish when every container has finished, else a Ready=False transition, else the
    deletion time less the grace period, else the creation time."""
    finishes = [_parse(s.state.terminated.finished_at) if s.state.terminated else None
                for s in pod.status.container_statuses or []]
    if finishes and all(finishes):
        return max(f for f in finishes if f)
    ready = find_condition(pod.status.conditions, "Ready")
    if ready is not None and ready.status == "False" and _parse(ready.last_transition_time):
        return _parse(ready.last_transition_time)  # type: ignore[return-value]
    deleted = _parse(pod.metadata.deletion_timestamp)
    if deleted is not None:
        return deleted - timedelta(seconds=pod.metadata.deletion_grace_period_seconds or 0)
    return _parse(pod.metadata.creation_timestamp) or _EPOCH


def backoff_remaining(failures: int, last_failure: datetime | None, now: datetime, base: float,
                      cap: float) -> float:
    """Seconds until a replacement may be created (backoff_utils.go getRemainingTimeForFailuresCount)."""
    if failures == 0 or last_failure is None:
        return 0.0
    delay = base
    for _ in range(1, failures):
        delay *= 2
        if delay >= cap:
            delay = cap
            break
    elapsed = (now - last_failure).total_seconds()
    return 0.0 if delay < elapsed else delay - elapsed


# --- pod state -----------------------------------------------------------------------------------

def _terminal(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def _active(pod: Pod) -> bool:
    return not _terminal(pod) and pod.metadata.deletion_timestamp is None


def _terminating(pod: Pod) -> bool:
    return pod.metadata.deletion_timestamp is not None and not _terminal(pod)


def _index_order(pod: Pod) -> tuple[int, str]:
    ix = completion_index(pod)
    return (-1 if ix is None else ix, pod.name)


def _ready(pod: Pod) -> bool:
    c = find_condition(pod.status.conditions, "Ready")
    return c is not None and c.status == "True"


_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def _removal_order(pod: Pod) -> tuple:
    """Upstream's controller.ActivePods order: the pods worth least come first (deleted first):
    unscheduled, then pending < unknown < running, not ready, ready for less time, more restarts,
    newer; the name breaks ties."""
    ready = find_condition(pod.status.conditions, "Ready")
    is_ready = ready is not None and ready.status == "True"
    ready_since = _parse(ready.last_transition_time) if is_ready and ready else None
    created = _parse(pod.metadata.creation_timestamp)
    restarts = max((s.restart_count for s in pod.status.container_statuses or []), default=0)
    return (bool(pod.spec.node_name), _PHASE_ORDER.get(pod.status.phase, 3), is_ready,
            -(ready_since.timestamp()) if ready_since else float("-inf"), -restarts,
            -(created.timestamp()) if created else float("-inf"), pod.name)


# --- pod template ---------------------------------------------------------------------------------

def _generate_name(job_name: str, index: int | None) -> str:
    """"{job}-" or "{job}-{index}-", the job name cut so the random suffix still fits (upstream
    podGenerateNameWithIndex)."""
    suffix = "-" if index is None else f"-{index}-"
    return job_name[:_MAX_GENERATED_NAME_LENGTH - len(suffix)] + suffix


def new_pod(job: Job, index: int | None) -> Pod:
    """A pod for ``job`` from its template: the Job's labels, ownerReference and tracking
    finalizer, and for Indexed Jobs the completion index (annotation, label, env, hostname)."""
    template = job.spec.template
    meta = template.metadata or ObjectMeta()
    labels = dict(meta.labels or {})
    labels.update({CONTROLLER_UID_LABEL: job.uid, JOB_NAME_LABEL: job.name,
                   LEGACY_CONTROLLER_UID_LABEL: job.uid, LEGACY_JOB_NAME_LABEL: job.name})
    annotations = dict(meta.annotations or {})
    spec = template.spec.model_copy(deep=True)
    if index is not None:
        annotations[COMPLETION_INDEX_KEY] = str(index)
        labels[COMPLETION_INDEX_KEY] = str(index)
        spec.hostname = f"{job.name}-{index}"
        for container in spec.containers:
            if not any(e.name == COMPLETION_INDEX_ENV for e in container.env or []):
                # Resolved by the node from the pod's annotation, as upstream's downward API does.
                container.env = [*(container.env or []), EnvVar(name=COMPLETION_INDEX_ENV, value_from=EnvVarSource(
                    field_ref=ObjectFieldSelector(field_path=f"metadata.annotations['{COMPLETION_INDEX_KEY}']")))]
    finalizers = list(meta.finalizers or [])
    if TRACKING_FINALIZER not in finalizers:
        finalizers.append(TRACKING_FINALIZER)
    owner = OwnerReference(api_version=job.api_version or Job.API_VERSION, kind=Job.KIND, name=job.name,
                           uid=job.uid, controller=True, block_owner_deletion=True)
    return Pod(metadata=ObjectMeta(generate_name=_generate_name(job.name, index), namespace=job.namespace,
                                   labels=labels, annotations=annotations or None, finalizers=finalizers,
                                   owner_references=[owner]),
               spec=spec)


# --- conditions ----------------------------------------------------------------------------------

def _new_condition(type_: str, status: str, reason: str, message: str, stamp: str) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_probe_time=stamp,
                     last_transition_time=stamp)


def _ensure_condition(status: JobStatus, type_: str, value: str, reason: str, message: str, stamp: str) -> bool:
    """Upstream ensureJobConditionStatus: replace a differing condition, never add a False one.
    Returns whether the conditions changed."""
    conditions = list(status.conditions or [])
    for i, c in enumerate(conditions):
        if c.type == type_:
            if (c.status, c.reason, c.message) == (value, reason, message):
                return False
            conditions[i] = _new_condition(type_, value, reason, message, stamp)
            status.conditions = conditions
            return True
    if value == "False":
        return False
    status.conditions = [*conditions, _new_condition(type_, value, reason, message, stamp)]
    return True


@dataclass(frozen=True)
class _Finish:
    """The Job has met its end: success (SuccessCriteriaMet, then Complete) or failure
    (FailureTarget, then Failed). ``recorded``: the interim condition is already in the status."""

    success: bool
    reason: str
    message: str
    recorded: bool = False

    @property
    def interim(self) -> str:
        return "SuccessCriteriaMet" if self.success else "FailureTarget"

    @property
    def terminal(self) -> str:
        return "Complete" if self.success else "Failed"


def _ttl(job: Job, now: datetime, decision: JobDecision) -> None:
    """ttlSecondsAfterFinished, from the terminal condition's transition time (upstream
    pkg/controller/ttlafterfinished)."""
    ttl = job.spec.ttl_seconds_after_finished
    if ttl is None or job.metadata.deletion_timestamp is not None:
        return
    finished_at = next((_parse(c.last_transition_time) for c in job.status.conditions or []
                        if c.type in ("Complete", "Failed") and c.status == "True"), None)
    if finished_at is None:
        return
    left = (finished_at + timedelta(seconds=ttl) - now).total_seconds()
    if left <= 0:
        decision.delete_job = True
    else:
        decision.requeue(left)


# --- one sync (upstream syncJob) -----------------------------------------------------------------

class _Sync:
    """The state of one decision for a Job that has not finished (upstream's syncJobCtx)."""

    def __init__(self, job: Job, pods: list[Pod], now: datetime, backoff_base: float, backoff_max: float,
                 decision: JobDecision):
        spec = job.spec
        self.job, self.pods, self.now, self.stamp = job, pods, now, _stamp(now)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.decision, self.status = decision, decision.status
        self.indexed = spec.completion_mode == "Indexed"
        self.completions = spec.completions
        self.parallelism = _DEFAULT_PARALLELISM if spec.parallelism is None else spec.parallelism
        self.backoff_limit = _DEFAULT_BACKOFF_LIMIT if spec.backoff_limit is None else spec.backoff_limit
        self.policy = spec.pod_failure_policy
        self.suspended = spec.suspend
        self.deleting = job.metadata.deletion_timestamp is not None
        uncounted = self.status.uncounted_terminated_pods or UncountedTerminatedPods()
        self.uncounted_succeeded = list(uncounted.succeeded or [])
        self.uncounted_failed = list(uncounted.failed or [])
        self.active_pods = [p for p in pods if _active(p)]
        self.active = len(self.active_pods)
        self.ready = sum(1 for p in self.active_pods if _ready(p))
        self.terminating = sum(1 for p in pods if _terminating(p))
        self.succeeded = self.failed = 0
        self.succeeded_indexes = self.prev_succeeded_indexes = self.failed_indexes = Intervals()
        self.uses_fail_index = self.indexed and self.policy is not None and any(
            r.action == "FailIndex" for r in self.policy.rules)
        self.finish: _Finish | None = None
        self.managed = False

    def run(self) -> JobDecision:
        self._count_finished_pods()
        if self.status.start_time is None and not self.suspended:
            self.status.start_time = self.stamp
        self._check_failure()
        if self.indexed:
            self._count_indexes()
        if self.finish is not None:
            self._delete(self.active_pods, release=False)  # upstream deleteActivePods
        else:
            self._manage()
            self._check_success_and_suspension()
        self.status.active = self.active or None
        self.status.ready = self.ready
        self.status.terminating = self.terminating
        self._track()
        return self.decision

    # -- pod classification ----------------------------------------------------------------------
    def _valid_index(self, pod: Pod) -> bool:
        if not self.indexed:
            return True
        ix = completion_index(pod)
        return ix is not None and ix < (self.completions or 0)

    def _failed(self, pod: Pod) -> bool:
        """Upstream isPodFailed: phase Failed, or (without a podFailurePolicy, whose Jobs replace
        only Failed pods) deleted before it succeeded."""
        if pod.status.phase == "Failed":
            return True
        if self.policy is not None:
            return False
        return pod.metadata.deletion_timestamp is not None and pod.status.phase != "Succeeded"

    def _counts(self, pod: Pod) -> bool:
        return match_pod_failure_policy(self.policy, pod).counts

    # -- counters --------------------------------------------------------------------------------
    def _count_finished_pods(self) -> None:
        """Succeeded and failed so far: the status counters, the uncounted UIDs, and the finished
        pods that still hold the finalizer (upstream getNewFinishedPods)."""
        seen_s, seen_f = set(self.uncounted_succeeded), set(self.uncounted_failed)
        new_s = new_f = 0
        for p in self.pods:
            if not has_tracking_finalizer(p) or not self._valid_index(p):
                continue
            if p.uid not in seen_s and p.status.phase == "Succeeded":
                new_s += 1
            if p.uid not in seen_f and self._failed(p) and self._counts(p):
                new_f += 1
        self.succeeded = (self.status.succeeded or 0) + new_s + len(seen_s)
        self.failed = (self.status.failed or 0) + new_f + len(seen_f)

    def _count_indexes(self) -> None:
        assert self.completions is not None  # Job validation requires completions for Indexed
        done = Intervals.parse(self.status.completed_indexes, self.completions)
        self.prev_succeeded_indexes = done
        self.succeeded_indexes = done.union(Intervals.of(
            completion_index(p) for p in self.pods  # type: ignore[misc]
            if p.status.phase == "Succeeded" and self._valid_index(p) and has_tracking_finalizer(p)))
        self.succeeded = self.succeeded_indexes.total()
        if not self.uses_fail_index:
            return
        self.failed_indexes = Intervals.parse(self.status.failed_indexes, self.completions).union(Intervals.of(
            completion_index(p) for p in self.pods  # type: ignore[misc]
            if self._valid_index(p) and has_tracking_finalizer(p) and self._failed(p)
            and match_pod_failure_policy(self.policy, p).action == "FailIndex"))
        failed = self.failed_indexes.total()
        if self.finish is None and failed > 0 and failed + self.succeeded_indexes.total() >= self.completions:
            self.finish = _Finish(False, "FailedIndexes", "Job has failed indexes")

    # -- failure ---------------------------------------------------------------------------------
    def _check_failure(self) -> None:
        conditions = self.status.conditions
        met = find_condition(conditions, "SuccessCriteriaMet")
        target = find_condition(conditions, "FailureTarget")
        if met is not None and met.status == "True":
            self.finish = _Finish(True, met.reason or "", met.message or "", recorded=True)
        elif target is not None and target.status == "True":
            self.finish = _Finish(False, target.reason or "", target.message or "", recorded=True)
        elif self.policy is not None:
            for p in self.pods:
                if self._failed(p):
                    message = match_pod_failure_policy(self.policy, p).message
                    if message is not None:
                        self.finish = _Finish(False, "PodFailurePolicy", message)
                        break
        if self.finish is not None:
            return
        deadline = self.job.spec.active_deadline_seconds
        started = _parse(self.status.start_time)
        if self.failed > self.backoff_limit or self._past_backoff_limit_on_failure():
            self.finish = _Finish(False, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and started is not None and not self.suspended:
            left = deadline - (self.now - started).total_seconds()
            if left <= 0:
                self.finish = _Finish(False, "DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                self.decision.requeue(left)

    def _past_backoff_limit_on_failure(self) -> bool:
        """With restartPolicy OnFailure, container restarts in running pods count toward backoffLimit."""
        if self.job.spec.template.spec.restart_policy != "OnFailure":
            return False
        restarts = sum(s.restart_count for p in self.pods if p.status.phase in ("Running", "Pending")
                       for s in p.status.container_statuses or [])
        return restarts > 0 if self.backoff_limit == 0 else restarts >= self.backoff_limit

    # -- pods to run (upstream manageJob) --------------------------------------------------------
    def _manage(self) -> None:
        if self.deleting:
            return
        self.managed = True
        if self.suspended:
            self._delete(sorted(self.active_pods, key=_removal_order), release=True)
            return
        if self.completions is None:
            want = self.active if self.succeeded > 0 else self.parallelism
        else:
            want = max(0, min(self.completions - self.succeeded, self.parallelism))
        excess = self._pods_to_remove(max(0, self.active - want))[:MAX_POD_CREATE_DELETE_PER_SYNC]
        if excess:
            self._delete(excess, release=True)  # deleting and creating never share a sync
            return
        # A Job with a podFailurePolicy replaces a pod only once it is Failed, not while terminating.
        blocked = self.terminating if self.policy is not None else 0
        missing = min(want - blocked - self.active, MAX_POD_CREATE_DELETE_PER_SYNC)
        if missing <= 0:
            return
        wait = self._backoff()
        if wait > 0:
            self.decision.requeue(wait)
            return
        if len(self.job.name) > _MAX_LABEL_VALUE_LENGTH:
            # Upstream's API validation rejects such Jobs; here the store already holds one.
            self.decision.events.append(JobEvent("Warning", "FailedCreate", (
                f"Error creating: metadata.name: Invalid value: {self.job.name!r}: must be no more than "
                f"{_MAX_LABEL_VALUE_LENGTH} characters, as it is the value of the pods' label {JOB_NAME_LABEL}")))
            return
        if self.indexed:
            indexes: list[int | None] = list(self._pending_indexes(missing))
        else:
            indexes = [None] * missing
        self.decision.create.extend(new_pod(self.job, ix) for ix in indexes)
        self.active += len(indexes)

    def _pods_to_remove(self, at_least: int) -> list[Pod]:
        """Upstream activePodsForRemoval: for Indexed Jobs every pod without a valid index and all
        but one pod per index; then the least valuable pods until ``at_least`` are chosen."""
        remove: list[Pod] = []
        keep = list(self.active_pods)
        if self.indexed:
            keep, by_index = [], {}
            for p in self.active_pods:
                ix = completion_index(p)
                if self._valid_index(p):
                    by_index.setdefault(ix, []).append(p)
                else:
                    remove.append(p)
            for ix in sorted(by_index):
                group = sorted(by_index[ix], key=_removal_order)
                remove.extend(group[:-1])
                keep.append(group[-1])
        if len(remove) < at_least:
            keep.sort(key=_removal_order)
            remove.extend(keep[:at_least - len(remove)])
        return remove

    def _pending_indexes(self, count: int) -> list[int]:
        """Upstream firstPendingIndexes: the lowest indexes neither succeeded, failed, running nor
        (with a podFailurePolicy) still terminating."""
        assert self.completions is not None
        busy = [p for p in self.pods if _active(p) or (self.policy is not None and _terminating(p))]
        taken = self.succeeded_indexes.union(self.failed_indexes).union(
            Intervals.of(ix for ix in map(completion_index, busy) if ix is not None))
        return taken.first_missing(count, self.completions)

    def _backoff(self) -> float:
        """Seconds before failed pods may be replaced. Upstream keeps the failures since the last
        success in memory; here they are read off the pods' finish times."""
        succeeded = [finished_time(p) for p in self.pods if p.status.phase == "Succeeded"]
        last_success = max(succeeded, default=None)
        failures = [finished_time(p) for p in self.pods if self._valid_index(p) and (
            p.status.phase == "Failed" or (has_tracking_finalizer(p) and self._failed(p)))]
        recent = [t for t in failures if last_success is None or t > last_success]
        return backoff_remaining(len(recent), max(recent, default=None), self.now, self.backoff_base,
                                 self.backoff_max)

    def _delete(self, pods: list[Pod], *, release: bool) -> None:
        """Delete pods; ``release`` drops their finalizer first so that they are not counted
        (suspension and excess pods, upstream deleteJobPods)."""
        for p in pods:
            self.decision.delete.append(p.name)
            if release and has_tracking_finalizer(p):
                self.decision.remove_finalizers.append(p.name)
        self.active -= len(pods)
        self.terminating += len(pods)
        self.ready -= sum(1 for p in pods if _ready(p))

    # -- success and suspension ------------------------------------------------------------------
    def _check_success_and_suspension(self) -> None:
        if self.completions is None:
            # Work-queue mode: done once any pod succeeded and none is left running.
            complete = self.succeeded > 0 and self.active == 0
        else:
            complete = self.succeeded >= self.completions and self.active == 0
        if complete:
            self.finish = _Finish(True, "CompletionsReached", "Reached expected number of succeeded pods")
        elif self.managed and self.suspended:
            if _ensure_condition(self.status, "Suspended", "True", "JobSuspended", "Job suspended", self.stamp):
                self.decision.events.append(JobEvent("Normal", "Suspended", "Job suspended"))
        elif self.managed:
            if _ensure_condition(self.status, "Suspended", "False", "JobResumed", "Job resumed", self.stamp):
                self.decision.events.append(JobEvent("Normal", "Resumed", "Job resumed"))
                # activeDeadlineSeconds counts the time a Job is continuously active.
                self.status.start_time = self.stamp

    # -- counting terminated pods (upstream trackJobStatusAndRemoveFinalizers) -------------------
    def _track(self) -> None:
        status, decision = self.status, self.decision
        holding = {p.uid for p in self.pods if has_tracking_finalizer(p)}
        # UIDs recorded earlier whose pods have let go of the finalizer are counted now.
        uncounted_s = [u for u in self.uncounted_succeeded if u in holding]
        uncounted_f = [u for u in self.uncounted_failed if u in holding]
        succeeded = (status.succeeded or 0) + len(self.uncounted_succeeded) - len(uncounted_s)
        failed = (status.failed or 0) + len(self.uncounted_failed) - len(uncounted_f)
        releasing = set(decision.remove_finalizers)
        failing = self.finish is not None and not self.finish.success
        new_indexes = 0
        full = False
        order = sorted(self.pods, key=_index_order) if self.indexed else self.pods
        for p in order:
            if not has_tracking_finalizer(p):
                continue
            pod_failed = self._failed(p)
            if not (self.deleting or self.finish is not None or p.status.phase == "Succeeded" or pod_failed):
                continue  # still running: its finalizer stays
            if p.name not in releasing:
                decision.remove_finalizers.append(p.name)
                releasing.add(p.name)
            if p.status.phase == "Succeeded" and p.uid not in uncounted_f:
                if self.indexed:
                    ix = completion_index(p)
                    if self._valid_index(p) and ix not in self.prev_succeeded_indexes:
                        new_indexes += 1  # already in succeeded_indexes: the index is the record
                elif p.uid not in uncounted_s:
                    uncounted_s.append(p.uid)
            elif pod_failed or failing:  # once the Job fails, every unfinished pod counts as failed
                if p.uid not in uncounted_f and self._valid_index(p) and self._counts(p):
                    uncounted_f.append(p.uid)
            if new_indexes + len(uncounted_s) + len(uncounted_f) >= MAX_UNCOUNTED_PODS:
                full = True  # keep the status small; the rest is counted in the next sync
                break
        if self.indexed:
            status.completed_indexes = str(self.succeeded_indexes) or None
            succeeded = self.succeeded_indexes.total()
        if self.uses_fail_index:
            status.failed_indexes = str(self.failed_indexes)
        status.succeeded = succeeded or None
        status.failed = failed or None
        status.uncounted_terminated_pods = UncountedTerminatedPods(succeeded=uncounted_s or None,
                                                                   failed=uncounted_f or None)
        finish = self.finish
        if finish is None:
            return
        if not finish.recorded:
            status.conditions = [*(status.conditions or []), _new_condition(
                finish.interim, "True", finish.reason, finish.message, self.stamp)]
        if full or uncounted_s or uncounted_f or decision.remove_finalizers or self.terminating > 0:
            return  # the terminal condition waits until every pod is counted, released and gone
        _ensure_condition(status, finish.terminal, "True", finish.reason, finish.message, self.stamp)
        if finish.success:
            status.completion_time = self.stamp
            if self.completions is not None and succeeded > self.completions:
                decision.events.append(JobEvent("Warning", "TooManySucceededPods",
                                                "Too many succeeded pods running after completion count reached"))
            decision.events.append(JobEvent("Normal", "Completed", "Job completed"))
        else:
            decision.events.append(JobEvent("Warning", finish.reason, finish.message))
