"""From ``kueue.x-k8s.io`` API objects to the admission core's ``State`` and pending workloads.

``build(objects, now)`` reads ResourceFlavors, Cohorts, ClusterQueues, LocalQueues,
WorkloadPriorityClasses, Workloads and an optional Configuration (plus Namespaces, for their
labels). A Workload with ``status.admission`` and ``QuotaReserved=True`` (and not
``Finished=True``) is admitted and uses quota; every other active Workload is pending.
``schedule(objects, now, cycles)`` builds and runs the scheduling cycles, with Kueue's fair
sharing when the Configuration enables it (``fair_sharing(objects)`` reads its settings: the
preemption strategies and the ``spec.fairSharing.weight`` of ClusterQueues and Cohorts).

What keeps a pending Workload out of every queue follows Kueue's workload controller and
``ValidateAdmissibility``: no queueName, a missing or stopped LocalQueue, a ClusterQueue whose
namespaceSelector does not select the namespace (a nil selector selects nothing, ``{}``
everything), ``spec.active: false``. A ClusterQueue that is stopped, references a missing
ResourceFlavor, sits under a cycle of cohort parents or is being deleted (Terminating) is inactive;
``queue_activity(objects)`` gives each ClusterQueue's ``Active`` condition, ``weighted_shares``
their fair-sharing ``weightedShare``, ``per_pod_requests`` what one pod of a podSet counts against quota.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from datetime import datetime, timezone

from mlplane.api import kueue as api
from mlplane.api.core import Namespace
from mlplane.api.meta import LabelSelector, find_condition, is_true, parse_time
from mlplane.api.quantity import milli, parse_quantity
from mlplane.api.selectors import selector_from_match
from mlplane.policy.workload.kueue import model
from mlplane.policy.workload.kueue.cycle import Result, schedule_workloads
from mlplane.policy.workload.kueue.fairsharing import FairSharing
from mlplane.policy.workload.kueue.quota import FlavorResource, Quota
from mlplane.policy.workload.kueue.state import State


TERMINATING = "Terminating"


class SnapshotError(ValueError):
    """Objects that cannot be scheduled together; the message names the object and field.
    ``obj``: the object at fault, when one is (a live controller leaves it out and goes on)."""

    def __init__(self, message: str, obj: object | None = None):
        super().__init__(message)
        self.obj = obj


def _seconds(value: str | None, default: float) -> float:
    t = parse_time(value)
    return t.timestamp() if t is not None else default


def _quotas(groups: list[api.ResourceGroup] | None) -> dict[FlavorResource, Quota]:
    quotas = {}
    for group in groups or []:
        for flavor in group.flavors:
            for r in flavor.resources:
                quotas[(flavor.name, r.name)] = Quota(
                    milli(r.nominal_quota),
                    None if r.borrowing_limit is None else milli(r.borrowing_limit),
                    None if r.lending_limit is None else milli(r.lending_limit))
    return quotas


def _selects(selector: LabelSelector | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelectorAsSelector semantics; nil selects nothing."""
    if selector is None:
        return False
    return selector_from_match(selector.match_labels, selector.match_expressions).matches(labels)


def _toleration(t) -> model.Toleration:
    return model.Toleration(t.key or "", t.operator or "Equal", t.value or "", t.effect or "")


def _flavor(rf: api.ResourceFlavor) -> model.Flavor:
    spec = rf.spec
    return model.Flavor(rf.name, dict(spec.node_labels or {}),
                        tuple(model.Taint(t.key, t.value or "", t.effect) for t in spec.node_taints or []),
                        tuple(_toleration(t) for t in spec.tolerations or []))


