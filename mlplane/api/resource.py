"""The device plane's kinds in the ``resource.k8s.io/v1`` wire shape (Dynamic Resource Allocation).

DeviceClass, ResourceSlice, ResourceClaim and ResourceClaimTemplate follow
``kubernetes/api:resource/v1/types.go`` (Kubernetes 1.34, with the 1.34 alpha fields: partitionable
devices, consumable capacity, device taints, binding conditions). Class names are the Go type names and
fields the JSON names in snake_case. Defaults are upstream's (``pkg/apis/resource/v1/defaults.go``:
allocationMode ExactCount, count 1, toleration operator Equal) and ``semantic_errors`` carries the checks
of ``pkg/apis/resource/validation/validation.go`` with Kubernetes-style field paths and messages.

CEL selectors are only checked for length here. The CEL engine adds its compile check by appending to
``SELECTOR_VALIDATORS``; every selector of a class, request or subrequest is passed to each of them.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, Field

from mlplane.api.core import Quantity
from mlplane.api.meta import Condition, Model, Object, ObjectMeta, dns_label, now, parse_time
from mlplane.api.quantity import parse_quantity
from mlplane.api.registry import REGISTRY, Kind

GROUP = "resource.k8s.io"
# Set by the scheduler on claims it allocates; the claim controller removes it once it has
# deallocated them, so a claim in use cannot vanish (upstream resourceapi.Finalizer).
DELETE_PROTECTION_FINALIZER = "resource.kubernetes.io/delete-protection"
V1 = f"{GROUP}/v1"

# Limits of resource/v1/types.go (1.34).
DEVICE_SELECTORS_MAX_SIZE = 32
CEL_SELECTOR_EXPRESSION_MAX_LENGTH = 10 * 1024
DEVICE_REQUESTS_MAX_SIZE = 32
ALLOCATION_RESULTS_MAX_SIZE = 32
FIRST_AVAILABLE_DEVICE_REQUEST_MAX_SIZE = 8
DEVICE_CONSTRAINTS_MAX_SIZE = 32
DEVICE_CONFIG_MAX_SIZE = 32
DEVICE_TOLERATIONS_MAX_LENGTH = 16
DEVICE_TAINTS_MAX_LENGTH = 4
RESOURCE_SLICE_MAX_DEVICES = 128
RESOURCE_SLICE_MAX_SHARED_COUNTERS = 32
RESOURCE_SLICE_MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE = 32
RESOURCE_SLICE_MAX_DEVICE_COUNTERS_PER_SLICE = 1024
RESOURCE_CLAIM_RESERVED_FOR_MAX_SIZE = 256
BINDING_CONDITIONS_MAX_SIZE = 4
CAPACITY_REQUEST_POLICY_DISCRETE_MAX_OPTIONS = 10
DEVICE_MAX_DOMAIN_LENGTH = 63
DEVICE_MAX_ID_LENGTH = 32
DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH = 64
DEVICE_ATTRIBUTE_MAX_LIST_VALUES = 48  # [1.36 alpha] values in all list attributes of one device
OPAQUE_PARAMETERS_MAX_LENGTH = 10 * 1024
POOL_NAME_MAX_LENGTH = 253
DRIVER_NAME_MAX_LENGTH = 63

SelectorValidator = Callable[[str], "str | None"]
SELECTOR_VALIDATORS: list[SelectorValidator] = []
"""Extra checks of a CEL selector expression. Each takes the expression and returns None when it is
acceptable, or the message to report after the field path (for example
``Invalid value: "device.x": compilation failed: ...``). Empty until the CEL engine registers itself."""

DNSLabel = Annotated[str, AfterValidator(dns_label)]
AllocationMode = Literal["ExactCount", "All"]
TaintEffect = Literal["NoSchedule", "NoExecute", "None"]  # None: [1.35] informational


# --- shared pieces ------------------------------------------------------------------------

class NodeSelectorRequirement(Model):
    """core/v1 NodeSelectorRequirement."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None


class NodeSelectorTerm(Model):
    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None


class NodeSelector(Model):
    """core/v1 NodeSelector: the terms are ORed."""

    node_selector_terms: list[NodeSelectorTerm]


class CELDeviceSelector(Model):
    expression: str


class DeviceSelector(Model):
    cel: CELDeviceSelector | None = None


class OpaqueDeviceConfiguration(Model):
    driver: str
    parameters: Any  # runtime.RawExtension: any JSON value, interpreted by the driver


class DeviceConfiguration(Model):
    opaque: OpaqueDeviceConfiguration | None = None


class Counter(Model):
    value: Quantity


class DeviceToleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: TaintEffect | None = None
    toleration_seconds: int | None = None


class DeviceTaint(Model):
    key: str
    value: str | None = None
    effect: TaintEffect
    time_added: str | None = None


# --- DeviceClass --------------------------------------------------------------------------

class DeviceClassConfiguration(DeviceConfiguration):
    pass


class DeviceClassSpec(Model):
    selectors: list[DeviceSelector] | None = None
    config: list[DeviceClassConfiguration] | None = None
    extended_resource_name: str | None = None


class DeviceClass(Object):
    API_VERSION, KIND = V1, "DeviceClass"
    spec: DeviceClassSpec = Field(default_factory=DeviceClassSpec)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        _selectors(errors, "spec.selectors", self.spec.selectors)
        for i, c in enumerate(self.spec.config or []):
            _configuration(errors, f"spec.config[{i}]", c)
        _too_many(errors, "spec.config", self.spec.config, DEVICE_CONFIG_MAX_SIZE)
        name = self.spec.extended_resource_name
        if name is not None and not _extended_resource_name(name):
            errors.append(("spec.extendedResourceName", f"Invalid value: {_q(name)}: must be a valid extended "
                           "resource name (a domain-prefixed name outside kubernetes.io, or not containing '/')"))
        return errors


