"""Registers the built-in kinds. Importing ``mlplane.api`` runs this once."""

from __future__ import annotations

from mlplane.api.batch import Job
from mlplane.api.core import Event, Namespace, Node, Pod
from mlplane.api.meta import Object
from mlplane.api.registry import REGISTRY, Kind


def _pod_fields(pod: Object) -> dict[str, str]:
    assert isinstance(pod, Pod)
    return {"spec.nodeName": pod.spec.node_name or "", "spec.schedulerName": pod.spec.scheduler_name,
            "status.phase": pod.status.phase}


def _pod_update_errors(old: Object, new: Object) -> list[tuple[str, str]]:
    assert isinstance(old, Pod) and isinstance(new, Pod)
    # Pod spec is immutable except for removing scheduling gates and adding tolerations
    # (https://kubernetes.io/docs/concepts/workloads/pods/#pod-update-and-replacement).
    a, b = old.spec.model_copy(), new.spec.model_copy()
    for s in (a, b):
        s.scheduling_gates = None
        s.tolerations = None
        s.active_deadline_seconds = None
    errors = []
    if a != b:
        errors.append(("spec", "Forbidden: pod updates may not change fields other than `spec.schedulingGates`, "
                               "`spec.tolerations` (only additions) or `spec.activeDeadlineSeconds`"))
    old_gates = {g.name for g in old.spec.scheduling_gates or []}
    new_gates = {g.name for g in new.spec.scheduling_gates or []}
    if new_gates - old_gates:
        errors.append(("spec.schedulingGates", "Forbidden: only deletion is allowed, but found new scheduling "
                                               f"gate {sorted(new_gates - old_gates)[0]!r}"))
    return errors


def _pod_grace(pod: Object) -> int | None:
    """A pod running on a node is stopped before it goes: its node agent confirms the delete."""
    assert isinstance(pod, Pod)
    if not pod.spec.node_name or pod.terminal:
        return None
    grace = pod.spec.termination_grace_period_seconds
    return 30 if grace is None else grace


def _job_update_errors(old: Object, new: Object) -> list[tuple[str, str]]:
    assert isinstance(old, Job) and isinstance(new, Job)
    errors = []
    a, b = old.spec.template.model_copy(deep=True), new.spec.template.model_copy(deep=True)
    if old.spec.suspend and old.status.start_time is None:
        # A suspended Job that has not started may change its pods' scheduling directives
        # (Kubernetes' JobMutableNodeSchedulingDirectives; pkg/registry/batch/job/strategy.go).
        for t in (a, b):
            t.spec.node_selector = t.spec.tolerations = t.spec.scheduling_gates = None
            if t.metadata is not None:
                t.metadata.labels = t.metadata.annotations = None
    if a != b:
        errors.append(("spec.template", "Invalid value: field is immutable"))
    if old.spec.completion_mode != new.spec.completion_mode:
        errors.append(("spec.completionMode", "Invalid value: field is immutable"))
    if old.spec.completions != new.spec.completions:
        errors.append(("spec.completions", "Invalid value: field is immutable"))
    if old.spec.selector != new.spec.selector:
        errors.append(("spec.selector", "Invalid value: field is immutable"))
    return errors


REGISTRY.register(Kind(Namespace, "namespaces", namespaced=False, short_names=("ns",),
                       fields=lambda o: {"status.phase": (o.status.phase if o.status else None) or ""},
                       field_names=frozenset({"status.phase"})))
REGISTRY.register(Kind(Node, "nodes", namespaced=False, short_names=("no",),
                       fields=lambda o: {"spec.unschedulable": str(bool(o.spec.unschedulable)).lower()},
                       field_names=frozenset({"spec.unschedulable"})))
REGISTRY.register(Kind(Pod, "pods", namespaced=True, short_names=("po",), fields=_pod_fields,
                       field_names=frozenset({"spec.nodeName", "spec.schedulerName", "status.phase"}),
                       update_errors=_pod_update_errors, graceful=_pod_grace))
REGISTRY.register(Kind(Event, "events", namespaced=True, short_names=("ev",),
                       fields=lambda o: {"involvedObject.name": o.involved_object.name or "",
                                         "involvedObject.kind": o.involved_object.kind or "",
                                         "involvedObject.uid": o.involved_object.uid or ""},
                       field_names=frozenset({"involvedObject.name", "involvedObject.kind", "involvedObject.uid"})))
REGISTRY.register(Kind(Job, "jobs", namespaced=True, update_errors=_job_update_errors))
