"""`mlplane describe`: a readable account of one object, its conditions and its events.

Kueue kinds read like Kueue's ``kubectl describe``, with what explains a wait in numbers: a pending
Workload shows its ``QuotaReserved=False`` reason and message and, recomputed from the store at
that moment by the admission core (``mlplane.policy.workload.kueue``), each shortfall as
"insufficient quota for R in flavor F: requested X, available Y (nominal N, borrowing limit L)".
The CLI cannot see the plane's Configuration, so that account uses classical admission; when the
Workload's ClusterQueue reports ``status.fairSharing`` (the plane runs fair sharing), it says so.

DRA kinds: a ResourceClaim shows its requests and constraints, then either its allocation (devices,
node selector, consumers) or, while pending, the pods that wait for it with their
``PodScheduled=False`` message; a Pod lists its claims with their allocated devices; a DeviceClass
its selectors and config; a ResourceSlice its pool and devices.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from mlplane.api.batch import Job
from mlplane.api.core import Event, Namespace, Node, Pod
from mlplane.api.errors import NotFound
from mlplane.api.inference import InferenceObjective, InferencePool
from mlplane.api.kueue import (ClusterQueue, Cohort, FlavorUsage, LocalQueue, LocalQueueFlavorUsage, ResourceFlavor,
                               Workload, WorkloadPriorityClass, cluster_queue_of, reserved)
from mlplane.api.meta import Condition, LabelSelector, Object, is_true
from mlplane.api.registry import Kind
from mlplane.api.resource import (DeviceClass, DeviceRequestAllocationResult, DeviceSelector, DeviceSubRequest,
                                  ExactDeviceRequest, NodeSelector, NodeSelectorRequirement,
                                  OpaqueDeviceConfiguration, ResourceClaim, ResourceSlice)
from mlplane.cli.printers import (endpoint_picker, job_status, pod_status, pool_ports, pool_selector,
                                  resource_claim_state, since, table, waiting_condition)
from mlplane.control.store.base import Store
from mlplane.gateway.discovery import pool_endpoints, pool_objectives, selects, serving
from mlplane.policy.workload.kueue import snapshot
from mlplane.policy.workload.kueue.units import format_quantity


def _map(values: dict[str, str] | None) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((values or {}).items())] or ["<none>"]


def _field(lines: list[str], label: str, value, indent: int = 0) -> None:
    values = [line for v in (value if isinstance(value, list) else [value]) for line in str(v).splitlines() or [""]]
    pad = " " * indent
    head = f"{label}:".ljust(19) + " "  # a label of 19 characters or more still gets a space
    lines.append(f"{pad}{head}{values[0] if values else '<none>'}")
    for v in values[1:]:
        lines.append(f"{pad}{'':<20}{v}")


def _conditions(lines: list[str], conditions: list[Condition] | None) -> None:
    lines.append("Conditions:")
    if not conditions:
        lines.append("  <none>")
        return
    rows = [["  Type", "Status", "Reason", "Message"]]
    rows += [[f"  {c.type}", c.status, c.reason or "", "; ".join((c.message or "").splitlines())] for c in conditions]
    lines.append(table(rows))


def _events(lines: list[str], store: Store, obj: Object) -> None:
    events = [e for e in store.list(Event, obj.metadata.namespace or "default",
                                    field_selector=f"involvedObject.uid={obj.uid}").items]
    lines.append("Events:")
    if not events:
        lines.append("  <none>")
        return
    events.sort(key=lambda e: (e.last_timestamp or e.metadata.creation_timestamp or "",
                               int(e.metadata.resource_version or 0)))
    header = ["  Type", "Reason", "Age", "From", "Message"]
    rows = [header, ["  ----", "------", "----", "----", "-------"]]
    for e in events:
        age = since(e.last_timestamp or e.metadata.creation_timestamp)
        if (e.count or 1) > 1:
            age = f"{age} (x{e.count} over {since(e.first_timestamp)})"
        rows.append([f"  {e.type or ''}", e.reason or "", age, (e.source.component if e.source else None) or "",
                     e.message or ""])
    lines.append(table(rows))


def _pod(lines: list[str], pod: Pod, store: Store) -> None:
    _field(lines, "Node", pod.spec.node_name or "<none>")
    _field(lines, "Start Time", pod.status.start_time or "<none>")
    _field(lines, "Status", pod_status(pod))
    if pod.status.reason:
        _field(lines, "Reason", pod.status.reason)
    if pod.status.message:
        _field(lines, "Message", pod.status.message)
    _field(lines, "IP", pod.status.pod_ip or "")
    statuses = {c.name: c for c in pod.status.container_statuses or []}
    lines.append("Containers:")
    for c in pod.spec.containers:
        lines.append(f"  {c.name}:")
        if c.image:
            _field(lines, "Image", c.image, 4)
        if c.command:
            _field(lines, "Command", c.command, 4)
        if c.args:
            _field(lines, "Args", c.args, 4)
        cs = statuses.get(c.name)
        if cs is not None:
            for label, state in (("State", cs.state), ("Last State", cs.last_state)):
                if state is None:
                    continue
                if state.running:
                    _field(lines, label, "Running", 4)
                    _field(lines, "  Started", state.running.started_at or "", 4)
                elif state.terminated:
                    t = state.terminated
                    _field(lines, label, "Terminated", 4)
                    _field(lines, "  Reason", t.reason or "", 4)
                    if t.message:
                        _field(lines, "  Message", t.message, 4)
                    _field(lines, "  Exit Code", t.exit_code, 4)
                    _field(lines, "  Started", t.started_at or "", 4)
                    _field(lines, "  Finished", t.finished_at or "", 4)
                elif state.waiting:
                    _field(lines, label, "Waiting", 4)
                    _field(lines, "  Reason", state.waiting.reason or "", 4)
                    if state.waiting.message:
                        _field(lines, "  Message", state.waiting.message, 4)
            _field(lines, "Ready", str(cs.ready), 4)
            _field(lines, "Restart Count", cs.restart_count, 4)
        res = c.resources
        if res and res.requests:
            _field(lines, "Requests", [f"{k}: {v}" for k, v in res.requests.items()], 4)
        if res and res.limits:
            _field(lines, "Limits", [f"{k}: {v}" for k, v in res.limits.items()], 4)
        env = [f"{e.name}: {e.value if e.value is not None else '(' + (e.value_from.field_ref.field_path if e.value_from and e.value_from.field_ref else '?') + ')'}"
               for e in c.env or []]
        if env:
            _field(lines, "Environment", env, 4)
    _pod_claims(lines, pod, store)
    _conditions(lines, pod.status.conditions)
    _field(lines, "Node-Selectors", _map(pod.spec.node_selector))
    _field(lines, "Tolerations", [f"{t.key or ''}{'=' + t.value if t.value else ''}:{t.effect or ''}"
                                  f" op={t.operator or 'Equal'}" for t in pod.spec.tolerations or []] or "<none>")


def _job(lines: list[str], job: Job) -> None:
    s, st = job.spec, job.status
    _field(lines, "Parallelism", s.parallelism)
    _field(lines, "Completions", s.completions if s.completions is not None else "<unset>")
    _field(lines, "Completion Mode", s.completion_mode)
    _field(lines, "Suspend", str(s.suspend).lower())
    _field(lines, "Backoff Limit", s.backoff_limit)
    _field(lines, "Start Time", st.start_time or "<none>")
    if st.completion_time:
        _field(lines, "Completed At", st.completion_time)
    _field(lines, "Pods Statuses", f"{st.active or 0} Active ({st.ready or 0} Ready) / {st.succeeded or 0} "
                                   f"Succeeded / {st.failed or 0} Failed")
    if s.completion_mode == "Indexed":
        _field(lines, "Completed Indexes", st.completed_indexes or "<none>")
    _field(lines, "Status", job_status(job))
    _conditions(lines, st.conditions)


def _node(lines: list[str], node: Node) -> None:
    _field(lines, "Unschedulable", str(bool(node.spec.unschedulable)).lower())
    _field(lines, "Taints", [f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in node.spec.taints or []]
           or "<none>")
    _conditions(lines, node.status.conditions)
    _field(lines, "Addresses", [f"{a.type}: {a.address}" for a in node.status.addresses or []] or "<none>")
    _field(lines, "Capacity", [f"{k}: {v}" for k, v in (node.status.capacity or {}).items()] or "<none>")
    _field(lines, "Allocatable", [f"{k}: {v}" for k, v in (node.status.allocatable or {}).items()] or "<none>")


def _resources(amounts: dict[str, int]) -> list[str]:
    return [f"{r}: {format_quantity(r, v)}" for r, v in sorted(amounts.items())] or ["<none>"]


# The live explanation runs the classical admission core: the Configuration (fair sharing on or
# off) is the plane's, which the CLI cannot read.
_CLASSICAL_NOTE = ("(computed with classical admission; ClusterQueue {cq} reports a fair-sharing weighted share, "
                   "so the plane admits with fair sharing and may decide otherwise)")


def _fair_sharing_note(store: Store, wl: Workload) -> list[str]:
    """A note when ``wl``'s ClusterQueue has ``status.fairSharing`` (the plane runs fair sharing)."""
    local_queues = {lq.key: lq.spec.cluster_queue for lq in store.list(LocalQueue, wl.namespace).items}
    name = cluster_queue_of(wl, local_queues)
    if name is None:
        return []
    try:
        cq = store.get(ClusterQueue, None, name)
    except NotFound:
        return []
    return [_CLASSICAL_NOTE.format(cq=name)] if cq.status.fair_sharing is not None else []