# --- ResourceSlice ------------------------------------------------------------------------

class ResourcePool(Model):
    name: str
    generation: int
    resource_slice_count: int


class DeviceAttribute(Model):
    """Exactly one typed value; on the wire ``{int: 1}``, ``{bool: true}``, ``{string: s}`` or ``{version: v}``,
    or ([1.36 alpha] KEP-5491 DRAListTypeAttributes) a list ``{ints: [...]}``, ``{bools: [...]}``,
    ``{strings: [...]}`` or ``{versions: [...]}``."""

    int_value: int | None = Field(None, alias="int")
    bool_value: bool | None = Field(None, alias="bool")
    string_value: str | None = Field(None, alias="string")
    version_value: str | None = Field(None, alias="version")
    int_values: list[int] | None = Field(None, alias="ints")
    bool_values: list[bool] | None = Field(None, alias="bools")
    string_values: list[str] | None = Field(None, alias="strings")
    version_values: list[str] | None = Field(None, alias="versions")

    @property
    def value(self) -> int | bool | str | list | None:
        """The one value that is set (a version as its string, a list as a list)."""
        for v in (self.int_value, self.bool_value, self.string_value, self.version_value,
                  self.int_values, self.bool_values, self.string_values, self.version_values):
            if v is not None:
                return v
        return None


class CapacityRequestPolicyRange(Model):
    min: Quantity | None = None
    max: Quantity | None = None
    step: Quantity | None = None


class CapacityRequestPolicy(Model):
    default: Quantity | None = None
    valid_values: list[Quantity] | None = None
    valid_range: CapacityRequestPolicyRange | None = None


class DeviceCapacity(Model):
    value: Quantity
    request_policy: CapacityRequestPolicy | None = None


class DeviceCounterConsumption(Model):
    counter_set: str
    counters: dict[str, Counter]


class Device(Model):
    name: str
    attributes: dict[str, DeviceAttribute] | None = None
    capacity: dict[str, DeviceCapacity] | None = None
    consumes_counters: list[DeviceCounterConsumption] | None = None
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    taints: list[DeviceTaint] | None = None
    binds_to_node: bool | None = None
    binding_conditions: list[str] | None = None
    binding_failure_conditions: list[str] | None = None
    allow_multiple_allocations: bool | None = None


class CounterSet(Model):
    name: str
    counters: dict[str, Counter]


class ResourceSliceSpec(Model):
    driver: str
    pool: ResourcePool
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    devices: list[Device] | None = None
    per_device_node_selection: bool | None = None
    shared_counters: list[CounterSet] | None = None


class ResourceSlice(Object):
    """A device taint without ``timeAdded`` gets the time the slice is decoded, as upstream's
    SetDefaults_DeviceTaint sets it when a slice is created or updated: every slice the store
    writes is decoded anew (``Kind.decode``), so a stored taint always has one. A publisher that
    rewrites a slice keeps the stored times of its taints (``mlplane.control.node.devices``)."""

    API_VERSION, KIND = V1, "ResourceSlice"
    spec: ResourceSliceSpec

    def model_post_init(self, _context: Any) -> None:
        super().model_post_init(_context)
        stamp = None
        for device in self.spec.devices or ():
            for taint in device.taints or ():
                if taint.time_added is None:
                    stamp = stamp or now()
                    taint.time_added = stamp

    def semantic_errors(self) -> list[tuple[str, str]]:
        return _slice_errors(self.spec)


# --- ResourceClaim ------------------------------------------------------------------------

class CapacityRequirements(Model):
    requests: dict[str, Quantity] | None = None


class ExactDeviceRequest(Model):
    device_class_name: str
    selectors: list[DeviceSelector] | None = None
    allocation_mode: AllocationMode = "ExactCount"
    count: int | None = None
    admin_access: bool | None = None
    tolerations: list[DeviceToleration] | None = None
    capacity: CapacityRequirements | None = None

    def model_post_init(self, _context: Any) -> None:
        _default_count(self)


class DeviceSubRequest(Model):
    name: str
    device_class_name: str
    selectors: list[DeviceSelector] | None = None
    allocation_mode: AllocationMode = "ExactCount"
    count: int | None = None
    tolerations: list[DeviceToleration] | None = None
    capacity: CapacityRequirements | None = None

    def model_post_init(self, _context: Any) -> None:
        _default_count(self)


class DeviceRequest(Model):
    name: str
    exactly: ExactDeviceRequest | None = None
    first_available: list[DeviceSubRequest] | None = None


class DeviceConstraint(Model):
    requests: list[str] | None = None
    match_attribute: str | None = None
    distinct_attribute: str | None = None


class DeviceClaimConfiguration(DeviceConfiguration):
    requests: list[str] | None = None


class DeviceClaim(Model):
    requests: list[DeviceRequest] | None = None
    constraints: list[DeviceConstraint] | None = None
    config: list[DeviceClaimConfiguration] | None = None


class ResourceClaimSpec(Model):
    devices: DeviceClaim = Field(default_factory=DeviceClaim)


class DeviceRequestAllocationResult(Model):
    request: str
    driver: str
    pool: str
    device: str
    admin_access: bool | None = None
    tolerations: list[DeviceToleration] | None = None
    binding_conditions: list[str] | None = None
    binding_failure_conditions: list[str] | None = None
    share_id: str | None = Field(None, alias="shareID")
    consumed_capacity: dict[str, Quantity] | None = None


class DeviceAllocationConfiguration(DeviceConfiguration):
    source: Literal["FromClass", "FromClaim"]
    requests: list[str] | None = None


class DeviceAllocationResult(Model):
    results: list[DeviceRequestAllocationResult] | None = None
    config: list[DeviceAllocationConfiguration] | None = None


class AllocationResult(Model):
    devices: DeviceAllocationResult = Field(default_factory=DeviceAllocationResult)
    node_selector: NodeSelector | None = None
    allocation_timestamp: str | None = None


