"""The traffic plane's kinds: InferencePool (``inference.networking.k8s.io/v1``) and InferenceObjective
(``llm-d.ai/v1alpha2``); manifests of the pre-v1 group ``inference.networking.x-k8s.io/v1alpha2`` are
read too and stored in these versions.

InferencePool follows ``kubernetes-sigs/gateway-api-inference-extension:api/v1/inferencepool_types.go``
(v1.6: ``endpointPickerRef`` optional, ``targetPorts`` 1..8 unique, pool-wide ``appProtocol``); the
CRD's defaults and CEL rules are applied here. InferenceObjective follows
``llm-d/llm-d-router:apix/v1alpha2/inferenceobjective_types.go``: an integer ``priority`` (unset reads
as 0; negative is sheddable) for the pools named by ``poolRef``, ``poolRefs`` or ``poolSelector``.
An x-k8s.io/v1alpha2 InferenceObjective is the same schema under the old group; an x-k8s.io/v1alpha2
InferencePool is converted as GIE's v1 migration describes (``_pool_from_x_k8s``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mlplane.api.meta import Condition, LabelSelector, Labels, Model, Object
from mlplane.api.registry import REGISTRY, ConversionError, Kind
from mlplane.api.selectors import selector_from_match

GROUP = "inference.networking.k8s.io"
V1 = f"{GROUP}/v1"
OBJECTIVE_GROUP = "llm-d.ai"
OBJECTIVE_V1ALPHA2 = f"{OBJECTIVE_GROUP}/v1alpha2"
X_GROUP = "inference.networking.x-k8s.io"
X_V1ALPHA2 = f"{X_GROUP}/v1alpha2"
# Groups under which an InferencePool has been served; a poolRef naming any of them means ours.
POOL_GROUPS = frozenset({GROUP, X_GROUP, OBJECTIVE_GROUP})
POOL_KIND = "InferencePool"
DEFAULT_EPP_PORT = 9002  # the EPP's gRPC port when a gateway has to infer one (llm-d-router options.go)

_GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONTROLLER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
                         r"/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")


def _pattern(regex: re.Pattern, what: str):
    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{value!r}: {what}")
        return value
    return AfterValidator(check)


Group = Annotated[str, Field(max_length=253),
                  _pattern(_GROUP, "a group must be empty or a lowercase RFC 1123 subdomain")]
KindName = Annotated[str, Field(min_length=1, max_length=63),
                     _pattern(_KIND, "a kind must start with a letter and hold only letters, digits and '-'")]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=63),
                          _pattern(_NAMESPACE, "a namespace must be a lowercase RFC 1123 label")]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
ControllerName = Annotated[str, Field(min_length=1, max_length=253),
                           _pattern(_CONTROLLER, "must be DOMAIN/PATH, e.g. example.net/gateway-controller")]
Int32 = Annotated[int, Field(ge=-(2 ** 31), le=2 ** 31 - 1)]


# --- InferencePool -------------------------------------------------------------------------

class PoolSelector(Model):
    """GIE's simplified, Service-compatible LabelSelector: ``matchLabels`` only (at most 64)."""

    match_labels: Labels


class Port(Model):
    number: PortNumber
    # Newer GIE (port roles proposal): what the port is for; unset means Serving.
    role: Literal["Serving", "Metrics", "Health"] | None = None


class EndpointPickerRef(Model):
    group: Group = ""
    kind: KindName = "Service"
    name: ObjectName
    port: Port | None = None
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"


class InferencePoolSpec(Model):
    selector: PoolSelector
    target_ports: Annotated[list[Port], Field(min_length=1, max_length=8)]
    app_protocol: Literal["http", "kubernetes.io/h2c"] = "http"
    endpoint_picker_ref: EndpointPickerRef | None = None


class ParentReference(Model):
    group: Group = "gateway.networking.k8s.io"
    kind: KindName = "Gateway"
    name: ObjectName
    namespace: NamespaceName | None = None


