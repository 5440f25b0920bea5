"""Tables and object output that read like kubectl's.

Each kind registers its columns in ``COLUMNS`` (kind name -> list of (header, cell function,
wide-only)); a kind without columns prints NAME and AGE. Later planes add their kinds here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

import yaml

from mlplane.api.batch import Job
from mlplane.api.core import Event, Node, Pod
from mlplane.api.inference import InferenceObjective, InferencePool
from mlplane.api.kueue import ClusterQueue, FlavorUsage, Workload
from mlplane.api.meta import Object, find_condition, is_true, parse_time
from mlplane.api.quantity import parse_quantity
from mlplane.api.registry import Kind
from mlplane.api.resource import ResourceClaim, ResourceSlice

Cell = Callable[[Object], str]


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration (k8s.io/apimachinery/pkg/util/duration)."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    y, d = h // (24 * 365), (h // 24) % 365
    return f"{y}y" if d == 0 or y >= 8 else f"{y}y{d}d"


def since(timestamp: str | None) -> str:
    t = parse_time(timestamp)
    if t is None:
        return "<unknown>"
    return human_duration((datetime.now(timezone.utc) - t).total_seconds())


def age(obj: Object) -> str:
    return since(obj.metadata.creation_timestamp)


# --- Pods ----------------------------------------------------------------------------------

def pod_status(pod: Pod) -> str:
    """The STATUS column: kubectl shows a container's waiting/terminated reason over the phase."""
    if pod.metadata.deletion_timestamp:
        return "Terminating"
    reason = pod.status.reason or pod.status.phase
    for cs in pod.status.container_statuses or []:
        if cs.state.waiting and cs.state.waiting.reason:
            reason = cs.state.waiting.reason
        elif cs.state.terminated and cs.state.terminated.reason and pod.status.phase != "Running":
            reason = cs.state.terminated.reason
        elif cs.state.terminated and not cs.state.terminated.reason:
            reason = f"Signal:{cs.state.terminated.signal}" if cs.state.terminated.signal else \
                f"ExitCode:{cs.state.terminated.exit_code}"
    if reason == "Pending" and pod.spec.scheduling_gates:
        return "SchedulingGated"
    return reason


def _pod_ready(pod: Pod) -> str:
    statuses = pod.status.container_statuses or []
    return f"{sum(1 for c in statuses if c.ready)}/{len(pod.spec.containers)}"


def _pod_restarts(pod: Pod) -> str:
    return str(sum(c.restart_count for c in pod.status.container_statuses or []))


# --- Jobs ----------------------------------------------------------------------------------

def job_status(job: Job) -> str:
    conds = job.status.conditions
    for type_ in ("Failed", "Complete", "Suspended"):
        if is_true(conds, type_):
            return type_
    if is_true(conds, "FailureTarget"):
        return "FailureTarget"
    if is_true(conds, "SuccessCriteriaMet"):
        return "SuccessCriteriaMet"
    return "Running"


def _job_completions(job: Job) -> str:
    succeeded = job.status.succeeded or 0
    if job.spec.completions is not None:
        return f"{succeeded}/{job.spec.completions}"
    return f"{succeeded}/1 of {job.spec.parallelism}" if (job.spec.parallelism or 1) > 1 else f"{succeeded}/1"


def _job_duration(job: Job) -> str:
    start = parse_time(job.status.start_time)
    if start is None:
        return ""
    end = parse_time(job.status.completion_time) or datetime.now(timezone.utc)
    return human_duration((end - start).total_seconds())


# --- Nodes ---------------------------------------------------------------------------------

def _node_status(node: Node) -> str:
    ready = find_condition(node.status.conditions, "Ready")
    status = "Ready" if ready is not None and ready.status == "True" else "NotReady" if ready else "Unknown"
    return status + (",SchedulingDisabled" if node.spec.unschedulable else "")