def _explain(store: Store, wl: Workload) -> list[str]:
    """Why ``wl`` gets no quota now, in numbers: one admission attempt of the admission core over what
    the store holds, with ``wl`` as the only pending workload (so as the head of its queue)."""
    objects: list[object] = []
    for kind in (ResourceFlavor, Cohort, ClusterQueue, LocalQueue, WorkloadPriorityClass, Namespace):
        objects.extend(store.list(kind).items)
    objects.extend(w for w in store.list(Workload).items
                   if reserved(w) and not is_true(w.status.conditions, "Finished") and w.key != wl.key)
    try:
        result = snapshot.schedule([*objects, wl], datetime.now(timezone.utc), 1)
    except snapshot.SnapshotError as e:
        return [f"cannot be computed: {e}"]
    note = _fair_sharing_note(store, wl)
    if wl.key in result.admitted:
        return [f"quota is free now in ClusterQueue {result.admitted[wl.key].cluster_queue}: admitted in the next "
                "admission pass", *note]
    pending = result.pending.get(wl.key)
    if pending is None:
        return ["<none>"]
    lines = list(pending.details) or [pending.message]
    victims = sorted(k for k, p in result.preempted.items() if p.preemptor == wl.key)
    if victims:
        lines.append(f"would preempt: {', '.join(victims)}")
    return [*lines, *note]


