"""Plain data the device allocator searches over.

These small frozen records are built from the resource.k8s.io/v1 API objects by
``mlplane.policy.device.convert``; the search in ``allocator`` only ever sees them.
Quantities are ``Decimal`` values in base units. Attribute values are tagged tuples
``(kind, value)`` with kind one of "int", "bool", "string", "version", as in
DeviceAttribute of ``k8s.io/api/resource/v1/types.go``, a list kind "ints", "bools", "strings",
"versions" (value: a tuple; [1.36 alpha] DRAListTypeAttributes), or "unknown" (no value set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from mlplane.api.core import toleration_matches

# Upstream resourceapi.AllocationResultsMaxSize.
ALLOCATION_RESULTS_MAX_SIZE = 32

AttrValue = tuple[str, object]


class DeviceID(NamedTuple):
    driver: str
    pool: str
    device: str

    def __str__(self) -> str:
        return f"{self.driver}/{self.pool}/{self.device}"


class SharedDeviceID(NamedTuple):
    driver: str
    pool: str
    device: str
    share_id: str


@dataclass(frozen=True)
class Requirement:
    """One node selector requirement (matchExpressions on labels or matchFields)."""
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def to_wire(self) -> dict:
        out: dict = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class SelectorTerm:
    match_expressions: tuple[Requirement, ...] = ()
    match_fields: tuple[Requirement, ...] = ()

    def to_wire(self) -> dict:
        out: dict = {}
        if self.match_expressions:
            out["matchExpressions"] = [r.to_wire() for r in self.match_expressions]
        if self.match_fields:
            out["matchFields"] = [r.to_wire() for r in self.match_fields]
        return out


@dataclass(frozen=True)
class NodeSelector:
    """A v1.NodeSelector: the node must match at least one term."""
    terms: tuple[SelectorTerm, ...]

    def to_wire(self) -> dict:
        return {"nodeSelectorTerms": [t.to_wire() for t in self.terms]}


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestPolicy:
    """CapacityRequestPolicy: default, validValues (ascending) or validRange."""
    default: Decimal | None = None
    valid_values: tuple[Decimal, ...] = ()
    range_min: Decimal | None = None
    range_max: Decimal | None = None
    range_step: Decimal | None = None


@dataclass(frozen=True)
class Capacity:
    value: Decimal
    policy: RequestPolicy | None = None
    binary: bool = False  # formatted with binary suffixes (Gi, Mi) in results


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""
    wire: dict | None = None  # the toleration as written, copied into results

    def tolerates(self, taint: Taint) -> bool:
        return toleration_matches(self.key, self.operator, self.value, self.effect,
                                  taint.key, taint.value, taint.effect)


@dataclass(frozen=True)
class Device:
    name: str
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    capacity: dict[str, Capacity] = field(default_factory=dict)
    consumes_counters: tuple[tuple[str, dict[str, Decimal]], ...] = ()
    taints: tuple[Taint, ...] = ()
    allow_multiple_allocations: bool = False
    binds_to_node: bool = False
    binding_conditions: tuple[str, ...] = ()
    binding_failure_conditions: tuple[str, ...] = ()
    # Only with the slice's perDeviceNodeSelection:
    node_name: str | None = None
    all_nodes: bool = False
    node_selector: NodeSelector | None = None


@dataclass(frozen=True)
class Slice:
    name: str
    driver: str
    pool: str
    generation: int = 1
    resource_slice_count: int = 1
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool = False
    per_device_node_selection: bool = False
    devices: tuple[Device, ...] = ()
    shared_counters: dict[str, dict[str, Decimal]] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceClassInfo:
    name: str
    selectors: tuple[str, ...] = ()
    config: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Request:
    """An ExactDeviceRequest or DeviceSubRequest; ``subrequests`` set for firstAvailable."""
    name: str
    class_name: str = ""
    selectors: tuple[str, ...] = ()
    mode: str = "ExactCount"
    count: int = 1
    admin_access: bool = False
    tolerations: tuple[Toleration, ...] = ()
    capacity: dict[str, Decimal] | None = None
    subrequests: tuple["Request", ...] = ()


@dataclass(frozen=True)
class Constraint:
    requests: tuple[str, ...] = ()
    match_attribute: str | None = None
    distinct_attribute: str | None = None


@dataclass(frozen=True)
class Claim:
    key: str  # "namespace/name", for messages
    requests: tuple[Request, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    config: tuple[dict, ...] = ()  # {"requests": [...], "opaque": {...}}


@dataclass
class AllocatedState:
    """What existing allocations use (upstream structured.AllocatedState)."""
    allocated_devices: set[DeviceID] = field(default_factory=set)
    allocated_shared_device_ids: set[SharedDeviceID] = field(default_factory=set)
    aggregated_capacity: dict[DeviceID, dict[str, Decimal]] = field(default_factory=dict)


@dataclass(frozen=True)
class Features:
    """Allocator features (upstream internal.Features); all on by default."""
    admin_access: bool = True
    prioritized_list: bool = True
    partitionable_devices: bool = True
    device_taints: bool = True
    device_binding_and_status: bool = True
    consumable_capacity: bool = True
    list_type_attributes: bool = True
