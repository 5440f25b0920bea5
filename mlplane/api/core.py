"""The core/v1 kinds mlplane serves: Namespace, Node, Pod and Event."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mlplane.api.meta import Condition, Labels, Model, NonNegative, Object, dns_label
from mlplane.api.quantity import parse_quantity


def _quantity(value: str | int | float) -> str | int | float:
    parse_quantity(value)  # raises ValueError with the expected syntax
    return value


Quantity = Annotated[str | int | float, AfterValidator(_quantity)]
ResourceList = dict[str, Quantity]
DNSLabel = Annotated[str, AfterValidator(dns_label)]


# --- Namespace -----------------------------------------------------------------------------

class NamespaceSpec(Model):
    finalizers: list[str] | None = None


class NamespaceStatus(Model):
    phase: Literal["Active", "Terminating"] | None = None


class Namespace(Object):
    API_VERSION, KIND = "v1", "Namespace"
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


# --- Node ----------------------------------------------------------------------------------

class Taint(Model):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: str | None = None


class NodeSpec(Model):
    unschedulable: bool | None = None
    taints: list[Taint] | None = None
    pod_cidr: str | None = None
    provider_id: str | None = Field(None, alias="providerID")


class NodeAddress(Model):
    type: str
    address: str


class NodeSystemInfo(Model):
    machine_id: str | None = Field(None, alias="machineID")
    kernel_version: str | None = None
    os_image: str | None = None
    operating_system: str | None = None
    architecture: str | None = None
    kubelet_version: str | None = None
    container_runtime_version: str | None = None


class NodeStatus(Model):
    capacity: ResourceList | None = None
    allocatable: ResourceList | None = None
    conditions: list[Condition] | None = None
    addresses: list[NodeAddress] | None = None
    node_info: NodeSystemInfo | None = None


class Node(Object):
    API_VERSION, KIND = "v1", "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


# --- Pod -----------------------------------------------------------------------------------

class ObjectFieldSelector(Model):
    field_path: str
    api_version: str | None = None


class EnvVarSource(Model):
    field_ref: ObjectFieldSelector | None = None


class EnvVar(Model):
    name: Annotated[str, Field(min_length=1)]
    value: str | None = None
    value_from: EnvVarSource | None = None


class ResourceClaimRef(Model):
    name: str
    request: str | None = None


class ResourceRequirements(Model):
    requests: ResourceList | None = None
    limits: ResourceList | None = None
    claims: list[ResourceClaimRef] | None = None


class ContainerPort(Model):
    container_port: Annotated[int, Field(ge=1, le=65535)]
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    host_port: int | None = None


class Container(Model):
    name: DNSLabel
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    ports: list[ContainerPort] | None = None
    # Per-container restart policy (overrides the pod's for this container).
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = None


def toleration_matches(key: str | None, operator: str | None, value: str | None, effect: str | None,
                       taint_key: str, taint_value: str | None, taint_effect: str) -> bool:
    """Whether a toleration tolerates a taint, with node-taint semantics (upstream
    v1.Toleration.ToleratesTaint, and resourceclaim.ToleratesTaint for devices): an empty effect
    or key matches any; Exists ignores the value; Equal with an empty key matches nothing."""
    if effect and effect != taint_effect:
        return False
    if key and key != taint_key:
        return False
    if (operator or "Equal") == "Exists":
        return True
    return bool(key) and (value or "") == (taint_value or "")


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    def tolerates(self, taint: Taint) -> bool:
        return toleration_matches(self.key, self.operator, self.value, self.effect,
                                  taint.key, taint.value, taint.effect)


def toleration_errors(t: Toleration, path: str) -> list[tuple[str, str]]:
    """What upstream's validation rejects in a toleration (pods, Kueue flavors and queues)."""
    errors = []
    if not t.key and t.operator != "Exists":
        errors.append((f"{path}.operator", "Invalid value: operator must be Exists when 'key' is empty, which means "
                                           "'match all values and all keys'"))
    if t.toleration_seconds is not None and t.effect != "NoExecute":
        errors.append((f"{path}.effect", "Invalid value: effect must be 'NoExecute' when 'tolerationSeconds' is set"))
    if t.operator == "Exists" and t.value:
        errors.append((f"{path}.value", "Invalid value: a value must be empty when 'operator' is 'Exists'"))
    return errors