def _workload(lines: list[str], wl: Workload, store: Store) -> None:
    spec, st = wl.spec, wl.status
    _field(lines, "Queue", spec.queue_name or "<none>")
    ref = spec.priority_class_ref
    _field(lines, "Priority", ("<none>" if spec.priority is None else str(spec.priority))
           + (f" ({ref.kind} {ref.name})" if ref else ""))
    _field(lines, "Active", str(spec.active).lower())
    lines.append("Pod Sets:")
    for ps in spec.pod_sets:
        lines.append(f"  {ps.name}:")
        _field(lines, "Count", ps.count if ps.min_count is None else f"{ps.count} (min {ps.min_count})", 4)
        per_pod = snapshot.per_pod_requests(ps)
        _field(lines, "Requests per pod", _resources(per_pod), 4)
        _field(lines, "Requests in all", _resources({r: v * ps.count for r, v in per_pod.items()}), 4)
    lines.append("Admission:")
    if st.admission is None:
        lines.append("  <none>")
    else:
        _field(lines, "Cluster Queue", st.admission.cluster_queue, 2)
        for psa in st.admission.pod_set_assignments:
            lines.append(f"  {psa.name}:")
            if psa.count is not None:
                _field(lines, "Count", psa.count, 4)
            _field(lines, "Flavors", [f"{r}: {f}" for r, f in sorted((psa.flavors or {}).items())] or "<none>", 4)
            _field(lines, "Resource Usage", [f"{r}: {q}" for r, q in sorted((psa.resource_usage or {}).items())]
                   or "<none>", 4)
    if st.requeue_state is not None:
        _field(lines, "Requeue State", f"count {st.requeue_state.count or 0}"
               + (f", requeue at {st.requeue_state.requeue_at}" if st.requeue_state.requeue_at else ""))
    waiting = waiting_condition(wl)
    if waiting is not None:
        lines.append("Waiting:")
        _field(lines, "Reason", f"{waiting.type}={waiting.status}: {waiting.reason or ''}", 2)
        _field(lines, "Message", waiting.message or "", 2)
        if waiting.type == "QuotaReserved" and spec.active:
            _field(lines, "Quota now", _explain(store, wl), 2)
    _conditions(lines, st.conditions)