def _node_roles(node: Node) -> str:
    roles = sorted(k.rpartition("/")[2] for k in node.labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def _node_address(node: Node, type_: str) -> str:
    for a in node.status.addresses or []:
        if a.type == type_:
            return a.address
    return "<none>"


def _info(node: Node, attr: str) -> str:
    info = node.status.node_info
    return (getattr(info, attr) if info else None) or "<none>"


# --- Kueue kinds: the printcolumns of kubernetes-sigs/kueue:apis/kueue/v1beta2/*_types.go, plus --
# what explains a wait: USAGE and BORROWED of a ClusterQueue ("a100: cpu 6/9, nvidia.com/gpu 4/4",
# reserved over nominal quota), and with -o wide a Workload's REASON and MESSAGE.

def _condition_status(wl: Workload, type_: str) -> str:
    c = find_condition(wl.status.conditions, type_)
    return c.status if c else ""


def _reserved_in(wl: Workload) -> str:
    return wl.status.admission.cluster_queue if wl.status.admission else ""


def waiting_condition(wl: Workload):
    """The condition that says why a workload does not run: Evicted=True, or QuotaReserved=False."""
    evicted = find_condition(wl.status.conditions, "Evicted")
    if evicted is not None and evicted.status == "True":
        return evicted
    if is_true(wl.status.conditions, "Finished"):
        return None
    reserved = find_condition(wl.status.conditions, "QuotaReserved")
    return reserved if reserved is not None and reserved.status == "False" else None


def _wl_reason(wl: Workload) -> str:
    c = waiting_condition(wl)
    return (c.reason or "") if c else ""


def _wl_message(wl: Workload) -> str:
    c = waiting_condition(wl)
    return "; ".join(line.strip() for line in (c.message or "").splitlines() if line.strip()) if c else ""


def _amount(value: str) -> Decimal:
    try:
        return parse_quantity(value)
    except ValueError:
        return Decimal(0)


def _cq_usage(cq: ClusterQueue) -> str:
    """USAGE: per flavor in use, each resource's reserved amount over its nominal quota."""
    status = cq.status.flavors_reservation or []
    used = {(f.name, r.name): r.total for f in status for r in f.resources}
    parts = []
    for group in cq.spec.resource_groups or []:
        for flavor in group.flavors:
            if not any(_amount(used.get((flavor.name, q.name), "0")) for q in flavor.resources):
                continue
            cells = [f"{q.name} {used.get((flavor.name, q.name), '0')}/{q.nominal_quota}" for q in flavor.resources]
            parts.append(f"{flavor.name}: {', '.join(cells)}")
    return "; ".join(parts) or "<none>"


def _borrowed(status: list[FlavorUsage] | None) -> str:
    """BORROWED: per flavor, the resources reserved above their nominal quota."""
    parts = []
    for flavor in status or []:
        cells = [f"{r.name} {r.borrowed}" for r in flavor.resources if _amount(r.borrowed)]
        if cells:
            parts.append(f"{flavor.name}: {', '.join(cells)}")
    return "; ".join(parts) or "<none>"


# --- DRA kinds: the columns of kubernetes/kubernetes:pkg/printers/internalversion/printers.go ----------

def resource_claim_state(claim: ResourceClaim) -> str:
    """STATE: "pending", "allocated" or "allocated,reserved", with "deleted" first while deleting."""
    states = ["deleted"] if claim.metadata.deletion_timestamp else []
    if claim.status.allocation is None:
        if not claim.metadata.deletion_timestamp:
            states.append("pending")
    else:
        states.append("allocated")
        if claim.status.reserved_for:
            states.append("reserved")
    return ",".join(states)


def _slice_node(rs: ResourceSlice) -> str:
    return rs.spec.node_name or "<none>"


def _rule_selector(field_name: str):
    def cell(rule) -> str:
        selector = rule.spec.device_selector
        if selector is None:
            return "<none>"  # no selector matches no device
        value = getattr(selector, field_name)
        return "*" if value is None else value
    return cell


def _rule_taint(rule) -> str:
    t = rule.spec.taint
    return f"{t.key}={t.value}" if t.value else t.key


# --- Traffic kinds: InferenceObjective has the printcolumns of llm-d/llm-d-router:apix/v1alpha2/ ----
# inferenceobjective_types.go; InferencePool's CRD declares none, so it shows what routes to it.

def pool_selector(pool: InferencePool) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(pool.spec.selector.match_labels.items()))


