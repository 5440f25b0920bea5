"""The device taint eviction controller (upstream pkg/controller/devicetainteviction, KEP-5055).

A pod bound to a node and not terminal, whose allocated claims (``status.reservedFor`` naming it)
hold a device with a NoExecute taint, from its ResourceSlice or from a DeviceTaintRule, that the
allocation's NoExecute tolerations do not tolerate is evicted at the taint's ``timeAdded``: it gets
``DisruptionTarget=True`` reason ``DeletionByDeviceTaintManager``, a Normal Event
``DeviceTaintManagerEviction``, and is deleted (gracefully, as any pod on a node). When every such
taint is tolerated with ``tolerationSeconds`` the pod goes at the taint's ``timeAdded`` plus the
smallest of those seconds: its key is re-queued for that moment (the work queue's delayed add;
nothing polls). The decision is ``mlplane.policy.device.taints.plan_evictions``; this controller
only reads caches and writes.

Each DeviceTaintRule gets the ``EvictionInProgress`` condition upstream keeps on it
(``rule_condition``): True with reason PodsPendingEviction while pods are to be evicted for it.
A pod whose delayed eviction is no longer due (the taint went, or a claim changed) gets the Normal
Event ``DeviceTaintManagerEviction`` "Cancelling deletion", as upstream.

Keys: ``pod:<namespace>/<name>``, ``rule:<name>``, and ``all`` (the NoExecute taints of a pool,
or a rule's spec, changed: every pod with claims and every rule is looked at again). As upstream,
routine events cost little: a pod is looked at again only when it gets bound or its claim statuses
change, a slice event only when its pool's NoExecute taints change, a rule event only when the
rule comes, goes, or changes its spec or deletion state (not on status writes). A pod's claims are
looked up by key in the informer's cache.
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
from mlplane.policy.device.taints import (DeviceKey, Eviction, plan_evictions, rule_condition,
                                          slice_noexecute_taints)

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
        # pod key -> the rules it was evicted for: their conditions are looked at again once the pod
        # cache shows the pod going (a rule synced at once could still count it as pending).
        self._evicted_for: dict[str, tuple[str, ...]] = {}
        # NoExecute taints in the newest generation of each pool, kept up to date per slice event;
        # the slices by pool, to recompute one pool's taints.
        self._pools: dict[tuple[str, str], dict[str, ResourceSlice]] = {}
        self._slice_taints: dict[DeviceKey, list] = {}
        self.controller = Controller(COMPONENT, self.reconcile, workers=workers)
        self.pods.add_handler(self._on_pod)
        self.controller.watch(self.claims, _claim_pod_keys, on=("ADDED", "MODIFIED"))
        self.slices.add_handler(self._on_slice)
        # ALL looks at the pods before the rules, so a rule's condition counts what they wait for.
        self.rules.add_handler(self._on_rule)

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

    # -- events (upstream handlePodChange, handleSliceChange, handleRuleChange) ---------------------------
    def _on_pod(self, type_: str, old: Pod | None, new: Pod) -> None:
        """A pod is looked at when it appears, gets bound, or its claim statuses change; not on
        every status write (such as the DisruptionTarget condition this controller adds)."""
        if type_ == "DELETED" or new.metadata.deletion_timestamp:
            with self._lock:
                rules = self._evicted_for.pop(new.key, ())
            for name in rules:
                self.controller.queue.add(RULE_PREFIX + name)
        if type_ == "DELETED" or not new.spec.resource_claims:
            return
        if type_ == "MODIFIED" and old is not None and old.spec.node_name == new.spec.node_name and \
                old.status.resource_claim_statuses == new.status.resource_claim_statuses:
            return
        self.controller.queue.add(POD_PREFIX + new.key)

    def _on_slice(self, type_: str, old: ResourceSlice | None, new: ResourceSlice) -> None:
        """Every pod is looked at again only when the NoExecute taints of the slice's pool change."""
        def pool_of(s: ResourceSlice) -> tuple[str, str]:
            return s.spec.driver, s.spec.pool.name

        pools = {pool_of(s) for s in (old, new) if s is not None}
        changed = False
        with self._lock:
            before = {pool: self._pool_taints(pool) for pool in pools}
            for s in (old, new):
                if s is not None:
                    self._pools.get(pool_of(s), {}).pop(s.name, None)
            if type_ != "DELETED":
                self._pools.setdefault(pool_of(new), {})[new.name] = new
            for pool in pools:
                if not self._pools.get(pool, True):
                    del self._pools[pool]
                after = self._pool_taints(pool)
                if after != before[pool]:
                    changed = True
                    for device in before[pool]:
                        self._slice_taints.pop(device, None)
                    self._slice_taints.update(after)
        if changed:
            self.controller.queue.add(ALL)

    def _pool_taints(self, pool: tuple[str, str]) -> dict:
        return slice_noexecute_taints(list(self._pools.get(pool, {}).values()))

    def _on_rule(self, type_: str, old: DeviceTaintRule | None, new: DeviceTaintRule) -> None:
        """A new or deleted rule, or a change of its spec or deletion state, has every pod looked at
        again; a status write (this controller's own) does not."""
        if type_ == "MODIFIED" and old is not None and old.uid == new.uid and old.spec == new.spec and \
                bool(old.metadata.deletion_timestamp) == bool(new.metadata.deletion_timestamp):
            return
        self.controller.queue.add(ALL)

    # -- reading the caches ---------------------------------------------------------------------------
    def _plan(self, pods: list[Pod], when: datetime) -> dict[str, Eviction]:
        """The evictions of ``pods``, from their own claims (looked up by key) and the kept taints."""
        claims = []
        for pod in pods:
            names = [c.resource_claim_name for c in pod.spec.resource_claims or [] if c.resource_claim_name]
            names += [s.resource_claim_name for s in pod.status.resource_claim_statuses or []
                      if s.resource_claim_name]
            claims += [c for name in dict.fromkeys(names) if (c := self.claims.get(f"{pod.namespace}/{name}"))]
        with self._lock:
            taints = dict(self._slice_taints)
        return plan_evictions(pods, claims, [], self.rules.list(), when, slice_taints=taints)

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
        if eviction.rules:
            with self._lock:
                self._evicted_for[pod.key] = eviction.rules
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