def _quota_rows(flavor_rows: list[list[str]], header: list[str]) -> str:
    return table([["  " + header[0], *header[1:]], *[["  " + r[0], *r[1:]] for r in flavor_rows]])


def _amounts(status: list[FlavorUsage] | list[LocalQueueFlavorUsage] | None) -> dict[tuple[str, str], object]:
    return {(f.name, r.name): r for f in status or [] for r in f.resources}


def _selector(selector: LabelSelector | None) -> list[str] | str:
    if selector is None:
        return "<none> (selects no namespace)"
    terms = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    terms += [f"{e.key} {e.operator}" + (f" ({','.join(e.values)})" if e.values else "")
              for e in selector.match_expressions or []]
    return terms or "{} (selects every namespace)"


def _cluster_queue(lines: list[str], cq: ClusterQueue, store: Store) -> None:
    spec, st = cq.spec, cq.status
    _field(lines, "Cohort", spec.cohort_name or "<none>")
    _field(lines, "Queueing Strategy", spec.queueing_strategy)
    _field(lines, "Stop Policy", spec.stop_policy)
    _field(lines, "Namespace Selector", _selector(spec.namespace_selector))
    p = spec.preemption
    _field(lines, "Preemption", [f"withinClusterQueue: {p.within_cluster_queue}",
                                 f"reclaimWithinCohort: {p.reclaim_within_cohort}",
                                 f"borrowWithinCohort: {p.borrow_within_cohort.policy}"])
    ff = spec.flavor_fungibility
    _field(lines, "Flavor Fungibility", [f"whenCanBorrow: {ff.when_can_borrow}",
                                         f"whenCanPreempt: {ff.when_can_preempt}"])
    if spec.fair_sharing is not None:
        _field(lines, "Fair Sharing Weight", spec.fair_sharing.weight)
    reserved, used = _amounts(st.flavors_reservation), _amounts(st.flavors_usage)
    rows = []
    for group in spec.resource_groups or []:
        for flavor in group.flavors:
            for q in flavor.resources:
                res, adm = reserved.get((flavor.name, q.name)), used.get((flavor.name, q.name))
                rows.append([flavor.name, q.name, str(q.nominal_quota),
                             "<unset>" if q.borrowing_limit is None else str(q.borrowing_limit),
                             "<unset>" if q.lending_limit is None else str(q.lending_limit),
                             res.total if res else "0", res.borrowed if res else "0", adm.total if adm else "0"])
    lines.append("Quota:")
    lines.append(_quota_rows(rows, ["Flavor", "Resource", "Nominal", "Borrowing Limit", "Lending Limit",
                                    "Reserved", "Borrowed", "Admitted"]) if rows else "  <none>")
    _field(lines, "Pending Workloads", st.pending_workloads)
    _field(lines, "Reserving Workloads", st.reserving_workloads)
    _field(lines, "Admitted Workloads", st.admitted_workloads)
    if st.fair_sharing is not None:
        _field(lines, "Weighted Share", st.fair_sharing.weighted_share)
    _conditions(lines, st.conditions)


def _local_queue(lines: list[str], lq: LocalQueue, store: Store) -> None:
    st = lq.status
    _field(lines, "Cluster Queue", lq.spec.cluster_queue)
    _field(lines, "Stop Policy", lq.spec.stop_policy)
    reserved, used = _amounts(st.flavors_reservation), _amounts(st.flavors_usage)
    rows = [[flavor, res, r.total, used[(flavor, res)].total if (flavor, res) in used else "0"]
            for (flavor, res), r in reserved.items()]
    lines.append("Usage:")
    lines.append(_quota_rows(rows, ["Flavor", "Resource", "Reserved", "Admitted"]) if rows else "  <none>")
    _field(lines, "Pending Workloads", st.pending_workloads)
    _field(lines, "Reserving Workloads", st.reserving_workloads)
    _field(lines, "Admitted Workloads", st.admitted_workloads)
    _conditions(lines, st.conditions)


# --- DRA kinds (resource.k8s.io/v1) ---------------------------------------------------------

