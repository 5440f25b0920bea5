"""The device taint eviction controller (upstream pkg/controller/devicetainteviction, KEP-5055).

A pod that is not terminal, whose allocated claims (``status.reservedFor`` naming it) hold a
device with a NoExecute taint, from its ResourceSlice or from a DeviceTaintRule, that the
allocation's tolerations do not tolerate is evicted: it gets ``DisruptionTarget=True`` reason
``DeletionByDeviceTaintManager``, a Normal Event ``DeviceTaintManagerEviction``, and is deleted
(gracefully, as any pod on a node). When every such taint is tolerated with ``tolerationSeconds``
the pod goes at the taint's ``timeAdded`` plus the smallest of those seconds: its key is
re-queued for that moment (the work queue's delayed add; nothing polls). The decision is
``mlplane.policy.device.taints.plan_evictions``; this controller only reads caches and writes.

Each DeviceTaintRule gets the ``EvictionInProgress`` condition upstream keeps on it
(``rule_condition``): True with reason PodsPendingEviction while pods are to be evicted for it.
A pod whose delayed eviction is no longer due (the taint went, or a claim changed) gets the Normal
Event ``DeviceTaintManagerEviction`` "Cancelling deletion", as upstream.

Keys: ``pod:<namespace>/<name>``, ``rule:<name>``, and ``all`` (a slice or rule changed: every
pod with claims and every rule is looked at again).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from mlplane.api.core import Pod
from mlplane.api.errors import Conflict, NotFound
from mlplane.api.meta import Condition, find_condition, now, set_condition
from mlplane.api.resource import DeviceTaintRule, ResourceClaim, ResourceSlice
from mlplane.control.runtime import Controller, EventRecorder, Informer, Requeue
from mlplane.control.store.base import Store
from mlplane.policy.device.taints import Eviction, plan_evictions, rule_condition, slice_noexecute_taints

log = logging.getLogger(__name__)

COMPONENT = "device-taint-eviction"
POD_PREFIX, RULE_PREFIX, ALL = "pod:", "rule:", "all"
DISRUPTION_TARGET = "DisruptionTarget"
REASON = "DeletionByDeviceTaintManager"
MESSAGE = "Device Taint manager: deleting due to NoExecute taint"
EVENT_REASON = "DeviceTaintManagerEviction"
EVENT_MESSAGE = "Marking for deletion"
CANCEL_MESSAGE = "Cancelling deletion"


def _claim_pod_keys(claim: ResourceClaim) -> list[str]:
    return [f"{POD_PREFIX}{claim.namespace}/{r.name}" for r in claim.status.reserved_for or [] if r.resource == "pods"]


def _pod_key(pod: Pod) -> str | None:
    if not pod.spec.resource_claims:
        return None
    return POD_PREFIX + pod.key


class DeviceTaintEvictionController:
    """Evicts pods from devices with untolerated NoExecute taints; reports on DeviceTaintRules."""

    def __init__(self, store: Store, *, recorder: EventRecorder | None = None, workers: int = 1):
        self.store = store
        self.recorder = recorder or EventRecorder(store, COMPONENT)
        self.pods = Informer(store, Pod)
        self.claims = Informer(store, ResourceClaim)
        self.slices = Informer(store, ResourceSlice)
        self.rules = Informer(store, DeviceTaintRule)
        self.evicted: dict[str, int] = {}  # rule uid -> pods evicted for it since start
        self._lock = threading.Lock()
        self._delayed: dict[str, str] = {}  # pod key -> uid, for evictions waiting for tolerationSeconds
        self._slice_taints: dict | None = None  # NoExecute taints in slices, rebuilt after a slice event
        self._seen: dict = {}  # when each taint without timeAdded was first seen
        self.controller = Controller(COMPONENT, self.reconcile, workers=workers)
        self.controller.watch(self.pods, _pod_key, on=("ADDED", "MODIFIED"))
        self.controller.watch(self.claims, _claim_pod_keys, on=("ADDED", "MODIFIED"))
        self.slices.add_handler(self._on_slice)
        self.controller.watch(self.slices, lambda _s: ALL)
        # ALL looks at the pods before the rules, so a rule's condition counts what they wait for.
        self.controller.watch(self.rules, lambda _r: ALL)

    def start(self) -> "DeviceTaintEvictionController":
        for informer in (self.slices, self.rules, self.claims, self.pods):
            informer.start()
        for informer in (self.slices, self.rules, self.claims, self.pods):
            informer.wait_synced(30)
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        for informer in (self.pods, self.claims, self.rules, self.slices):
            informer.stop()

    # -- reading the caches ---------------------------------------------------------------------------
    def _on_slice(self, _type: str, _old: ResourceSlice | None, _new: ResourceSlice) -> None:
        with self._lock:
            self._slice_taints = None

    def _plan(self, pods: list[Pod], when: datetime) -> dict[str, Eviction]:
        with self._lock:
            slices = self.slices.list()
            if self._slice_taints is None:
                self._slice_taints = slice_noexecute_taints(slices)
                present = {(device, t.key, t.value or "", t.effect)
                           for device, taints in self._slice_taints.items() for t, _ in taints}
                self._seen = {k: v for k, v in self._seen.items() if k in present}  # a taint that went is forgotten
            taints = self._slice_taints
            return plan_evictions(pods, self.claims.list(), slices, self.rules.list(), when, slice_taints=taints,
                                  seen=self._seen)

    def reconcile(self, key: str) -> Requeue | None:
        if key == ALL:
            for pod in self.pods.list(lambda p: bool(p.spec.resource_claims)):
                self.controller.queue.add(POD_PREFIX + pod.key)
            for rule in self.rules.list():
                self.controller.queue.add(RULE_PREFIX + rule.name)
            return None
        if key.startswith(RULE_PREFIX):
            self._sync_rule(key[len(RULE_PREFIX):])
            return None
        if key.startswith(POD_PREFIX):
            return self._sync_pod(key[len(POD_PREFIX):])
        log.warning("%s: ignoring unknown key %r", COMPONENT, key)
        return None

    # -- pods -----------------------------------------------------------------------------------------
    def _sync_pod(self, key: str) -> Requeue | None:
        pod = self.pods.get(key)
        when = datetime.now(timezone.utc)
        eviction = self._plan([pod], when).get(key) if pod is not None else None
        with self._lock:
            delayed = self._delayed.pop(key, None)
            if eviction is not None and eviction.at > when:
                self._delayed[key] = eviction.uid
        if eviction is None:
            if delayed is not None and pod is not None and pod.uid == delayed and not pod.metadata.deletion_timestamp:
                self.recorder.normal(pod, EVENT_REASON, CANCEL_MESSAGE)
            return None
        if eviction.at > when:
            return Requeue((eviction.at - when).total_seconds())
        self._evict(pod, eviction)
        return None

    def _evict(self, pod: Pod, eviction: Eviction) -> None:
        try:
            current = self.store.get(Pod, pod.namespace, pod.name)
        except NotFound:
            return
        if current.uid != eviction.uid or current.metadata.deletion_timestamp:
            return  # replaced under the same name, or already going
        self.recorder.normal(current, EVENT_REASON, EVENT_MESSAGE)
        condition = find_condition(current.status.conditions, DISRUPTION_TARGET)
        if condition is None or (condition.status, condition.reason, condition.message) != ("True", REASON, MESSAGE):
            conditions = set_condition(current.status.conditions, DISRUPTION_TARGET, "True", REASON, MESSAGE)
            current = self.store.update_status(current.model_copy(
                update={"status": current.status.model_copy(update={"conditions": conditions})}))
        self.store.delete(Pod, current.namespace, current.name)
        log.info("%s: evicted pod %s (NoExecute device taint)", COMPONENT, pod.key)
        for name in eviction.rules:
            rule = self.rules.get(name)
            if rule is not None:
                self.evicted[rule.uid] = self.evicted.get(rule.uid, 0) + 1
                self.controller.queue.add(RULE_PREFIX + name)

    # -- rules ----------------------------------------------------------------------------------------
    def _sync_rule(self, name: str) -> None:
        rule = self.rules.get(name)
        if rule is None:
            return
        evictions = self._plan(self.pods.list(lambda p: bool(p.spec.resource_claims)), datetime.now(timezone.utc))
        wanted = rule_condition(rule, evictions, self.evicted.get(rule.uid, 0))
        existing = find_condition(rule.status.conditions, wanted["type"])
        if existing is not None and all(getattr(existing, k) == v for k, v in wanted.items()):
            return
        condition = Condition(**wanted, last_transition_time=now())
        conditions = [c for c in rule.status.conditions or [] if c.type != condition.type] + [condition]
        try:
            self.store.update_status(rule.model_copy(update={"status": rule.status.model_copy(
                update={"conditions": conditions})}))
        except NotFound:
            return
        except Conflict:
            raise  # the informer catches up; the key is retried