class ResourceClaimConsumerReference(Model):
    api_group: str | None = None
    resource: str
    name: str
    uid: str


class NetworkDeviceData(Model):
    interface_name: str | None = None
    ips: list[str] | None = None
    hardware_address: str | None = None


class AllocatedDeviceStatus(Model):
    driver: str
    pool: str
    device: str
    share_id: str | None = Field(None, alias="shareID")
    conditions: list[Condition] | None = None
    data: Any = None
    network_data: NetworkDeviceData | None = None


class ResourceClaimStatus(Model):
    allocation: AllocationResult | None = None
    reserved_for: list[ResourceClaimConsumerReference] | None = None
    devices: list[AllocatedDeviceStatus] | None = None


class ResourceClaim(Object):
    API_VERSION, KIND = V1, "ResourceClaim"
    spec: ResourceClaimSpec = Field(default_factory=ResourceClaimSpec)
    status: ResourceClaimStatus = Field(default_factory=ResourceClaimStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors = _claim_spec_errors("spec", self.spec)
        _claim_status_errors(errors, "status", self.status)
        return errors


class ResourceClaimTemplateSpec(Model):
    metadata: ObjectMeta | None = None
    spec: ResourceClaimSpec = Field(default_factory=ResourceClaimSpec)


class ResourceClaimTemplate(Object):
    API_VERSION, KIND = V1, "ResourceClaimTemplate"
    spec: ResourceClaimTemplateSpec

    def semantic_errors(self) -> list[tuple[str, str]]:
        return _claim_spec_errors("spec.spec", self.spec.spec)


# --- DeviceTaintRule (resource.k8s.io/v1alpha3; v1beta2 has the same shape) ---------------------

V1ALPHA3 = f"{GROUP}/v1alpha3"
V1BETA2 = f"{GROUP}/v1beta2"
DEVICE_TAINT_RULE_STATUS_MAX_CONDITIONS = 8
# The condition the eviction controller keeps on a rule (DeviceTaintConditionEvictionInProgress).
DEVICE_TAINT_CONDITION_EVICTION_IN_PROGRESS = "EvictionInProgress"


class DeviceTaintSelector(Model):
    """Which devices a rule taints; every field that is set must match, the empty selector
    matches all devices. ``deviceClassName`` and ``selectors`` (1.33-1.34 alpha) are tombstoned
    upstream since 1.35 and refused here with a message that says so."""

    driver: str | None = None
    pool: str | None = None
    device: str | None = None
    device_class_name: str | None = None
    selectors: list[DeviceSelector] | None = None

    def matches(self, driver: str, pool: str, device: str) -> bool:
        return ((self.driver is None or self.driver == driver) and (self.pool is None or self.pool == pool)
                and (self.device is None or self.device == device))


class DeviceTaintRuleSpec(Model):
    device_selector: DeviceTaintSelector | None = None
    taint: DeviceTaint


class DeviceTaintRuleStatus(Model):
    conditions: list[Condition] | None = None


class DeviceTaintRule(Object):
    """Adds one taint to every device the selector matches, as if the driver had put it in the
    ResourceSlice (``kubernetes/api:resource/v1alpha3/types.go``). Without a selector no device
    is matched. ``spec.taint.timeAdded`` is set when missing."""

    API_VERSION, KIND = V1ALPHA3, "DeviceTaintRule"
    spec: DeviceTaintRuleSpec
    status: DeviceTaintRuleStatus = Field(default_factory=DeviceTaintRuleStatus)

    def model_post_init(self, _context: Any) -> None:
        if self.spec.taint.time_added is None:
            self.spec.taint.time_added = now()

    def matches(self, driver: str, pool: str, device: str) -> bool:
        selector = self.spec.device_selector
        return selector is not None and selector.matches(driver, pool, device)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors: Errors = []
        selector = self.spec.device_selector
        if selector is not None:
            where = "spec.deviceSelector"
            if selector.driver is not None:
                _subdomain_field(errors, f"{where}.driver", selector.driver, DRIVER_NAME_MAX_LENGTH)
            if selector.pool is not None:
                _pool_name(errors, f"{where}.pool", selector.pool)
            if selector.device is not None:
                _dns_label_field(errors, f"{where}.device", selector.device)
            for field_name, value in (("deviceClassName", selector.device_class_name),
                                      ("selectors", selector.selectors)):
                if value is not None:
                    errors.append((f"{where}.{field_name}", "Forbidden: not supported: removed from "
                                   "DeviceTaintRule in Kubernetes 1.35; select devices by driver, pool and device"))
        _taint(errors, "spec.taint", self.spec.taint)
        _too_many(errors, "status.conditions", self.status.conditions, DEVICE_TAINT_RULE_STATUS_MAX_CONDITIONS)
        return errors


def _taint(errors: Errors, path: str, taint: DeviceTaint) -> None:
    _check(errors, f"{path}.key", "Required value" if not taint.key else _label_key_error(taint.key))
    if taint.value:
        _check(errors, f"{path}.value", _label_value_error(taint.value))
    if taint.time_added is not None:
        try:
            parse_time(taint.time_added)
        except ValueError:
            errors.append((f"{path}.timeAdded", f"Invalid value: {_q(taint.time_added)}: must be an RFC 3339 time"))


def _rule_prepare_update(old: Object, new: Object) -> None:
    """Upstream keeps timeAdded unless the effect changes, when it becomes the time of the change."""
    assert isinstance(old, DeviceTaintRule) and isinstance(new, DeviceTaintRule)
    if new.spec.taint.effect != old.spec.taint.effect and new.spec.taint.time_added == old.spec.taint.time_added:
        new.spec.taint.time_added = now()


# --- validation (pkg/apis/resource/validation/validation.go) -------------------------------

Errors = list[tuple[str, str]]

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
                     r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_LABEL = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _q(value: Any) -> str:
    """A value as Kubernetes quotes it in "Invalid value: ..." messages."""
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _too_many(errors: Errors, path: str, items: Any, limit: int) -> None:
    if items is not None and len(items) > limit:
        errors.append((path, f"Too many: {len(items)}: must have at most {limit} items"))


def _subdomain_error(value: str, max_length: int = 253) -> str | None:
    if len(value) > max_length:
        return f"Too long: may not be more than {max_length} bytes"
    if not _DNS_SUBDOMAIN.match(value):
        return (f"Invalid value: {_q(value)}: a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


def _label_error(value: str) -> str | None:
    try:
        dns_label(value)
    except ValueError:
        return (f"Invalid value: {_q(value)}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
                "characters or '-', and must start and end with an alphanumeric character")
    return None


def _check(errors: Errors, path: str, message: str | None) -> None:
    if message is not None:
        errors.append((path, message))


def _dns_label_field(errors: Errors, path: str, value: str) -> None:
    _check(errors, path, "Required value" if not value else _label_error(value))


def _subdomain_field(errors: Errors, path: str, value: str, max_length: int = 253) -> None:
    _check(errors, path, "Required value" if not value else _subdomain_error(value, max_length))


def _qualified_name_error(name: str, *, fully: bool = False) -> str | None:
    """QualifiedName is "[domain/]id": domain a DNS subdomain of at most 63, id a C identifier of at most 32."""
    if not name:
        return "Required value"
    domain, slash, identifier = name.rpartition("/")
    if fully and not slash:
        return f"Invalid value: {_q(name)}: must include a domain"
    if slash:
        if not domain:
            return f"Invalid value: {_q(name)}: the domain must not be empty"
        problem = _subdomain_error(domain, DEVICE_MAX_DOMAIN_LENGTH)
        if problem is not None:
            return f"Invalid value: {_q(name)}: the domain is not valid: {problem}"
    if len(identifier) > DEVICE_MAX_ID_LENGTH:
        return f"Invalid value: {_q(name)}: the identifier may not be more than {DEVICE_MAX_ID_LENGTH} bytes"
    if not _C_IDENTIFIER.match(identifier):
        return (f"Invalid value: {_q(name)}: a valid C identifier must start with alphabetic character or '_', "
                "followed by a string of alphanumeric characters or '_' (regex used for validation is "
                "'[A-Za-z_][A-Za-z0-9_]*')")
    return None


def _extended_resource_name(name: str) -> bool:
    domain, slash, rest = name.rpartition("/")
    if slash and (not rest or _subdomain_error(domain) is not None or domain.endswith("kubernetes.io")):
        return False
    return bool(rest) and len(name) <= 63 and _QUALIFIED_LABEL.match(rest) is not None


def _quantity(value: Quantity) -> Decimal:
    return parse_quantity(value)


def _non_negative(errors: Errors, path: str, value: Quantity) -> None:
    if _quantity(value) < 0:
        errors.append((path, f"Invalid value: {_q(value)}: must be greater than or equal to 0"))


def _selectors(errors: Errors, path: str, selectors: list[DeviceSelector] | None) -> None:
    _too_many(errors, path, selectors, DEVICE_SELECTORS_MAX_SIZE)
    for i, selector in enumerate(selectors or []):
        if selector.cel is None:
            errors.append((f"{path}[{i}].cel", "Required value"))
            continue
        where, expression = f"{path}[{i}].cel.expression", selector.cel.expression
        if not expression:
            errors.append((where, "Required value"))
        elif len(expression.encode()) > CEL_SELECTOR_EXPRESSION_MAX_LENGTH:
            errors.append((where, f"Too long: may not be more than {CEL_SELECTOR_EXPRESSION_MAX_LENGTH} bytes"))
        else:
            for validate in SELECTOR_VALIDATORS:
                _check(errors, where, validate(expression))


def _configuration(errors: Errors, path: str, config: DeviceConfiguration) -> None:
    if config.opaque is None:
        errors.append((f"{path}.opaque", "Required value"))
        return
    _subdomain_field(errors, f"{path}.opaque.driver", config.opaque.driver, DRIVER_NAME_MAX_LENGTH)
    parameters = config.opaque.parameters
    if not isinstance(parameters, dict):
        errors.append((f"{path}.opaque.parameters", "Invalid value: parameters must be a valid JSON object"))
    elif len(json.dumps(parameters, separators=(",", ":"))) > OPAQUE_PARAMETERS_MAX_LENGTH:
        errors.append((f"{path}.opaque.parameters",
                       f"Too long: may not be more than {OPAQUE_PARAMETERS_MAX_LENGTH} bytes"))


def _default_count(request: ExactDeviceRequest | DeviceSubRequest) -> None:
    # SetDefaults_ExactDeviceRequest / SetDefaults_DeviceSubRequest: count 0 means 1 for ExactCount.
    if request.allocation_mode == "ExactCount" and not request.count:
        request.count = 1


def _allocation_mode(errors: Errors, path: str, mode: str, count: int | None) -> None:
    if mode == "All" and count:
        errors.append((f"{path}.count", f"Invalid value: {count}: must not be specified when allocationMode "
                                        "is 'All'"))
    elif mode == "ExactCount" and count is not None and count <= 0:
        errors.append((f"{path}.count", f"Invalid value: {count}: must be greater than zero"))


def _tolerations(errors: Errors, path: str, tolerations: list[DeviceToleration] | None) -> None:
    _too_many(errors, path, tolerations, DEVICE_TOLERATIONS_MAX_LENGTH)
    for i, t in enumerate(tolerations or []):
        where = f"{path}[{i}]"
        if t.key:
            _check(errors, f"{where}.key", _label_key_error(t.key))
        elif t.operator != "Exists":
            errors.append((f"{where}.operator", f"Invalid value: {_q(t.operator)}: operator must be Exists "
                                                "when `key` is empty, which means \"match all values and all keys\""))
        if t.operator == "Exists" and t.value:
            errors.append((f"{where}.operator", "Invalid value: \"Exists\": value must be empty when `operator` "
                                                "is 'Exists'"))
        elif t.value:
            _check(errors, f"{where}.value", _label_value_error(t.value))


def _label_value_error(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (f"Invalid value: {_q(value)}: a valid label value must be 63 characters or less and consist of "
                "alphanumeric characters, '-', '_' or '.'")
    return None


def _label_key_error(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or _subdomain_error(prefix) is not None):
        return f"Invalid value: {_q(key)}: prefix part must be a valid DNS subdomain"
    if len(name) > 63 or not _QUALIFIED_LABEL.match(name):
        return (f"Invalid value: {_q(key)}: name part must consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character (at most 63 long)")
    return None


def _capacity_requests(errors: Errors, path: str, capacity: CapacityRequirements | None) -> None:
    for name, value in ((capacity.requests if capacity else None) or {}).items():
        _check(errors, f"{path}.requests[{name}]", _qualified_name_error(name))
        _non_negative(errors, f"{path}.requests[{name}]", value)


def _request_common(errors: Errors, path: str, r: ExactDeviceRequest | DeviceSubRequest) -> None:
    _subdomain_field(errors, f"{path}.deviceClassName", r.device_class_name)
    _selectors(errors, f"{path}.selectors", r.selectors)
    _allocation_mode(errors, path, r.allocation_mode, r.count)
    _tolerations(errors, f"{path}.tolerations", r.tolerations)
    _capacity_requests(errors, f"{path}.capacity", r.capacity)


def _request_refs(errors: Errors, path: str, refs: list[str] | None, subrequests: dict[str, set[str]]) -> None:
    """Constraint and config ``requests`` name a request ("gpu") or a subrequest ("gpu/large")."""
    seen: set[str] = set()
    for i, ref in enumerate(refs or []):
        where = f"{path}[{i}]"
        if ref in seen:
            errors.append((where, f"Duplicate value: {_q(ref)}"))
        seen.add(ref)
        request, slash, sub = ref.partition("/")
        if request not in subrequests or (slash and sub not in subrequests[request]):
            errors.append((where, f"Invalid value: {_q(ref)}: must be the name of a request in the claim or the "
                                  "name of a request and a subrequest separated by '/'"))


def _claim_spec_errors(path: str, spec: ResourceClaimSpec) -> Errors:
    errors: Errors = []
    path = f"{path}.devices"
    claim = spec.devices
    _too_many(errors, f"{path}.requests", claim.requests, DEVICE_REQUESTS_MAX_SIZE)
    subrequests: dict[str, set[str]] = {}
    for i, request in enumerate(claim.requests or []):
        where = f"{path}.requests[{i}]"
        _dns_label_field(errors, f"{where}.name", request.name)
        if request.name in subrequests:
            errors.append((f"{where}.name", f"Duplicate value: {_q(request.name)}"))
        subrequests[request.name] = {s.name for s in request.first_available or []}
        if request.exactly is not None and request.first_available:
            errors.append((where, 'Invalid value: ["exactly", "firstAvailable"]: exactly one of `exactly` or '
                                  "`firstAvailable` is required, but multiple fields are set"))
        elif request.exactly is None and not request.first_available:
            errors.append((where, "Required value: exactly one of `exactly` or `firstAvailable` is required"))
        if request.exactly is not None:
            _request_common(errors, f"{where}.exactly", request.exactly)
        _too_many(errors, f"{where}.firstAvailable", request.first_available, FIRST_AVAILABLE_DEVICE_REQUEST_MAX_SIZE)
        names: set[str] = set()
        for j, sub in enumerate(request.first_available or []):
            sub_path = f"{where}.firstAvailable[{j}]"
            _dns_label_field(errors, f"{sub_path}.name", sub.name)
            if sub.name in names:
                errors.append((f"{sub_path}.name", f"Duplicate value: {_q(sub.name)}"))
            names.add(sub.name)
            _request_common(errors, sub_path, sub)
    _too_many(errors, f"{path}.constraints", claim.constraints, DEVICE_CONSTRAINTS_MAX_SIZE)
    for i, constraint in enumerate(claim.constraints or []):
        where = f"{path}.constraints[{i}]"
        _request_refs(errors, f"{where}.requests", constraint.requests, subrequests)
        match, distinct = constraint.match_attribute, constraint.distinct_attribute
        if match is not None and distinct is not None:
            errors.append((where, 'Invalid value: ["matchAttribute", "distinctAttribute"]: exactly one of '
                                  "`matchAttribute` or `distinctAttribute` is required, but multiple fields are set"))
        elif match is None and distinct is None:
            errors.append((where, "Required value: exactly one of `matchAttribute` or `distinctAttribute` is "
                                  "required"))
        if match is not None:
            _check(errors, f"{where}.matchAttribute", _qualified_name_error(match, fully=True))
        if distinct is not None:
            _check(errors, f"{where}.distinctAttribute", _qualified_name_error(distinct, fully=True))
    _too_many(errors, f"{path}.config", claim.config, DEVICE_CONFIG_MAX_SIZE)
    for i, config in enumerate(claim.config or []):
        _request_refs(errors, f"{path}.config[{i}].requests", config.requests, subrequests)
        _configuration(errors, f"{path}.config[{i}]", config)
    return errors


def _claim_status_errors(errors: Errors, path: str, status: ResourceClaimStatus) -> None:
    allocation = status.allocation
    if allocation is not None:
        results_path = f"{path}.allocation.devices.results"
        _too_many(errors, results_path, allocation.devices.results, ALLOCATION_RESULTS_MAX_SIZE)
        for i, result in enumerate(allocation.devices.results or []):
            where = f"{results_path}[{i}]"
            request, _, sub = result.request.partition("/")
            _dns_label_field(errors, f"{where}.request", request)
            if sub:
                _check(errors, f"{where}.request", _label_error(sub))
            _subdomain_field(errors, f"{where}.driver", result.driver, DRIVER_NAME_MAX_LENGTH)
            _pool_name(errors, f"{where}.pool", result.pool)
            _dns_label_field(errors, f"{where}.device", result.device)
            for name, value in (result.consumed_capacity or {}).items():
                _check(errors, f"{where}.consumedCapacity[{name}]", _qualified_name_error(name))
                _non_negative(errors, f"{where}.consumedCapacity[{name}]", value)
        for i, config in enumerate(allocation.devices.config or []):
            _configuration(errors, f"{path}.allocation.devices.config[{i}]", config)
    _too_many(errors, f"{path}.reservedFor", status.reserved_for, RESOURCE_CLAIM_RESERVED_FOR_MAX_SIZE)
    uids: set[str] = set()
    for i, ref in enumerate(status.reserved_for or []):
        if ref.uid in uids:
            errors.append((f"{path}.reservedFor[{i}].uid", f"Duplicate value: {_q(ref.uid)}"))
        uids.add(ref.uid)
    if status.reserved_for and allocation is None:
        errors.append((f"{path}.reservedFor", "Forbidden: may not be specified when `allocated` is not set"))


def _pool_name(errors: Errors, path: str, name: str) -> None:
    """A pool name is at most 253 long and made of DNS subdomains separated by '/'."""
    if not name:
        errors.append((path, "Required value"))
    elif len(name) > POOL_NAME_MAX_LENGTH:
        errors.append((path, f"Too long: may not be more than {POOL_NAME_MAX_LENGTH} bytes"))
    elif any(_subdomain_error(part) is not None for part in name.split("/")):
        errors.append((path, f"Invalid value: {_q(name)}: a pool name must consist of DNS subdomains separated "
                             "by '/'"))


def _node_selector(errors: Errors, path: str, selector: NodeSelector) -> None:
    if len(selector.node_selector_terms) != 1:
        errors.append((f"{path}.nodeSelectorTerms", f"Invalid value: {len(selector.node_selector_terms)}: must "
                                                    "have exactly one node selector term"))
    for i, term in enumerate(selector.node_selector_terms):
        for field_name, requirements in (("matchExpressions", term.match_expressions),
                                         ("matchFields", term.match_fields)):
            for j, req in enumerate(requirements or []):
                where = f"{path}.nodeSelectorTerms[{i}].{field_name}[{j}]"
                if req.operator in ("In", "NotIn") and not req.values:
                    errors.append((f"{where}.values", "Required value: must be specified when `operator` is "
                                                      "'In' or 'NotIn'"))
                elif req.operator in ("Exists", "DoesNotExist") and req.values:
                    errors.append((f"{where}.values", "Forbidden: may not be specified when `operator` is "
                                                      "'Exists' or 'DoesNotExist'"))
                elif req.operator in ("Gt", "Lt") and len(req.values or []) != 1:
                    errors.append((f"{where}.values", "Required value: must be specified single value when "
                                                      "`operator` is 'Lt' or 'Gt'"))


def _one_node_selection(errors: Errors, path: str, chosen: list[str], names: str) -> None:
    if not chosen:
        errors.append((path, f"Required value: exactly one of {names} is required"))
    elif len(chosen) > 1:
        errors.append((path, f"Invalid value: [{', '.join(_q(c) for c in chosen)}]: exactly one of {names} is "
                             "required, but multiple fields are set"))


def _node_selection(errors: Errors, path: str, owner: ResourceSliceSpec | Device) -> list[str]:
    chosen = []
    if owner.node_name:
        chosen.append("nodeName")
        _subdomain_field(errors, f"{path}.nodeName", owner.node_name)
    if owner.node_selector is not None:
        chosen.append("nodeSelector")
        _node_selector(errors, f"{path}.nodeSelector", owner.node_selector)
    if owner.all_nodes:
        chosen.append("allNodes")
    return chosen


def _counters(errors: Errors, path: str, counters: dict[str, Counter]) -> None:
    for name, counter in counters.items():
        _check(errors, f"{path}[{name}]", _label_error(name))
        _non_negative(errors, f"{path}[{name}].value", counter.value)


def _slice_errors(spec: ResourceSliceSpec) -> Errors:
    errors: Errors = []
    _subdomain_field(errors, "spec.driver", spec.driver, DRIVER_NAME_MAX_LENGTH)
    _pool_name(errors, "spec.pool.name", spec.pool.name)
    if spec.pool.generation < 0:
        errors.append(("spec.pool.generation", f"Invalid value: {spec.pool.generation}: must be greater than or "
                                               "equal to 0"))
    if spec.pool.resource_slice_count <= 0:
        errors.append(("spec.pool.resourceSliceCount", f"Invalid value: {spec.pool.resource_slice_count}: must "
                                                       "be greater than zero"))
    chosen = _node_selection(errors, "spec", spec)
    if spec.per_device_node_selection:
        chosen.append("perDeviceNodeSelection")
    _one_node_selection(errors, "spec", chosen,
                        "`nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`")
    counter_sets = _shared_counters(errors, spec.shared_counters)
    _too_many(errors, "spec.devices", spec.devices, RESOURCE_SLICE_MAX_DEVICES)
    names: set[str] = set()
    consumed = 0
    for i, device in enumerate(spec.devices or []):
        where = f"spec.devices[{i}]"
        _dns_label_field(errors, f"{where}.name", device.name)
        if device.name in names:
            errors.append((f"{where}.name", f"Duplicate value: {_q(device.name)}"))
        names.add(device.name)
        _device_errors(errors, where, device, spec)
        consumed += _consumes_counters(errors, where, device, counter_sets if spec.shared_counters else None)
    if consumed > RESOURCE_SLICE_MAX_DEVICE_COUNTERS_PER_SLICE:
        errors.append(("spec.devices", f"Too many: {consumed}: must have at most "
                                       f"{RESOURCE_SLICE_MAX_DEVICE_COUNTERS_PER_SLICE} counters consumed"))
    return errors


def _shared_counters(errors: Errors, counter_sets: list[CounterSet] | None) -> dict[str, set[str]]:
    sets: dict[str, set[str]] = {}
    total = 0
    for i, counter_set in enumerate(counter_sets or []):
        where = f"spec.sharedCounters[{i}]"
        _dns_label_field(errors, f"{where}.name", counter_set.name)
        if counter_set.name in sets:
            errors.append((f"{where}.name", f"Duplicate value: {_q(counter_set.name)}"))
        if not counter_set.counters:
            errors.append((f"{where}.counters", "Required value"))
        _counters(errors, f"{where}.counters", counter_set.counters)
        sets[counter_set.name] = set(counter_set.counters)
        total += len(counter_set.counters)
    if total > RESOURCE_SLICE_MAX_SHARED_COUNTERS:
        errors.append(("spec.sharedCounters", f"Too many: {total}: must have at most "
                                              f"{RESOURCE_SLICE_MAX_SHARED_COUNTERS} counters"))
    return sets


def _consumes_counters(errors: Errors, path: str, device: Device, sets: dict[str, set[str]] | None) -> int:
    """Check a device's counter consumption; return how many counters it consumes.

    In the 1.34 form the counter sets live in the same slice and are checked here. A slice without
    sharedCounters is the 1.35 split form, whose sets live in another slice of the pool; those
    references are resolved when the pool is gathered.
    """
    seen: set[str] = set()
    count = 0
    for j, consumption in enumerate(device.consumes_counters or []):
        where = f"{path}.consumesCounters[{j}]"
        if consumption.counter_set in seen:
            errors.append((f"{where}.counterSet", f"Duplicate value: {_q(consumption.counter_set)}"))
        seen.add(consumption.counter_set)
        if not consumption.counters:
            errors.append((f"{where}.counters", "Required value"))
        _counters(errors, f"{where}.counters", consumption.counters)
        count += len(consumption.counters)
        if sets is None:
            continue
        if consumption.counter_set not in sets:
            errors.append((f"{where}.counterSet", f"Invalid value: {_q(consumption.counter_set)}: must reference a "
                                                  "counter set defined in the ResourceSlice sharedCounters"))
            continue
        for name in consumption.counters:
            if name not in sets[consumption.counter_set]:
                errors.append((f"{where}.counters[{name}]", f"Invalid value: {_q(name)}: must reference a counter "
                               f"defined in counter set {_q(consumption.counter_set)} of the ResourceSlice "
                               "sharedCounters"))
    return count


def _device_errors(errors: Errors, path: str, device: Device, spec: ResourceSliceSpec) -> None:
    attributes, capacity = device.attributes or {}, device.capacity or {}
    if len(attributes) + len(capacity) > RESOURCE_SLICE_MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE:
        errors.append((path, f"Too many: {len(attributes) + len(capacity)}: must have at most "
                             f"{RESOURCE_SLICE_MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE} attributes and capacities"))
    list_values = sum(len(v) for a in attributes.values()
                      for v in (a.int_values, a.bool_values, a.string_values, a.version_values) if v)
    if list_values > DEVICE_ATTRIBUTE_MAX_LIST_VALUES:
        errors.append((f"{path}.attributes", f"Too many: {list_values}: must have at most "
                                             f"{DEVICE_ATTRIBUTE_MAX_LIST_VALUES} list attribute values"))
    for name, attribute in attributes.items():
        where = f"{path}.attributes[{name}]"
        _check(errors, where, _qualified_name_error(name))
        _attribute(errors, where, attribute)
    for name, cap in capacity.items():
        where = f"{path}.capacity[{name}]"
        _check(errors, where, _qualified_name_error(name))
        _non_negative(errors, f"{where}.value", cap.value)
        if cap.request_policy is not None:
            _request_policy(errors, f"{where}.requestPolicy", cap.request_policy, _quantity(cap.value))
    if spec.per_device_node_selection:
        _one_node_selection(errors, path, _node_selection(errors, path, device),
                            "`nodeName`, `nodeSelector`, `allNodes`")
    else:
        for field_name, value in (("nodeName", device.node_name), ("nodeSelector", device.node_selector),
                                  ("allNodes", device.all_nodes)):
            if value is not None:
                errors.append((f"{path}.{field_name}", "Forbidden: may only be set when "
                                                       "`perDeviceNodeSelection` is true"))
    _too_many(errors, f"{path}.taints", device.taints, DEVICE_TAINTS_MAX_LENGTH)
    for k, taint in enumerate(device.taints or []):
        _check(errors, f"{path}.taints[{k}].key", _label_key_error(taint.key))
        if taint.value:
            _check(errors, f"{path}.taints[{k}].value", _label_value_error(taint.value))
    _too_many(errors, f"{path}.bindingConditions", device.binding_conditions, BINDING_CONDITIONS_MAX_SIZE)
    _too_many(errors, f"{path}.bindingFailureConditions", device.binding_failure_conditions,
              BINDING_CONDITIONS_MAX_SIZE)


def _attribute(errors: Errors, path: str, attribute: DeviceAttribute) -> None:
    values = [v for v in (attribute.int_value, attribute.bool_value, attribute.string_value,
                          attribute.version_value, attribute.int_values, attribute.bool_values,
                          attribute.string_values, attribute.version_values) if v is not None]
    if not values:
        errors.append((path, "Required value: exactly one value must be specified"))
    elif len(values) > 1:
        errors.append((path, f"Invalid value: [{', '.join(_q(v) for v in values)}]: exactly one value must be "
                             "specified"))
    strings = [("string", attribute.string_value)] if attribute.string_value is not None else []
    strings += [(f"strings[{i}]", v) for i, v in enumerate(attribute.string_values or ())]
    versions = [("version", attribute.version_value)] if attribute.version_value is not None else []
    versions += [(f"versions[{i}]", v) for i, v in enumerate(attribute.version_values or ())]
    for field, values_ in (("ints", attribute.int_values), ("bools", attribute.bool_values),
                           ("strings", attribute.string_values), ("versions", attribute.version_values)):
        if values_ is None:
            continue
        if not values_:
            errors.append((f"{path}.{field}", "Required value: must have at least one value"))
        elif len(set(values_)) != len(values_):
            errors.append((f"{path}.{field}", "Duplicate value: values must be unique"))
    for field, value in strings:
        if len(value) > DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH:
            errors.append((f"{path}.{field}", f"Too long: may not be more than {DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH} bytes"))
    for field, version in versions:
        if len(version) > DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH:
            errors.append((f"{path}.{field}", f"Too long: may not be more than "
                                              f"{DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH} bytes"))
        elif not _SEMVER.match(version):
            errors.append((f"{path}.{field}", f"Invalid value: {_q(version)}: must be a string compatible with "
                                              "semver.org spec 2.0.0"))


def _request_policy(errors: Errors, path: str, policy: CapacityRequestPolicy, capacity: Decimal) -> None:
    """A consumable capacity's policy (KEP-5075): a default, and either discrete values or a stepped range."""
    default = _quantity(policy.default) if policy.default is not None else None
    if default is not None and default > capacity:
        errors.append((f"{path}.default", f"Invalid value: {_q(policy.default)}: must be less than or equal to "
                                          "the capacity value"))
    if policy.valid_values is not None and policy.valid_range is not None:
        errors.append((path, 'Invalid value: ["validValues", "validRange"]: exactly one of `validValues` or '
                             "`validRange` may be set"))
    if policy.valid_values is not None:
        values = [_quantity(v) for v in policy.valid_values]
        _too_many(errors, f"{path}.validValues", values, CAPACITY_REQUEST_POLICY_DISCRETE_MAX_OPTIONS)
        for i, value in enumerate(values):
            if i and value <= values[i - 1]:
                errors.append((f"{path}.validValues[{i}]", f"Invalid value: {_q(policy.valid_values[i])}: values "
                                                           "must be unique and sorted in ascending order"))
            if value > capacity:
                errors.append((f"{path}.validValues[{i}]", f"Invalid value: {_q(policy.valid_values[i])}: must "
                                                           "be less than or equal to the capacity value"))
        if default is not None and default not in values:
            errors.append((f"{path}.default", f"Invalid value: {_q(policy.default)}: must be one of validValues"))
    if policy.valid_range is not None:
        _valid_range(errors, f"{path}.validRange", policy.valid_range, default, capacity)


def _valid_range(errors: Errors, path: str, valid: CapacityRequestPolicyRange, default: Decimal | None,
                 capacity: Decimal) -> None:
    if valid.min is None:
        errors.append((f"{path}.min", "Required value"))
        return
    low = _quantity(valid.min)
    if low < 0 or low > capacity:
        errors.append((f"{path}.min", f"Invalid value: {_q(valid.min)}: must be between 0 and the capacity value"))
    high = _quantity(valid.max) if valid.max is not None else None
    if high is not None and (high < low or high > capacity):
        errors.append((f"{path}.max", f"Invalid value: {_q(valid.max)}: must be between min and the capacity "
                                      "value"))
    step = _quantity(valid.step) if valid.step is not None else None
    if step is not None and step <= 0:
        errors.append((f"{path}.step", f"Invalid value: {_q(valid.step)}: must be greater than zero"))
    if default is None:
        return
    if default < low or (high is not None and default > high):
        errors.append((f"{path.rpartition('.')[0]}.default", "Invalid value: default must be within validRange"))
    elif step is not None and step > 0 and (default - low) % step:
        errors.append((f"{path.rpartition('.')[0]}.default", "Invalid value: default must be min plus a whole "
                                                             "number of steps"))


# --- registration ---------------------------------------------------------------------------

def _immutable(path: str, field_of: Callable[[Object], Any]) -> Callable[[Object, Object], Errors]:
    def check(old: Object, new: Object) -> Errors:
        return [(path, "Invalid value: field is immutable")] if field_of(old) != field_of(new) else []
    return check


def _slice_fields(obj: Object) -> dict[str, str]:
    assert isinstance(obj, ResourceSlice)
    return {"spec.driver": obj.spec.driver, "spec.nodeName": obj.spec.node_name or "",
            "spec.pool.name": obj.spec.pool.name}


REGISTRY.register(Kind(DeviceClass, "deviceclasses", namespaced=False))
REGISTRY.register(Kind(ResourceSlice, "resourceslices", namespaced=False, fields=_slice_fields,
                       field_names=frozenset({"spec.driver", "spec.nodeName", "spec.pool.name"}),
                       update_errors=_immutable("spec.driver", lambda o: o.spec.driver)))
REGISTRY.register(Kind(ResourceClaim, "resourceclaims", namespaced=True,
                       update_errors=_immutable("spec", lambda o: o.spec)))
REGISTRY.register(Kind(ResourceClaimTemplate, "resourceclaimtemplates", namespaced=True,
                       update_errors=_immutable("spec", lambda o: o.spec)))
REGISTRY.register(Kind(DeviceTaintRule, "devicetaintrules", namespaced=False, prepare_update=_rule_prepare_update,
                       conversions=((V1BETA2, lambda data: {**data, "apiVersion": V1ALPHA3}),)))

__all__ = ["DeviceClass", "ResourceSlice", "ResourceClaim", "ResourceClaimTemplate", "DeviceTaintRule",
           "SELECTOR_VALIDATORS"]