def pool_ports(pool: InferencePool) -> str:
    return ",".join(str(p) for p in pool.ports)


def endpoint_picker(pool: InferencePool) -> str:
    """EPP: "<none>", "epp:9002" for a Service, else "Kind/name"."""
    ref = pool.spec.endpoint_picker_ref
    if ref is None:
        return "<none>"
    if ref.kind == "Service" and not ref.group:
        return f"{ref.name}:{ref.port.number}" if ref.port else ref.name
    return f"{ref.kind}/{ref.name}" + (f":{ref.port.number}" if ref.port else "")


def _failure_mode(pool: InferencePool) -> str:
    ref = pool.spec.endpoint_picker_ref
    return ref.failure_mode if ref is not None else "<none>"


def _objective_priority(o: InferenceObjective) -> str:
    return "<none>" if o.spec.priority is None else str(o.spec.priority)


# --- Events --------------------------------------------------------------------------------

def _event_object(ev: Event) -> str:
    return f"{(ev.involved_object.kind or '').lower()}/{ev.involved_object.name}"


COLUMNS: dict[str, list[tuple[str, Cell, bool]]] = {
    "Pod": [("READY", _pod_ready, False), ("STATUS", pod_status, False), ("RESTARTS", _pod_restarts, False),
            ("AGE", age, False), ("IP", lambda p: p.status.pod_ip or "<none>", True),
            ("NODE", lambda p: p.spec.node_name or "<none>", True),
            ("NOMINATED NODE", lambda p: p.status.nominated_node_name or "<none>", True),
            ("READINESS GATES", lambda p: "<none>", True)],
    "Job": [("STATUS", job_status, False), ("COMPLETIONS", _job_completions, False),
            ("DURATION", _job_duration, False), ("AGE", age, False),
            ("CONTAINERS", lambda j: ",".join(c.name for c in j.spec.template.spec.containers), True),
            ("IMAGES", lambda j: ",".join(c.image or "<none>" for c in j.spec.template.spec.containers), True),
            ("SELECTOR", lambda j: f"batch.kubernetes.io/controller-uid={j.uid}", True)],
    "Node": [("STATUS", _node_status, False), ("ROLES", _node_roles, False), ("AGE", age, False),
             ("VERSION", lambda n: _info(n, "kubelet_version"), False),
             ("INTERNAL-IP", lambda n: _node_address(n, "InternalIP"), True),
             ("EXTERNAL-IP", lambda n: _node_address(n, "ExternalIP"), True),
             ("OS-IMAGE", lambda n: _info(n, "os_image"), True),
             ("KERNEL-VERSION", lambda n: _info(n, "kernel_version"), True),
             ("CONTAINER-RUNTIME", lambda n: _info(n, "container_runtime_version"), True)],
    "Namespace": [("STATUS", lambda n: (n.status.phase if n.status else None) or "Active", False),
                  ("AGE", age, False)],
    "ClusterQueue": [("COHORT", lambda cq: cq.spec.cohort_name or "", False),
                     ("STRATEGY", lambda cq: cq.spec.queueing_strategy, True),
                     ("PENDING WORKLOADS", lambda cq: str(cq.status.pending_workloads), False),
                     ("ADMITTED WORKLOADS", lambda cq: str(cq.status.admitted_workloads), False),
                     ("USAGE", _cq_usage, False),
                     ("BORROWED", lambda cq: _borrowed(cq.status.flavors_reservation), False)],
    "LocalQueue": [("CLUSTERQUEUE", lambda lq: lq.spec.cluster_queue, False),
                   ("PENDING WORKLOADS", lambda lq: str(lq.status.pending_workloads), False),
                   ("ADMITTED WORKLOADS", lambda lq: str(lq.status.admitted_workloads), False)],
    "Workload": [("QUEUE", lambda wl: wl.spec.queue_name or "", False), ("RESERVED IN", _reserved_in, False),
                 ("ADMITTED", lambda wl: _condition_status(wl, "Admitted"), False),
                 ("FINISHED", lambda wl: _condition_status(wl, "Finished"), False), ("AGE", age, False),
                 ("PRIORITY", lambda wl: "" if wl.spec.priority is None else str(wl.spec.priority), True),
                 ("REASON", _wl_reason, True), ("MESSAGE", _wl_message, True)],
    "WorkloadPriorityClass": [("VALUE", lambda pc: str(pc.value), False)],
    "ResourceFlavor": [("AGE", age, False)],
    "DeviceClass": [("AGE", age, False)],
    "ResourceSlice": [("NODE", _slice_node, False), ("DRIVER", lambda rs: rs.spec.driver, False),
                      ("POOL", lambda rs: rs.spec.pool.name, False), ("AGE", age, False)],
    "ResourceClaim": [("STATE", resource_claim_state, False), ("AGE", age, False)],
    "ResourceClaimTemplate": [("AGE", age, False)],
    "DeviceTaintRule": [("DRIVER", _rule_selector("driver"), False), ("POOL", _rule_selector("pool"), False),
                        ("DEVICE", _rule_selector("device"), False), ("TAINT", _rule_taint, False),
                        ("EFFECT", lambda r: r.spec.taint.effect, False),
                        ("EVICTING", lambda r: _condition_status(r, "EvictionInProgress"), False), ("AGE", age, False)],
    "InferencePool": [("SELECTOR", pool_selector, False), ("PORTS", pool_ports, False),
                      ("EPP", endpoint_picker, False), ("AGE", age, False),
                      ("PROTOCOL", lambda p: p.spec.app_protocol, True), ("FAILURE MODE", _failure_mode, True)],
    "InferenceObjective": [("INFERENCE POOL", lambda o: o.spec.pool_ref.name if o.spec.pool_ref else "<none>", False),
                           ("INFERENCE POOLS", lambda o: ",".join(r.name for r in o.spec.pool_refs or []) or "<none>",
                            False),
                           ("PRIORITY", _objective_priority, False), ("AGE", age, False)],
}