def _cel(selectors: list[DeviceSelector] | None) -> list[str] | str:
    return [s.cel.expression for s in selectors or [] if s.cel is not None] or "<none>"


def _quantities(values: dict | None) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted((values or {}).items())]


def _requirement(req: NodeSelectorRequirement, field: bool) -> str:
    """One requirement in label-selector short form (``key=v``, ``key in (a,b)``, ``!key``...)."""
    key = f"field:{req.key}" if field else req.key
    values = req.values or []
    if req.operator == "In":
        return f"{key}={values[0]}" if len(values) == 1 else f"{key} in ({','.join(values)})"
    if req.operator == "NotIn":
        return f"{key}!={values[0]}" if len(values) == 1 else f"{key} notin ({','.join(values)})"
    if req.operator == "Exists":
        return key
    if req.operator == "DoesNotExist":
        return f"!{key}"
    return f"{key} {'>' if req.operator == 'Gt' else '<'} {values[0] if values else ''}"


def _node_selector(selector: NodeSelector | None) -> list[str] | str:
    """One line per term (terms are ORed; a term's requirements are ANDed, joined by commas)."""
    if selector is None:
        return "<none> (any node)"
    terms = [", ".join([_requirement(r, False) for r in t.match_expressions or []]
                       + [_requirement(r, True) for r in t.match_fields or []]) or "<empty term>"
             for t in selector.node_selector_terms]
    return [t if i == 0 else f"or {t}" for i, t in enumerate(terms)] or "<no terms> (no node)"


def _request_fields(lines: list[str], r: ExactDeviceRequest | DeviceSubRequest, indent: int) -> None:
    _field(lines, "Device Class", r.device_class_name, indent)
    _field(lines, "Selectors", _cel(r.selectors), indent)
    _field(lines, "Allocation Mode", r.allocation_mode if r.allocation_mode == "All"
           else f"ExactCount (count {r.count})", indent)
    if r.capacity is not None and r.capacity.requests:
        _field(lines, "Capacity Requests", _quantities(r.capacity.requests), indent)
    if isinstance(r, ExactDeviceRequest) and r.admin_access:
        _field(lines, "Admin Access", "true", indent)
    if r.tolerations:
        _field(lines, "Tolerations", [f"{t.key or '<all>'}{'=' + t.value if t.value else ''}:{t.effect or '<all>'}"
                                      f" op={t.operator}" for t in r.tolerations], indent)


def _claim_spec(lines: list[str], claim: ResourceClaim) -> None:
    devices = claim.spec.devices
    lines.append("Requests:")
    if not devices.requests:
        lines.append("  <none>")
    for req in devices.requests or []:
        lines.append(f"  {req.name}:")
        if req.exactly is not None:
            _request_fields(lines, req.exactly, 4)
        elif req.first_available:
            lines.append("    First Available (in order):")
            for sub in req.first_available:
                lines.append(f"      {req.name}/{sub.name}:")
                _request_fields(lines, sub, 8)
    constraints = []
    for c in devices.constraints or []:
        scope = f"requests {', '.join(c.requests)}" if c.requests else "all requests"
        if c.match_attribute:
            constraints.append(f"matchAttribute {c.match_attribute} ({scope})")
        if c.distinct_attribute:
            constraints.append(f"distinctAttribute {c.distinct_attribute} ({scope})")
    _field(lines, "Constraints", constraints or "<none>")
    if devices.config:
        _field(lines, "Config", [_config_line(c.opaque, c.requests) for c in devices.config if c.opaque])


def _config_line(opaque: OpaqueDeviceConfiguration, requests: list[str] | None = None) -> str:
    scope = f" (requests {', '.join(requests)})" if requests else ""
    return f"{opaque.driver}{scope}: {json.dumps(opaque.parameters, sort_keys=True)}"


def _device_name(r: DeviceRequestAllocationResult) -> str:
    return f"{r.driver}/{r.pool}/{r.device}"