class ParentStatus(Model):
    conditions: Annotated[list[Condition], Field(max_length=8)] | None = None
    parent_ref: ParentReference
    controller_name: ControllerName | None = None


class InferencePoolStatus(Model):
    parents: Annotated[list[ParentStatus], Field(max_length=32)] | None = None


class InferencePool(Object):
    API_VERSION, KIND = V1, "InferencePool"
    spec: InferencePoolSpec
    status: InferencePoolStatus = Field(default_factory=InferencePoolStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        spec = self.spec
        if not spec.selector.match_labels:
            errors.append(("spec.selector.matchLabels", "Required value: the pool must select pods by at least "
                                                        "one label"))
        elif len(spec.selector.match_labels) > 64:
            errors.append(("spec.selector.matchLabels", f"Too many: {len(spec.selector.match_labels)}: must have "
                                                        "at most 64 items"))
        seen: set[int] = set()
        for i, port in enumerate(spec.target_ports):
            if port.number in seen:  # CEL: self.all(p1, self.exists_one(p2, p1.number==p2.number))
                errors.append((f"spec.targetPorts[{i}].number", f"Duplicate value: {port.number}: port number "
                                                                "must be unique"))
            seen.add(port.number)
        ref = spec.endpoint_picker_ref
        if ref is not None and ref.kind == "Service" and ref.port is None:
            errors.append(("spec.endpointPickerRef.port", "Required value: port is required when kind is "
                                                          "'Service' or unspecified (defaults to 'Service')"))
        for i, parent in enumerate(self.status.parents or []):
            types = [c.type for c in parent.conditions or []]
            for t in sorted({t for t in types if types.count(t) > 1}):
                errors.append((f"status.parents[{i}].conditions", f"Duplicate value: condition type {t!r}"))
        return errors

    @property
    def ports(self) -> list[int]:
        """The target ports that take inference traffic (role Serving or unset)."""
        return [p.number for p in self.spec.target_ports if p.role in (None, "Serving")]


# --- InferenceObjective ---------------------------------------------------------------------

class PoolObjectReference(Model):
    group: Group = GROUP
    kind: KindName = POOL_KIND
    name: ObjectName


class InferenceObjectiveSpec(Model):
    priority: Int32 | None = None
    pool_ref: PoolObjectReference | None = None
    pool_refs: Annotated[list[PoolObjectReference], Field(min_length=1, max_length=16)] | None = None
    pool_selector: LabelSelector | None = None


class InferenceObjectiveStatus(Model):
    conditions: Annotated[list[Condition], Field(max_length=8)] | None = None


class InferenceObjective(Object):
    API_VERSION, KIND = OBJECTIVE_V1ALPHA2, "InferenceObjective"
    spec: InferenceObjectiveSpec = Field(default_factory=InferenceObjectiveSpec)
    status: InferenceObjectiveStatus = Field(default_factory=InferenceObjectiveStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        spec = self.spec
        if spec.pool_ref is None and spec.pool_refs is None and spec.pool_selector is None:
            errors.append(("spec.poolRef", "Required value: set poolRef, poolRefs or poolSelector to name the "
                                           "InferencePool(s) this objective applies to"))
        names: set[str] = set()
        for i, ref in enumerate(spec.pool_refs or []):
            if ref.name in names:  # listType=map, listMapKey=name
                errors.append((f"spec.poolRefs[{i}].name", f"Duplicate value: {ref.name!r}"))
            names.add(ref.name)
        sel = spec.pool_selector
        if sel is not None:
            if not sel.match_labels and not sel.match_expressions:
                errors.append(("spec.poolSelector", "Invalid value: poolSelector must not be empty"))
            for i, expr in enumerate(sel.match_expressions or []):
                path = f"spec.poolSelector.matchExpressions[{i}].values"
                if expr.operator in ("In", "NotIn") and not expr.values:
                    errors.append((path, f"Required value: must be specified when `operator` is {expr.operator!r}"))
                if expr.operator in ("Exists", "DoesNotExist") and expr.values:
                    errors.append((path, f"Forbidden: may not be specified when `operator` is {expr.operator!r}"))
        return errors

    @property
    def priority(self) -> int:
        """The priority the endpoint picker uses: unset reads as 0."""
        return self.spec.priority or 0

    def refs(self) -> list[PoolObjectReference]:
        return ([self.spec.pool_ref] if self.spec.pool_ref else []) + list(self.spec.pool_refs or [])

    def applies_to(self, pool: InferencePool) -> bool:
        """Whether this objective targets ``pool``: same namespace, and a poolRef names it or poolSelector
        matches its labels."""
        if (self.metadata.namespace or "") != (pool.metadata.namespace or ""):
            return False
        if any(r.kind == POOL_KIND and r.group in POOL_GROUPS and r.name == pool.name for r in self.refs()):
            return True
        sel = self.spec.pool_selector
        if sel is None or (not sel.match_labels and not sel.match_expressions):
            return False
        return selector_from_match(sel.match_labels, sel.match_expressions).matches(pool.labels)


# --- registration -------------------------------------------------------------------------

def _pool_from_x_k8s(data: dict) -> dict:
    """inference.networking.x-k8s.io/v1alpha2 -> v1 (GIE's v1 migration): the flat ``selector`` map becomes
    ``selector.matchLabels``, ``targetPortNumber`` the one entry of ``targetPorts``, ``extensionRef``
    (with ``portNumber``, 9002 when a Service names none) the ``endpointPickerRef``; status is dropped."""
    out = {k: v for k, v in data.items() if k != "status"}
    out["apiVersion"] = V1
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return out
    spec = dict(spec)
    causes: list[tuple[str, str]] = []
    if "selector" in spec:
        selector = spec.pop("selector")
        if not isinstance(selector, dict):
            causes.append(("spec.selector", f"Invalid value: {selector!r}: v1alpha2 selector must be a map of labels"))
        else:
            spec["selector"] = {"matchLabels": selector}
    if "targetPortNumber" in spec:
        spec["targetPorts"] = [{"number": spec.pop("targetPortNumber")}]
    if "extensionRef" in spec:
        ext = spec.pop("extensionRef")
        if not isinstance(ext, dict):
            causes.append(("spec.extensionRef", f"Invalid value: {ext!r}: must be an object"))
        else:
            ref = {k: v for k, v in ext.items() if k != "portNumber"}
            if "portNumber" in ext:
                ref["port"] = {"number": ext["portNumber"]}
            elif ext.get("kind", "Service") == "Service":
                ref["port"] = {"number": DEFAULT_EPP_PORT}
            spec["endpointPickerRef"] = ref
    if causes:
        raise ConversionError(causes)
    out["spec"] = spec
    return out


def _objective_from_x_k8s(data: dict) -> dict:
    """inference.networking.x-k8s.io/v1alpha2 -> llm-d.ai/v1alpha2: the group moved, the schema did not."""
    out = dict(data)
    out["apiVersion"] = OBJECTIVE_V1ALPHA2
    spec = out.get("spec")
    if isinstance(spec, dict) and "criticality" in spec:
        # The short-lived criticality enum (Critical/Standard/Sheddable) became an int priority.
        raise ConversionError([("spec.criticality", "Invalid value: criticality was replaced by spec.priority "
                                                    "(an integer; negative is sheddable)")])
    return out


REGISTRY.register(Kind(InferencePool, "inferencepools", namespaced=True, short_names=("infpool",),
                       conversions=((X_V1ALPHA2, _pool_from_x_k8s),)))
REGISTRY.register(Kind(InferenceObjective, "inferenceobjectives", namespaced=True,
                       conversions=((X_V1ALPHA2, _objective_from_x_k8s),)))

__all__ = ["InferencePool", "InferenceObjective", "EndpointPickerRef", "Port", "PoolSelector",
           "PoolObjectReference", "POOL_GROUPS", "DEFAULT_EPP_PORT"]
