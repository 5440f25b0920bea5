"""`mlplane describe`: a readable account of one object, its conditions and its events."""

from __future__ import annotations

from mlplane.api.batch import Job
from mlplane.api.core import Event, Node, Pod
from mlplane.api.meta import Condition, Object
from mlplane.api.registry import Kind
from mlplane.cli.printers import job_status, pod_status, since, table
from mlplane.control.store.base import Store


def _map(values: dict[str, str] | None) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((values or {}).items())] or ["<none>"]


def _field(lines: list[str], label: str, value, indent: int = 0) -> None:
    values = [line for v in (value if isinstance(value, list) else [value]) for line in str(v).splitlines() or [""]]
    pad = " " * indent
    lines.append(f"{pad}{label + ':':<20}{values[0] if values else '<none>'}")
    for v in values[1:]:
        lines.append(f"{pad}{'':<20}{v}")


def _conditions(lines: list[str], conditions: list[Condition] | None) -> None:
    lines.append("Conditions:")
    if not conditions:
        lines.append("  <none>")
        return
    rows = [["  Type", "Status", "Reason", "Message"]]
    rows += [[f"  {c.type}", c.status, c.reason or "", c.message or ""] for c in conditions]
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


def _pod(lines: list[str], pod: Pod) -> None:
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


SECTIONS = {"Pod": _pod, "Job": _job, "Node": _node}


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
    elif hasattr(obj, "status") and getattr(obj.status, "conditions", None) is not None:
        _conditions(lines, obj.status.conditions)
    if kind.kind != "Event":
        _events(lines, store, obj)
    return "\n".join(lines)