# Events list without a NAME column, newest last, as `kubectl get events` does.
EVENT_COLUMNS: list[tuple[str, Cell]] = [
    ("LAST SEEN", lambda e: since(e.last_timestamp or e.event_time or e.metadata.creation_timestamp)),
    ("TYPE", lambda e: e.type or ""), ("REASON", lambda e: e.reason or ""), ("OBJECT", _event_object),
    ("MESSAGE", lambda e: e.message or "")]


def table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl's tabwriter output."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1])] + [r[-1]]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def print_table(kind: Kind, objs: list[Object], *, wide: bool = False, namespaces: bool = False) -> str:
    if kind.kind == "Event":
        objs = sorted(objs, key=lambda e: (e.last_timestamp or e.metadata.creation_timestamp or "",
                                           int(e.metadata.resource_version or 0)))
        header = (["NAMESPACE"] if namespaces else []) + [h for h, _ in EVENT_COLUMNS]
        rows = [header] + [([o.namespace] if namespaces else []) + [f(o) for _, f in EVENT_COLUMNS]
                           for o in objs]
        return table(rows)
    columns = [(h, f) for h, f, w in COLUMNS.get(kind.kind, [("AGE", age, False)]) if wide or not w]
    header = (["NAMESPACE"] if namespaces else []) + ["NAME"] + [h for h, _ in columns]
    rows = [header]
    for o in objs:
        rows.append(([o.namespace] if namespaces else []) + [o.name] + [f(o) for _, f in columns])
    return table(rows)


def _clean(obj: Object) -> dict:
    data = obj.to_dict()
    data.get("metadata", {}).pop("managedFields", None)
    return data


def dump(objs: list[Object], fmt: str, *, single: bool) -> str:
    """-o yaml / -o json: one object as itself, several as a v1 List."""
    data = _clean(objs[0]) if single else {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                                           "items": [_clean(o) for o in objs]}
    if fmt == "json":
        return json.dumps(data, indent=4)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")


def name_output(kind: Kind, obj: Object) -> str:
    """`-o name`: job.batch/train."""
    return f"{kind.singular}/{obj.name}"