def _cluster_queue(cq: api.ClusterQueue, flavors: dict[str, model.Flavor]) -> model.ClusterQueue:
    spec = cq.spec
    p = spec.preemption
    ff = spec.flavor_fungibility
    groups = tuple(model.ResourceGroup(tuple(g.covered_resources), tuple(f.name for f in g.flavors))
                   for g in spec.resource_groups or [])
    reasons = inactive_reasons(cq, flavors)
    return model.ClusterQueue(
        name=cq.name, cohort=spec.cohort_name, resource_groups=groups, quotas=_quotas(spec.resource_groups),
        queueing_strategy=spec.queueing_strategy,
        preemption=model.Preemption(p.within_cluster_queue, p.reclaim_within_cohort, p.borrow_within_cohort.policy,
                                    p.borrow_within_cohort.max_priority_threshold),
        fungibility=model.Fungibility(ff.when_can_borrow, ff.when_can_preempt, ff.preference),
        inactive=", ".join(m for _, m in reasons) or None, inactive_reason=reasons[0][0] if reasons else None)


def inactive_reasons(cq: api.ClusterQueue, flavors: Container[str]) -> list[tuple[str, str]]:
    """Why the ClusterQueue admits nothing new: (reason, message) pairs, in Kueue's order
    (pkg/cache/scheduler/clusterqueue.go inactiveReason); empty when it is active. A ClusterQueue
    being deleted is Terminating: it keeps its admitted workloads but admits no new one."""
    if cq.metadata.deletion_timestamp:
        return [(TERMINATING, "clusterQueue is terminating")]
    out = []
    if cq.spec.stop_policy != "None":
        out.append(("Stopped", "is stopped"))
    missing = sorted({f.name for g in cq.spec.resource_groups or [] for f in g.flavors if f.name not in flavors})
    if missing:
        out.append(("FlavorNotFound", f"references missing ResourceFlavor(s): [{' '.join(missing)}]"))
    return out


def active_condition(cq: model.ClusterQueue) -> tuple[str, str, str]:
    """The ClusterQueue's ``Active`` condition: status, reason, message (clusterqueue.go inactiveReason)."""
    if not cq.inactive:
        return "True", "Ready", "Can admit new workloads"
    if cq.inactive_reason == TERMINATING:
        return "False", TERMINATING, "Can't admit new workloads; clusterQueue is terminating"
    return "False", cq.inactive_reason or "Unknown", f"Can't admit new workloads: {cq.inactive}."


def queue_activity(objects: Iterable[object]) -> dict[str, tuple[str, str, str]]:
    """The ``Active`` condition of every ClusterQueue among ``objects`` (ResourceFlavors, Cohorts
    and ClusterQueues are read, the rest ignored), cohort-parent cycles included."""
    objects = list(objects)
    flavors = {o.name: _flavor(o) for o in objects if isinstance(o, api.ResourceFlavor)}
    cohorts = [(o.name, o.spec.parent_name, _quotas(o.spec.resource_groups)) for o in objects
               if isinstance(o, api.Cohort)]
    state = State([_cluster_queue(o, flavors) for o in objects if isinstance(o, api.ClusterQueue)], flavors, cohorts)
    return {name: active_condition(cq) for name, cq in state.queues.items()}


def per_pod_requests(pod_set: api.PodSet) -> dict[str, int]:
    """What one pod of ``pod_set`` requests, in milli-units: each container's limits overlaid by its
    requests, summed over the containers (the quota the admission core counts per pod)."""
    per_pod: dict[str, int] = {}
    for c in pod_set.template.spec.containers:
        r = c.resources
        effective = {**((r.limits or {}) if r else {}), **((r.requests or {}) if r else {})}
        for name, q in effective.items():
            per_pod[name] = per_pod.get(name, 0) + milli(q)
    return per_pod


def _pod_sets(wl: api.Workload) -> tuple[model.PodSet, ...]:
    out = []
    for ps in wl.spec.pod_sets:
        spec = ps.template.spec
        out.append(model.PodSet(ps.name, ps.count, per_pod_requests(ps), ps.min_count, dict(spec.node_selector or {}),
                                tuple(_toleration(t) for t in spec.tolerations or [])))
    return tuple(out)