def _allocation(lines: list[str], claim: ResourceClaim) -> None:
    alloc = claim.status.allocation
    lines.append("Allocation:")
    _field(lines, "Node Selector", _node_selector(alloc.node_selector), 2)
    if alloc.allocation_timestamp:
        _field(lines, "Allocated At", alloc.allocation_timestamp, 2)
    results = alloc.devices.results or []
    if not results:
        _field(lines, "Devices", "<none>", 2)
    else:
        lines.append("  Devices:")
        rows = [["    Request", "Driver", "Pool", "Device", "Share ID", "Consumed Capacity", "Admin Access"]]
        rows += [[f"    {r.request}", r.driver, r.pool, r.device, r.share_id or "<none>",
                  ", ".join(f"{k}={v}" for k, v in sorted((r.consumed_capacity or {}).items())) or "<none>",
                  str(bool(r.admin_access)).lower()] for r in results]
        lines.append(table(rows))
    if alloc.devices.config:
        _field(lines, "Config", [f"{c.source}: " + _config_line(c.opaque, c.requests)
                                 for c in alloc.devices.config if c.opaque], 2)


def _claim_users(claim: ResourceClaim, store: Store) -> list[Pod]:
    """The pods that use ``claim``: those in status.reservedFor and those whose spec.resourceClaims
    or status.resourceClaimStatuses name it, by name."""
    reserved = {r.name for r in claim.status.reserved_for or [] if r.resource == "pods"}
    users = []
    for pod in store.list(Pod, claim.namespace).items:
        named = {c.resource_claim_name for c in pod.spec.resource_claims or []}
        named |= {s.resource_claim_name for s in pod.status.resource_claim_statuses or []}
        if pod.name in reserved or claim.name in named:
            users.append(pod)
    return sorted(users, key=lambda p: p.name)


def _pending(lines: list[str], claim: ResourceClaim, store: Store) -> None:
    """Why ``claim`` has no allocation: the scheduler allocates a claim for a pod that uses it, so
    each such pod's PodScheduled=False message says what the devices lack."""
    lines.append("Allocation:")
    lines.append("  <none>")
    users = _claim_users(claim, store)
    lines.append("Waiting:")
    if not users:
        lines.append("  no pod uses this claim yet (the scheduler allocates a claim for the first pod that uses it)")
        return
    for pod in users:
        cond = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
        if cond is not None and cond.status == "False":
            why = f"PodScheduled=False {cond.reason or ''}: {cond.message or ''}"
        elif pod.spec.node_name:
            why = f"scheduled to {pod.spec.node_name}; allocation not recorded yet"
        else:
            why = "not tried by the scheduler yet"
        _field(lines, f"Pod {pod.name}", why, 2)


def _resource_claim(lines: list[str], claim: ResourceClaim, store: Store) -> None:
    _field(lines, "State", resource_claim_state(claim) or "<none>")
    _claim_spec(lines, claim)
    if claim.status.allocation is not None:
        _allocation(lines, claim)
    else:
        _pending(lines, claim, store)
    _field(lines, "Reserved For", [f"{r.resource}/{r.name} (uid {r.uid})" for r in claim.status.reserved_for or []]
           or "<none>")
    for d in claim.status.devices or []:
        if d.conditions:
            lines.append(f"Device {d.driver}/{d.pool}/{d.device}:")
            _conditions(lines, d.conditions)


def _pod_claims(lines: list[str], pod: Pod, store: Store) -> None:
    """Each spec.resourceClaims entry: the ResourceClaim it resolves to, its state and devices."""
    if not pod.spec.resource_claims:
        return
    made = {s.name: s.resource_claim_name for s in pod.status.resource_claim_statuses or []}
    lines.append("Resource Claims:")
    for entry in pod.spec.resource_claims:
        name = entry.resource_claim_name or made.get(entry.name)
        if name is None:
            _field(lines, entry.name, f"<not created yet> (from template {entry.resource_claim_template_name})", 2)
            continue
        try:
            claim = store.get(ResourceClaim, pod.namespace, name)
        except NotFound:
            _field(lines, entry.name, f"ResourceClaim {name} (not found)", 2)
            continue
        head = f"ResourceClaim {name} ({resource_claim_state(claim)})"
        results = (claim.status.allocation.devices.results or []) if claim.status.allocation else []
        _field(lines, entry.name, [head, *(f"{r.request}: {_device_name(r)}" for r in results)], 2)


def _device_class(lines: list[str], dc: DeviceClass) -> None:
    _field(lines, "Selectors", _cel(dc.spec.selectors))
    _field(lines, "Config", [_config_line(c.opaque) for c in dc.spec.config or [] if c.opaque] or "<none>")
    if dc.spec.extended_resource_name:
        _field(lines, "Extended Resource", dc.spec.extended_resource_name)


