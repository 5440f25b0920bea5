"""The default scheduler: assigns pending pods to nodes by running the pod-plane framework.

Informers on Nodes and Pods keep a ``Snapshot`` current incrementally and feed a
``SchedulingQueue`` with the pods this scheduler is responsible for (``spec.schedulerName`` is its
name, no ``spec.nodeName``, not terminal, not being deleted). One thread runs scheduling cycles,
one pod at a time, against the snapshot (policy only, no I/O, under the lock the event handlers
take); a chosen pod is *assumed* on its node at once, so the next cycle already counts it. Binding
(PreBind, Bind: ``store.bind``), status writes and Events happen on a small pool of threads, so the
durable writes of many pods share commits.

Device plane (DRA): informers on DeviceClasses, ResourceSlices, ResourceClaims and
DeviceTaintRules keep the snapshot's ``devices`` current for the DynamicResources plugin, and ``ClaimWriter`` is that
plugin's PreBind, run first in every binding cycle: it writes each claim's
``status.allocation`` and adds the pod to ``status.reservedFor`` before the pod is bound
(upstream's PreBind, bindClaim).
Unschedulable pods are retried when a DeviceClass or ResourceSlice changes, a DeviceTaintRule
changes its spec or goes, or a claim is created, deleted or gives devices back. When a cycle ends
Unschedulable with the plugin's PostFilter asking to deallocate a claim (``claims_to_deallocate``:
allocated by us, used by nobody, where the pod cannot run), the scheduler writes it back
unallocated, under the resourceVersion the cycle saw (upstream PostFilter's UpdateStatus); that
claim update retries the pod, which may now get the claim allocated where it fits. A Conflict
leaves the claim as it is and retries the pod, whose next attempt decides again.

As kube-scheduler does (pkg/scheduler/schedule_one.go): a pod that fits nowhere gets
``PodScheduled=False`` reason ``Unschedulable`` with the diagnosis as message and a Warning Event
``FailedScheduling``; a gated pod gets ``PodScheduled=False`` reason ``SchedulingGated``; a bound
pod gets a Normal Event ``Scheduled``. Unschedulable pods are retried when a node is added or
changes what it offers, a counted pod is deleted or finishes, or the pod itself changes, and at
the latest after ``unschedulable_timeout`` seconds. The thread sleeps on a condition variable
until one of those, a backoff expiry or a Permit timeout: it never polls.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mlplane.api.core import Node, Pod
from mlplane.api.resource import (DELETE_PROTECTION_FINALIZER, DeviceClass, DeviceTaintRule, ResourceClaim,
                                  ResourceSlice)
from mlplane.api.errors import Conflict, NotFound
from mlplane.api.meta import find_condition, set_condition
from mlplane.control.runtime.events import EventRecorder
from mlplane.control.runtime.informer import Informer
from mlplane.control.store.base import Store
from mlplane.policy.pod.dynamicresources import STATE_KEY as DRA_STATE_KEY
from mlplane.policy.pod.dynamicresources import ClaimsState, pod_reference, reserved_for
from mlplane.policy.pod.framework import Framework
from mlplane.policy.pod.interface import Code, CycleState, ScheduleResult, Status
from mlplane.policy.pod.plugins import default_framework
from mlplane.policy.pod.queue import SchedulingQueue
from mlplane.policy.pod.snapshot import PodInfo, Snapshot
from mlplane.policy.pod.waiting import WaitingPod

log = logging.getLogger(__name__)

POD_SCHEDULED = "PodScheduled"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_SCHEDULER_ERROR = "SchedulerError"
REASON_SCHEDULING_GATED = "SchedulingGated"
# The message the API server writes on a pod created with scheduling gates (pkg/registry/core/pod).
GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"
LOOP_ERROR_BACKOFF = 0.05  # seconds before the scheduling loop goes on after an error, doubling ...
LOOP_ERROR_BACKOFF_MAX = 5.0  # ... up to this while errors repeat


class DefaultBinder:
    """Bind: assigns the pod through the pods/binding subresource (defaultbinder/default_binder.go).

    Conflict and NotFound propagate: the pod was deleted or bound elsewhere, and the scheduler drops it.
    """

    name = "DefaultBinder"

    def __init__(self, store: Store):
        self.store = store

    def bind(self, state: CycleState, pod: PodInfo, node: str) -> Status | None:
        self.store.bind(pod.pod.namespace, pod.pod.name, node)
        return None


class ClaimWriter:
    """PreBind of the DynamicResources plugin: writes the claims the cycle reserved to the store.

    For each claim: its ``status.allocation`` (when the cycle allocated it) and the pod in
    ``status.reservedFor``, in one status update on the store's current copy. A claim that
    meanwhile got another allocation fails the binding (the pod is tried again); a Conflict is
    retried on a fresh copy.
    """

    name = "DynamicResourcesPreBind"
    RETRIES = 5

    def __init__(self, store: Store):
        self.store = store

    def pre_bind(self, state: CycleState, pod: PodInfo, node: str) -> Status:
        if DRA_STATE_KEY not in state:
            return Status.skip()  # the pod has no claims
        data: ClaimsState = state.read(DRA_STATE_KEY)
        allocating = {c.key for c in data.to_allocate}
        for wanted in data.claims_to_write:
            status = self._write(wanted, pod, allocating=wanted.key in allocating,
                                 base_version=data.base_versions.get(wanted.key))
            if status is not None:
                return status
        return Status()

    def _write(self, wanted: ResourceClaim, pod: PodInfo, *, allocating: bool,
               base_version: str | None) -> Status | None:
        for _ in range(self.RETRIES):
            try:
                return self._write_once(wanted, pod, allocating=allocating, base_version=base_version)
            except Conflict:
                continue
            except NotFound:  # the pod is still there and must be tried again, not dropped
                return Status.unschedulable(f"resourceclaim {wanted.name} was deleted")
        return Status.error(f"resourceclaim {wanted.name}: too many conflicts writing the allocation")

    def _write_once(self, wanted: ResourceClaim, pod: PodInfo, *, allocating: bool,
                    base_version: str | None) -> Status | None:
        claim = self.store.get(ResourceClaim, wanted.namespace, wanted.name)
        if claim.uid != wanted.uid:
            return Status.unschedulable(f"resourceclaim {claim.name} was replaced")
        if claim.metadata.deletion_timestamp:  # upstream bindClaim: "got deleted in the meantime"
            return Status.unschedulable(f"resourceclaim {claim.name} got deleted in the meantime")
        current = claim.status.allocation
        if current is not None and current != wanted.status.allocation:
            return Status.unschedulable(f"resourceclaim {claim.name} got allocated meanwhile")
        if current is None and not allocating:
            # Allocated when the cycle began and released since: its devices may be someone else's.
            return Status.unschedulable(f"resourceclaim {claim.name} was deallocated meanwhile")
        if current is None and claim.metadata.resource_version != base_version:
            # Changed since the cycle chose its devices (which may have been freed up for others
            # in between): choose again rather than write a stale choice.
            return Status.unschedulable(f"resourceclaim {claim.name} changed meanwhile")
        if current is not None and reserved_for(claim, pod.uid):
            return None
        finalizers = claim.metadata.finalizers or []
        if current is None and DELETE_PROTECTION_FINALIZER not in finalizers:
            # Protect the claim before it holds devices (upstream PreBind does the same).
            meta = claim.metadata.model_copy(update={"finalizers": [*finalizers, DELETE_PROTECTION_FINALIZER]})
            claim = self.store.update(claim.model_copy(update={"metadata": meta}))
        consumers = list(claim.status.reserved_for or [])
        if not reserved_for(claim, pod.uid):
            consumers.append(pod_reference(pod))
        self.store.update_status(claim.model_copy(update={"status": claim.status.model_copy(
            update={"allocation": wanted.status.allocation, "reserved_for": consumers})}))
        return None


def _claim_freed(old: ResourceClaim | None, new: ResourceClaim) -> bool:
    """Whether a claim update may let a pending pod fit: the claim is new, or gave back devices
    or reservations."""
    if old is None:
        return True
    return ((old.status.allocation is not None and new.status.allocation is None)
            or len(new.status.reserved_for or []) < len(old.status.reserved_for or []))


def _claims_to_deallocate(result: ScheduleResult) -> list[ResourceClaim]:
    """The claims the DynamicResources PostFilter chose to deallocate in this cycle."""
    state = result.state
    if state is None or DRA_STATE_KEY not in state:
        return []
    data: ClaimsState = state.read(DRA_STATE_KEY)
    return list(data.claims_to_deallocate)


def _node_offer(node: Node) -> tuple:
    """What a node offers to scheduling; a change in anything else (heartbeats) retries nobody."""
    return (node.status.allocatable, node.metadata.labels, node.spec.taints, node.spec.unschedulable)


class Scheduler:
    """Schedules the pods whose ``spec.schedulerName`` is ``name`` with ``framework`` (default: the
    default plugins; a ``DefaultBinder`` is added when it has no Bind plugin).

    ``start()`` returns once the Node and Pod caches are synced (or ``sync_timeout`` passed);
    ``stop()`` waits for every thread it started. ``bind_workers`` threads bind and report.
    """

    def __init__(self, store: Store, *, name: str = "default-scheduler", framework: Framework | None = None,
                 recorder: EventRecorder | None = None, unschedulable_timeout: float = 30.0,
                 bind_workers: int = 4, sync_timeout: float = 30.0):
        if unschedulable_timeout <= 0:
            raise ValueError(f"unschedulable_timeout must be positive, got {unschedulable_timeout}")
        if bind_workers < 1:
            raise ValueError(f"bind_workers must be at least 1, got {bind_workers}")
        self.store, self.name = store, name
        framework = framework if framework is not None else default_framework()
        if not framework.bind_plugins:
            framework = framework.with_plugins(DefaultBinder(store))
        self.framework = framework
        self.claim_writer = ClaimWriter(store)
        self.recorder = recorder if recorder is not None else EventRecorder(store, name)
        self.unschedulable_timeout, self.sync_timeout = unschedulable_timeout, sync_timeout
        self.snapshot = Snapshot()
        self.queue = SchedulingQueue(framework.pre_enqueue)
        self._cv = threading.Condition()
        self._stopping = False
        self._permit_deadlines: list[tuple[float, int, WaitingPod, str]] = []
        self._seq = itertools.count()
        self._nodes = Informer(store, Node)
        self._pods = Informer(store, Pod)
        self._classes = Informer(store, DeviceClass)
        self._slices = Informer(store, ResourceSlice)
        self._claims = Informer(store, ResourceClaim)
        self._rules = Informer(store, DeviceTaintRule)
        self._pool = ThreadPoolExecutor(bind_workers, thread_name_prefix=f"{name}-bind")
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._nodes.add_handler(self._on_node)
        self._pods.add_handler(self._on_pod)
        self._classes.add_handler(self._on_class)
        self._slices.add_handler(self._on_slice)
        self._claims.add_handler(self._on_claim)
        self._rules.add_handler(self._on_rule)
        informers = (self._classes, self._slices, self._rules, self._claims, self._nodes, self._pods)
        for informer in informers:
            informer.start()
        for informer in informers:
            if not informer.wait_synced(self.sync_timeout):
                log.warning("%s: %s cache not synced after %.0fs; scheduling as events arrive",
                            self.name, informer.model.KIND, self.sync_timeout)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for informer in (self._nodes, self._pods, self._classes, self._slices, self._rules, self._claims):
            informer.stop()
        self._pool.shutdown(wait=True)

    # -- informer events (informer threads) -------------------------------------------------------
    def _on_node(self, type_: str, old: Node | None, node: Node) -> None:
        with self._cv:
            if type_ == "DELETED":
                self.snapshot.remove_node(node.name)
                return
            self.snapshot.set_node(node)
            if old is None or _node_offer(old) != _node_offer(node):
                self.queue.move_all(time.monotonic())
                self._cv.notify()

    def _retry_unschedulable(self) -> None:
        """Something a pending pod may have waited for changed (under the lock)."""
        self.queue.move_all(time.monotonic())
        self._cv.notify()

    def _on_class(self, type_: str, old: DeviceClass | None, device_class: DeviceClass) -> None:
        with self._cv:
            if type_ == "DELETED":
                self.snapshot.devices.remove_class(device_class.name)
                return
            self.snapshot.devices.set_class(device_class)
            self._retry_unschedulable()

    def _on_slice(self, type_: str, old: ResourceSlice | None, resource_slice: ResourceSlice) -> None:
        with self._cv:
            if type_ == "DELETED":
                self.snapshot.devices.remove_slice(resource_slice.name)
                return
            self.snapshot.devices.set_slice(resource_slice)
            self._retry_unschedulable()

    def _on_rule(self, type_: str, old: DeviceTaintRule | None, rule: DeviceTaintRule) -> None:
        with self._cv:
            if type_ == "DELETED":
                self.snapshot.devices.remove_rule(rule.name)
                self._retry_unschedulable()  # its devices may be usable again
                return
            self.snapshot.devices.set_rule(rule)
            if old is not None and (old.spec != rule.spec or
                                    bool(old.metadata.deletion_timestamp) != bool(rule.metadata.deletion_timestamp)):
                self._retry_unschedulable()  # a rule being deleted no longer taints anything

    def _on_claim(self, type_: str, old: ResourceClaim | None, claim: ResourceClaim) -> None:
        with self._cv:
            if type_ == "DELETED":
                self.snapshot.devices.remove_claim(claim.key)
                self._retry_unschedulable()
                return
            self.snapshot.devices.set_claim(claim)
            if _claim_freed(old, claim):
                self._retry_unschedulable()

    def _on_pod(self, type_: str, old: Pod | None, pod: Pod) -> None:
        key = pod.key
        gated = False
        with self._cv:
            now = time.monotonic()
            if type_ == "DELETED":
                self.queue.delete(key)
                waiting = self.framework.waiting_pods.get(key)
                if waiting is not None:
                    waiting.reject("", "removed")
                if self.snapshot.remove_pod(key):
                    self.queue.move_all(now)
                self._cv.notify()
                return
            if pod.spec.node_name or pod.terminal:
                counted = self.snapshot.node_of(key) is not None
                self.snapshot.set_pod(pod)
                self.queue.delete(key)
                if counted and self.snapshot.node_of(key) is None:  # it finished: its room is free
                    self.queue.move_all(now)
                    self._cv.notify()
                return
            if pod.spec.scheduler_name != self.name:
                return
            if pod.metadata.deletion_timestamp:
                self.queue.delete(key)
                return
            gated = not self.queue.add(PodInfo(pod), now).is_success
            if not gated:
                self._cv.notify()
        if gated:
            self._submit(self._set_condition, pod, REASON_SCHEDULING_GATED, GATED_MESSAGE)

    # -- the scheduling loop (one thread) ---------------------------------------------------------
    def _run(self) -> None:
        # Whatever a cycle raises (a plugin, a bug) is logged and the loop goes on: this is the only
        # scheduling thread. An error that repeats backs off, so it cannot spin the CPU.
        failures = 0
        while True:
            try:
                if not self._run_once():
                    return
                failures = 0
            except Exception:
                failures += 1
                delay = min(LOOP_ERROR_BACKOFF * 2 ** (failures - 1), LOOP_ERROR_BACKOFF_MAX)
                log.exception("%s: scheduling loop failed (%d in a row); going on in %.2fs", self.name, failures,
                              delay)
                with self._cv:
                    if self._cv.wait_for(lambda: self._stopping, delay):
                        return

    def _run_once(self) -> bool:
        """Wait for a pod that is ready and run one scheduling cycle on it; False once stopping."""
        with self._cv:
            while True:
                if self._stopping:
                    return False
                now = time.monotonic()
                self._expire_permits(now)
                self._finish_waiting(now)
                self.queue.flush(now, self.unschedulable_timeout)
                queued = self.queue.pop(now)
                if queued is not None:
                    break
                self._cv.wait(self._sleep_for(now))
            try:
                result = self.framework.schedule(queued.info, self.snapshot)
            except Exception:  # a plugin raised: nothing is held for the pod; retry after backoff
                log.exception("%s: scheduling %s failed", self.name, queued.key)
                self.snapshot.forget(queued.key)
                self.framework.waiting_pods.remove(queued.key)
                self.queue.requeue(queued.key, now, unschedulable=False)
                return True
            self._handle(result, now)
            self._finish_waiting(now)  # a Permit plugin may have released pods held earlier
            return True

    def _sleep_for(self, now: float) -> float | None:
        wakeups = [t for t in (self.queue.next_ready(), self.queue.next_flush(self.unschedulable_timeout),
                               self._permit_deadlines[0][0] if self._permit_deadlines else None) if t is not None]
        return max(min(wakeups) - now, 0.001) if wakeups else None

    def _handle(self, result: ScheduleResult, now: float) -> None:
        """Act on one cycle's outcome (under the lock)."""
        pod = result.pod
        if result.status.is_success:
            self._submit(self._bind, result)
        elif result.status.code is Code.WAIT:
            assert result.waiting is not None
            for plugin, timeout in result.waiting.timeouts.items():
                heapq.heappush(self._permit_deadlines, (now + timeout, next(self._seq), result.waiting, plugin))
        elif result.gated:
            self.queue.requeue(pod.key, now, unschedulable=False)
            self._submit(self._set_condition, pod.pod, REASON_SCHEDULING_GATED, GATED_MESSAGE)
        else:
            rejected = result.status.is_rejected
            if not rejected:
                log.warning("%s: scheduling %s: %s", self.name, pod.key, result.message)
            self.queue.requeue(pod.key, now, unschedulable=rejected)
            deallocate = _claims_to_deallocate(result) if rejected else []
            if deallocate:
                self._submit(self._deallocate, pod, deallocate)
            self._submit(self._record_failure, pod.pod,
                         REASON_UNSCHEDULABLE if rejected else REASON_SCHEDULER_ERROR, result.message)

    def _expire_permits(self, now: float) -> None:
        while self._permit_deadlines and self._permit_deadlines[0][0] <= now:
            _, _, waiting, plugin = heapq.heappop(self._permit_deadlines)
            if self.framework.waiting_pods.get(waiting.key) is waiting:
                waiting.expire(plugin)

    def _finish_waiting(self, now: float) -> None:
        decided = self.framework.take_decided(self.snapshot)
        if not decided:
            return
        self._permit_deadlines = [d for d in self._permit_deadlines if not d[2].decided]
        heapq.heapify(self._permit_deadlines)
        for result in decided:
            if result.status.is_success:
                self._submit(self._bind, result)
                continue
            self.queue.move_all(now)  # its reservation is released: others may fit now
            if result.pod.key in self.queue:  # not deleted meanwhile
                self._handle(result, now)

    # -- binding and reporting (pool threads) ------------------------------------------------------
    def _submit(self, fn, *args) -> None:
        if self._stopping:
            return
        try:
            self._pool.submit(self._guarded, fn, *args)
        except RuntimeError:  # the pool shut down between the check and the submit: we are stopping
            log.debug("%s: not running %s: stopping", self.name, fn.__name__)

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s: %s failed", self.name, fn.__name__)

    def _bind(self, result: ScheduleResult) -> None:
        pod, node, state = result.pod, result.node, result.state
        assert node is not None and state is not None
        try:
            status = self.claim_writer.pre_bind(state, pod, node)
            if status.code is Code.SKIP or status.is_success:
                status = self.framework.pre_bind(state, pod, node)
            if status.is_success:
                status = self.framework.bind(state, pod, node)
        except (Conflict, NotFound) as e:
            log.debug("%s: dropping %s: %s", self.name, pod.key, e)
            with self._cv:
                self.framework.unreserve(state, pod, node, self.snapshot)
                self.queue.delete(pod.key)
                self.queue.move_all(time.monotonic())
                self._cv.notify()
            return
        except Exception as e:
            log.warning("%s: binding %s to %s failed", self.name, pod.key, node, exc_info=True)
            status = Status.error(f"binding {pod.key} to {node}: {e}")
        if status.is_success:
            with self._cv:
                self.queue.done(pod.key)
            self.recorder.normal(pod.pod, "Scheduled", f"Successfully assigned {pod.key} to {node}")
            return
        with self._cv:
            self.framework.unreserve(state, pod, node, self.snapshot)
            now = time.monotonic()
            self.queue.move_all(now)
            self.queue.requeue(pod.key, now, unschedulable=False)
            self._cv.notify()
        reason = REASON_UNSCHEDULABLE if status.is_rejected else REASON_SCHEDULER_ERROR
        self._record_failure(pod.pod, reason, status.message)

    def _deallocate(self, pod: PodInfo, claims: list[ResourceClaim]) -> None:
        """Write the deallocations PostFilter decided: each claim's status cleared, as the cycle saw
        it (its resourceVersion and UID), so a claim changed since is left alone. The claim update
        retries the pod (``_on_claim``); after a Conflict the pod is retried here instead."""
        for claim in claims:
            try:
                self.store.update_status(claim)
                log.debug("%s: deallocated %s for %s", self.name, claim.key, pod.key)
            except (Conflict, NotFound) as e:
                log.debug("%s: not deallocating %s for %s: %s", self.name, claim.key, pod.key, e)
                with self._cv:  # the pod decides again (upstream: an error, then backoff)
                    self.queue.activate(pod.key, time.monotonic())
                    self._cv.notify()

    def _record_failure(self, pod: Pod, reason: str, message: str) -> None:
        self.recorder.warning(pod, "FailedScheduling", message)
        self._set_condition(pod, reason, message)

    def _set_condition(self, pod: Pod, reason: str, message: str) -> None:
        """Set PodScheduled=False with ``reason`` unless the pod already says so (or got bound)."""
        for _ in range(3):
            if pod.spec.node_name:
                return
            current = find_condition(pod.status.conditions, POD_SCHEDULED)
            if current is not None and (current.status, current.reason, current.message) == ("False", reason, message):
                return
            conditions = set_condition(pod.status.conditions, POD_SCHEDULED, "False", reason, message)
            updated = pod.model_copy(update={"status": pod.status.model_copy(update={"conditions": conditions})})
            try:
                self.store.update_status(updated)
                return
            except Conflict:
                pod = self.store.get(Pod, pod.namespace, pod.name)
            except NotFound:
                return