class PodSchedulingGate(Model):
    name: str


class PodResourceClaim(Model):
    name: DNSLabel
    resource_claim_name: str | None = None
    resource_claim_template_name: str | None = None


class PodSpec(Model):
    containers: Annotated[list[Container], Field(min_length=1)]
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    node_name: str | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    scheduler_name: str = "default-scheduler"
    scheduling_gates: list[PodSchedulingGate] | None = None
    resource_claims: list[PodResourceClaim] | None = None
    priority: int | None = None
    priority_class_name: str | None = None
    termination_grace_period_seconds: NonNegative | None = 30
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    hostname: str | None = None
    subdomain: str | None = None
    service_account_name: str | None = None


class ContainerStateWaiting(Model):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(Model):
    started_at: str | None = None


class ContainerStateTerminated(Model):
    exit_code: int
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    container_id: str | None = Field(None, alias="containerID")


class ContainerState(Model):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(Model):
    name: str
    state: ContainerState = Field(default_factory=ContainerState)
    last_state: ContainerState | None = None
    ready: bool = False
    restart_count: int = 0
    image: str = ""
    image_id: str | None = Field(None, alias="imageID")
    container_id: str | None = Field(None, alias="containerID")
    started: bool | None = None


class PodResourceClaimStatus(Model):
    """The ResourceClaim made for one of the pod's spec.resourceClaims entries (from a template)."""

    name: DNSLabel
    resource_claim_name: str | None = None


class PodStatus(Model):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] = "Pending"
    conditions: list[Condition] | None = None
    message: str | None = None
    reason: str | None = None
    host_ip: str | None = Field(None, alias="hostIP")
    pod_ip: str | None = Field(None, alias="podIP")
    start_time: str | None = None
    nominated_node_name: str | None = None
    container_statuses: list[ContainerStatus] | None = None
    resource_claim_statuses: list[PodResourceClaimStatus] | None = None


class Pod(Object):
    API_VERSION, KIND = "v1", "Pod"
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors = []
        seen = set()
        for i, c in enumerate(self.spec.containers):
            if c.name in seen:
                errors.append((f"spec.containers[{i}].name", f"Duplicate value: {c.name!r}"))
            seen.add(c.name)
            names = set()
            for j, e in enumerate(c.env or []):
                if e.value is not None and e.value_from is not None:
                    errors.append((f"spec.containers[{i}].env[{j}].valueFrom",
                                   "may not be specified when `value` is not empty"))
                names.add(e.name)
        for i, t in enumerate(self.spec.tolerations or []):
            errors.extend(toleration_errors(t, f"spec.tolerations[{i}]"))
        claims = {c.name for c in self.spec.resource_claims or []}
        for i, c in enumerate(self.spec.resource_claims or []):
            if (c.resource_claim_name is None) == (c.resource_claim_template_name is None):
                errors.append((f"spec.resourceClaims[{i}]", "exactly one of resourceClaimName or "
                               "resourceClaimTemplateName must be set"))
        for i, c in enumerate(self.spec.containers):
            for j, ref in enumerate((c.resources.claims if c.resources else None) or []):
                if ref.name not in claims:
                    errors.append((f"spec.containers[{i}].resources.claims[{j}].name",
                                   f"Not found: {ref.name!r} must be one of the pod's spec.resourceClaims"))
        return errors

    @property
    def terminal(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")


# --- Event ---------------------------------------------------------------------------------

class ObjectReference(Model):
    api_version: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class EventSource(Model):
    component: str | None = None
    host: str | None = None


class Event(Object):
    API_VERSION, KIND = "v1", "Event"
    involved_object: ObjectReference
    reason: str | None = None
    message: str | None = None
    type: Literal["Normal", "Warning"] | None = None
    count: int | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    event_time: str | None = None
    source: EventSource | None = None
    reporting_component: str | None = None
    reporting_instance: str | None = None
    action: str | None = None


__all__ = ["Namespace", "Node", "Pod", "Event", "Labels"]