def _admission(wl: api.Workload, key: str) -> tuple[model.PodSetAdmission, ...]:
    out = []
    for i, psa in enumerate(wl.status.admission.pod_set_assignments):
        usage = {}
        for res, q in (psa.resource_usage or {}).items():
            try:
                usage[res] = milli(q)
            except ValueError as e:
                raise SnapshotError(f"Workload {key}: status.admission.podSetAssignments[{i}].resourceUsage[{res}]: "
                                    f"{e}", wl) from None
        flavors = dict(psa.flavors or {})
        for res in usage:
            if res not in flavors and usage[res]:
                raise SnapshotError(f"Workload {key}: status.admission.podSetAssignments[{i}].flavors: no flavor "
                                    f"for resource {res} in resourceUsage", wl)
        count = psa.count if psa.count is not None else (wl.pod_set(psa.name).count if wl.pod_set(psa.name) else 0)
        out.append(model.PodSetAdmission(psa.name, count, flavors, usage))
    return tuple(out)


def build(objects: Iterable[object], now: float) -> tuple[State, list[model.Workload]]:
    """The snapshot and the pending workloads that ``objects`` describe."""
    flavors: dict[str, model.Flavor] = {}
    cohorts: list[tuple[str, str | None, dict]] = []
    queues: dict[str, api.ClusterQueue] = {}
    local_queues: dict[str, api.LocalQueue] = {}
    priorities: dict[str, int] = {}
    namespaces: dict[str, dict[str, str]] = {}
    workloads: list[api.Workload] = []
    seen: dict[tuple[str, str], int] = {}
    for index, obj in enumerate(objects, 1):
        meta = getattr(obj, "metadata", None)
        if meta is not None:
            ident = (type(obj).__name__, f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name)
            if ident in seen:
                raise SnapshotError(f"{ident[0]} {ident[1]} (object {index}): the same kind and name as "
                                    f"object {seen[ident]}", obj)
            seen[ident] = index
        if isinstance(obj, api.ResourceFlavor):
            flavors[obj.name] = _flavor(obj)
        elif isinstance(obj, api.Cohort):
            cohorts.append((obj.name, obj.spec.parent_name, _quotas(obj.spec.resource_groups)))
        elif isinstance(obj, api.ClusterQueue):
            queues[obj.name] = obj
        elif isinstance(obj, api.LocalQueue):
            local_queues[f"{obj.namespace or 'default'}/{obj.name}"] = obj
        elif isinstance(obj, api.WorkloadPriorityClass):
            priorities[obj.name] = obj.value
        elif isinstance(obj, Namespace):
            namespaces[obj.name] = dict(obj.metadata.labels or {})
        elif isinstance(obj, api.Workload):
            workloads.append(obj)
        elif isinstance(obj, api.Configuration):
            pass  # read by fair_sharing()
        else:
            raise SnapshotError(f"{type(obj).__name__}: not a kind the Kueue admission core reads")
    state = State([_cluster_queue(cq, flavors) for cq in queues.values()], flavors, cohorts)

    pending: list[model.Workload] = []
    for wl in workloads:
        ns = wl.namespace or "default"
        key = f"{ns}/{wl.name}"
        spec = wl.spec
        priority = spec.priority
        ref = spec.priority_class_ref
        if priority is None and ref is not None and ref.kind == "WorkloadPriorityClass":
            priority = priorities.get(ref.name, 0)
        created = _seconds(wl.metadata.creation_timestamp, now)
        item = model.Workload(key=key, uid=wl.metadata.uid or key, cluster_queue=None, priority=priority or 0,
                              timestamp=created, pod_sets=_pod_sets(wl), local_queue=spec.queue_name or "")
        conditions = wl.status.conditions
        if is_true(conditions, "Finished"):
            continue
        if api.reserved(wl):
            cq = wl.status.admission.cluster_queue
            if cq not in state.queues:
                raise SnapshotError(f"Workload {key}: status.admission.clusterQueue: ClusterQueue {cq} not found", wl)
            item.cluster_queue = cq
            item.admission = _admission(wl, key)
            quotas = state.queues[cq].quotas
            for i, psa in enumerate(item.admission):
                for res, flavor in sorted(psa.flavors.items()):
                    if (flavor, res) not in quotas:
                        raise SnapshotError(f"Workload {key}: status.admission.podSetAssignments[{i}].flavors"
                                            f"[{res}]: ClusterQueue {cq} has no flavor {flavor} for {res}", wl)
            item.reserved_at = _seconds(find_condition(conditions, "QuotaReserved").last_transition_time, now)
            item.evicted = is_true(conditions, "Evicted")
            state.add_workload(item)
            continue
        if not spec.active:
            item.blocked = (model.INADMISSIBLE, "The workload is deactivated (spec.active is false)")
        elif not spec.queue_name:
            item.blocked = (model.INADMISSIBLE, "The workload has no queueName")
        else:
            lq = local_queues.get(f"{ns}/{spec.queue_name}")
            if lq is None:
                item.blocked = (model.INADMISSIBLE, f"LocalQueue {spec.queue_name} doesn't exist")
            elif lq.spec.stop_policy != "None":
                item.blocked = (model.INADMISSIBLE, f"LocalQueue {spec.queue_name} is inactive "
                                                    f"(stopPolicy is {lq.spec.stop_policy})")
            else:
                item.cluster_queue = lq.spec.cluster_queue
                cq = queues.get(lq.spec.cluster_queue)
                labels = namespaces.get(ns, {"kubernetes.io/metadata.name": ns})
                if cq is not None and not _selects(cq.spec.namespace_selector, labels):
                    item.blocked = (model.MISCONFIGURED, "Workload namespace doesn't match ClusterQueue selector")
        pending.append(item)
    return state, pending


