"""Device taints from DeviceTaintRules, and which pods their NoExecute taints evict (KEP-5055).

``apply_rules`` gives the ResourceSlices as the allocator must see them: every device a rule
selects carries the rule's taint next to the driver's own, as upstream's ResourceSlice tracker
(staging/src/k8s.io/dynamic-resource-allocation/resourceslice/tracker) hands them to the
scheduler. Slices without a selected device are returned as they are, so no rules cost nothing.

``plan_evictions`` is the decision of upstream's device taint eviction controller
(pkg/controller/devicetainteviction): a pod that is bound to a node (``spec.nodeName``), not
terminal and not being deleted, whose allocated claims (reserved for it) hold a device with a
NoExecute taint, is evicted at the taint's ``timeAdded`` when no toleration in the allocation
result tolerates it, otherwise at ``timeAdded`` plus the smallest ``tolerationSeconds`` of the
tolerations that match it. Only tolerations with effect NoExecute count (upstream's
claimEvictionTime), and one of them without seconds tolerates the taint for ever. Slice taints get
``timeAdded`` from the API server (ResourceSlice defaulting); one without it (never stored) counts
from ``now``. ``rule_condition`` is the ``EvictionInProgress`` condition upstream keeps on a rule.
Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mlplane.api.core import Pod, toleration_matches
from mlplane.api.meta import parse_time
from mlplane.api.resource import (DEVICE_TAINT_CONDITION_EVICTION_IN_PROGRESS, DeviceTaint, DeviceTaintRule,
                                  DeviceToleration, ResourceClaim, ResourceSlice)


# -- scheduling: rules applied to slices ------------------------------------------------------------

def apply_rules(slices: list[ResourceSlice], rules: list[DeviceTaintRule]) -> list[ResourceSlice]:
    """The slices with each rule's taint added to the devices it selects (copies of the slices
    that change; the others as given)."""
    active = [r for r in rules if r.spec.device_selector is not None and not r.metadata.deletion_timestamp]
    if not active:
        return slices
    out = []
    for s in slices:
        driver, pool = s.spec.driver, s.spec.pool.name
        candidates = [r for r in active if (r.spec.device_selector.driver in (None, driver)
                                            and r.spec.device_selector.pool in (None, pool))]
        devices = s.spec.devices or []
        changed = None
        for i, d in enumerate(devices):
            added = [r.spec.taint for r in candidates if r.spec.device_selector.device in (None, d.name)]
            if not added:
                continue
            if changed is None:
                changed = list(devices)
            changed[i] = d.model_copy(update={"taints": [*(d.taints or []), *added]})
        if changed is None:
            out.append(s)
        else:
            out.append(s.model_copy(update={"spec": s.spec.model_copy(update={"devices": changed})}))
    return out


# -- eviction ----------------------------------------------------------------------------------------

def tolerates(toleration: DeviceToleration, taint: DeviceTaint) -> bool:
    return toleration_matches(toleration.key, toleration.operator, toleration.value, toleration.effect,
                              taint.key, taint.value, taint.effect)


@dataclass(frozen=True)
class Eviction:
    """When a pod goes, and the rules (by name) whose taints are among the reasons."""

    pod: str  # "namespace/name"
    uid: str
    at: datetime
    rules: tuple[str, ...] = ()


DeviceKey = tuple[str, str, str]  # (driver, pool, device)


def slice_noexecute_taints(slices: list[ResourceSlice]) -> dict[DeviceKey, list[tuple[DeviceTaint, str | None]]]:
    """(driver, pool, device) -> its NoExecute taints in the newest generation of its pool."""
    newest: dict[tuple[str, str], int] = {}
    for s in slices:
        key = (s.spec.driver, s.spec.pool.name)
        newest[key] = max(newest.get(key, s.spec.pool.generation), s.spec.pool.generation)
    out: dict[DeviceKey, list[tuple[DeviceTaint, str | None]]] = {}
    for s in slices:
        if s.spec.pool.generation != newest[(s.spec.driver, s.spec.pool.name)]:
            continue
        for d in s.spec.devices or []:
            taints = [(t, None) for t in d.taints or [] if t.effect == "NoExecute"]
            if taints:
                out.setdefault((s.spec.driver, s.spec.pool.name, d.name), []).extend(taints)
    return out


def _taint_time(taint: DeviceTaint, now: datetime) -> datetime:
    """``timeAdded``, or ``now`` for a taint without one."""
    try:
        added = parse_time(taint.time_added)
    except ValueError:
        added = None
    return added if added is not None else now


def _eviction_time(taint: DeviceTaint, tolerations: list[DeviceToleration], now: datetime) -> datetime | None:
    """When a pod holding a device with this NoExecute taint must go (None: never), as upstream's
    claimEvictionTime: only tolerations with effect NoExecute count."""
    matching = [t for t in tolerations if t.effect == "NoExecute" and tolerates(t, taint)]
    if any(t.toleration_seconds is None for t in matching):
        return None  # tolerated for ever
    added = _taint_time(taint, now)
    if not matching:
        return added
    return added + timedelta(seconds=min(max(0, t.toleration_seconds) for t in matching))


def plan_evictions(pods: list[Pod], claims: list[ResourceClaim], slices: list[ResourceSlice],
                   rules: list[DeviceTaintRule], now: datetime, *,
                   slice_taints: dict | None = None) -> dict[str, Eviction]:
    """Pod key -> its eviction, for every pod that has one; pods in key order. ``claims``: at
    least the pods' claims (others are ignored); ``slice_taints``: ``slice_noexecute_taints(slices)``
    when the caller keeps it between calls (``slices`` is then not read)."""
    if slice_taints is None:
        slice_taints = slice_noexecute_taints(slices)
    live_rules = [r for r in rules if r.spec.taint.effect == "NoExecute" and r.spec.device_selector is not None
                  and not r.metadata.deletion_timestamp]
    if not slice_taints and not live_rules:
        return {}
    by_claim = {c.key: c for c in claims if c.status.allocation is not None}
    out: dict[str, Eviction] = {}
    for pod in sorted(pods, key=lambda p: p.key):
        if not pod.spec.node_name or pod.terminal or pod.metadata.deletion_timestamp:
            continue  # not bound yet (perhaps reserved in PreBind), done, or going
        names = [c.resource_claim_name for c in pod.spec.resource_claims or [] if c.resource_claim_name]
        names += [s.resource_claim_name for s in pod.status.resource_claim_statuses or [] if s.resource_claim_name]
        when: datetime | None = None
        causes: set[str] = set()
        for name in names:
            claim = by_claim.get(f"{pod.namespace}/{name}")
            if claim is None or not any(r.uid == pod.uid for r in claim.status.reserved_for or []):
                continue
            for result in claim.status.allocation.devices.results or []:
                device = (result.driver, result.pool, result.device)
                taints = list(slice_taints.get(device, ()))
                taints += [(r.spec.taint, r.name) for r in live_rules if r.matches(*device)]
                for taint, rule in taints:
                    at = _eviction_time(taint, result.tolerations or [], now)
                    if at is None:
                        continue
                    if rule is not None:
                        causes.add(rule)
                    if when is None or at < when:
                        when = at
        if when is not None:
            out[pod.key] = Eviction(pod.key, pod.uid, when, tuple(sorted(causes)))
    return out


def rule_condition(rule: DeviceTaintRule, evictions: dict[str, Eviction], evicted: int = 0) -> dict:
    """The ``EvictionInProgress`` condition for ``rule`` (type, status, reason, message,
    observedGeneration), worded as upstream's maybeUpdateRuleStatus; ``evicted``: pods this
    controller evicted for the rule since it started."""
    pending = [e for e in evictions.values() if rule.name in e.rules]
    namespaces = {e.pod.split("/", 1)[0] for e in pending}
    status, message = "False", ""
    effect = rule.spec.taint.effect
    if effect == "NoExecute":
        if pending:
            status, reason = "True", "PodsPendingEviction"
            message = ("1 pod needs to be evicted in " if len(pending) == 1 else
                       f"{len(pending)} pods need to be evicted in ")
            message += "1 namespace." if len(namespaces) == 1 else f"{len(namespaces)} different namespaces."
        else:
            reason = "Completed" if evicted else "NotStarted"
    elif effect == "None":
        reason = "NoEffect"
        message = "Eviction only happens for the NoExecute effect."
    else:
        reason = "OtherEffect"
        message = "Eviction only happens for the NoExecute effect."
    if evicted:
        message = (message + " " if message else "") + ("1 pod " if evicted == 1 else f"{evicted} pods ") + \
            "evicted since starting the controller."
    return {"type": DEVICE_TAINT_CONDITION_EVICTION_IN_PROGRESS, "status": status, "reason": reason,
            "message": message, "observed_generation": rule.metadata.generation}