def _attribute_name(name: str, driver: str) -> str:
    """An attribute or capacity name without the driver's own domain (as CEL reads it)."""
    return name.removeprefix(f"{driver}/")


def _attribute_value(value: int | bool | str | list | None) -> str:
    if isinstance(value, list):  # a list-typed attribute
        return "[" + ", ".join(_attribute_value(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _resource_slice(lines: list[str], rs: ResourceSlice) -> None:
    spec = rs.spec
    _field(lines, "Driver", spec.driver)
    count = spec.pool.resource_slice_count
    _field(lines, "Pool", f"{spec.pool.name} (generation {spec.pool.generation}, "
                          f"{count} slice{'s' if count != 1 else ''})")
    if spec.node_name:
        _field(lines, "Node", spec.node_name)
    elif spec.all_nodes:
        _field(lines, "Node", "<all nodes>")
    elif spec.per_device_node_selection:
        _field(lines, "Node", "<per device>")
    else:
        _field(lines, "Node Selector", _node_selector(spec.node_selector))
    lines.append("Devices:")
    if not spec.devices:
        lines.append("  <none>")
    else:
        rows = [["  Name", "Attributes", "Capacity", "Taints"]]
        for d in spec.devices:
            attrs = [f"{_attribute_name(k, spec.driver)}={_attribute_value(a.value)}"
                     for k, a in sorted((d.attributes or {}).items())]
            capacity = [f"{_attribute_name(k, spec.driver)}={c.value}" for k, c in sorted((d.capacity or {}).items())]
            taints = [f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in d.taints or []]
            rows.append([f"  {d.name}", ",".join(attrs) or "<none>", ",".join(capacity) or "<none>",
                         ",".join(taints) or "<none>"])
        lines.append(table(rows))
    consumption = [f"{d.name}: {c.counter_set} " + ",".join(f"{k}={v.value}" for k, v in sorted(c.counters.items()))
                   for d in spec.devices or [] for c in d.consumes_counters or []]
    if spec.shared_counters:
        _field(lines, "Shared Counters", [f"{cs.name}: " + ",".join(f"{k}={v.value}" for k, v in
                                                                     sorted(cs.counters.items()))
                                          for cs in spec.shared_counters])
    if consumption:
        _field(lines, "Counter Consumption", consumption)


# --- Traffic kinds (inference.networking.k8s.io/v1, llm-d.ai/v1alpha2) -------------------------

def _priority_note(priority: int) -> str:
    return f"{priority} (sheddable: rejected with 429 while the pool is saturated)" if priority < 0 else str(priority)


def _inference_pool(lines: list[str], pool: InferencePool, store: Store) -> None:
    """The pool's spec, then what a gateway routes to now: its endpoints (Ready selected pods, one per
    target port) and the selected pods that are not serving, with why; then its objectives."""
    _field(lines, "Selector", pool_selector(pool))
    _field(lines, "Target Ports", pool_ports(pool))
    _field(lines, "App Protocol", pool.spec.app_protocol)
    ref = pool.spec.endpoint_picker_ref
    if ref is None:
        _field(lines, "Endpoint Picker", "<none> (mlplane gateway picks endpoints itself)")
    else:
        kind = f"{ref.kind}.{ref.group}" if ref.group else ref.kind
        _field(lines, "Endpoint Picker", [f"{kind} {endpoint_picker(pool)}", f"Failure Mode: {ref.failure_mode}"])
    pods = store.list(Pod, pool.namespace).items
    endpoints = pool_endpoints(pool, pods)
    by_pod = {p.name: p for p in pods}
    _field(lines, "Endpoints", f"{len(endpoints)} ready" if endpoints else "<none>")
    if endpoints:
        rows = [["  Endpoint", "Address", "Pod", "Node"]]
        for e in endpoints:
            pod_name = e.name.split("/", 1)[1].rsplit(":", 1)[0]
            rows.append([f"  {e.name}", e.address, pod_name, by_pod[pod_name].spec.node_name or "<none>"])
        lines.append(table(rows))
    idle = sorted((p for p in pods if selects(pool, p) and not serving(p)), key=lambda p: p.name)
    if idle:
        lines.append("Selected Pods Not Serving:")
        rows = [["  Pod", "Status", "Ready", "IP"]]
        for p in idle:
            ready = next((c for c in p.status.conditions or [] if c.type == "Ready"), None)
            rows.append([f"  {p.name}", pod_status(p), ready.status if ready else "Unknown",
                         p.status.pod_ip or "<none>"])
        lines.append(table(rows))
    objectives = pool_objectives(pool, store.list(InferenceObjective, pool.namespace).items)
    _field(lines, "Objectives", [f"{n}: priority {_priority_note(v)}" for n, v in objectives.items()] or "<none>")
    parents = pool.status.parents or []
    if not parents:
        _field(lines, "Parents", "<none>")
    else:
        lines.append("Parents:")
    for parent in parents:
        r = parent.parent_ref
        lines.append(f"  {r.kind}/{r.name}" + (f" in {r.namespace}" if r.namespace else "")
                     + (f" ({parent.controller_name})" if parent.controller_name else ""))
        rows = [["    Type", "Status", "Reason", "Message"]]
        rows += [[f"    {c.type}", c.status, c.reason or "", "; ".join((c.message or "").splitlines())]
                 for c in parent.conditions or []]
        lines.append(table(rows))


def _inference_objective(lines: list[str], obj: InferenceObjective, store: Store) -> None:
    _field(lines, "Priority", "<unset> (reads as 0)" if obj.spec.priority is None else _priority_note(obj.priority))
    pools = {p.name: p for p in store.list(InferencePool, obj.namespace).items}
    refs = [f"{r.name}" + ("" if r.name in pools else " (not found)") for r in obj.refs()]
    if obj.spec.pool_selector is not None:
        matched = sorted(n for n, p in pools.items() if obj.applies_to(p) and n not in {r.name for r in obj.refs()})
        refs.append("selector " + ",".join(f"{k}={v}" for k, v in sorted((obj.spec.pool_selector.match_labels
                                                                           or {}).items()))
                    + f" -> {', '.join(matched) or '<no pool>'}")
    _field(lines, "Inference Pools", refs or "<none>")
    _conditions(lines, obj.status.conditions)


def _device_taint_rule(lines: list[str], rule) -> None:
    selector = rule.spec.device_selector
    if selector is None:
        _field(lines, "Device Selector", "<none> (matches no device)")
    else:
        _field(lines, "Device Selector", [f"{name}: {getattr(selector, name) or '*'}"
                                          for name in ("driver", "pool", "device")])
    t = rule.spec.taint
    _field(lines, "Taint", f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}")
    _field(lines, "Time Added", t.time_added or "<unset>")
    _conditions(lines, rule.status.conditions)


SECTIONS = {"Job": _job, "Node": _node, "DeviceClass": _device_class, "ResourceSlice": _resource_slice,
            "DeviceTaintRule": _device_taint_rule}
# Sections that read more of the store than the object itself.
STORE_SECTIONS = {"Pod": _pod, "Workload": _workload, "ClusterQueue": _cluster_queue, "LocalQueue": _local_queue,
                  "ResourceClaim": _resource_claim, "InferencePool": _inference_pool,
                  "InferenceObjective": _inference_objective}


def describe(store: Store, kind: Kind, obj: Object) -> str:
    lines: list[str] = []
    _field(lines, "Name", obj.name)
    if kind.namespaced:
        _field(lines, "Namespace", obj.namespace)
    _field(lines, "Labels", _map(obj.metadata.labels))
    _field(lines, "Annotations", _map(obj.metadata.annotations))
    _field(lines, "API Version", obj.api_version)
    _field(lines, "Kind", obj.kind)
    _field(lines, "Created", f"{obj.metadata.creation_timestamp} ({since(obj.metadata.creation_timestamp)} ago)")
    owners = [f"{r.kind}/{r.name}" for r in obj.metadata.owner_references or []]
    if owners:
        _field(lines, "Controlled By", owners)
    if obj.metadata.deletion_timestamp:
        _field(lines, "Deleting Since", obj.metadata.deletion_timestamp)
        _field(lines, "Finalizers", obj.metadata.finalizers or [])
    section = SECTIONS.get(kind.kind)
    if section is not None:
        section(lines, obj)
    elif kind.kind in STORE_SECTIONS:
        STORE_SECTIONS[kind.kind](lines, obj, store)
    elif hasattr(obj, "status") and getattr(obj.status, "conditions", None) is not None:
        _conditions(lines, obj.status.conditions)
    if kind.kind != "Event":
        _events(lines, store, obj)
    return "\n".join(lines)