def _weight(obj: api.ClusterQueue | api.Cohort) -> float:
    fs = obj.spec.fair_sharing
    return 1.0 if fs is None else float(parse_quantity(fs.weight))


def fair_sharing(objects: Iterable[object]) -> FairSharing | None:
    """The fair-sharing settings, or None unless a Configuration has ``fairSharing.enable: true``."""
    objects = list(objects)
    configs = [o for o in objects if isinstance(o, api.Configuration)]
    if len(configs) > 1:
        raise SnapshotError("Configuration: more than one Configuration given")
    if not configs or not configs[0].fair_sharing_enabled:
        return None
    return FairSharing({o.name: _weight(o) for o in objects if isinstance(o, api.ClusterQueue)},
                       {o.name: _weight(o) for o in objects if isinstance(o, api.Cohort)},
                       configs[0].fair_sharing.preemption_strategies)


def weighted_shares(objects: Iterable[object], now: float) -> dict[str, int]:
    """Each ClusterQueue's ``status.fairSharing.weightedShare`` on the usage of the admitted
    workloads among ``objects``: its dominant resource share, divided by its weight and rounded up
    (Kueue's clusterqueue_controller.go updateCqStatusIfChanged, from the cache's
    DominantResourceShare). Empty unless a Configuration enables fair sharing."""
    objects = list(objects)
    fs = fair_sharing(objects)
    if fs is None:
        return {}
    state, _ = build(objects, now)
    return {name: fs.drs(state.node(name)).weighted_share for name in sorted(state.queues)}


def schedule(objects: Iterable[object], now: datetime | float, cycles: int = 1) -> Result:
    """Run ``cycles`` Kueue scheduling cycles over ``objects`` at time ``now``."""
    if isinstance(now, datetime):
        now = (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).timestamp()
    objects = list(objects)
    state, pending = build(objects, now)
    return schedule_workloads(state, pending, now, cycles, fair_sharing=fair_sharing(objects))
